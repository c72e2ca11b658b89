import type { CounterEngine } from '../counters/engine.js';
import type { Registry } from '../registry/registry.js';
import { diag } from '../util/diag.js';
import type { LinkSites } from './link-sites.js';
import type { ConnectionTracker } from './tracker.js';

/** How often the engine checks that its counters are still in place: nftables checks one of
 * its two chains per call, so a flush is noticed within 4 s. */
const REPAIR_INTERVAL_MS = 2_000;
/** Empty jobs and exited processes are forgotten after this long if nobody ends them. */
const FORGET_AFTER_MS = 3_600_000;

/**
 * The profiler's periodic work: the garbage collection (every gcIntervalS) and the check that
 * nobody removed our counters (every REPAIR_INTERVAL_MS). Each run is one at a time; a failure
 * is reported and the next run goes on.
 */
export class Upkeep {
  private gcTimer: NodeJS.Timeout | undefined;
  private repairTimer: NodeJS.Timeout | undefined;
  private repairing = false;
  private stopped = false;

  constructor(
    private readonly tracker: ConnectionTracker,
    private readonly registry: Registry,
    private readonly engine: CounterEngine | undefined,
    private readonly links: () => LinkSites | undefined,
  ) {}

  start(gcIntervalS: number): void {
    this.gcTimer = setInterval(() => void this.collect(), gcIntervalS * 1000);
    this.gcTimer.unref();
    this.repairTimer = setInterval(() => void this.checkCounters(), REPAIR_INTERVAL_MS);
    this.repairTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.gcTimer);
    clearInterval(this.repairTimer);
  }

  /** Someone may flush the ruleset behind our back: the engine puts its counters back, and the
   * connections counted then are flagged partial. */
  private async checkCounters(): Promise<void> {
    if (this.repairing || this.stopped || !this.engine) return;
    this.repairing = true;
    try {
      await this.links()?.repair();
      const repair = await this.engine.repair();
      if (repair) {
        const flagged = this.tracker.countingRestarted(repair.restarted);
        diag.error('counters removed behind our back (a ruleset flush?): reinstalled; open connections counted from now', { reason: repair.reason, connections: repair.restarted.length, flagged_partial: flagged });
      }
    } catch (e) {
      diag.error('checking the counters failed', { error: (e as Error).message });
    } finally {
      this.repairing = false;
    }
  }

  private async collect(): Promise<void> {
    try {
      await this.tracker.gc('periodic');
      await this.links()?.collect();
      this.registry.prune(FORGET_AFTER_MS);
    } catch (e) {
      diag.error('garbage collection failed', { error: (e as Error).message });
    }
  }
}
