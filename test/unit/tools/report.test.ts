import { describe, expect, it } from 'vitest';
import { createWriteStream, mkdtempSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toJsonl, toTsv, type ConnectionRecord } from '../../../src/log/record.js';
import { LogParser, expandLogPaths, parseAsctime, readLog, type LoggedConnection } from '../../../src/tools/logfile.js';
import { report, type JobReport } from '../../../src/tools/report.js';

// Logs written by the daemon's own formatters (src/log/record.ts), read back by the report.

const T0 = new Date(2026, 10, 23, 22, 17, 0, 0).getTime(); // local time, as tsv is written

function rec(over: Partial<ConnectionRecord>): ConnectionRecord {
  return {
    job: '1', pid: 100, owner: 'root', iface: 'eth0', family: 4, localAddr: '10.0.0.1', localPort: 40000, remoteAddr: '10.0.0.2', remotePort: 80,
    openedBy: 'local', end: T0, reason: 'fin', counts: { bytesIn: 1000, bytesOut: 100, packetsIn: 5, packetsOut: 4 }, partial: false, attribution: 'ebpf-connect', ...over,
  };
}

async function run(paths: string[], opts: { csv?: boolean; json?: boolean; job?: string[] } = {}) {
  let out = '';
  const r = await report(paths, opts, (s) => (out += s));
  return { ...r, out };
}

const dir = () => mkdtempSync(join(tmpdir(), 'netprof-report-'));

describe('reading logs back', () => {
  it('parses the time as written (local, milliseconds)', () => {
    expect(parseAsctime('2026-11-23 22:17:28,909')).toBe(new Date(2026, 10, 23, 22, 17, 28, 909).getTime());
  });

  it('reads both formats mixed line by line: IN+OUT pairs, jsonl objects, uncounted "-", junk skipped', () => {
    const got: LoggedConnection[] = [];
    const p = new LogParser((c) => got.push(c));
    const lines = [
      ...toTsv(rec({})).trim().split('\n'),
      'garbage line',
      toJsonl(rec({ job: 'j2', remoteAddr: 'fd00::2', localAddr: 'fd00::1', family: 6, start: T0 - 5000 })).trim(),
      ...toTsv(rec({ counts: undefined, localPort: 40001 })).trim().split('\n'),
    ];
    for (const l of lines) p.line(l);
    p.flush();
    expect(p.skipped).toBe(1);
    expect(got).toHaveLength(3);
    expect(got[0]).toMatchObject({ job: '1', pid: 100, localAddr: '10.0.0.1', localPort: 40000, remoteAddr: '10.0.0.2', remotePort: 80, bytesIn: 1000, bytesOut: 100, time: T0 });
    expect(got[1]).toMatchObject({ job: 'j2', remoteAddr: 'fd00::2', bytesIn: 1000, packetsOut: 4, start: T0 - 5000, reason: 'fin' });
    expect(got[2]).toMatchObject({ localPort: 40001, bytesIn: undefined, bytesOut: undefined });
  });

  it('finds rolled siblings oldest first, for a base name, a directory, and a base whose newest file is gone', () => {
    const d = dir();
    for (const n of ['eth0.log', 'eth0.log.1', 'eth0.log.2', 'eth0.log.10', 'lo.log', 'notes.txt']) writeFileSync(join(d, n), '');
    expect(expandLogPaths([join(d, 'eth0.log')])).toEqual(['eth0.log.10', 'eth0.log.2', 'eth0.log.1', 'eth0.log'].map((n) => join(d, n)));
    expect(expandLogPaths([d])).toEqual(['eth0.log.10', 'eth0.log.2', 'eth0.log.1', 'eth0.log', 'lo.log'].map((n) => join(d, n)));
    expect(expandLogPaths([join(d, 'eth0.log.2')])).toEqual([join(d, 'eth0.log.2')]);
    const e = dir();
    writeFileSync(join(e, 'x.log.1'), '');
    expect(expandLogPaths([join(e, 'x.log')])).toEqual([join(e, 'x.log.1')]);
  });
});

