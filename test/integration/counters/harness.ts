import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { ConnKey, Family } from '../../../src/connection.js';
import type { CounterEngine, Counts } from '../../../src/counters/engine.js';
import { run } from '../../../src/util/exec.js';
import { exited, nsRun, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { oracleCounts, oracleFlows } from '../../support/oracle.js';

/** Shared traffic scenarios for both engines' integration tests. */

export const HERE = dirname(fileURLToPath(import.meta.url));
const PEER = join(HERE, 'peer.py');

export interface CaseOptions {
  family: Family;
  /** Which end the node (where the engine counts) is. 'loopback': both ends in the node. */
  node: 'client' | 'server' | 'loopback';
  /** Loopback only: connect to the node's own veth address instead of 127.0.0.1 / ::1. */
  ownAddress?: boolean;
  port: number;
  clientPort: number;
  clientEarly?: number;
  clientSend?: number;
  serverEarly?: number;
  serverSend?: number;
  /** Server keeps sending after the client's FIN. */
  serverAfterEof?: boolean;
  /** Called once the connection is established, before the main phase (the gate). */
  established?: (keys: ConnKey[]) => Promise<void>;
}

export interface CaseResult {
  /** Node's view; for loopback [client's key, server's key]. */
  keys: ConnKey[];
}

function addrs(pair: Pair, o: CaseOptions): { serverNs: string; clientNs: string; serverAddr: string; clientAddr: string } {
  const v = (h: Pair['node']): string => (o.family === 4 ? h.v4 : h.v6);
  if (o.node === 'loopback') {
    const a = o.ownAddress ? v(pair.node) : o.family === 4 ? '127.0.0.1' : '::1';
    return { serverNs: pair.node.ns, clientNs: pair.node.ns, serverAddr: a, clientAddr: a };
  }
  const server = o.node === 'server' ? pair.node : pair.remote;
  const client = o.node === 'server' ? pair.remote : pair.node;
  return { serverNs: server.ns, clientNs: client.ns, serverAddr: v(server), clientAddr: v(client) };
}

/** Runs one connection between peer.py processes and waits until both ends have closed. */
export async function runCase(pair: Pair, o: CaseOptions): Promise<CaseResult> {
  const { serverNs, clientNs, serverAddr, clientAddr } = addrs(pair, o);
  const dir = await mkdtemp(join(tmpdir(), 'np-case-'));
  const gate = join(dir, 'go');
  const clientKey: ConnKey = { family: o.family, localAddr: clientAddr, localPort: o.clientPort, remoteAddr: serverAddr, remotePort: o.port };
  const serverKey: ConnKey = { family: o.family, localAddr: serverAddr, localPort: o.port, remoteAddr: clientAddr, remotePort: o.clientPort };
  const keys = o.node === 'client' ? [clientKey] : o.node === 'server' ? [serverKey] : [clientKey, serverKey];
  const common = (early = 0, send = 0): string[] => ['--early', String(early), '--send', String(send), '--gate', gate];
  const server = nsSpawn(serverNs, 'python3', [PEER, 'server', serverAddr, String(o.port), ...common(o.serverEarly, o.serverSend), ...(o.serverAfterEof ? ['--after-eof'] : [])]);
  try {
    await waitForListen(serverNs, o.port);
    const client = nsSpawn(clientNs, 'python3', [PEER, 'client', serverAddr, String(o.port), '--bind', clientAddr, '--port0', String(o.clientPort), ...common(o.clientEarly, o.clientSend)]);
    await waitEstablished(pair.node.ns, keys[0]!);
    await o.established?.(keys);
    await writeFile(gate, '');
    const codes = await withTimeout(Promise.all([exited(client), exited(server)]), 20_000, 'peers did not finish');
    expect(codes).toEqual([0, 0]);
    await settle();
    return { keys };
  } finally {
    server.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

/** Many short connections from consecutive client ports (node is the client). */
export async function runMany(pair: Pair, family: Family, port: number, clientPort0: number, count: number, bytes: number): Promise<ConnKey[]> {
  const v = (h: Pair['node']): string => (family === 4 ? h.v4 : h.v6);
  const server = nsSpawn(pair.remote.ns, 'python3', [PEER, 'server', v(pair.remote), String(port), '--count', String(count), '--send', String(bytes)]);
  try {
    await waitForListen(pair.remote.ns, port);
    const r = await nsRun(pair.node.ns, 'python3', [PEER, 'client', v(pair.remote), String(port), '--bind', v(pair.node), '--port0', String(clientPort0), '--count', String(count), '--send', String(bytes)], 60_000);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await withTimeout(exited(server), 10_000, 'server did not finish');
    await settle();
  } finally {
    server.kill('SIGKILL');
  }
  return Array.from({ length: count }, (_, i) => ({ family, localAddr: v(pair.node), localPort: clientPort0 + i, remoteAddr: v(pair.remote), remotePort: port }));
}

async function waitEstablished(ns: string, k: ConnKey): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const r = await nsRun(ns, 'ss', ['-Htn', 'state', 'established', `( sport = :${k.localPort} and dport = :${k.remotePort} )`]);
    if (r.stdout.trim()) return;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error(`connection ${k.localPort}→${k.remotePort} not established`);
}

/** Lets the last ACKs of a close cross the namespace before anything is read. */
export const settle = (): Promise<void> => new Promise((res) => setTimeout(res, 150));

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(what)), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Exact counting, allowing the last ACK or two of a close to fall either side of a read. */
export function expectExact(got: Counts | undefined, oracle: Counts | undefined, payloadOut: number, payloadIn: number): void {
  expect(oracle, 'conntrack saw the connection').toBeDefined();
  expect(got, 'engine counted the connection').toBeDefined();
  const g = got!;
  const o = oracle!;
  for (const d of ['Out', 'In'] as const) {
    const gp = g[`packets${d}`];
    const op = o[`packets${d}`];
    expect(Math.abs(gp - op), `packets${d} ${gp} vs conntrack ${op}`).toBeLessThanOrEqual(2);
    expect(Math.abs(g[`bytes${d}`] - o[`bytes${d}`]), `bytes${d} ${g[`bytes${d}`]} vs conntrack ${o[`bytes${d}`]}`).toBeLessThanOrEqual(2 * 100);
  }
  expect(g.bytesOut).toBeGreaterThan(payloadOut);
  expect(g.bytesIn).toBeGreaterThan(payloadIn);
}

/**
 * iptables counts from when its rule is installed: it may miss the handshake and what was
 * sent before (early bytes and their segments' headers) — never more, and it invents nothing.
 */
export function expectFromNow(got: Counts | undefined, oracle: Counts | undefined, p: { out: number; in: number; earlyOut: number; earlyIn: number }): void {
  expect(oracle).toBeDefined();
  expect(got).toBeDefined();
  const g = got!;
  const o = oracle!;
  const HANDSHAKE_AND_HEADERS = 1_500; // SYN / SYN-ACK / ACK and early segments' headers and ACKs
  // The close's last ACKs may fall either side of the two reads. On loopback one CI run saw the
  // rules 252 B (five bare ACKs) above conntrack with the engine read first, cause not found;
  // counting anything twice would be hundreds of kB over on these transfers.
  const LAST_ACKS = 400;
  expect(g.bytesOut).toBeLessThanOrEqual(o.bytesOut + LAST_ACKS);
  expect(g.bytesIn).toBeLessThanOrEqual(o.bytesIn + LAST_ACKS);
  expect(g.bytesOut).toBeGreaterThan(p.out);
  expect(g.bytesIn).toBeGreaterThan(p.in);
  expect(o.bytesOut - g.bytesOut, 'OUT lost more than the handshake and early bytes').toBeLessThanOrEqual(p.earlyOut + HANDSHAKE_AND_HEADERS);
  expect(o.bytesIn - g.bytesIn, 'IN lost more than the handshake and early bytes').toBeLessThanOrEqual(p.earlyIn + HANDSHAKE_AND_HEADERS);
}

/** The hostile job ids the owner tags must carry unchanged. */
export const HOSTILE_JOBS = [
  `a "quoted" 'single' job`,
  'semi; $(touch /tmp/pwned) `id` # hash \\ back\\slash',
  'ünïcødé-工作-🚀 {braces} */ /* end',
  'x'.repeat(100),
  'é'.repeat(50),
];

/** The engine-holding driver (plain JS on the built dist/, since Node 20 cannot run TypeScript). */
export const DRIVER = join(HERE, 'driver.mjs');

/** Starts the driver, resolves with it and its begin outcome once it has begun counting. */
export async function startDriver(bundle: string, args: string[]): Promise<{ child: ChildProcess; outcome: string }> {
  const child = spawn(process.execPath, [bundle, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const outcome = await withTimeout(
    new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.trim());
      });
      child.once('exit', () => reject(new Error(`driver exited: ${err}`)));
    }),
    15_000,
    'driver did not begin',
  );
  return { child, outcome };
}

