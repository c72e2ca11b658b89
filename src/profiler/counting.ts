import { keyString, type ConnKey } from '../connection.js';
import type { BeginItem, BeginOutcome, CounterEngine, Counts } from '../counters/engine.js';
import { Batcher } from './batcher.js';
import type { TrackedConnection } from './connections.js';
import type { TrackerStats } from './tracker-stats.js';
import { diag } from '../util/diag.js';

/** How long a begin batch waits for company; under the tracker's CLOSE_GRACE_MS (25 ms). */
const BEGIN_DELAY_MS = 15;

/** A connection whose final counts are wanted (or whose counters are given up), and how to
 * tell, when its batch runs, that a new connection has taken its tuple meanwhile. */
export interface Ending {
  key: ConnKey;
  stale: () => boolean;
}

/**
 * The tracker's side of the counter engine: every call is batched (one kernel transaction for
 * many connections), and every engine failure is counted and turned into an answer the
 * records can state (not counted, with why) rather than an exception.
 */
export class Counting {
  private readonly begins: Batcher<BeginItem, BeginOutcome> | undefined;
  private readonly ends: Batcher<Ending, Counts | 'reused' | undefined> | undefined;
  private readonly discards: Batcher<Ending, undefined> | undefined;

  constructor(
    private readonly engine: CounterEngine | undefined,
    private readonly stats: TrackerStats,
    private readonly o: { capacity: number; thresholdGc: () => Promise<boolean> },
  ) {
    if (!engine) return;
    // Each batch is a kernel transaction (~0.1–0.3 ms of commit however small): begins wait
    // longer for company than ends, since a close waits CLOSE_GRACE_MS for its begin anyway. At
    // most 1,000 connections per transaction: the addon's writes are synchronous, and a batch of
    // 5,000 (15,000 elements) held the loop for ~70 ms under a burst.
    this.begins = new Batcher((items) => engine.begin(items), { maxItems: 1000, delayMs: BEGIN_DELAY_MS });
    this.ends = new Batcher((items) => this.endBatch(engine, items), { maxItems: 1000, delayMs: 5 });
    // One listing per batch with nft: a whole collection's expiries go in one.
    // Whether a new connection took the tuple is asked again when the batch runs: its counters
    // are then the new one's.
    this.discards = new Batcher(
      async (items) => {
        const keys = items.filter((i) => !i.stale()).map((i) => i.key);
        if (keys.length) await engine.discard(keys);
        return items.map(() => undefined);
      },
      { maxItems: 100_000, delayMs: 50 },
    );
  }

  /** Connections whose discard is queued or running: their elements are still in the set. */
  discardsPending = 0;

  get size(): number {
    return this.engine?.size() ?? 0;
  }

  batchStats(): Record<string, unknown> {
    return { begin: this.begins?.stats, end: this.ends?.stats, discard: this.discards?.stats };
  }

  /** Whether a connection seen opening is counted from its first packet (nftables' datapath),
   * so that 'from-now' for it means the kernel fell short. */
  countsFromHandshake(): boolean {
    return this.engine?.name === 'nftables';
  }

  /** Makes sure the connection is counted; 'no-room' when it cannot be (the record says so). */
  async begin(conn: TrackedConnection, seenOpening: boolean): Promise<BeginOutcome> {
    if (!this.begins || !this.engine) {
      conn.uncountedWhy = 'not counted: no counter engine';
      return 'no-room';
    }
    if (this.engine.size() >= this.o.capacity) await this.o.thresholdGc();
    try {
      const item: BeginItem = { key: conn.key, owner: { job: conn.job, pid: conn.pid }, seenOpening, ...(conn.openedBy !== 'unknown' ? { openedBy: conn.openedBy } : {}) };
      let outcome = await this.begins.push(item);
      if (outcome === 'no-room' && (await this.o.thresholdGc())) outcome = await this.begins.push(item);
      if (outcome === 'no-room') {
        this.stats.noRoom += 1;
        conn.uncountedWhy = `not counted: RULES_THRESHOLD (${this.o.capacity}) reached`;
        diag.warn('connection not counted: RULES_THRESHOLD reached', { job: conn.job, pid: conn.pid, key: conn.id, threshold: this.o.capacity });
      }
      return outcome;
    } catch (e) {
      this.stats.engineErrors += 1;
      conn.uncountedWhy = `not counted: the counter engine failed: ${(e as Error).message}`;
      diag.error('could not begin counting', { key: conn.id, error: (e as Error).message });
      return 'no-room';
    }
  }

