import { diag } from '../util/diag.js';

/**
 * One queue of work per connection: its events are handled in order, different connections in
 * parallel. When a connection's queue runs empty, `idle(id)` is told (the tracker then forgets
 * the tuple's generation if nothing else holds it).
 */
export class EventChains {
  private readonly chains = new Map<string, Promise<void>>();

  constructor(private readonly idle: (id: string) => void) {}

  /** Runs work for one connection after the work already queued for it. Never rejects: a
   * failure is reported with `what` and the connection's id. */
  enqueue(id: string, work: () => Promise<void>, what: string): void {
    const next = (this.chains.get(id) ?? Promise.resolve())
      .then(work)
      .catch((e: Error) => diag.error('connection event failed', { kind: what, key: id, error: e.message }));
    this.chains.set(id, next);
    void next.finally(() => {
      if (this.chains.get(id) !== next) return;
      this.chains.delete(id);
      this.idle(id);
    });
  }

  /** Whether work for this connection is queued or running. */
  has(id: string): boolean {
    return this.chains.has(id);
  }

  get size(): number {
    return this.chains.size;
  }

  /** Resolves once the work queued before this call is done (later work may go on). */
  async settle(): Promise<void> {
    await Promise.all([...this.chains.values()]);
  }

  /** Resolves once every queue has run empty, including work queued meanwhile. */
  async drain(): Promise<void> {
    while (this.chains.size > 0) await Promise.all([...this.chains.values()]);
  }
}
