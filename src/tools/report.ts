import { LogParser, expandLogPaths, readLog, type LoggedConnection } from './logfile.js';
import { UsageError } from './client.js';
import { bytes, table, when } from './format.js';
import { matrixCsv, poolJobsCsv, poolReport } from './pool-report.js';

/**
 * `netprof report`: per job, from connection logs — bytes each way, connections, the remote
 * hosts and their share, first and last activity, and the busiest minute.
 */

export interface HostShare {
  host: string;
  bytes: number;
  connections: number;
  /** Fraction of the job's bytes (in + out), 0..1. */
  share: number;
}

export interface JobReport {
  job: string;
  connections: number;
  uncounted: number;
  bytes_in: number;
  bytes_out: number;
  processes: number;
  /** ISO times. First: the earliest first packet (jsonl) or record; last: the latest record. */
  first: string | null;
  last: string | null;
  /** The minute (by record time) whose records carry the most bytes. */
  busiest_minute: string | null;
  busiest_minute_bytes: number;
  hosts: HostShare[];
}

interface Acc {
  connections: number;
  uncounted: number;
  bytesIn: number;
  bytesOut: number;
  pids: Set<number>;
  first: number;
  last: number;
  hosts: Map<string, { bytes: number; connections: number }>;
  minutes: Map<number, number>;
}

export class ReportBuilder {
  private readonly jobs = new Map<string, Acc>();
  records = 0;

  add(c: LoggedConnection): void {
    this.records += 1;
    let a = this.jobs.get(c.job);
    if (!a) {
      a = { connections: 0, uncounted: 0, bytesIn: 0, bytesOut: 0, pids: new Set(), first: Infinity, last: -Infinity, hosts: new Map(), minutes: new Map() };
      this.jobs.set(c.job, a);
    }
    a.connections += 1;
    if (c.bytesIn === undefined && c.bytesOut === undefined) a.uncounted += 1;
    const b = (c.bytesIn ?? 0) + (c.bytesOut ?? 0);
    a.bytesIn += c.bytesIn ?? 0;
    a.bytesOut += c.bytesOut ?? 0;
    a.pids.add(c.pid);
    if (Number.isFinite(c.time)) {
      const begin = c.start ?? c.time;
      if (begin < a.first) a.first = begin;
      if (c.time > a.last) a.last = c.time;
      const minute = Math.floor(c.time / 60_000);
      a.minutes.set(minute, (a.minutes.get(minute) ?? 0) + b);
    }
    const h = a.hosts.get(c.remoteAddr) ?? { bytes: 0, connections: 0 };
    h.bytes += b;
    h.connections += 1;
    a.hosts.set(c.remoteAddr, h);
  }

  result(): JobReport[] {
    const iso = (ms: number) => (Number.isFinite(ms) ? new Date(ms).toISOString() : null);
    return [...this.jobs.entries()]
      .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
      .map(([job, a]) => {
        const total = a.bytesIn + a.bytesOut;
        let busiest: number | undefined;
        let busiestBytes = -1;
        for (const [m, b] of a.minutes) if (b > busiestBytes || (b === busiestBytes && m < busiest!)) [busiest, busiestBytes] = [m, b];
        return {
          job,
          connections: a.connections,
          uncounted: a.uncounted,
          bytes_in: a.bytesIn,
          bytes_out: a.bytesOut,
          processes: a.pids.size,
          first: iso(a.first),
          last: iso(a.last),
          busiest_minute: busiest === undefined ? null : iso(busiest * 60_000),
          busiest_minute_bytes: Math.max(busiestBytes, 0),
          hosts: [...a.hosts.entries()]
            .map(([host, h]) => ({ host, bytes: h.bytes, connections: h.connections, share: total ? h.bytes / total : 0 }))
            .sort((x, y) => y.bytes - x.bytes || y.connections - x.connections || (x.host < y.host ? -1 : 1)),
        };
      });
  }
}

export interface ReportOptions {
  csv?: boolean;
  json?: boolean;
  job?: string[];
  /** Each path is one node's logs: totals across the pool, and the job → host matrix. */
  nodes?: boolean;
  /** With --csv: the job → remote-host matrix instead of one line per job. */
  matrix?: boolean;
}