/**
 * A process that began counting one connection, then was killed -9 before it could end or stop:
 * a fresh engine of the same kind harvests that connection once, with its owner and exact counts
 * (begun before the SYN), then removes it.
 */
export async function expectHarvestAfterKill(pair: Pair, kind: 'nftables' | 'iptables', name: string, job: string, fresh: CounterEngine, elements?: 'netlink' | 'nft'): Promise<void> {
  const key: ConnKey = { family: 4, localAddr: pair.node.v4, localPort: 40011, remoteAddr: pair.remote.v4, remotePort: 5011 };
  const driver = await startDriver(DRIVER, [kind, pair.node.ns, name, JSON.stringify(key), JSON.stringify({ pid: 99, job }), ...(elements ? [elements] : [])]);
  try {
    expect(driver.outcome).toBe('["from-now"]');
    await runCase(pair, { family: 4, node: 'client', port: 5011, clientPort: 40011, clientSend: 250_000, serverSend: 150_000 });
    driver.child.kill('SIGKILL');
    await exited(driver.child);
    const harvested = await fresh.start();
    expect(harvested).toHaveLength(1);
    expect(harvested[0]!.owner).toEqual({ pid: 99, job });
    expect(harvested[0]!.key).toMatchObject({ localPort: 40011, remotePort: 5011 });
    expectExact(harvested[0]!.counts, oracleCounts(await oracleFlows(pair.node.ns), key), 250_000, 150_000);
    expect(await fresh.start()).toEqual([]); // harvested once, then removed
  } finally {
    driver.child.kill('SIGKILL');
    await fresh.stop();
  }
}
