import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { LogParser, expandLogPaths, readLog, type LoggedConnection } from './logfile.js';
import { UsageError } from './client.js';

/**
 * `netprof report --nodes`: many worker nodes' logs, one argument per node (its LOG_DIR, or a
 * log file or base name), read into per-job totals across the pool and the job → remote-host
 * matrix a scheduler can place jobs by. Format "netprof-pool-report/1" (docs/tools.md).
 */

export const POOL_FORMAT = 'netprof-pool-report/1';

interface Traffic {
  connections: number;
  uncounted: number;
  bytes_in: number;
  bytes_out: number;
}

export interface PoolJob extends Traffic {
  job: string;
  /** Per node the job had connections on, sorted by node name. */
  nodes: ({ node: string } & Traffic)[];
}

export interface MatrixCell extends Traffic {
  job: string;
  remote_host: string;
  /** Nodes on which the job talked to this host. */
  nodes: number;
}

export interface PoolReport {
  format: typeof POOL_FORMAT;
  nodes: { node: string; files: string[]; records: number; skipped_lines: number }[];
  jobs: PoolJob[];
  matrix: MatrixCell[];
}

/** `NAME=PATH`, or PATH named after its directory (a LOG_DIR called `log` after its parent). */
export function nodeArg(arg: string): { node: string; path: string } {
  const m = /^([A-Za-z0-9._-]+)=(.+)$/.exec(arg);
  if (m && !existsSync(arg)) return { node: m[1]!, path: m[2]! };
  const abs = resolve(arg);
  const dir = existsSync(abs) && statSync(abs).isDirectory() ? abs : dirname(abs);
  const name = basename(dir) === 'log' ? basename(dirname(dir)) : basename(dir);
  return { node: name, path: arg };
}

const zero = (): Traffic => ({ connections: 0, uncounted: 0, bytes_in: 0, bytes_out: 0 });
function add(t: Traffic, c: LoggedConnection): void {
  t.connections += 1;
  if (c.bytesIn === undefined && c.bytesOut === undefined) t.uncounted += 1;
  t.bytes_in += c.bytesIn ?? 0;
  t.bytes_out += c.bytesOut ?? 0;
}
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export async function poolReport(args: readonly string[], only?: ReadonlySet<string>): Promise<PoolReport> {
  if (args.length === 0) throw new UsageError('--nodes: give one log directory or file per node');
  const nodes = args.map(nodeArg);
  const seen = new Set<string>();
  for (const n of nodes) {
    if (seen.has(n.node)) throw new UsageError(`--nodes: node ${n.node} given twice (name them: NAME=PATH)`);
    seen.add(n.node);
  }
  const jobs = new Map<string, Map<string, Traffic>>();
  const cells = new Map<string, Map<string, Traffic & { nodes: Set<string> }>>();
  const out: PoolReport['nodes'] = [];
  for (const { node, path } of nodes) {
    let records = 0;
    const parser = new LogParser((c) => {
      if (only && !only.has(c.job)) return;
      records += 1;
      let perNode = jobs.get(c.job);
      if (!perNode) jobs.set(c.job, (perNode = new Map()));
      const t = perNode.get(node) ?? zero();
      add(t, c);
      perNode.set(node, t);
      let hosts = cells.get(c.job);
      if (!hosts) cells.set(c.job, (hosts = new Map()));
      const h = hosts.get(c.remoteAddr) ?? { ...zero(), nodes: new Set<string>() };
      add(h, c);
      h.nodes.add(node);
      hosts.set(c.remoteAddr, h);
    });
    // A node's directory may hold its LOG_DIR as `log/` (as copied from the node).
    let files = expandLogPaths([path]);
    if (files.length === 0 && existsSync(join(path, 'log'))) files = expandLogPaths([join(path, 'log')]);
    if (files.length === 0) throw new UsageError(`${node}: no *.log files in ${path}`);
    for (const f of files) {
      try {
        await readLog(f, parser);
      } catch (e) {
        throw new UsageError(`${node}: ${f}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
      }
    }
    out.push({ node, files, records, skipped_lines: parser.skipped });
  }
  const jobList = [...jobs.keys()].sort(byName).map((job) => {
    const perNode = [...jobs.get(job)!].sort(([a], [b]) => byName(a, b)).map(([node, t]) => ({ node, ...t }));
    const total = zero();
    for (const t of perNode) {
      total.connections += t.connections;
      total.uncounted += t.uncounted;
      total.bytes_in += t.bytes_in;
      total.bytes_out += t.bytes_out;
    }
    return { job, ...total, nodes: perNode };
  });
  const matrix: MatrixCell[] = [];
  for (const job of [...cells.keys()].sort(byName)) {
    const hosts = [...cells.get(job)!].sort(([a, x], [b, y]) => y.bytes_in + y.bytes_out - (x.bytes_in + x.bytes_out) || byName(a, b));
    for (const [host, h] of hosts) matrix.push({ job, remote_host: host, connections: h.connections, uncounted: h.uncounted, bytes_in: h.bytes_in, bytes_out: h.bytes_out, nodes: h.nodes.size });
  }
  return { format: POOL_FORMAT, nodes: out, jobs: jobList, matrix };
}

const csvField = (v: string | number): string => {
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};
const csv = (rows: (string | number)[][]) => rows.map((r) => r.map(csvField).join(',')).join('\n') + '\n';

/** Per job across the pool: one line per job, its nodes as `name:bytes` separated by spaces. */
export function poolJobsCsv(r: PoolReport): string {
  return csv([
    ['job', 'connections', 'uncounted', 'bytes_in', 'bytes_out', 'node_count', 'nodes'],
    ...r.jobs.map((j) => [j.job, j.connections, j.uncounted, j.bytes_in, j.bytes_out, j.nodes.length, j.nodes.map((n) => `${n.node}:${n.bytes_in + n.bytes_out}`).join(' ')]),
  ]);
}

/** The job → remote-host matrix, long form: one line per (job, host) pair. */
export function matrixCsv(r: PoolReport): string {
  return csv([['job', 'remote_host', 'connections', 'uncounted', 'bytes_in', 'bytes_out', 'nodes'], ...r.matrix.map((m) => [m.job, m.remote_host, m.connections, m.uncounted, m.bytes_in, m.bytes_out, m.nodes])]);
}
