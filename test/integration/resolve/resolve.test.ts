import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnKey } from '../../../src/connection.js';
import { Lineage } from '../../../src/resolve/lineage.js';
import { Resolver, type Attribution } from '../../../src/resolve/resolver.js';
import { Tracer } from '../../../src/resolve/tracer.js';
import { createPair, exited, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';

/**
 * Real traffic between two private namespaces, with one bpftrace for the whole file. The test
 * process lives in the host namespace, so the resolver serves the node namespace through a pid
 * inside it (netPid): /proc/PID/net/tcp is that namespace's table and its inode filters events.
 */

// Remote: answers every connection with a tiny HTTP response and closes (curl and python both read it).
const HTTP_SERVER = `
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('::', int(sys.argv[1]))); s.listen(1024)
while True:
    c, _ = s.accept()
    try: c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok')
    except OSError: pass
    c.close()
`;

// Connects N times in quick succession; prints "pid local-port" for each (also a refused one).
const CLIENT = `
import os, socket, sys, time
host, port, n, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
time.sleep(delay)
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
for i in range(n):
    s = socket.socket(fam)
    try:
        s.connect((host, port))
        print(os.getpid(), s.getsockname()[1], 'ok', flush=True)
        while s.recv(4096): pass
    except ConnectionRefusedError:
        print(os.getpid(), s.getsockname()[1], 'refused', flush=True)
    s.close()
`;

// Starts a non-blocking connect that no SYN-ACK answers (nobody has the address: the neighbour
// lookup fails for seconds), prints "pid local-port", and waits.
const UNANSWERED = `
import os, socket, sys, time
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam); s.setblocking(False)
try: s.connect((sys.argv[1], 80))
except BlockingIOError: pass
print(os.getpid(), s.getsockname()[1], flush=True)
time.sleep(10)
`;

// A registered server: accepts, prints "pid peer-port", holds the connection until the peer closes.
const ACCEPT_SERVER = `
import os, socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, peer = s.accept()
    print(os.getpid(), peer[1], flush=True)
    c.recv(1); c.close()
`;

// Listens at once, accepts only on SIGUSR1: until then the connection waits in the accept queue.
const SLOW_ACCEPTER = `
import signal, socket, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
signal.sigwait([signal.SIGUSR1])
c, _ = s.accept(); time.sleep(30)
`;

// Forking server: the parent accepts, a child serves (holds it 1.5 s, then sends its pid).
const FORKING_SERVER = `
import os, socketserver, sys, time
class H(socketserver.BaseRequestHandler):
    def handle(self):
        time.sleep(1.5); self.request.sendall(str(os.getpid()).encode())
socketserver.ForkingTCPServer.allow_reuse_address = True
socketserver.ForkingTCPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
`;

let pair: Pair;
let holder: ChildProcess; // a process inside the node namespace: names it for the resolver
const tracer = new Tracer();
const lineage = new Lineage();
let resolver: Resolver;
const children: ChildProcess[] = [];

function lines(child: ChildProcess): AsyncIterableIterator<string> {
  return createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
}
async function firstLine(child: ChildProcess): Promise<string> {
  const it = lines(child);
  const r = await it.next();
  if (r.done) throw new Error('process printed nothing');
  return r.value;
}
/** Fork and connect lines come from different CPUs' buffers: allow the fork line a moment. */
async function until(cond: () => boolean, ms = 1_000): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
}
function spawnIn(ns: string, script: string, args: (string | number)[]): ChildProcess {
  const c = nsSpawn(ns, 'python3', ['-u', '-c', script, ...args.map(String)]);
  children.push(c);
  return c;
}
const out = (addr: string, lport: number, raddr: string, rport: number): ConnKey => ({
  family: addr.includes(':') ? 6 : 4, localAddr: addr, localPort: lport, remoteAddr: raddr, remotePort: rport,
});

beforeAll(async () => {
  pair = await createPair('resolve');
  holder = nsSpawn(pair.node.ns, 'sleep', ['600']);
  children.push(holder);
  const t0 = performance.now();
  const status = await tracer.start();
  console.log(`tracer: ${status.state} after ${Math.round(performance.now() - t0)} ms`, status.reason ?? '');
  expect(status.state).toBe('live');
  lineage.attach(tracer);
  resolver = await Resolver.create({ lineage, tracer, netPid: holder.pid! });
  const server = spawnIn(pair.remote.ns, HTTP_SERVER, [5000]);
  void server;
  await waitForListen(pair.remote.ns, 5000);
}, 60_000);

afterAll(async () => {
  resolver?.close();
  await tracer.stop();
  for (const c of children) c.kill('SIGKILL');
  await pair?.destroy();
  console.log('tracer stats', JSON.stringify(tracer.stats()));
  console.log('resolver stats', JSON.stringify(resolver?.stats()));
});

