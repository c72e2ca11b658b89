import { spawn, type ChildProcess } from 'node:child_process';
import { run } from '../util/exec.js';
import type { ConnKey } from '../connection.js';

/**
 * Which interface the kernel would send a connection's packets out of: its answer to
 * `ip route get REMOTE from LOCAL`, cached per (local, remote) pair and dropped whenever
 * `ip monitor route` reports a change. Asked only for connections no packet told us about
 * (late registration, a capture gap, a crashed run's counters): the capture path knows the
 * interface from the frame.
 */
export class RouteTable {
  private readonly cache = new Map<string, Promise<string | undefined>>();
  private monitor: ChildProcess | undefined;
  private lastChange = 0;
  readonly stats = { lookups: 0, cached: 0, failures: 0, flushes: 0 };

  constructor(private readonly options: { cacheMax?: number } = {}) {}

  /** Follows route changes; without the monitor (ip missing) every entry lives 5 s. */
  start(): void {
    if (this.monitor) return;
    const m = spawn('ip', ['monitor', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
    m.on('error', () => (this.monitor = undefined));
    m.on('exit', () => (this.monitor = undefined));
    m.stdout!.on('data', () => this.flush());
    m.unref();
    (m.stdout as unknown as { unref?: () => void }).unref?.();
    this.monitor = m;
  }

  stop(): void {
    this.monitor?.kill();
    this.monitor = undefined;
  }

  flush(): void {
    this.cache.clear();
    this.lastChange = Date.now();
    this.stats.flushes += 1;
  }

  /** The outgoing interface for this connection's remote end, or undefined when the kernel has
   * no route (or `ip` failed): then nobody can say which interface it crosses. */
  deviceFor(key: ConnKey): Promise<string | undefined> {
    if (!this.monitor && Date.now() - this.lastChange > 5_000) this.flush();
    const id = `${key.localAddr} ${key.remoteAddr}`;
    const hit = this.cache.get(id);
    if (hit) {
      this.stats.cached += 1;
      return hit;
    }
    if (this.cache.size >= (this.options.cacheMax ?? 4096)) this.cache.clear();
    this.stats.lookups += 1;
    const answer = lookup(key).then((dev) => {
      if (dev === undefined) {
        this.stats.failures += 1;
        this.cache.delete(id); // ask again next time: it may have been a transient failure
      }
      return dev;
    });
    this.cache.set(id, answer);
    return answer;
  }
}

async function lookup(key: ConnKey): Promise<string | undefined> {
  const v4mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/;
  const remote = key.remoteAddr.replace(v4mapped, '$1');
  const local = key.localAddr.replace(v4mapped, '$1');
  const r = await run('ip', [remote.includes(':') ? '-6' : '-4', '-j', 'route', 'get', remote, 'from', local]);
  if (r.code !== 0) return undefined;
  return parseRouteGet(r.stdout);
}

/** The device of `ip -j route get` output (`[{"dst": …, "dev": "eth0", …}]`). */
export function parseRouteGet(json: string): string | undefined {
  try {
    const doc = JSON.parse(json) as unknown;
    const first = Array.isArray(doc) ? (doc[0] as { dev?: unknown } | undefined) : undefined;
    return typeof first?.dev === 'string' ? first.dev : undefined;
  } catch {
    return undefined;
  }
}
