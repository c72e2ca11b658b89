import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RotatingFile } from '../../../src/log/rotating-file.js';
import { ConnectionLog } from '../../../src/log/connection-log.js';
import { asctime, toJsonl, toTsv, type ConnectionRecord } from '../../../src/log/record.js';

const dir = () => mkdtempSync(join(tmpdir(), 'netprof-log-'));

function record(over: Partial<ConnectionRecord> = {}): ConnectionRecord {
  return {
    job: '1', pid: 13554, owner: 'rohit', iface: 'virbr0', family: 4,
    localAddr: '192.168.122.17', localPort: 47030, remoteAddr: '192.168.122.1', remotePort: 5001,
    openedBy: 'local', start: Date.UTC(2014, 3, 26, 16, 17, 20), end: Date.UTC(2014, 3, 26, 16, 17, 28, 909),
    reason: 'fin', counts: { bytesIn: 8540123456, packetsIn: 10, bytesOut: 1200, packetsOut: 12 },
    partial: false, attribution: 'ebpf-connect', ...over,
  };
}

describe('record formats', () => {
  it("writes the original's two lines: IN remote→local, then OUT local→remote, exact bytes", () => {
    const text = toTsv(record());
    const lines = text.split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toBe('');
    const t = asctime(record().end);
    expect(t).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$/);
    expect(lines[0]).toBe(`${t} \t 1\t13554\t192.168.122.1\t5001\t192.168.122.17\t47030\tIN\t8540123456`);
    expect(lines[1]).toBe(`${t} \t 1\t13554\t192.168.122.17\t47030\t192.168.122.1\t5001\tOUT\t1200`);
  });

  it('uses local time with milliseconds after a comma', () => {
    const d = new Date(2014, 3, 26, 16, 17, 28, 9);
    expect(asctime(d.getTime())).toBe('2014-04-26 16:17:28,009');
  });

  it('marks an uncounted connection instead of inventing a number', () => {
    const lines = toTsv(record({ counts: undefined })).trim().split('\n');
    expect(lines.map((l) => l.split('\t').at(-1))).toEqual(['-', '-']);
    const j = JSON.parse(toJsonl(record({ counts: undefined, note: 'not counted: RULES_THRESHOLD reached' })));
    expect(j).toMatchObject({ counted: false, bytes_in: null, bytes_out: null, note: 'not counted: RULES_THRESHOLD reached' });
  });

  it('writes one JSON object per connection with both directions, times, reason and attribution', () => {
    const text = toJsonl(record({ family: 6, localAddr: 'fd00::1', remoteAddr: 'fd00::2', partial: true, reason: 'job-end' }));
    expect(text.endsWith('\n')).toBe(true);
    expect(text.trim().includes('\n')).toBe(false);
    expect(JSON.parse(text)).toEqual({
      time: '2014-04-26T16:17:28.909Z', job: '1', pid: 13554, owner: 'rohit', interface: 'virbr0', family: 'ipv6',
      local_addr: 'fd00::1', local_port: 47030, remote_addr: 'fd00::2', remote_port: 5001, opened_by: 'local',
      start: '2014-04-26T16:17:20.000Z', end: '2014-04-26T16:17:28.909Z', end_reason: 'job-end', counted: true,
      bytes_in: 8540123456, packets_in: 10, bytes_out: 1200, packets_out: 12, partial: true, attribution: 'ebpf-connect',
    });
  });

  it('keeps a job id with quotes, spaces and unicode intact in JSON', () => {
    const job = 'schedd#12 "x" ünï';
    expect(JSON.parse(toJsonl(record({ job }))).job).toBe(job);
  });
});

