import type { ConnKey } from '../connection.js';
import type { Registry } from '../registry/registry.js';
import { openConnectionIds } from '../resolve/sockets.js';
import { diag } from '../util/diag.js';
import type { TrackedConnection } from './connections.js';
import type { Counting } from './counting.js';
import type { TrackerStats } from './tracker-stats.js';

/** A connection younger than this is not reclaimed as closed: /proc may lag the SYN. */
const GC_MIN_AGE_MS = 2_000;
/** The full listing sweep is a backstop for counters capture never told us about (its SYN was
 * not seen): rare, since it lists the whole set. */
const BACKSTOP_SWEEP_MS = 60_000;
/** Least time between two collections forced by RULES_THRESHOLD. */
const THRESHOLD_GC_PAUSE_MS = 1_000;

/** What a collection asks of its tracker. */
export interface CollectedTracker {
  /** Tracked connections not closing and with no event pending: a pending event closes its own. */
  quietConnections(): TrackedConnection[];
  finish(conns: TrackedConnection[], reason: 'gc'): Promise<void>;
  /** Forgets what has timed out at `now` (the grace list, finished connections' ids). */
  expire(now: number): void;
  /** What the backstop sweep keeps: what is counted, and the grace list's counters. */
  inUse(): ConnKey[];
  /** Whose /proc/PID/net tables hold the tracker's sockets; undefined: none to read. */
  netPid(): number | 'self' | undefined;
}

/**
 * Reclaims what no FIN told us about: connections of processes that died, and closed sockets of
 * live ones (the original's future-work item 1); each is logged first. Also expires the grace
 * list and, once a minute, sweeps datapath counters nobody began.
 */
export class Collector {
  private running: Promise<void> | undefined;
  private lastEnd = 0;
  private lastBackstopSweep = Date.now();

  constructor(
    private readonly tracker: CollectedTracker,
    private readonly registry: Registry,
    private readonly counting: Counting,
    private readonly stats: TrackerStats,
    /** Whether there are datapath counters to sweep (an engine). */
    private readonly sweeps: boolean,
  ) {}

  /** One collection at a time: a caller arriving during one shares it. */
  collect(why: 'threshold' | 'periodic'): Promise<void> {
    this.running ??= this.run(why).finally(() => {
      this.running = undefined;
      this.lastEnd = Date.now();
    });
    return this.running;
  }

  /** At the threshold, collect — but at most once a second: a collection that freed nothing
   * must not be repeated for every new connection, each waiting for it (the queue of closes
   * would then grow, and with it the number counted: a spiral the benchmark hit). Returns
   * whether one ran. */
  async atThreshold(): Promise<boolean> {
    if (!this.running && Date.now() - this.lastEnd < THRESHOLD_GC_PAUSE_MS) return false;
    await this.collect('threshold');
    return true;
  }

  private async run(why: string): Promise<void> {
    this.stats.gcRuns += 1;
    const now = Date.now();
    const dead = this.registry.dead();
    const deadPids = new Set(dead.map((p) => p.pid));
    const netPid = this.tracker.netPid();
    const open = netPid === undefined ? undefined : await openConnectionIds(netPid).catch(() => undefined);
    const reclaim = this.tracker.quietConnections().filter((c) => {
      if (deadPids.has(c.pid)) return true;
      const young = c.start !== undefined && now - c.start < GC_MIN_AGE_MS;
      return open !== undefined && !young && !open.has(c.id);
    });
    await this.tracker.finish(reclaim, 'gc');
    this.stats.gcReclaimed += reclaim.length;
    for (const p of dead) if (p.parent !== undefined) this.registry.remove(p); // children: nobody will end them
    this.tracker.expire(now);
    if (this.sweeps && now - this.lastBackstopSweep >= BACKSTOP_SWEEP_MS) {
      this.lastBackstopSweep = now;
      this.stats.gcSwept += await this.counting.sweep(this.tracker.inUse());
    }
    if (reclaim.length) diag.info('garbage collected', { why, reclaimed: reclaim.length, dead_processes: dead.length });
  }
}
