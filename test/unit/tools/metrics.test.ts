import { describe, expect, it } from 'vitest';
import type { DaemonControl, DaemonObserver, JobDetail, JobTallies } from '../../../src/profiler/control.js';
import type { ConnectionRecord } from '../../../src/log/record.js';
import { Metrics } from '../../../src/api/metrics.js';

// /metrics from a scripted DaemonControl: what the profiler reports live, what records say of
// closed connections, and an ended job's totals until the grace period passes.

/** What the profiler's eachTally() gives of a job the test describes as its view. */
const tallies = (d: JobDetail): JobTallies => ({
  job: d.job, open_connections: d.open_connections, closed_connections: d.closed_connections,
  bytes_in: d.bytes_in, bytes_out: d.bytes_out, packets_in: d.packets_in, packets_out: d.packets_out,
  processes: d.process_list.map((p) => ({ pid: p.pid, open_connections: p.connections.length, bytes_in: p.bytes_in, bytes_out: p.bytes_out, packets_in: p.packets_in, packets_out: p.packets_out })),
});

function fakeDaemon() {
  let observer: DaemonObserver = {};
  const jobs = new Map<string, JobDetail>();
  const control = {
    observe: (o: DaemonObserver) => ((observer = o), () => undefined),
    jobs: () => [...jobs.values()],
    refreshCounts: async () => undefined,
    eachTally: (visit: (t: JobTallies) => void) => [...jobs.values()].map(tallies).forEach(visit),
    health: () => ({ status: 'ok', uptime_s: 5, engine: 'nftables', interfaces: ['eth0'], problems: [] }),
    stats: () => ({
      jobs: jobs.size, processes: 1, connections_tracked: 1, counters_installed: 1,
      profiler: { registrations: 2, registrationsRefused: 1, uncountedConnections: 0 },
      connections: { events: { syn: 4, 'syn-ack': 2, fin: 3, rst: 0 }, opened: 2, closed: { fin: 1, rst: 0, 'process-end': 0, 'job-end': 0, shutdown: 0, recovered: 0, gc: 0 }, unresolved: 1, notProfiled: 0, noRoom: 0, gcRuns: 3, gcReclaimed: 0, engineErrors: 0 },
      capture: [{ iface: 'eth0', frames: 9, skipped: { undecodable: 2 }, kernelDropped: 0, restarts: 1, listening: true }],
      log: { written: 1, buffered: 0, overflowed: 0, writeErrors: 0 },
    }),
  } as unknown as DaemonControl;
  return { control, jobs, record: (r: ConnectionRecord) => observer.record?.(r), ended: (j: string) => observer.jobEnded?.(j) };
}

const conn = (bytesIn: number) => ({ interface: 'eth0', local_addr: '10.0.0.1', local_port: 5000, remote_addr: '192.0.2.9', remote_port: 443, opened_by: 'local', since: null, state: 'open', counted: true, partial: false, late: false, attribution: 'x', bytes_in: bytesIn, bytes_out: 10, packets_in: 2, packets_out: 1 });
const rec = (pid: number, bytesIn: number): ConnectionRecord => ({ job: 'J', pid, owner: 'root', iface: 'eth0', family: 4, localAddr: '10.0.0.1', localPort: 6000, remoteAddr: '192.0.2.9', remotePort: 443, openedBy: 'local', end: 0, reason: 'fin', counts: { bytesIn, bytesOut: 5, packetsIn: 1, packetsOut: 1 }, partial: false, late: false, attribution: 'x' });

