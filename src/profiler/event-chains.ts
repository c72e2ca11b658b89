import { diag } from '../util/diag.js';

/** One connection's work not yet done, in order; `done` settles when it has all run. */
interface Queue {
  work: Array<() => Promise<void>>;
  what: string[];
  done: Promise<void>;
}

/**
 * One queue of work per connection: its events are handled in order, different connections in
 * parallel. When a connection's queue runs empty, `idle(id)` is told (the tracker then forgets
 * the tuple's generation if nothing else holds it). A queue is an array walked by one async
 * function, not a chain of promises: a burst's 200,000 events each allocated five promises and
 * their reactions that way, the biggest share of the tracker's garbage.
 */
export class EventChains {
  private readonly queues = new Map<string, Queue>();

  constructor(private readonly idle: (id: string) => void) {}

  /** Runs work for one connection after the work already queued for it (never before the
   * caller's own code has run on). Never rejects: a failure is reported with `what`. */
  enqueue(id: string, work: () => Promise<void>, what: string): void {
    const q = this.queues.get(id);
    if (q) {
      q.work.push(work);
      q.what.push(what);
      return;
    }
    const fresh: Queue = { work: [work], what: [what], done: Promise.resolve() };
    this.queues.set(id, fresh);
    fresh.done = this.run(id, fresh);
  }

  private async run(id: string, q: Queue): Promise<void> {
    await undefined; // start on a later microtask, as a .then() would
    for (let i = 0; i < q.work.length; i++) {
      try {
        await q.work[i]!();
      } catch (e) {
        diag.error('connection event failed', { kind: q.what[i], key: id, error: e instanceof Error ? e.message : String(e) });
      }
    }
    this.queues.delete(id);
    this.idle(id);
  }

  /** Whether work for this connection is queued or running. */
  has(id: string): boolean {
    return this.queues.has(id);
  }

  get size(): number {
    return this.queues.size;
  }

  /** Resolves once the queues that have work now have run empty. */
  async settle(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.done));
  }

  /** Resolves once every queue has run empty, including work queued meanwhile. */
  async drain(): Promise<void> {
    while (this.queues.size > 0) await this.settle();
  }
}