describe('netprof report', () => {
  it('per job: bytes, connections, hosts with shares, first/last activity and the busiest minute, in table, CSV and JSON', async () => {
    const d = dir();
    // Rolled: x.log.1 is older than x.log.
    writeFileSync(join(d, 'x.log.1'), toTsv(rec({ end: T0 })) + toTsv(rec({ end: T0 + 1000, remoteAddr: '10.0.0.3', counts: { bytesIn: 3000, bytesOut: 0, packetsIn: 1, packetsOut: 1 } })));
    writeFileSync(join(d, 'x.log'), toJsonl(rec({ end: T0 + 120_000, start: T0 - 60_000, counts: { bytesIn: 50, bytesOut: 50, packetsIn: 1, packetsOut: 1 } })) + toTsv(rec({ job: 'other,"job"', end: T0 + 5000 })));
    const j = await run([join(d, 'x.log')], { json: true });
    const parsed = JSON.parse(j.out) as { files: string[]; jobs: JobReport[] };
    expect(parsed.files).toEqual([join(d, 'x.log.1'), join(d, 'x.log')]);
    const one = parsed.jobs.find((x) => x.job === '1')!;
    expect(one).toMatchObject({
      connections: 3, bytes_in: 4050, bytes_out: 150, processes: 1,
      first: new Date(T0 - 60_000).toISOString(), last: new Date(T0 + 120_000).toISOString(),
      busiest_minute: new Date(T0).toISOString(), busiest_minute_bytes: 4100,
    });
    expect(one.hosts.map((h) => [h.host, h.connections, h.share.toFixed(3)])).toEqual([['10.0.0.3', 1, (3000 / 4200).toFixed(3)], ['10.0.0.2', 2, (1200 / 4200).toFixed(3)]]);
    const csv = (await run([d], { csv: true })).out.split('\n');
    expect(csv[0]).toBe('job,connections,uncounted,bytes_in,bytes_out,processes,first,last,busiest_minute,busiest_minute_bytes,remote_hosts,top_host,top_host_share');
    expect(csv[1]).toMatch(/^1,3,0,4050,150,1,/);
    expect(csv[2]).toMatch(/^"other,""job""",1,0,1000,100,/);
    const table = (await run([d])).out;
    console.log(table);
    expect(table.split('\n')[0]).toMatch(/^JOB +CONNS +IN +OUT +REMOTE HOSTS \(SHARE\) +FIRST +LAST +BUSIEST MINUTE$/);
    expect(table).toMatch(/^1 +3 +3\.96 KiB +150 B +2: 10\.0\.0\.3 71%, 10\.0\.0\.2 29%/m);
    expect((await run([d], { json: true, job: ['other,"job"'] })).out).not.toContain('"job": "1"');
  });

  it('reads a 100 MB log (both formats) in one streaming pass and gets every byte right', async () => {
    const d = dir();
    const file = join(d, 'big.log');
    const w = createWriteStream(file);
    const jobs = 50;
    const expected = new Map<string, { bytesIn: number; conns: number }>();
    let size = 0;
    let i = 0;
    while (size < 100 * 1024 * 1024) {
      const job = `job-${i % jobs}`;
      const bytesIn = (i * 7919) % 1_000_000;
      const r = rec({ job, pid: 1000 + (i % 7), localPort: 30000 + (i % 30000), remoteAddr: `10.1.${i % 4}.${i % 200}`, end: T0 + i * 10, counts: { bytesIn, bytesOut: i % 1000, packetsIn: 1, packetsOut: 1 } });
      const line = i % 3 === 0 ? toJsonl(r) : toTsv(r);
      size += line.length;
      if (!w.write(line)) await new Promise<void>((res) => w.once('drain', () => res()));
      const e = expected.get(job) ?? { bytesIn: 0, conns: 0 };
      e.bytesIn += bytesIn;
      e.conns += 1;
      expected.set(job, e);
      i += 1;
    }
    await new Promise((res) => w.end(res));
    const t = performance.now();
    const r = await run([file], { json: true });
    const ms = performance.now() - t;
    console.log(`report: ${(statSync(file).size / 1048576).toFixed(0)} MB, ${i} connections, ${jobs} jobs in ${ms.toFixed(0)} ms`);
    const got = JSON.parse(r.out) as { records: number; skipped_lines: number; jobs: JobReport[] };
    expect(got.records).toBe(i);
    expect(got.skipped_lines).toBe(0);
    expect(got.jobs).toHaveLength(jobs);
    for (const j of got.jobs) expect([j.bytes_in, j.connections]).toEqual([expected.get(j.job)!.bytesIn, expected.get(j.job)!.conns]);
  }, 120_000);

  it('names a missing file', async () => {
    await expect(run(['/nonexistent/netprof.log'])).rejects.toThrow(/\/nonexistent\/netprof\.log: no such file/);
  });
});

// readLog from a stream, for stdin.
it('reads a log piped in', async () => {
  const { Readable } = await import('node:stream');
  const got: LoggedConnection[] = [];
  await readLog(Readable.from([toTsv(rec({}))]), new LogParser((c) => got.push(c)));
  expect(got).toHaveLength(1);
});