describe('GET /metrics', () => {
  it('per job and per process: open connections live plus closed ones; daemon health; no addresses or ports; ended jobs kept for the grace period', async () => {
    const f = fakeDaemon();
    let now = 1_000_000;
    const m = new Metrics(f.control, { graceMs: 300_000, now: () => now });
    // pid 11 has one open connection (700 B in so far); pid 12 ended with one closed (300 B).
    f.record(rec(12, 300));
    f.jobs.set('J', {
      job: 'J', registered_at: '', processes: 1, open_connections: 1, closed_connections: 1, bytes_in: 1000, bytes_out: 15, packets_in: 3, packets_out: 2, counts_read_at: null,
      process_list: [{ pid: 11, owner: 'root', uid: 0, birthdate: 1, parent: null, alive: true, connections: [conn(700)], bytes_in: 700, bytes_out: 10, packets_in: 2, packets_out: 1 }],
    });
    let text = await m.render();
    expect(text).toContain('netprof_job_bytes_total{job_id="J",direction="in"} 1000');
    expect(text).toContain('netprof_process_bytes_total{job_id="J",pid="11",direction="in"} 700');
    expect(text).toContain('netprof_process_bytes_total{job_id="J",pid="12",direction="in"} 300');
    expect(text).toContain('netprof_process_open_connections{job_id="J",pid="11"} 1');
    expect(text).toContain('netprof_process_connections_closed_total{job_id="J",pid="12"} 1');
    expect(text).toContain('netprof_job_connections_opened_total{job_id="J"} 2');
    expect(text).toContain('# TYPE netprof_job_bytes_total counter');
    expect(text).toMatch(/^netprof_health\{status="ok"\} 1$/m);
    expect(text).toMatch(/^netprof_capture_skipped_frames_total\{interface="eth0",reason="undecodable"\} 2$/m);
    expect(text).toMatch(/^netprof_capture_restarts_total\{interface="eth0"\} 1$/m);
    expect(text).toMatch(/^netprof_connections_unresolved_total 1$/m);
    expect(text).toMatch(/^netprof_gc_runs_total 3$/m);
    expect(text).toMatch(/^netprof_counters_installed 1$/m);
    expect(text).toMatch(/^netprof_log_overflowed_total 0$/m);
    // Not in any label (a sample's value, e.g. the daemon's RSS in bytes, may hold "443").
    expect(text).not.toMatch(/"[^"\n]*(192\.0\.2\.9|10\.0\.0\.1|443|5000)[^"\n]*"/);
    expect(text).not.toMatch(/^process_cpu|nodejs_/m); // a private registry: no default metrics

    // The job ends: its open connection is logged with its final count, then the job is gone.
    f.record(rec(11, 900));
    f.jobs.delete('J');
    f.ended('J');
    now += 60_000;
    text = await m.render();
    expect(text).toContain('netprof_job_bytes_total{job_id="J",direction="in"} 1200');
    expect(text).toContain('netprof_process_bytes_total{job_id="J",pid="11",direction="in"} 900');
    expect(text).toContain('netprof_job_open_connections{job_id="J"} 0');
    expect(text).toContain(`netprof_job_ended_timestamp_seconds{job_id="J"} ${(now - 60_000) / 1000}`);
    now += 240_000; // 5 minutes after the end
    text = await m.render();
    expect(text).not.toContain('job_id="J"');
  });
});