  /**
   * Final counts of ending connections, and their counters removed. Whether a new connection
   * took a connection's tuple is asked again when its batch runs (seconds later under load): a
   * new SYN restarts the tuple's counters, and reading them then would give the old connection
   * the new one's counts and delete them. Such a connection is not read: its owner is
   * forgotten and the counters are left to the new one (`reused` is true for it).
   */
  async end(conns: readonly TrackedConnection[], superseded: (c: TrackedConnection) => boolean): Promise<{ finals: Array<Counts | undefined>; reused: boolean[]; note?: string }> {
    const reused = conns.map(() => false);
    let finals: Array<Counts | undefined>;
    let note: string | undefined;
    try {
      const ends = this.ends;
      const out = await Promise.all(conns.map((c) => (ends && c.counting !== 'no-room' ? ends.push({ key: c.key, stale: () => superseded(c) }) : undefined)));
      finals = out.map((o, i) => (o === 'reused' ? ((reused[i] = true), undefined) : o));
    } catch (e) {
      this.stats.engineErrors += 1;
      note = `counters could not be read: ${(e as Error).message}`;
      diag.error('reading final counters failed', { error: (e as Error).message, connections: conns.length });
      finals = conns.map(() => undefined);
    }
    return { finals, reused, ...(note ? { note } : {}) };
  }

  private async endBatch(engine: CounterEngine, items: readonly Ending[]): Promise<Array<Counts | 'reused' | undefined>> {
    const stale = items.map((i) => i.stale());
    const live = items.filter((_, i) => !stale[i]).map((i) => i.key);
    const gone = items.filter((_, i) => stale[i]).map((i) => i.key);
    if (gone.length) {
      this.stats.tupleReusedBeforeRead += gone.length;
      // Their records say why they are uncounted; a failure here only leaves an owner tag behind.
      await engine.forget(gone).catch((e: Error) => {
        this.stats.engineErrors += 1;
        diag.warn('forgetting superseded connections failed', { error: e.message, connections: gone.length });
      });
    }
    // Each key once: the kernel refuses a whole batch that deletes one element twice.
    const unique = [...new Map(live.map((k) => [keyString(k), k])).values()];
    const counts = unique.length ? await engine.end(unique) : [];
    const byKey = new Map(unique.map((k, i) => [keyString(k), counts[i]]));
    return items.map((item, i) => (stale[i] ? 'reused' : byKey.get(keyString(item.key))));
  }

  /** Every begun connection's counts in one read (the daemon's last act). */
  async all(): Promise<{ counts: Map<string, Counts>; note?: string }> {
    const counts = new Map<string, Counts>();
    try {
      for (const i of (await this.engine?.list()) ?? []) if (i.counts) counts.set(keyString(i.key), i.counts);
      return { counts };
    } catch (e) {
      this.stats.engineErrors += 1;
      return { counts, note: `counters could not be read: ${(e as Error).message}` };
    }
  }

  /** Gives up the datapath counters of connections nobody claimed. */
  discard(items: readonly Ending[]): void {
    if (!this.discards) return;
    for (const item of items) {
      this.discardsPending += 1;
      this.discards
        .push(item)
        .catch((e: Error) => diag.warn('discarding counters failed', { error: e.message }))
        .finally(() => (this.discardsPending -= 1));
    }
  }

  /** Current counts of open connections, for the live view. */
  async read(conns: readonly TrackedConnection[]): Promise<void> {
    if (!this.engine || !conns.length) return;
    const at = Date.now();
    const counts = await this.engine.read(conns.map((c) => c.key));
    conns.forEach((c, i) => {
      const n = counts[i];
      if (!n) return;
      c.counts = n;
      c.countsAt = at;
    });
  }

  /** The full-listing backstop: removes datapath counters nobody began or keeps. */
  async sweep(inUse: readonly ConnKey[]): Promise<number> {
    if (!this.engine) return 0;
    return this.engine.sweep(inUse).catch((e: Error) => {
      this.stats.engineErrors += 1;
      diag.warn('sweeping unclaimed counters failed', { error: e.message });
      return 0;
    });
  }
}
