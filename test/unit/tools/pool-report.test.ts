import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toJsonl, toTsv, type ConnectionRecord } from '../../../src/log/record.js';
import { report } from '../../../src/tools/report.js';
import type { PoolReport } from '../../../src/tools/pool-report.js';

// Two nodes' logs, written by the daemon's own formatters (one tsv, one jsonl, one rolled),
// read as a pool: per-job totals across nodes and the job → remote-host matrix.

function rec(over: Partial<ConnectionRecord>): ConnectionRecord {
  return {
    job: '1', pid: 100, owner: 'root', iface: 'eth0', family: 4, localAddr: '10.0.0.1', localPort: 40000, remoteAddr: '192.0.2.1', remotePort: 80,
    openedBy: 'local', end: Date.now(), reason: 'fin', counts: { bytesIn: 1000, bytesOut: 100, packetsIn: 5, packetsOut: 4 }, partial: false, attribution: 'ebpf-connect', ...over,
  };
}
const c = (bytesIn: number, bytesOut: number) => ({ bytesIn, bytesOut, packetsIn: 1, packetsOut: 1 });

async function run(paths: string[], o: Parameters<typeof report>[1]) {
  let out = '';
  await report(paths, o, (s) => (out += s));
  return out;
}

describe('netprof report --nodes', () => {
  const root = mkdtempSync(join(tmpdir(), 'netprof-pool-'));
  const wn1 = join(root, 'wn1', 'log');
  const wn2 = join(root, 'wn2');
  mkdirSync(wn1, { recursive: true });
  mkdirSync(wn2, { recursive: true });
  // wn1 (tsv, rolled): job A to two hosts, job S to one. wn2 (jsonl): job S to the same host and another, job B.
  writeFileSync(join(wn1, 'eth0.log.1'), toTsv(rec({ job: 'A', counts: c(5000, 50) })));
  writeFileSync(join(wn1, 'eth0.log'), toTsv(rec({ job: 'A', remoteAddr: '192.0.2.2', counts: c(700, 70) })) + toTsv(rec({ job: 'S', counts: c(300, 30) })));
  writeFileSync(join(wn2, 'eth0.log'), [rec({ job: 'S', counts: c(900, 90) }), rec({ job: 'S', remoteAddr: '198.51.100.7', counts: c(4000, 0) }), rec({ job: 'B', counts: undefined })].map(toJsonl).join(''));

  it('JSON: per-job totals across nodes with each node\'s part, and the job → host matrix', async () => {
    const r = JSON.parse(await run([wn1, wn2], { nodes: true, json: true })) as PoolReport;
    expect(r.format).toBe('netprof-pool-report/1');
    expect(r.nodes.map((n) => [n.node, n.records, n.files.length])).toEqual([['wn1', 3, 2], ['wn2', 3, 1]]);
    expect(r.jobs).toEqual([
      { job: 'A', connections: 2, uncounted: 0, bytes_in: 5700, bytes_out: 120, nodes: [{ node: 'wn1', connections: 2, uncounted: 0, bytes_in: 5700, bytes_out: 120 }] },
      { job: 'B', connections: 1, uncounted: 1, bytes_in: 0, bytes_out: 0, nodes: [{ node: 'wn2', connections: 1, uncounted: 1, bytes_in: 0, bytes_out: 0 }] },
      { job: 'S', connections: 3, uncounted: 0, bytes_in: 5200, bytes_out: 120, nodes: [{ node: 'wn1', connections: 1, uncounted: 0, bytes_in: 300, bytes_out: 30 }, { node: 'wn2', connections: 2, uncounted: 0, bytes_in: 4900, bytes_out: 90 }] },
    ]);
    expect(r.matrix.filter((m) => m.job === 'S')).toEqual([
      { job: 'S', remote_host: '198.51.100.7', connections: 1, uncounted: 0, bytes_in: 4000, bytes_out: 0, nodes: 1 },
      { job: 'S', remote_host: '192.0.2.1', connections: 2, uncounted: 0, bytes_in: 1200, bytes_out: 120, nodes: 2 },
    ]);
  });

  it('CSV: one line per job, or the matrix one line per (job, host); NAME=PATH names a node; bad input is refused clearly', async () => {
    const jobs = (await run([`east=${wn1}`, wn2], { nodes: true, csv: true })).split('\n');
    expect(jobs[0]).toBe('job,connections,uncounted,bytes_in,bytes_out,node_count,nodes');
    expect(jobs[3]).toBe('S,3,0,5200,120,2,east:330 wn2:4990');
    const m = (await run([wn1, wn2], { nodes: true, csv: true, matrix: true })).trim().split('\n');
    expect(m[0]).toBe('job,remote_host,connections,uncounted,bytes_in,bytes_out,nodes');
    expect(m).toContain('A,192.0.2.1,1,0,5000,50,1');
    expect(m).toContain('S,192.0.2.1,2,0,1200,120,2');
    expect(m).toHaveLength(1 + 5);
    const table = await run([wn1, wn2], { nodes: true });
    expect(table).toMatch(/^S +3 +5\.08 KiB +120 B +wn1 330 B, wn2 4\.87 KiB$/m);
    await expect(run([wn1, wn1], { nodes: true })).rejects.toThrow(/node wn1 given twice/);
    // A node's directory with its LOG_DIR inside as log/ is read too; an empty one is refused.
    expect(await run([join(root, 'wn1'), wn2], { nodes: true, csv: true })).toBe(jobs.join('\n').replaceAll('east:', 'wn1:'));
    mkdirSync(join(root, 'empty'));
    await expect(run([join(root, 'empty')], { nodes: true })).rejects.toThrow(/empty: no \*\.log files in/);
    await expect(run([wn1], { matrix: true })).rejects.toThrow(/--matrix is a CSV/);
    await expect(run([join(root, 'nope', 'x.log')], { nodes: true })).rejects.toThrow(/nope: .*x\.log: no such file/);
  });
});
