import { afterEach, describe, expect, it, vi } from 'vitest';
import type { DaemonControl, DaemonObserver, JobTallies, ProcessTally } from '../../../src/profiler/control.js';
import type { ConnectionRecord } from '../../../src/log/record.js';
import { FULL_PASS_AFTER, Metrics, WRITE_AHEAD_MS } from '../../../src/api/metrics.js';
import { JOBS_PER_BLOCK } from '../../../src/api/job-blocks.js';

// /metrics keeps each block of jobs' text between scrapes and writes again only where figures
// moved: a kept block must never show a figure that has since changed, a job that went, or miss
// one that came; and a long-lived Metrics must answer exactly as one scraping for the first time.

/** A scripted daemon: jobs of processes with live counts, closed records told to observers. */
function fakeDaemon() {
  const observers: DaemonObserver[] = [];
  const jobs = new Map<string, { procs: Map<number, ProcessTally>; closed: { bytes_in: number; bytes_out: number; packets_in: number; packets_out: number; connections: number } }>();
  const tallies = (only?: ReadonlySet<string>): JobTallies[] =>
    [...jobs].filter(([id]) => !only || only.has(id)).map(([job, j]) => {
      const processes = [...j.procs.values()].map((p) => ({ ...p }));
      const t = { bytes_in: j.closed.bytes_in, bytes_out: j.closed.bytes_out, packets_in: j.closed.packets_in, packets_out: j.closed.packets_out };
      for (const p of processes) (t.bytes_in += p.bytes_in), (t.bytes_out += p.bytes_out), (t.packets_in += p.packets_in), (t.packets_out += p.packets_out);
      return { job, ...t, open_connections: processes.reduce((a, p) => a + p.open_connections, 0), closed_connections: j.closed.connections, processes };
    });
  const control = {
    observe: (o: DaemonObserver) => (observers.push(o), () => undefined),
    refreshCounts: async () => undefined,
    eachTally: (visit: (t: JobTallies) => void, only?: ReadonlySet<string>) => tallies(only).forEach(visit),
    health: () => ({ status: 'ok', uptime_s: 5, engine: 'nftables', interfaces: ['eth0'], problems: [] }),
    stats: () => ({ jobs: jobs.size }),
  } as unknown as DaemonControl;
  const start = (job: string, pid: number) => {
    jobs.set(job, { procs: new Map([[pid, { pid, open_connections: 0, bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0 }]]), closed: { bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0, connections: 0 } });
    for (const o of observers) o.jobStarted?.(job);
  };
  /** A process's open connections move: n of them, with these bytes in so far. */
  const live = (job: string, pid: number, open: number, bytesIn: number) => Object.assign(jobs.get(job)!.procs.get(pid)!, { open_connections: open, bytes_in: bytesIn, packets_in: open });
  /** A connection of the process closes with its final counts, logged. */
  const close = (job: string, pid: number, bytesIn: number) => {
    const j = jobs.get(job)!;
    Object.assign(j.closed, { bytes_in: j.closed.bytes_in + bytesIn, packets_in: j.closed.packets_in + 1, connections: j.closed.connections + 1 });
    const r: ConnectionRecord = { job, pid, owner: 'root', iface: 'eth0', family: 4, localAddr: '10.0.0.1', localPort: 6000, remoteAddr: '192.0.2.9', remotePort: 443, openedBy: 'local', end: 0, reason: 'fin', counts: { bytesIn, bytesOut: 0, packetsIn: 1, packetsOut: 0 }, partial: false, late: false, attribution: 'x' };
    for (const o of observers) o.record?.(r);
  };
  const end = (job: string) => {
    for (const [pid, p] of jobs.get(job)!.procs) if (p.bytes_in) close(job, pid, p.bytes_in);
    jobs.delete(job);
    for (const o of observers) o.jobEnded?.(job);
  };
  return { control, start, live, close, end, jobs };
}

const value = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};
/** Every series but the daemon's own usage (CPU and memory move between any two scrapes). */
const lines = (text: string) => text.split('\n').filter((l) => !l.startsWith('netprof_daemon_')).sort();

afterEach(() => void vi.useRealTimers());

