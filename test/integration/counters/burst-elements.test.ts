import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftablesEngine } from '../../../src/counters/nftables.js';
import { createPair, nsRun, type Pair } from '../../support/netns.js';

/**
 * Issue 14 item 3: the connections of a burst logged `counted: false`. Two findings, each a test:
 *  1. A burst through the datapath rules, with the nftables engine beginning and ending its
 *     connections concurrently (bench/burst-elements.mjs, which builds its own namespaces): every
 *     connection is counted, or reported counted from now. The kernel does not always keep every
 *     element: an element's counter needs a per-CPU allocation that fails on the packet path
 *     when the machine's reserve runs out (docs/counters.md), which depends on everything else
 *     the machine allocates; the tuple's next packets retry the add (pend4, failed-add.test.ts),
 *     and the engine, finding the element missing or the tuple in pend at begin, says 'from-now'.
 *  2. What the benchmark lost was connections whose 4-tuple a later connection of the same burst
 *     reused before their counters were read: the later SYN's `delete` of both directions'
 *     elements (then `add`) restarts the tuple's counters, so the earlier connection's are gone.
 *     This test pins that datapath behaviour: the first connection's counts do not survive.
 */

const ROOT = join(__dirname, '..', '..', '..');

/** A command's output and exit code (killed after 60 s). */
function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { cwd: ROOT, timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d));
    c.stderr.on('data', (d: Buffer) => (stderr += d));
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Counts `percpu:percpu_alloc_percpu_fail` (bpftrace) from when it resolves until stop(). */
async function countFailedAllocations(): Promise<{ stop(): Promise<number> }> {
  const prog = 'BEGIN { @f = 0; printf("ready\\n"); } tracepoint:percpu:percpu_alloc_percpu_fail { @f += 1; } END { printf("failed %d\\n", @f); clear(@f); }';
  const bt = spawn('bpftrace', ['-e', prog], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  bt.stderr.on('data', (d: Buffer) => (err += d));
  const closed = new Promise<void>((res) => bt.on('close', () => res()));
  bt.on('error', (e) => (err += `cannot run bpftrace: ${e.message}`));
  await new Promise<void>((res, rej) => {
    bt.stdout.on('data', (d: Buffer) => ((out += d), out.includes('ready') && res()));
    void closed.then(() => rej(new Error(`bpftrace exited before it was ready: ${err}`)));
  });
  return {
    stop: async () => {
      bt.kill('SIGINT');
      await closed;
      const m = /failed (\d+)/.exec(out);
      if (!m) throw new Error(`bpftrace printed no count: ${out} ${err}`);
      return Number(m[1]);
    },
  };
}

describe('burst elements', () => {
  it('a burst of 3,000 connections: every one counted, or reported counted from now, with concurrent engine batches', async () => {
    const build = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8' });
    expect(build.status, build.stdout + build.stderr).toBe(0);
    // The kernel's own count of failed per-CPU allocations, machine-wide: each connection the
    // engine reports counted from now must have lost an element to one (an engine that said
    // 'from-now' for everything would otherwise pass).
    const failures = await countFailedAllocations();
    const r = await run(process.execPath, [join(ROOT, 'bench/burst-elements.mjs'), '--n', '3000', '--conc', '32', '--req', '1024', '--resp', '10240', '--writer', 'engine', '--lag', '200']);
    const failed = await failures.stop();
    const line = r.stdout.trim().split('\n').find((l) => l.startsWith('{'));
    expect(line, r.stdout + r.stderr).toBeDefined();
    const res = JSON.parse(line!);
    expect(res.connected).toBe(3000);
    expect(res.writerErrorCount).toBe(0);
    expect({ out: res.out, in: res.in, bothZero: res.bothZero }).toEqual({ out: 0, in: 0, bothZero: 0 });
    expect(res.fromNow, `${failed} failed per-CPU allocations`).toBeLessThanOrEqual(failed);
    expect(res.pend).toBeLessThanOrEqual(failed);
    expect(r.code).toBe(0);
  }, 90_000);

  describe('a reused 4-tuple', () => {
    let pair: Pair;
    let engine: NftablesEngine;
    beforeAll(async () => {
      pair = await createPair('reuse');
      engine = new NftablesEngine({ capacity: 100, interfaces: ['veth0'], table: 'burst', netns: pair.node.ns });
      await engine.start();
    });
    afterAll(async () => {
      await engine?.stop().catch(() => undefined);
      await pair?.destroy();
    });

    const PORT = 7000;
    const LOCAL = 41000;
    /** One connection from the fixed local port: sends `bytes`, reads the answer, closes. */
    const connectOnce = async (bytes: number): Promise<void> => {
      const py = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('${pair.node.v4}', ${LOCAL})); s.connect(('${pair.remote.v4}', ${PORT}))
s.sendall(b'x' * ${bytes}); s.shutdown(socket.SHUT_WR)
while s.recv(65536): pass
s.close()
`;
      const r = await nsRun(pair.node.ns, 'python3', ['-c', py]);
      expect(r.code, r.stderr).toBe(0);
    };
    const outPackets = async (): Promise<number | undefined> => {
      const r = await nsRun(pair.node.ns, 'nft', ['-j', 'list', 'set', 'inet', 'burst', 'flows4']);
      const set = (JSON.parse(r.stdout).nftables as Array<{ set?: { elem?: Array<{ elem: { val: { concat: unknown[] }; counter: { packets: number } } }> } }>).find((x) => x.set)!.set!;
      const e = (set.elem ?? []).find((x) => x.elem.val.concat[1] === LOCAL);
      return e?.elem.counter.packets;
    };

    /** A server that answers each connection with 100 bytes and closes first (the churn's
     * pattern: the client's port is free again at once). */
    const serve = (connections: number) => {
      const server = `
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', ${PORT})); l.listen(8)
for _ in range(${connections}):
    c, _a = l.accept()
    while True:
        d = c.recv(65536)
        if not d: break
    c.sendall(b'y' * 100); c.close()
`;
      return nsRun(pair.remote.ns, 'python3', ['-c', server], 20_000);
    };
    const key = () => ({ family: 4 as const, localAddr: pair.node.v4, localPort: LOCAL, remoteAddr: pair.remote.v4, remotePort: PORT });
    const owner = { pid: 4242, job: 'burst' };

    it("the datapath: a second connection's SYN restarts the counters the first left unread", async () => {
      const srv = serve(2);
      await new Promise((r) => setTimeout(r, 300));
      await connectOnce(20_000);
      const first = await outPackets();
      expect(first).toBeGreaterThan(4);
      await connectOnce(10);
      const second = await outPackets();
      // Had the first connection's counts survived, second would exceed first.
      expect(second).toBeDefined();
      expect(second!).toBeLessThan(first!);
      expect((await srv).code).toBe(0);
      await engine.discard([key()]);
    }, 30_000);

    // What the benchmark's uncounted connections went through (each one's port was reused by a
    // later connection of the burst ~1.2 s on, before the daemon, 3 s behind, read it): begun,
    // superseded by the next SYN on its tuple, read. Each connection should get its own counts
    // (20,000 bytes sent, then 10). Today the first end() reads the second's counters and
    // deletes them, and the second is never counted: fails until counters are kept per
    // connection rather than per tuple (see BENCHMARKS.md, point 2). Skipped, not inverted: the
    // profiler no longer calls end() for such a connection (it asks again when the end batch
    // runs and forgets it: logged uncounted with a note, the later one counted), and a test that
    // passes while the gap is open would prove nothing. Unskip when counters are per connection.
    it.skip('the engine: a connection whose tuple a later one reused before its read is counted, and so is the later one', async () => {
      const srv = serve(2);
      await new Promise((r) => setTimeout(r, 300));
      await connectOnce(20_000);
      expect(await engine.begin([{ key: key(), owner, seenOpening: true }])).toEqual(['from-first-packet']);
      await connectOnce(10);
      const [first] = await engine.end([key()]);
      expect(await engine.begin([{ key: key(), owner, seenOpening: true }])).toEqual(['from-first-packet']);
      const [second] = await engine.end([key()]);
      expect((await srv).code).toBe(0);
      expect(first?.bytesOut).toBeGreaterThan(20_000);
      expect(second?.bytesOut).toBeGreaterThan(0);
      expect(second!.bytesOut).toBeLessThan(1_000);
    }, 30_000);
  });
});