describe('rolling like RotatingFileHandler', () => {
  it('rolls before a write would reach MAX_BYTES, newest backup .1, at most BACKUP_COUNT', () => {
    const d = dir();
    const path = join(d, 'eth0.log');
    const f = new RotatingFile(path, 100, 3);
    const unit = (i: number) => `record ${String(i).padStart(3, '0')} ${'x'.repeat(20)}\n`; // 32 bytes
    for (let i = 0; i < 20; i++) f.write(unit(i));
    f.close();
    expect(readdirSync(d).sort()).toEqual(['eth0.log', 'eth0.log.1', 'eth0.log.2', 'eth0.log.3']);
    // 3 units = 96 bytes fit; a 4th would reach 128 ≥ 100, so each file holds 3.
    for (const name of readdirSync(d)) expect(statSync(join(d, name)).size).toBeLessThan(100);
    const all = ['eth0.log.3', 'eth0.log.2', 'eth0.log.1', 'eth0.log'].map((n) => readFileSync(join(d, n), 'utf8')).join('');
    const ids = all.trim().split('\n').map((l) => Number(l.split(' ')[1]));
    // The newest records, in order, none split: 20 written, the oldest rolled away in whole files.
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => 20 - ids.length + i));
    expect(ids.at(-1)).toBe(19);
    expect(readFileSync(join(d, 'eth0.log'), 'utf8')).toBe(unit(18) + unit(19));
  });

  it('never splits a unit: an oversized one goes whole into a file of its own', () => {
    const d = dir();
    const path = join(d, 'lo.log');
    const f = new RotatingFile(path, 50, 2);
    f.write('small\n');
    const big = `${'y'.repeat(120)}\n`;
    f.write(big);
    f.write('after\n');
    f.close();
    expect(readFileSync(`${path}.2`, 'utf8')).toBe('small\n');
    expect(readFileSync(`${path}.1`, 'utf8')).toBe(big);
    expect(readFileSync(path, 'utf8')).toBe('after\n');
  });

  it('never rolls when MAX_BYTES or BACKUP_COUNT is 0, and continues an existing file', () => {
    const d = dir();
    for (const [max, count] of [[0, 5], [10, 0]] as const) {
      const path = join(d, `m${max}c${count}.log`);
      const f = new RotatingFile(path, max, count);
      for (let i = 0; i < 10; i++) f.write('0123456789\n');
      f.close();
      expect(existsSync(`${path}.1`)).toBe(false);
      expect(statSync(path).size).toBe(110);
    }
    const path = join(d, 'm0c5.log');
    const again = new RotatingFile(path, 150, 1);
    again.write('0123456789\n'); // 110 + 11 < 150: appended
    again.write('0123456789\n'.repeat(3)); // would reach 154: rolls first
    again.close();
    expect(statSync(`${path}.1`).size).toBe(121);
    expect(statSync(path).size).toBe(33);
  });

  it('keeps a connection’s IN and OUT lines in the same file', () => {
    const d = dir();
    const log = new ConnectionLog({ dir: d, format: 'tsv', maxBytes: 400, backupCount: 50 });
    log.open();
    for (let i = 0; i < 40; i++) log.write(record({ pid: i }));
    log.close();
    const files = readdirSync(d);
    expect(files.length).toBeGreaterThan(5);
    let lines = 0;
    for (const name of files) {
      const text = readFileSync(join(d, name), 'utf8').trim().split('\n');
      expect(text.length % 2).toBe(0);
      for (let i = 0; i < text.length; i += 2) {
        expect(text[i]).toContain('\tIN\t');
        expect(text[i + 1]).toContain('\tOUT\t');
        expect(text[i]!.split('\t')[2]).toBe(text[i + 1]!.split('\t')[2]);
      }
      lines += text.length;
    }
    expect(lines).toBe(80);
  });
});

describe('records of one turn written together', () => {
  it('rolls a batch at the same records as one write each would', () => {
    const units = Array.from({ length: 300 }, (_, i) => `${'x'.repeat(i % 37)} record ${i}\n`);
    const [a, b] = [dir(), dir()];
    const one = new RotatingFile(join(a, 'eth0.log'), 700, 4);
    for (const u of units) one.write(u);
    one.close();
    const all = new RotatingFile(join(b, 'eth0.log'), 700, 4);
    expect(all.writeAll(units.slice(0, 150))).toBe(150);
    expect(all.writeAll(units.slice(150))).toBe(150);
    all.close();
    for (const name of ['eth0.log', 'eth0.log.1', 'eth0.log.2', 'eth0.log.3', 'eth0.log.4']) {
      expect(readFileSync(join(b, name), 'utf8')).toBe(readFileSync(join(a, name), 'utf8'));
    }
    expect(existsSync(join(b, 'eth0.log.5'))).toBe(false);
  });

  it('writes 20,000 records queued in one turn, in order, before the next turn and at close', async () => {
    const d = dir();
    const log = new ConnectionLog({ dir: d, format: 'jsonl', maxBytes: 0, backupCount: 0 });
    log.open();
    for (let i = 0; i < 20_000; i++) log.write(record({ iface: i % 3 ? 'eth0' : 'lo', pid: i }));
    await new Promise((r) => setImmediate(r));
    expect(log.stats).toMatchObject({ written: 20_000, buffered: 0 });
    log.write(record({ iface: 'eth0', pid: 20_000 }));
    log.close(); // what is still queued is written
    const pids = (f: string) => readFileSync(join(d, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l).pid as number);
    const eth0 = pids('eth0.log');
    expect(eth0).toEqual([...Array.from({ length: 20_000 }, (_, i) => i).filter((i) => i % 3), 20_000]);
    expect(pids('lo.log')).toEqual(Array.from({ length: 20_000 }, (_, i) => i).filter((i) => i % 3 === 0));
  });
});