describe('GET /metrics: bounded per-process series and the operators\' health series', () => {
  const proc = (pid: number, bytesIn: number) => ({ pid, owner: 'root', uid: 0, birthdate: 1, parent: null, alive: true, connections: [conn(bytesIn)], bytes_in: bytesIn, bytes_out: 10, packets_in: 2, packets_out: 1 });
  const detail = (pids: number[]) => ({
    job: 'J', registered_at: '', processes: pids.length, open_connections: pids.length, closed_connections: 0,
    bytes_in: pids.reduce((a, p) => a + p, 0), bytes_out: 10 * pids.length, packets_in: 2 * pids.length, packets_out: pids.length, counts_read_at: null,
    process_list: pids.map((p) => proc(p, p)),
  });
  const series = (text: string, name: string) => text.split('\n').filter((l) => l.startsWith(`${name}{`));
  const value = (text: string, sel: string) => Number(text.split('\n').find((l) => l.startsWith(sel + ' '))?.slice(sel.length + 1));

  it('the first N pids of a job get their own series, the rest are summed as pid="other"; sums still equal the job; a pid never moves', async () => {
    const f = fakeDaemon();
    const m = new Metrics(f.control, { processLimit: 3 });
    f.jobs.set('J', detail([101, 102, 103, 104, 105]));
    let text = await m.render();
    const pids = series(text, 'netprof_process_bytes_total').filter((l) => l.includes('direction="in"')).map((l) => /pid="([^"]+)"/.exec(l)![1]);
    expect(pids).toEqual(['101', '102', '103', 'other']);
    expect(value(text, 'netprof_process_bytes_total{job_id="J",pid="other",direction="in"}')).toBe(104 + 105);
    expect(value(text, 'netprof_process_open_connections{job_id="J",pid="other"}')).toBe(2);
    const sum = series(text, 'netprof_process_bytes_total').filter((l) => l.includes('direction="in"')).reduce((a, l) => a + Number(l.split(' ').pop()), 0);
    expect(sum).toBe(value(text, 'netprof_job_bytes_total{job_id="J",direction="in"}'));
    // 101 exits and a new pid comes: 101 keeps its slot (its counter must not jump to "other").
    f.jobs.set('J', detail([102, 103, 104, 105, 106]));
    f.record(rec(101, 101));
    text = await m.render();
    expect(value(text, 'netprof_process_bytes_total{job_id="J",pid="101",direction="in"}')).toBe(101);
    expect(value(text, 'netprof_process_bytes_total{job_id="J",pid="other",direction="in"}')).toBe(104 + 105 + 106);
    // Limit 0: no per-process series at all, the job's stay.
    const off = new Metrics(f.control, { processLimit: 0 });
    text = await off.render();
    expect(series(text, 'netprof_process_bytes_total')).toEqual([]);
    expect(value(text, 'netprof_job_bytes_total{job_id="J",direction="in"}')).toBeGreaterThan(0);
  });

  it('eBPF state, lost events, counters repaired, the log buffer limit, the daemon\'s CPU and memory', async () => {
    const f = fakeDaemon();
    const stats = f.control.stats;
    f.control.stats = () => ({ ...stats(), ebpf: { state: 'restarting', lost: 7, restarts: 2 }, connections: { ...(stats().connections as object), countersRestored: 1 } });
    const text = await new Metrics(f.control, { logBufferLimit: 500 }).render();
    expect(text).toMatch(/^netprof_ebpf_state\{state="restarting"\} 1$/m);
    expect(text).toMatch(/^netprof_ebpf_state\{state="live"\} 0$/m);
    expect(text).toMatch(/^netprof_ebpf_lost_events_total 7$/m);
    expect(text).toMatch(/^netprof_ebpf_restarts_total 2$/m);
    expect(text).toMatch(/^netprof_counters_repaired_total 1$/m);
    expect(text).toMatch(/^netprof_log_buffer_limit_records 500$/m);
    // This test process's own figures: it has used some CPU and holds some memory.
    expect(value(text, 'netprof_daemon_cpu_seconds_total{part="daemon"}')).toBeGreaterThan(0);
    expect(value(text, 'netprof_daemon_resident_memory_bytes{part="daemon"}')).toBeGreaterThan(10 * 1024 * 1024);
    expect(text).toMatch(/^netprof_daemon_cpu_seconds_total\{part="helpers"\} [\d.e+-]+$/m);
  });
});

it("a crashed run's harvested records stay out of a job registered again under the same id (Prometheus saw them before the reset)", async () => {
  const f = fakeDaemon();
  const m = new Metrics(f.control);
  f.record({ ...rec(11, 5000), reason: 'recovered' });
  // The profiler's job totals leave the harvested record out; the live connection has 700 B.
  f.jobs.set('J', {
    job: 'J', registered_at: '', processes: 1, open_connections: 1, closed_connections: 0, bytes_in: 700, bytes_out: 10, packets_in: 2, packets_out: 1, counts_read_at: null,
    process_list: [{ pid: 11, owner: 'root', uid: 0, birthdate: 1, parent: null, alive: true, connections: [conn(700)], bytes_in: 700, bytes_out: 10, packets_in: 2, packets_out: 1 }],
  });
  const text = await m.render();
  expect(text).toContain('netprof_job_bytes_total{job_id="J",direction="in"} 700');
  expect(text).toContain('netprof_job_bytes_total{job_id="J",direction="out"} 10');
  expect(text).toContain('netprof_job_connections_closed_total{job_id="J"} 0');
  expect(text).toContain('netprof_process_bytes_total{job_id="J",pid="11",direction="in"} 700');
});