describe('resolve with eBPF (real traffic in namespaces)', () => {
  it('attributes an outgoing connection to the connecting process, IPv4 and IPv6', async () => {
    for (const remote of [pair.remote.v4, pair.remote.v6]) {
      const client = spawnIn(pair.node.ns, CLIENT, [remote, 5000, 1, 0]);
      const [pid, port] = (await firstLine(client)).split(' ').map(Number);
      const local = remote.includes(':') ? pair.node.v6 : pair.node.v4;
      const a = await resolver.resolve(out(local, port!, remote, 5000), { opener: 'local', time: Date.now() });
      expect(a).toEqual({ pid, source: 'ebpf-connect', exact: true });
      await exited(client);
    }
  });

  it("drops the remote namespace's accept events in the reader: only served namespaces' socket events arrive", async () => {
    const seen: number[] = [];
    const onEvent = (ev: { kind: string; netns?: number }) => {
      if ((ev.kind === 'connect' || ev.kind === 'accept') && ev.netns !== undefined) seen.push(ev.netns);
    };
    tracer.on('event', onEvent);
    const before = tracer.stats().otherNamespaces;
    const client = spawnIn(pair.node.ns, CLIENT, [pair.remote.v4, 5000, 3, 0]);
    await exited(client);
    await until(() => tracer.stats().otherNamespaces >= before + 3, 3_000);
    tracer.off('event', onEvent);
    // The remote server's three accepts were dropped; the client's three connects came through.
    expect(tracer.stats().otherNamespaces - before).toBeGreaterThanOrEqual(3);
    expect(new Set(seen).size).toBe(1); // the node namespace's only
    expect(resolver.stats().eventsOtherNetns).toBe(0);
  });

  it('attributes a refused connect (SYN then RST) to the connector', async () => {
    const client = spawnIn(pair.node.ns, CLIENT, [pair.remote.v4, 5999, 1, 0]);
    const [pid, port, outcome] = (await firstLine(client)).split(' ');
    expect(outcome).toBe('refused');
    const a = await resolver.resolve(out(pair.node.v4, Number(port), pair.remote.v4, 5999), { opener: 'local', time: Date.now() });
    expect(a).toEqual({ pid: Number(pid), source: 'ebpf-connect', exact: true });
  });

  it('attributes a connect still waiting for its SYN-ACK, from the connect call itself, IPv4 and IPv6', async () => {
    // A peer whose backlog is full answers seconds late (SYN retransmission): the event must not
    // wait for the handshake, or the resolver's wait runs out first.
    for (const [local, nobody] of [[pair.node.v4, pair.node.v4.replace(/\.1$/, '.99')], [pair.node.v6, pair.node.v6.replace(/::1$/, '::99')]] as const) {
      const client = spawnIn(pair.node.ns, UNANSWERED, [nobody]);
      const [pid, port] = (await firstLine(client)).split(' ').map(Number);
      const a = await resolver.resolve(out(local, port!, nobody, 80), { opener: 'local', time: Date.now() });
      expect(a).toEqual({ pid, source: 'ebpf-connect', exact: true });
      client.kill('SIGKILL');
    }
  });

  it('attributes an incoming connection to the registered server that accepts it', async () => {
    const server = spawnIn(pair.node.ns, ACCEPT_SERVER, [pair.node.v4, 7000]);
    await waitForListen(pair.node.ns, 7000);
    expect(await lineage.addRoot(server.pid!)).toBe(true);
    const client = spawnIn(pair.remote.ns, CLIENT, [pair.node.v4, 7000, 1, 0]);
    const [pid, peerPort] = (await firstLine(server)).split(' ').map(Number);
    const a = await resolver.resolve(out(pair.node.v4, 7000, pair.remote.v4, peerPort!), { opener: 'remote', time: Date.now() });
    expect(a).toEqual({ pid: server.pid, source: 'ebpf-accept', exact: true });
    expect(pid).toBe(server.pid);
    client.kill();
  });

  it('on loopback attributes each socket of the pair to its own process', async () => {
    const server = spawnIn(pair.node.ns, ACCEPT_SERVER, ['::1', 7200]);
    await waitForListen(pair.node.ns, 7200);
    const client = spawnIn(pair.node.ns, CLIENT, ['::1', 7200, 1, 0]);
    const [clientPid, clientPort] = (await firstLine(client)).split(' ').map(Number);
    await firstLine(server);
    const t = Date.now();
    expect(await resolver.resolve(out('::1', clientPort!, '::1', 7200), { opener: 'local', time: t })).toEqual({
      pid: clientPid, source: 'ebpf-connect', exact: true,
    });
    expect(await resolver.resolve(out('::1', 7200, '::1', clientPort!), { opener: 'remote', time: t })).toEqual({
      pid: server.pid, source: 'ebpf-accept', exact: true,
    });
  });

  it('forking server: the accepting parent is attributed; lineage and the fd index then find the serving child', async () => {
    const server = spawnIn(pair.node.ns, FORKING_SERVER, [pair.node.v4, 7100]);
    await waitForListen(pair.node.ns, 7100);
    expect(await lineage.addRoot(server.pid!)).toBe(true);
    const client = nsSpawn(pair.remote.ns, 'python3', ['-u', '-c', `
import socket
s = socket.create_connection(('${pair.node.v4}', 7100)); print(s.getsockname()[1], flush=True)
print(s.recv(100).decode(), flush=True)`]);
    children.push(client);
    const it = lines(client);
    const port = Number((await it.next()).value);
    const key = out(pair.node.v4, 7100, pair.remote.v4, port);
    expect(await resolver.resolve(key, { opener: 'remote', time: Date.now() })).toEqual({
      pid: server.pid, source: 'ebpf-accept', exact: true,
    });
    await new Promise((r) => setTimeout(r, 500)); // the parent has closed its copy by now
    const owners = await resolver.owners(key);
    const servingPid = Number((await it.next()).value);
    expect(owners).toEqual([servingPid]);
    await until(() => lineage.lookup(servingPid) !== undefined);
    expect(lineage.lookup(servingPid)).toMatchObject({ parent: server.pid, root: server.pid });
  });

  it('attributes the connection of a registered shell\'s child to the child (curl), not the shell', async () => {
    const url = `http://${pair.remote.v4}:5000/`;
    const sh = nsSpawn(pair.node.ns, 'sh', ['-c', `sleep 0.3; curl -s -o /dev/null -w '%{local_port}\\n' ${url}; echo done`]);
    children.push(sh);
    expect(await lineage.addRoot(sh.pid!)).toBe(true);
    const port = Number(await firstLine(sh));
    const a = await resolver.resolve(out(pair.node.v4, port, pair.remote.v4, 5000), { opener: 'local', time: Date.now() });
    expect(a.source).toBe('ebpf-connect');
    expect(a.pid).not.toBe(sh.pid);
    // curl has exited by now; lineage still knows it was the shell's child.
    await until(() => lineage.lookup(a.pid!) !== undefined);
    expect(lineage.lookup(a.pid!)).toMatchObject({ parent: sh.pid, root: sh.pid });
  });

  it('answers a connection waiting in the accept queue with the listener, then refines on accept', async () => {
    const server = spawnIn(pair.node.ns, SLOW_ACCEPTER, [pair.node.v4, 7300]);
    await waitForListen(pair.node.ns, 7300);
    expect(await lineage.addRoot(server.pid!)).toBe(true);
    const client = spawnIn(pair.remote.ns, CLIENT, [pair.node.v4, 7300, 1, 0]);
    const [, port] = (await firstLine(client)).split(' ').map(Number);
    const key = out(pair.node.v4, 7300, pair.remote.v4, port!);
    const refined = new Promise<Attribution>((res) => resolver.on('refined', (k: ConnKey, a: Attribution) => k.localPort === 7300 && res(a)));
    expect(await resolver.resolve(key, { opener: 'remote', time: Date.now() })).toEqual({ pid: server.pid, source: 'listener', exact: false });
    server.kill('SIGUSR1');
    expect(await refined).toEqual({ pid: server.pid, source: 'ebpf-accept', exact: true });
  });

  it('1,000 short connections by a child of a registered process: ≥ 99.9 % resolved to the child', async () => {
    const r = await shortConnections(resolver, lineage, 1000);
    console.log(`eBPF on: ${JSON.stringify(r.counts)} in ${r.ms} ms; resolve p50 ${r.p50} ms, max ${r.max} ms`);
    expect(r.wrong).toEqual([]);
    expect(r.counts.right).toBeGreaterThanOrEqual(999);
  });
});

