import type { Health, JobDetail, JobSummary } from '../profiler/control.js';
import { EXIT, callJson, describe, jobPath, type Endpoint } from './client.js';
import { bytes, endpointText, rate, table, when } from './format.js';

/**
 * `netprof top`: jobs, their processes and open connections, with rates (bytes/s between two
 * successive polls of the /v1 API), redrawn every N seconds with plain ANSI. `--once` samples
 * twice (a second apart, or --interval if shorter) and prints one frame.
 */

interface Sample {
  at: number;
  health: Health;
  jobs: JobDetail[];
}

export async function sample(e: Endpoint): Promise<Sample> {
  const health = await callJson<Health>(e, 'GET', '/v1/health');
  const { jobs } = await callJson<{ jobs: JobSummary[] }>(e, 'GET', '/v1/jobs');
  const details: JobDetail[] = [];
  for (const j of jobs) {
    // A job may end between the list and its detail: skip it.
    const d = await callJson<JobDetail>(e, 'GET', jobPath(j.job)).catch(() => undefined);
    if (d) details.push(d);
  }
  // Rates are per second of the daemon's reads: its figures may be older than this call.
  const readAt = Date.parse(details.find((d) => d.counts_read_at)?.counts_read_at ?? '');
  return { at: Number.isNaN(readAt) ? Date.now() : readAt, health, jobs: details };
}

type Rates = Map<string, { in: number; out: number }>;

/** Per job, process and connection: bytes/s from the previous sample; absent when unknown. */
export function rates(prev: Sample | undefined, cur: Sample): Rates {
  const r: Rates = new Map();
  if (!prev) return r;
  const dt = (cur.at - prev.at) / 1000;
  if (dt <= 0) return r;
  const before = new Map<string, { bytes_in: number; bytes_out: number }>();
  for (const j of prev.jobs) {
    before.set(`j|${j.job}`, j);
    for (const p of j.process_list) {
      before.set(`p|${j.job}|${p.pid}`, p);
      for (const c of p.connections) before.set(`c|${j.job}|${p.pid}|${c.local_addr}|${c.local_port}|${c.remote_addr}|${c.remote_port}`, c);
    }
  }
  const put = (key: string, now: { bytes_in: number; bytes_out: number }) => {
    const b = before.get(key);
    if (b) r.set(key, { in: Math.max(0, now.bytes_in - b.bytes_in) / dt, out: Math.max(0, now.bytes_out - b.bytes_out) / dt });
  };
  for (const j of cur.jobs) {
    put(`j|${j.job}`, j);
    for (const p of j.process_list) {
      put(`p|${j.job}|${p.pid}`, p);
      for (const c of p.connections) put(`c|${j.job}|${p.pid}|${c.local_addr}|${c.local_port}|${c.remote_addr}|${c.remote_port}`, c);
    }
  }
  return r;
}

export function frame(e: Endpoint, prev: Sample | undefined, cur: Sample, width = 200): string {
  const r = rates(prev, cur);
  const h = cur.health;
  const head =
    `netprof top — ${describe(e)} — ${h.status}, up ${h.uptime_s} s, ${h.engine} on ${h.interfaces.join(',')} — ${when(new Date(cur.at).toISOString())}\n` +
    h.problems.map((p) => `problem: ${p}\n`).join('') +
    `${cur.jobs.length} jobs, ${cur.jobs.reduce((n, j) => n + j.processes, 0)} processes, ${cur.jobs.reduce((n, j) => n + j.open_connections, 0)} open connections\n\n`;
  const rows: string[][] = [];
  for (const j of cur.jobs) {
    const jr = r.get(`j|${j.job}`);
    rows.push([`job ${j.job}`, '', `${j.open_connections} open, ${j.closed_connections} closed`, bytes(j.bytes_in), bytes(j.bytes_out), rate(jr?.in), rate(jr?.out)]);
    for (const p of j.process_list) {
      const pr = r.get(`p|${j.job}|${p.pid}`);
      rows.push([`  pid ${p.pid}`, p.owner, `${p.connections.length} open${p.alive ? '' : ', exited'}`, bytes(p.bytes_in), bytes(p.bytes_out), rate(pr?.in), rate(pr?.out)]);
      for (const c of p.connections) {
        const cr = r.get(`c|${j.job}|${p.pid}|${c.local_addr}|${c.local_port}|${c.remote_addr}|${c.remote_port}`);
        rows.push([
          `    ${endpointText(c.local_addr, c.local_port)}`,
          c.state,
          `→ ${endpointText(c.remote_addr, c.remote_port)}${c.counted ? '' : ' (not counted)'}`,
          bytes(c.bytes_in),
          bytes(c.bytes_out),
          rate(cr?.in),
          rate(cr?.out),
        ]);
      }
    }
  }
  const body = rows.length ? table(['WHAT', 'WHO/STATE', 'CONNECTIONS', 'IN', 'OUT', 'IN/s', 'OUT/s'], rows, [false, false, false, true, true, true, true]) : 'no jobs profiled\n';
  return head + body
    .split('\n')
    .map((l) => (l.length > width ? l.slice(0, width - 1) + '…' : l))
    .join('\n');
}

export async function top(e: Endpoint, o: { once?: boolean; interval?: string }): Promise<number> {
  const interval = (o.interval === undefined ? 2 : Number(o.interval)) * 1000;
  if (!Number.isFinite(interval) || interval <= 0) throw new Error('--interval must be a positive number of seconds');
  const width = process.stdout.columns ?? 200;
  if (o.once) {
    const first = await sample(e);
    await new Promise((r) => setTimeout(r, Math.min(interval, 1000)));
    process.stdout.write(frame(e, first, await sample(e), width));
    return EXIT.OK;
  }
  const tty = process.stdout.isTTY;
  let prev: Sample | undefined;
  let stop = false;
  const done = () => (stop = true);
  process.once('SIGINT', done);
  process.once('SIGTERM', done);
  if (tty) process.stdout.write('\x1b[?25l'); // hide the cursor
  try {
    while (!stop) {
      const cur = await sample(e);
      // Home, draw, clear what the last frame left below.
      process.stdout.write((tty ? '\x1b[H\x1b[2J' : '') + frame(e, prev, cur, process.stdout.columns ?? width) + (tty ? '' : '\n'));
      prev = cur;
      const until = Date.now() + interval;
      while (!stop && Date.now() < until) await new Promise((r) => setTimeout(r, Math.min(100, until - Date.now())));
    }
  } finally {
    if (tty) process.stdout.write('\x1b[?25h\n');
  }
  return EXIT.OK;
}
