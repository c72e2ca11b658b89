import type { TrackedConnection } from './connections.js';

/** How long one read of the kernel's counters serves the callers that follow it. */
const SHARED_MS = 500;

/**
 * The live counters shown by the API, read on demand. One kernel read serves every caller within
 * half a second (a metrics scrape asks for each job in turn). A job's view (`only`, `onlyKey`
 * its id) reads just its connections, by key: the cost grows with the job, not with the node;
 * the job's read, too, serves its callers for half a second.
 */
export class LiveCounts {
  private refreshing: { at: number; done: Promise<number> } | undefined;
  /** Per job (onlyKey), its last own read. */
  private readonly ownReads = new Map<string, { at: number; done: Promise<number> }>();
  /** When the counts of every connection were last read (epoch ms; 0: never). */
  readAt = 0;

  constructor(
    /** Reads these connections' counters into their `counts`. */
    private readonly read: (conns: readonly TrackedConnection[]) => Promise<void>,
    private readonly all: () => readonly TrackedConnection[],
  ) {}

  /** Resolves with when the read that served began. */
  refresh(only?: readonly TrackedConnection[], onlyKey?: string): Promise<number> {
    const fresh = this.refreshing && Date.now() - this.refreshing.at < SHARED_MS;
    if (only) {
      // A read of every connection just made serves this job too; so does this job's own.
      if (fresh) return this.refreshing!.done;
      const mine = onlyKey === undefined ? undefined : this.ownReads.get(onlyKey);
      if (mine && Date.now() - mine.at < SHARED_MS) return mine.done;
      const done = this.readNow(only);
      if (onlyKey !== undefined) {
        for (const [k, r] of this.ownReads) if (Date.now() - r.at >= SHARED_MS) this.ownReads.delete(k);
        this.ownReads.set(onlyKey, { at: Date.now(), done });
      }
      return done;
    }
    if (fresh) return this.refreshing!.done;
    const done = this.readNow();
    this.refreshing = { at: Date.now(), done };
    return done;
  }

  private async readNow(only?: readonly TrackedConnection[]): Promise<number> {
    const at = Date.now();
    await this.read((only ?? this.all()).filter((c) => c.counting !== 'no-room' && !c.closing));
    if (!only) this.readAt = at;
    return at;
  }
}