describe('resolve with eBPF off (the /proc fallback)', () => {
  it('1,000 short connections: the few found are right, the rest unresolved with a reason', async () => {
    const offLineage = new Lineage(); // no tracer: lineage from /proc only
    const off = await Resolver.create({ lineage: offLineage, netPid: holder.pid! });
    try {
      const r = await shortConnections(off, offLineage, 1000);
      console.log(`eBPF off: ${JSON.stringify(r.counts)} in ${r.ms} ms; reasons ${JSON.stringify(off.stats().unresolved)}`);
      expect(r.wrong).toEqual([]);
      expect(r.counts.right + r.counts.unresolved).toBe(1000);
      expect(off.stats().bySource.unresolved).toBe(r.counts.unresolved);
    } finally {
      off.close();
    }
  });

  it('finds connections that stay open in the fd tables, and unaccepted ones by their listener', async () => {
    const offLineage = new Lineage();
    const off = await Resolver.create({ lineage: offLineage, netPid: holder.pid! });
    try {
      const server = spawnIn(pair.node.ns, ACCEPT_SERVER, [pair.node.v6, 7400]);
      const slow = spawnIn(pair.node.ns, SLOW_ACCEPTER, [pair.node.v4, 7500]);
      await waitForListen(pair.node.ns, 7400);
      await waitForListen(pair.node.ns, 7500);
      // Registered after the fact, as for a connection open before the daemon looked.
      const sh = nsSpawn(pair.node.ns, 'sh', ['-c', 'python3 -u -c "$0" "$@"; echo done', CLIENT, pair.node.v6, '7400', '1', '0']);
      children.push(sh);
      const [, port] = (await firstLine(server)).split(' ').map(Number);
      expect(await offLineage.addRoot(server.pid!)).toBe(true);
      expect(await off.resolve(out(pair.node.v6, 7400, pair.node.v6, port!), { opener: 'remote', time: Date.now() })).toEqual({
        pid: server.pid, source: 'procfs', exact: true,
      });
      const client = spawnIn(pair.remote.ns, CLIENT, [pair.node.v4, 7500, 1, 0]);
      const [, cport] = (await firstLine(client)).split(' ').map(Number);
      expect(await offLineage.addRoot(slow.pid!)).toBe(true);
      expect(await off.resolve(out(pair.node.v4, 7500, pair.remote.v4, cport!), { opener: 'remote', time: Date.now() })).toEqual({
        pid: slow.pid, source: 'listener', exact: false,
      });
    } finally {
      off.close();
    }
  });
});

