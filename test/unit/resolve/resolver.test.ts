import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ConnKey } from '../../../src/connection.js';
import type { SocketEvent } from '../../../src/resolve/events.js';
import { Lineage } from '../../../src/resolve/lineage.js';
import { Resolver, type Attribution } from '../../../src/resolve/resolver.js';

const fixture = (name: string) => readFileSync(new URL(`../../fixtures/resolve/${name}`, import.meta.url), 'utf8');

class FakeTracer extends EventEmitter {
  live = true;
}

let root = '';
let netns = 0;
async function proc(pid: number, ppid: number, sockets: number[]) {
  await mkdir(join(root, String(pid), 'fd'), { recursive: true });
  await writeFile(join(root, String(pid), 'stat'), `${pid} (p) S ${ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n`);
  for (const [i, inode] of sockets.entries()) await symlink(`socket:[${inode}]`, join(root, String(pid), 'fd', String(i + 3)));
}

beforeEach(async () => {
  // The recorded tables (see procfs.test.ts) as namespace of pid 7; pid 100 is registered.
  root = await mkdtemp(join(tmpdir(), 'np-resolver-'));
  await mkdir(join(root, '7', 'net'), { recursive: true });
  await mkdir(join(root, '7', 'ns'), { recursive: true });
  await writeFile(join(root, '7', 'net', 'tcp'), fixture('tcp.txt'));
  await writeFile(join(root, '7', 'net', 'tcp6'), fixture('tcp6.txt'));
  await writeFile(join(root, '7', 'ns', 'net'), '');
  netns = (await stat(join(root, '7', 'ns', 'net'))).ino;
  await proc(100, 1, [31895, 31897]); // the 8080 listener, and a client socket 33742 → 9090
  await proc(101, 100, [31903]); // client 49646 → 8080
  await proc(102, 100, [31897]); // inherited the 33742 socket
});
afterEach(async () => rm(root, { recursive: true, force: true }));

async function setup(opts: { live?: boolean } = {}) {
  const lineage = new Lineage({ procRoot: root });
  await lineage.addRoot(100);
  const tracer = new FakeTracer();
  tracer.live = opts.live ?? true;
  const resolver = await Resolver.create({ lineage, tracer, netPid: 7, procRoot: root, waitMs: 100 });
  return { lineage, tracer, resolver };
}

const key = (localAddr: string, localPort: number, remoteAddr: string, remotePort: number): ConnKey => ({
  family: localAddr.includes(':') ? 6 : 4, localAddr, localPort, remoteAddr, remotePort,
});

function event(kind: 'connect' | 'accept', pid: number, k: ConnKey, ns = process.hrtime.bigint()): SocketEvent {
  return { kind, ns, pid, family: k.family, localAddr: k.localAddr, localPort: k.localPort, remoteAddr: k.remoteAddr, remotePort: k.remotePort, netns };
}

