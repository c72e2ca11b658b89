import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeHexAddr, descendantsOf, parseStat, parseTcpTable, readTcpTables, SocketIndex, TCP_STATE } from '../../../src/resolve/procfs.js';

const fixture = (name: string) => readFileSync(new URL(`../../fixtures/resolve/${name}`, import.meta.url), 'utf8');

describe('/proc/net/tcp parser (recorded samples)', () => {
  it('reads IPv4 rows: listener, established, TIME_WAIT and not-yet-accepted', () => {
    const rows = parseTcpTable(fixture('tcp.txt'));
    expect(rows).toHaveLength(5);
    expect(rows[0]).toEqual({
      family: 4, localAddr: '127.0.0.1', localPort: 8080, remoteAddr: '0.0.0.0', remotePort: 0, state: TCP_STATE.LISTEN, uid: 0, inode: 31895,
    });
    expect(rows[1]).toMatchObject({ localPort: 8080, remotePort: 49644, state: TCP_STATE.TIME_WAIT, inode: 0 });
    expect(rows[2]).toMatchObject({ localPort: 33742, remotePort: 9090, state: TCP_STATE.ESTABLISHED, inode: 31897 });
    // Accepted by nobody yet: established, but no file refers to it.
    expect(rows[3]).toMatchObject({ localPort: 8080, remotePort: 49646, state: TCP_STATE.ESTABLISHED, inode: 0 });
  });

  it('reads IPv6 rows and folds v4-mapped ones to IPv4', () => {
    const rows = parseTcpTable(fixture('tcp6.txt'));
    expect(rows[0]).toMatchObject({ family: 6, localAddr: '::', localPort: 9090, state: TCP_STATE.LISTEN, inode: 31896 });
    expect(rows[1]).toMatchObject({ family: 4, localAddr: '127.0.0.1', localPort: 9090, remoteAddr: '127.0.0.1', remotePort: 33742, inode: 31898 });
    expect(rows[3]).toMatchObject({ family: 6, localAddr: '::1', localPort: 59184, remoteAddr: '::1', remotePort: 9090, inode: 31899 });
  });

  it('gets the word order of non-loopback addresses right', () => {
    const v6 = parseTcpTable(fixture('tcp6-global.txt'));
    expect(v6[2]).toMatchObject({ localAddr: 'fd00:12:34::abcd:5678', localPort: 50001, remoteAddr: 'fd00:12:34::abcd:5678', remotePort: 443, inode: 31379 });
    const v4 = parseTcpTable(fixture('tcp-global.txt'));
    expect(v4[2]).toMatchObject({ localAddr: '10.20.30.40', localPort: 40000, remoteAddr: '10.20.30.40', remotePort: 22, inode: 31382 });
    expect(decodeHexAddr('0100007F')).toBe('127.0.0.1');
  });

  it('rejects malformed endpoints instead of guessing', () => {
    expect(() => parseTcpTable('hdr\n   0: 0100007G:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1 2\n')).toThrow(/bad \/proc\/net endpoint/);
  });
});

describe('/proc/PID/stat parser', () => {
  it('counts fields from the last parenthesis: comm may hold spaces and parentheses', () => {
    const st = parseStat(fixture('stat-odd-comm.txt'));
    expect(st).toEqual({ pid: 11386, comm: 'we ird) (x', state: 'S', ppid: 1, startTicks: 99075 });
  });

  it('throws on truncated lines', () => {
    expect(() => parseStat('12 (x) S 1')).toThrow(/bad \/proc stat/);
  });
});

describe('fake /proc', () => {
  let root = '';
  afterEach(async () => root && rm(root, { recursive: true, force: true }));

  async function proc(pid: number, ppid: number, sockets: Record<string, number | string>, start = 100) {
    await mkdir(join(root, String(pid), 'fd'), { recursive: true });
    await writeFile(join(root, String(pid), 'stat'), `${pid} (p ${pid}) S ${ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ${start} 0 0\n`);
    for (const [fd, target] of Object.entries(sockets)) {
      await symlink(typeof target === 'number' ? `socket:[${target}]` : target, join(root, String(pid), 'fd', fd));
    }
  }

  it('indexes socket inodes of the given pids only, and notices fd reuse', async () => {
    root = await mkdtemp(join(tmpdir(), 'np-proc-'));
    await proc(10, 1, { '3': 111, '4': '/dev/null' });
    await proc(11, 10, { '3': 222 });
    await proc(99, 1, { '5': 333 });
    const index = new SocketIndex(root);
    const tracked = new Set([10, 11]);
    expect(await index.owners(111, tracked)).toEqual([10]);
    expect(await index.owners(222, tracked)).toEqual([11]);
    expect(await index.owners(333, tracked)).toEqual([]); // not ours: never read
    const scans = index.scans;
    expect(await index.owners(111, tracked)).toEqual([10]); // cached, verified by one readlink
    expect(index.scans).toBe(scans);
    // fd 3 of pid 10 now refers to another socket: the cache must not answer for the old inode.
    await rm(join(root, '10', 'fd', '3'));
    await symlink('socket:[444]', join(root, '10', 'fd', '3'));
    expect(await index.owners(111, tracked)).toEqual([]);
    expect(await index.owners(444, tracked)).toEqual([10]);
  });

  it('finds descendants by PPid in one pass when children files are missing', async () => {
    root = await mkdtemp(join(tmpdir(), 'np-proc-'));
    await proc(10, 1, {});
    await proc(11, 10, {});
    await proc(12, 11, {});
    await proc(13, 1, {});
    const found = await descendantsOf(new Set([10]), root);
    expect(found.map((s) => s.pid).sort()).toEqual([11, 12]);
  });

  it('reads both tables of a namespace through /proc/PID/net', async () => {
    root = await mkdtemp(join(tmpdir(), 'np-proc-'));
    await mkdir(join(root, '7', 'net'), { recursive: true });
    await writeFile(join(root, '7', 'net', 'tcp'), fixture('tcp.txt'));
    await writeFile(join(root, '7', 'net', 'tcp6'), fixture('tcp6.txt'));
    expect(await readTcpTables(7, root)).toHaveLength(9);
  });
});