describe('connection log faults', () => {
  it('a roll that fails mid-batch: what went before it is written once, the rest after the retry', () => {
    const d = dir();
    const path = join(d, 'eth0.log');
    const f = new RotatingFile(path, 40, 1);
    const units = Array.from({ length: 6 }, (_, i) => `unit ${i} ${'x'.repeat(4)}\n`); // 13 bytes each: 3 fit
    mkdirSync(`${path}.1`);
    writeFileSync(join(`${path}.1`, 'keep'), ''); // a non-empty directory where the backup goes
    let written = -1;
    try {
      f.writeAll(units);
    } catch (e) {
      written = (e as { written?: number }).written ?? -1;
    }
    expect(written).toBe(3);
    expect(readFileSync(path, 'utf8')).toBe(units.slice(0, 3).join(''));
    rmSync(`${path}.1`, { recursive: true });
    expect(f.writeAll(units.slice(written))).toBe(3);
    f.close();
    expect(readFileSync(`${path}.1`, 'utf8')).toBe(units.slice(0, 3).join(''));
    expect(readFileSync(path, 'utf8')).toBe(units.slice(3).join(''));
  });

  it('a healthy log writes a turn of more records than LOG_BUFFER, losing none', async () => {
    const d = dir();
    const log = new ConnectionLog({ dir: d, format: 'tsv', maxBytes: 0, backupCount: 0, bufferLimit: 1000 });
    log.open();
    for (let i = 0; i < 5000; i++) log.write(record({ iface: 'eth0', pid: i }));
    await new Promise((r) => setImmediate(r));
    expect(log.stats).toMatchObject({ written: 5000, overflowed: 0, buffered: 0 });
    log.close();
    expect(readFileSync(join(d, 'eth0.log'), 'utf8').trim().split('\n')).toHaveLength(10_000); // IN and OUT lines
  });

  it('a record that cannot be serialised is reported and dropped, the others written', async () => {
    const d = dir();
    const log = new ConnectionLog({ dir: d, format: 'jsonl', maxBytes: 0, backupCount: 0 });
    log.open();
    log.write(record({ iface: 'eth0', pid: 1 }));
    log.write(record({ iface: 'eth0', pid: 2, end: Number.NaN }));
    log.write(record({ iface: 'eth0', pid: 3 }));
    await new Promise((r) => setImmediate(r));
    expect(log.stats).toMatchObject({ written: 2, unwritable: 1, buffered: 0 });
    log.close();
    expect(readFileSync(join(d, 'eth0.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).pid)).toEqual([1, 3]);
  });

  it('holds records while the log is unwritable and writes them, in order, when it is writable again', async () => {
    const d = dir();
    const logDir = join(d, 'logs');
    const log = new ConnectionLog({ dir: logDir, format: 'jsonl', maxBytes: 0, backupCount: 0, retryMs: 50 });
    log.open();
    // Root ignores permission bits, so make the file unwritable another way: a directory in its place.
    mkdirSync(join(logDir, 'eth0.log'));
    log.write(record({ iface: 'eth0', pid: 1 }));
    log.write(record({ iface: 'eth0', pid: 2 }));
    await new Promise((r) => setImmediate(r)); // written at the end of the turn
    expect(log.stats.buffered).toBe(2);
    expect(log.stats.writeErrors).toBeGreaterThan(0);
    rmdirSync(join(logDir, 'eth0.log'));
    await new Promise((r) => setTimeout(r, 200));
    expect(log.stats.buffered).toBe(0);
    const pids = readFileSync(join(logDir, 'eth0.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).pid);
    expect(pids).toEqual([1, 2]);
    log.close();
  });

  it('counts what overflows a full buffer instead of losing it silently', () => {
    const d = dir();
    const log = new ConnectionLog({ dir: d, format: 'tsv', maxBytes: 0, backupCount: 0, bufferLimit: 3, retryMs: 10_000 });
    log.open();
    mkdirSync(join(d, 'eth0.log'));
    for (let i = 0; i < 5; i++) log.write(record({ iface: 'eth0' }));
    expect(log.stats).toMatchObject({ buffered: 3, overflowed: 2 });
    log.close();
  });
});