/** Reads the logs and writes the report; returns how many files were read. */
export async function report(paths: readonly string[], o: ReportOptions, out: (s: string) => void = (s) => process.stdout.write(s)): Promise<{ files: string[]; skipped: number }> {
  if (o.csv && o.json) throw new UsageError('choose one of --csv and --json');
  if (o.matrix && !o.csv) throw new UsageError('--matrix is a CSV (--csv); --json always has the matrix with --nodes');
  if (o.nodes) {
    const r = await poolReport(paths, o.job?.length ? new Set(o.job) : undefined);
    if (o.json) out(JSON.stringify(r, null, 2) + '\n');
    else if (o.csv) out(o.matrix ? matrixCsv(r) : poolJobsCsv(r));
    else out(r.jobs.length ? table(['JOB', 'CONNS', 'IN', 'OUT', 'NODES'], r.jobs.map((j) => [j.job, String(j.connections), bytes(j.bytes_in), bytes(j.bytes_out), j.nodes.map((n) => `${n.node} ${bytes(n.bytes_in + n.bytes_out)}`).join(', ')]), [false, true, true, true]) : 'no connections in the logs\n');
    return { files: r.nodes.flatMap((n) => n.files), skipped: r.nodes.reduce((a, n) => a + n.skipped_lines, 0) };
  }
  if (o.matrix) throw new UsageError('--matrix needs --nodes');
  if (paths.length === 0 && process.stdin.isTTY) throw new UsageError('which logs? give files, base names or LOG_DIR (or pipe a log in)');
  const files = expandLogPaths(paths.length ? paths : ['-']);
  const builder = new ReportBuilder();
  const only = o.job?.length ? new Set(o.job) : undefined;
  const parser = new LogParser((c) => (!only || only.has(c.job) ? builder.add(c) : undefined));
  for (const f of files) {
    try {
      await readLog(f, parser);
    } catch (e) {
      throw new UsageError(`${f}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  }
  const jobs = builder.result();
  if (o.json) out(JSON.stringify({ files, records: builder.records, skipped_lines: parser.skipped, jobs }, null, 2) + '\n');
  else if (o.csv) out(toCsv(jobs));
  else out(toTable(jobs));
  return { files, skipped: parser.skipped };
}

const csvField = (v: string | number | null): string => {
  const s = v === null ? '' : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export function toCsv(jobs: JobReport[]): string {
  const head = ['job', 'connections', 'uncounted', 'bytes_in', 'bytes_out', 'processes', 'first', 'last', 'busiest_minute', 'busiest_minute_bytes', 'remote_hosts', 'top_host', 'top_host_share'];
  const rows = jobs.map((j) => [
    j.job,
    j.connections,
    j.uncounted,
    j.bytes_in,
    j.bytes_out,
    j.processes,
    j.first,
    j.last,
    j.busiest_minute,
    j.busiest_minute_bytes,
    j.hosts.length,
    j.hosts[0]?.host ?? null,
    j.hosts[0] ? j.hosts[0].share.toFixed(4) : null,
  ]);
  return [head, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}

export function toTable(jobs: JobReport[]): string {
  if (jobs.length === 0) return 'no connections in the log\n';
  const rows = jobs.map((j) => [
    j.job,
    String(j.connections),
    bytes(j.bytes_in),
    bytes(j.bytes_out),
    `${j.hosts.length}: ${j.hosts
      .slice(0, 3)
      .map((h) => `${h.host} ${Math.round(h.share * 100)}%`)
      .join(', ')}${j.hosts.length > 3 ? ', …' : ''}`,
    when(j.first),
    when(j.last),
    j.busiest_minute ? `${when(j.busiest_minute).slice(0, 16)} ${bytes(j.busiest_minute_bytes)}` : '-',
  ]);
  return table(['JOB', 'CONNS', 'IN', 'OUT', 'REMOTE HOSTS (SHARE)', 'FIRST', 'LAST', 'BUSIEST MINUTE'], rows, [false, true, true, true]);
}