describe('resolver', () => {
  it("never gives a connection the pid of an earlier connection's event on the same tuple", async () => {
    const { tracer, resolver } = await setup();
    const k = key('10.0.0.1', 40001, '10.0.0.2', 5002);
    // Another process used this tuple one second ago; the new connection's own event comes late.
    tracer.emit('event', event('connect', 555, k, process.hrtime.bigint() - 1_000_000_000n));
    const answer = resolver.resolve(k, { opener: 'local', time: Date.now() });
    setTimeout(() => tracer.emit('event', event('connect', 101, k)), 20);
    expect(await answer).toMatchObject({ pid: 101, source: 'ebpf-connect' });
    resolver.close();
  });

  it('waits for an eBPF event read after the SYN was captured', async () => {
    const { tracer, resolver } = await setup();
    const k = key('10.0.0.1', 40000, '10.0.0.2', 80);
    const pending = resolver.resolve(k, { opener: 'local', time: Date.now() });
    setTimeout(() => tracer.emit('event', event('connect', 4321, k)), 20);
    expect(await pending).toEqual({ pid: 4321, source: 'ebpf-connect', exact: true });
    // Already kept: answered at once, also in another spelling of the same address.
    expect(await resolver.resolve({ ...k, localAddr: '::ffff:10.0.0.1' }, { opener: 'local', time: Date.now() })).toMatchObject({ pid: 4321 });
    expect(resolver.stats().bySource['ebpf-connect']).toBe(2);
  });

  it('finds an event written before the loop was busy for longer than the wait, read only after it', async () => {
    const { tracer, resolver } = await setup();
    const k = key('10.0.0.1', 40002, '10.0.0.2', 80);
    // A real pipe, as bpftrace's stdout is: its data is read in the loop's poll phase, after the
    // timers that a long busy stretch made due.
    const dir = await mkdtemp(join(tmpdir(), 'np-pipe-'));
    const server = createServer((s) => s.on('data', () => tracer.emit('event', event('connect', 4242, k))));
    await new Promise<void>((res) => server.listen(join(dir, 's'), res));
    const writer = connect(join(dir, 's'));
    await new Promise((res) => writer.once('connect', res));
    const answer = resolver.resolve(k, { opener: 'local', time: Date.now() });
    writer.write('C\n');
    const until = Date.now() + 300; // busy for three times waitMs
    while (Date.now() < until) { /* the daemon parsing a big table, say */ }
    expect(await answer).toEqual({ pid: 4242, source: 'ebpf-connect', exact: true });
    writer.destroy();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("waits past waitMs while the tracer's output is still behind the connection's time", async () => {
    const { tracer, resolver } = await setup();
    const k = key('10.0.0.1', 40003, '10.0.0.2', 80);
    const other = key('10.0.0.1', 1, '10.0.0.2', 80);
    const t0 = process.hrtime.bigint();
    // Events keep coming, all from before the connection opened (bpftrace catching up).
    const flow = setInterval(() => tracer.emit('event', event('connect', 1, other, t0 - 50_000_000n)), 10);
    setTimeout(() => tracer.emit('event', event('connect', 4343, k)), 250);
    const a = await resolver.resolve(k, { opener: 'local', time: Date.now() });
    clearInterval(flow);
    expect(a).toEqual({ pid: 4343, source: 'ebpf-connect', exact: true });
  });

  it('ignores events of other namespaces and of an earlier connection with the same tuple', async () => {
    const { tracer, resolver } = await setup();
    const k = key('127.0.0.1', 49644, '127.0.0.1', 8080);
    tracer.emit('event', { ...event('connect', 1, k), netns: netns + 1 });
    tracer.emit('event', event('connect', 2, k, process.hrtime.bigint() - 60_000_000_000n));
    const a = await resolver.resolve(k, { opener: 'local', time: Date.now() });
    expect(a.pid).toBeUndefined();
    expect(resolver.stats().eventsOtherNetns).toBe(1);
  });

  it('falls back to the fd tables of tracked processes', async () => {
    const { resolver } = await setup({ live: false });
    expect(await resolver.resolve(key('127.0.0.1', 49646, '127.0.0.1', 8080), { opener: 'local', time: Date.now() })).toEqual({
      pid: 101, source: 'procfs', exact: true,
    });
    // Held by a parent and its child: the parent, inexact.
    expect(await resolver.resolve(key('127.0.0.1', 33742, '127.0.0.1', 9090), { opener: 'local', time: Date.now() })).toEqual({
      pid: 100, source: 'procfs', exact: false,
    });
    expect(await resolver.owners(key('127.0.0.1', 33742, '127.0.0.1', 9090))).toEqual(expect.arrayContaining([100, 102]));
  });

  it('attributes a connection not accepted yet to the listener, then refines it on accept', async () => {
    const { tracer, resolver } = await setup();
    const k = key('127.0.0.1', 8080, '127.0.0.1', 49646);
    const a = await resolver.resolve(k, { opener: 'remote', time: Date.now() });
    expect(a).toEqual({ pid: 100, source: 'listener', exact: false });
    const refined = new Promise<[ConnKey, Attribution, Attribution]>((res) => resolver.once('refined', (...args) => res(args as never)));
    tracer.emit('event', event('accept', 100, k));
    const [rk, now, before] = await refined;
    expect(rk).toEqual(k);
    expect(now).toEqual({ pid: 100, source: 'ebpf-accept', exact: true });
    expect(before.source).toBe('listener');
  });

  it('reports closed and foreign sockets as unresolved with a reason, never a guess', async () => {
    const { resolver } = await setup();
    const tw = await resolver.resolve(key('127.0.0.1', 8080, '127.0.0.1', 49644), { opener: 'local', time: Date.now() });
    expect(tw).toMatchObject({ pid: undefined, source: 'unresolved' });
    expect(tw.pid === undefined && tw.reason).toMatch(/TIME_WAIT.*no eBPF event within 100 ms/);
    const gone = await resolver.resolve(key('127.0.0.1', 1, '127.0.0.1', 2), { opener: 'local', time: Date.now() });
    expect(gone.pid === undefined && gone.reason).toMatch(/not in the tcp table/);
    // The v6 listener (inode 31896) is nobody's we track.
    const foreign = await resolver.resolve(key('127.0.0.1', 9090, '127.0.0.1', 5555), { opener: 'remote', time: Date.now() });
    expect(foreign.pid === undefined && foreign.reason).toMatch(/held by no tracked process/);
    expect(resolver.stats()).toMatchObject({ bySource: { unresolved: 3 }, unresolved: { closed: 2, 'not-owned': 1 } });
  });

  it('says so when unrelated processes share a socket', async () => {
    await proc(200, 1, [31903]);
    const { lineage, resolver } = await setup({ live: false });
    await lineage.addRoot(200);
    const a = await resolver.resolve(key('127.0.0.1', 49646, '127.0.0.1', 8080), { opener: 'local', time: Date.now() });
    expect(a.pid === undefined && a.reason).toMatch(/shared by unrelated processes/);
  });
});