describe('GET /metrics: kept blocks', () => {
  it('a job whose figures move shows them at the next scrape, among idle jobs of other blocks; a job gone is gone, a new one is there', async () => {
    const f = fakeDaemon();
    const jobs = 3 * JOBS_PER_BLOCK;
    for (let i = 0; i < jobs; i++) f.start(`j${i}`, 1000 + i);
    const m = new Metrics(f.control);
    let text = await m.render();
    expect(value(text, 'netprof_job_bytes_total{job_id="j200",direction="in"}')).toBe(0);
    f.live('j200', 1200, 2, 700);
    text = await m.render();
    expect(value(text, 'netprof_job_bytes_total{job_id="j200",direction="in"}')).toBe(700);
    expect(value(text, 'netprof_process_open_connections{job_id="j200",pid="1200"}')).toBe(2);
    expect(value(text, 'netprof_job_bytes_total{job_id="j201",direction="in"}')).toBe(0);
    f.close('j200', 1200, 300);
    f.live('j200', 1200, 1, 50);
    text = await m.render();
    expect(value(text, 'netprof_job_bytes_total{job_id="j200",direction="in"}')).toBe(350);
    expect(value(text, 'netprof_process_connections_closed_total{job_id="j200",pid="1200"}')).toBe(1);
    // Two processes whose figures swap: the job's totals stay, each process's move.
    f.jobs.get('j300')!.procs.set(77, { pid: 77, open_connections: 0, bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0 });
    f.live('j300', 1300, 1, 10);
    text = await m.render();
    f.live('j300', 1300, 0, 0);
    f.live('j300', 77, 1, 10);
    text = await m.render();
    expect(value(text, 'netprof_job_open_connections{job_id="j300"}')).toBe(1);
    expect(value(text, 'netprof_process_open_connections{job_id="j300",pid="1300"}')).toBe(0);
    expect(value(text, 'netprof_process_bytes_total{job_id="j300",pid="77",direction="in"}')).toBe(10);
    // Gone without an end (the registry forgot it): its series go; a new job's come.
    f.jobs.delete('j5');
    f.start('new', 99);
    text = await m.render();
    expect(text).not.toContain('job_id="j5"');
    expect(value(text, 'netprof_job_processes{job_id="new"}')).toBe(1);
    expect(text.split('\n').filter((l) => l.startsWith('netprof_job_processes{'))).toHaveLength(jobs);
  });

  it('written ahead when jobs start or end, yet a scrape shows the figures of its moment, and an ended job goes after its grace', async () => {
    vi.useFakeTimers();
    let now = 1_000_000;
    const f = fakeDaemon();
    const m = new Metrics(f.control, { graceMs: 60_000, now: () => now });
    await m.render();
    // Enough to make the write ahead a pass over all jobs; the end below makes one of one job.
    for (let i = 0; i < FULL_PASS_AFTER; i++) f.start(`j${i}`, 1000 + i);
    await vi.advanceTimersByTimeAsync(WRITE_AHEAD_MS + 10); // written ahead with every figure 0
    f.live('j3', 1003, 1, 4242);
    let text = await m.render();
    expect(value(text, 'netprof_job_bytes_total{job_id="j3",direction="in"}')).toBe(4242);
    expect(value(text, 'netprof_process_bytes_total{job_id="j3",pid="1003",direction="in"}')).toBe(4242);
    f.end('j3');
    await vi.advanceTimersByTimeAsync(WRITE_AHEAD_MS + 10);
    text = await m.render();
    expect(value(text, 'netprof_job_open_connections{job_id="j3"}')).toBe(0);
    expect(value(text, 'netprof_job_bytes_total{job_id="j3",direction="in"}')).toBe(4242);
    expect(value(text, 'netprof_job_ended_timestamp_seconds{job_id="j3"}')).toBe(now / 1000);
    now += 60_000;
    text = await m.render();
    expect(text).not.toContain('job_id="j3"');
    m.stop();
  });

  it('a long-lived Metrics answers exactly as one that scrapes for the first time, through starts, moves, closes and ends', async () => {
    vi.useFakeTimers();
    let now = 1_000_000;
    const f = fakeDaemon();
    const opts = { graceMs: 30_000, now: () => now };
    const kept = new Metrics(f.control, opts);
    // Made now so that they observe every record, but scraped for the first time at step k.
    const firsts = new Map([50, 120, 199].map((k) => [k, new Metrics(f.control, opts)]));
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    let pid = 1;
    for (let step = 0; step < 200; step++) {
      const ids = [...f.jobs.keys()];
      const pick = ids[rnd(Math.max(ids.length, 1))];
      const r = rnd(11);
      if (r < 3 || !pick) f.start(`job${rnd(300)}${rnd(9) ? '' : '"\\\n'}`, pid++);
      else if (r < 4) f.end(pick);
      else if (r < 8) f.live(pick, [...f.jobs.get(pick)!.procs.keys()][rnd(2) ? 0 : f.jobs.get(pick)!.procs.size - 1]!, rnd(3), rnd(10_000));
      else if (r < 9) f.close(pick, [...f.jobs.get(pick)!.procs.keys()][0]!, rnd(500));
      else if (r < 10) now += 10_000;
      else f.jobs.get(pick)!.procs.set(pid, { pid: pid++, open_connections: 1, bytes_in: rnd(100), bytes_out: 0, packets_in: 1, packets_out: 0 });
      if (rnd(3) === 0) await vi.advanceTimersByTimeAsync(WRITE_AHEAD_MS);
      if (rnd(2) === 0) await kept.render();
      const first = firsts.get(step);
      if (first) expect(lines(await kept.render()), `step ${step}`).toEqual(lines(await first.render()));
    }
    kept.stop();
    for (const m of firsts.values()) m.stop();
  });
});
