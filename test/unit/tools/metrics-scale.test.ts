import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { DaemonControl, DaemonObserver, JobTallies } from '../../../src/profiler/control.js';
import { createApiServer } from '../../../src/api/server.js';
import { call } from '../../support/http.js';
import { promtoolCheckMetrics } from '../../support/promtool.js';

// GET /metrics at the scale of issue 14 (10,000 jobs of one process each), through the real API
// server: every job's values are right, job ids with quotes, backslashes and newlines are
// escaped, promtool accepts the text, and /v1/health keeps answering while the scrape runs.

const JOBS = 10_000;
/** Job ids as a scheduler might send them, some of them hostile to the text format. */
const jobId = (i: number) => (i % 1000 === 1 ? `odd"id\\${i}\nend` : `job${i % 1000}.${i}`);
const escaped = (id: string) => id.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

let observer: DaemonObserver = {};
const jobs: JobTallies[] = [];
for (let i = 0; i < JOBS; i++) {
  // Job i: one process (pid 100000+i) with i % 3 open connections of 10·i bytes in each.
  const open = i % 3;
  const t = { bytes_in: 10 * i * open, bytes_out: open, packets_in: 2 * open, packets_out: open };
  jobs.push({ job: jobId(i), open_connections: open, closed_connections: 0, ...t, processes: [{ pid: 100_000 + i, open_connections: open, ...t }] });
}
const control = {
  observe: (o: DaemonObserver) => ((observer = o), () => undefined),
  refreshCounts: async () => undefined,
  eachTally: (visit: (t: JobTallies) => void) => jobs.forEach((j) => visit({ ...j, processes: j.processes.map((p) => ({ ...p })) })),
  health: () => ({ status: 'ok', uptime_s: 5, engine: 'nftables', interfaces: ['eth0'], problems: [], late_grace: { configured_s: 30, shortened_to_s: null, unclaimed_held: 0, unclaimed_max: 10, released_early: 0 } }),
  stats: () => ({ jobs: JOBS, processes: JOBS, connections_tracked: 0, counters_installed: 0 }),
} as unknown as DaemonControl;

let server: Server;
let port: number;
beforeAll(async () => {
  server = createApiServer(control);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
  // Job 7 had a connection closed already: its process's record, and the profiler's job total.
  observer.record?.({ job: jobId(7), pid: 100_007, owner: 'root', iface: 'eth0', family: 4, localAddr: '10.0.0.1', localPort: 6000, remoteAddr: '192.0.2.9', remotePort: 443, openedBy: 'local', end: 0, reason: 'fin', counts: { bytesIn: 5000, bytesOut: 50, packetsIn: 5, packetsOut: 4 }, partial: false, late: false, attribution: 'x' });
  Object.assign(jobs[7]!, { closed_connections: 1, bytes_in: jobs[7]!.bytes_in + 5000, bytes_out: jobs[7]!.bytes_out + 50, packets_in: jobs[7]!.packets_in + 5, packets_out: jobs[7]!.packets_out + 4 });
});
afterAll(() => void server.close());

describe('GET /metrics at 10,000 jobs', () => {
  it('every job and process with its values, ids escaped, accepted by promtool; /v1/health answers during the scrape', async () => {
    let done = false;
    const scrape = call(port, 'GET', '/metrics').finally(() => (done = true));
    let healthDuring = 0;
    while (!done) {
      const h = await call(port, 'GET', '/v1/health');
      expect(h.status).toBe(200);
      if (!done) healthDuring += 1;
    }
    const r = await scrape;
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    // The scrape gave the event loop away while it wrote: health answered in between.
    expect(healthDuring).toBeGreaterThanOrEqual(2);

    const text = r.body;
    const samples = new Map<string, number>();
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const sp = line.lastIndexOf(' ');
      samples.set(line.slice(0, sp), Number(line.slice(sp + 1)));
    }
    const series = (name: string) => [...samples.keys()].filter((k) => k.startsWith(`${name}{`));
    expect(series('netprof_job_bytes_total')).toHaveLength(2 * JOBS);
    expect(series('netprof_process_bytes_total')).toHaveLength(2 * JOBS);
    for (let i = 0; i < JOBS; i += 97) {
      const id = escaped(jobId(i));
      const open = i % 3;
      expect(samples.get(`netprof_job_bytes_total{job_id="${id}",direction="in"}`), id).toBe(10 * i * open + (i === 7 ? 5000 : 0));
      expect(samples.get(`netprof_job_open_connections{job_id="${id}"}`)).toBe(open);
      expect(samples.get(`netprof_process_bytes_total{job_id="${id}",pid="${100_000 + i}",direction="in"}`)).toBe(10 * i * open);
    }
    // The closed connection: in its process's series and its job's.
    expect(samples.get(`netprof_process_bytes_total{job_id="job7.7",pid="100007",direction="in"}`)).toBe(10 * 7 + 5000);
    expect(samples.get(`netprof_process_connections_closed_total{job_id="job7.7",pid="100007"}`)).toBe(1);
    expect(samples.get(`netprof_job_connections_opened_total{job_id="job7.7"}`)).toBe(2);
    // A hostile id stays one label value: the line parses, the newline is escaped.
    expect(text).toContain('netprof_job_processes{job_id="odd\\"id\\\\1001\\nend"} 1\n');
    expect(samples.get('netprof_jobs')).toBe(JOBS);

    const check = await promtoolCheckMetrics(text);
    expect(check.code, check.out).toBe(0);
  }, 60_000);
});