describe('tracer lifecycle', () => {
  it('restarts bpftrace with backoff when it dies', async () => {
    const t = new Tracer({ backoffInitialMs: 200 });
    try {
      expect((await t.start()).state).toBe('live');
      const states: string[] = [];
      t.on('status', (s: { state: string }) => states.push(s.state));
      const relive = new Promise<void>((res) => t.on('status', (s: { state: string }) => s.state === 'live' && res()));
      process.kill(t.pid!, 'SIGKILL');
      await relive;
      expect(states[0]).toBe('restarting');
      expect(t.stats()).toMatchObject({ state: 'live', restarts: 1 });
    } finally {
      await t.stop();
    }
    expect(t.pid).toBeUndefined();
  });
});

/** A registered shell runs python, which makes `n` connections; each is resolved as soon as it
 * is printed, as the capture would on the SYN. */
async function shortConnections(res: Resolver, lin: Lineage, n: number) {
  const sh = nsSpawn(pair.node.ns, 'sh', ['-c', `python3 -u -c "$0" ${pair.remote.v4} 5000 ${n} 0.5; echo done`, CLIENT]);
  children.push(sh);
  expect(await lin.addRoot(sh.pid!)).toBe(true);
  const t0 = performance.now();
  const pending: Promise<{ pid: number; a: Attribution; ms: number }>[] = [];
  for await (const line of lines(sh)) {
    if (line === 'done') break;
    const [pid, port] = line.split(' ').map(Number);
    const started = performance.now();
    pending.push(
      res.resolve(out(pair.node.v4, port!, pair.remote.v4, 5000), { opener: 'local', time: Date.now() }).then((a) => ({ pid: pid!, a, ms: performance.now() - started })),
    );
  }
  const results = await Promise.all(pending);
  const ms = Math.round(performance.now() - t0);
  await exited(sh);
  lin.removeRoot(sh.pid!);
  const wrong = results.filter((r) => r.a.pid !== undefined && r.a.pid !== r.pid);
  const unresolved = results.filter((r) => r.a.pid === undefined);
  for (const u of unresolved) expect(u.a.source === 'unresolved' && u.a.reason.length > 0).toBe(true);
  const times = results.map((r) => r.ms).sort((a, b) => a - b);
  const bySource: Record<string, number> = {};
  for (const r of results) bySource[r.a.source] = (bySource[r.a.source] ?? 0) + 1;
  expect(results).toHaveLength(n);
  expect(new Set(results.map((r) => r.pid)).size).toBe(1); // one child made them all
  expect(results[0]!.pid).not.toBe(sh.pid);
  return {
    wrong,
    counts: { right: results.filter((r) => r.a.pid === r.pid).length, unresolved: unresolved.length, bySource },
    ms,
    p50: Math.round(times[Math.floor(times.length / 2)]! * 10) / 10,
    max: Math.round(times[times.length - 1]! * 10) / 10,
  };
}
