import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { run, runOk, type RunResult } from '../../src/util/exec.js';

/**
 * Private network namespaces for integration tests. Every namespace made here has a name unique
 * to this test run, is torn down by destroy() (tests call it in afterAll/finally), and is torn
 * down again at process exit if a test forgot or crashed. Nothing here touches the machine's own
 * namespace, tables or interfaces.
 */

const RUN_ID = randomBytes(3).toString('hex');
let serial = 0;
const live = new Set<string>();

export interface Host {
  ns: string;
  /** The veth end inside this namespace. */
  ifname: string;
  v4: string;
  v6: string;
}

export interface Pair {
  node: Host;
  remote: Host;
  destroy(): Promise<void>;
}

export function uniqueName(tag: string): string {
  serial += 1;
  return `np-${RUN_ID}-${serial}-${tag}`.slice(0, 60);
}

export async function createNamespace(tag: string): Promise<string> {
  const ns = uniqueName(tag);
  await runOk('ip', ['netns', 'add', ns]);
  live.add(ns);
  await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  return ns;
}

/**
 * Two namespaces — a "node" where the daemon and the jobs run, and a "remote" host — joined by a
 * veth pair with IPv4 and IPv6 addresses (DAD off so IPv6 is usable at once).
 */
export async function createPair(tag: string): Promise<Pair> {
  const nodeNs = await createNamespace(`${tag}-n`);
  const remoteNs = await createNamespace(`${tag}-r`);
  const subnet = 1 + (serial % 250);
  const node: Host = { ns: nodeNs, ifname: 'veth0', v4: `10.${subnet}.0.1`, v6: `fd00:${subnet}::1` };
  const remote: Host = { ns: remoteNs, ifname: 'veth0', v4: `10.${subnet}.0.2`, v6: `fd00:${subnet}::2` };
  try {
    await runOk('ip', ['link', 'add', 'veth0', 'netns', nodeNs, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', remoteNs]);
    for (const h of [node, remote]) {
      await runOk('ip', ['-n', h.ns, 'addr', 'add', `${h.v4}/24`, 'dev', h.ifname]);
      await runOk('ip', ['-n', h.ns, 'addr', 'add', `${h.v6}/64`, 'dev', h.ifname, 'nodad']);
      await runOk('ip', ['-n', h.ns, 'link', 'set', h.ifname, 'up']);
    }
  } catch (e) {
    await destroyNamespace(nodeNs);
    await destroyNamespace(remoteNs);
    throw e;
  }
  return {
    node,
    remote,
    async destroy() {
      await destroyNamespace(nodeNs);
      await destroyNamespace(remoteNs);
    },
  };
}

/** Kills whatever still runs inside the namespace, then deletes it. Safe to call twice. */
export async function destroyNamespace(ns: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', ns]);
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await run('ip', ['netns', 'del', ns]);
  live.delete(ns);
}

/** Runs a program inside the namespace and waits for it. */
export function nsRun(ns: string, file: string, args: readonly string[], timeoutMs = 30_000): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, file, ...args], { timeout: timeoutMs });
}

/** Starts a long-running program inside the namespace. */
export function nsSpawn(ns: string, file: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, file, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
}

process.on('exit', () => {
  // Last resort for a crashed test: synchronous, because 'exit' handlers cannot wait.
  for (const ns of live) spawnSync('ip', ['netns', 'del', ns]);
});

/** Waits until something in the namespace listens on the TCP port (polls `ss`). */
export async function waitForListen(ns: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await nsRun(ns, 'ss', ['-Hltn', `sport = :${port}`]);
    if (r.stdout.trim()) return;
    await new Promise((res) => setTimeout(res, 25));
  }
  throw new Error(`nothing listens on port ${port} in ${ns} after ${timeoutMs} ms`);
}

/** Resolves when the child has exited, also if it already had. */
export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}
