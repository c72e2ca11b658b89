/**
 * Coalesces single requests into batches: the engines make one kernel transaction per batch, so
 * 300 connections closing together cost one `nft` run, not 300. Group commit: while a batch
 * runs, new requests wait and all go together in the next one, so batches grow with the load
 * instead of queueing one transaction per request. An idle batcher waits `delayMs` after the
 * first request for company.
 */
export class Batcher<I, O> {
  private queue: Array<{ item: I; resolve: (o: O) => void; reject: (e: Error) => void }> = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** For the daemon's statistics: how batching is going. */
  readonly stats = { batches: 0, items: 0, largest: 0, busyMs: 0, slowestMs: 0 };

  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    private readonly opts: { maxItems: number; delayMs: number },
  ) {}

  push(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.running) return; // goes with the next batch, when this one is done
      if (this.queue.length >= this.opts.maxItems) void this.flush();
      else this.timer ??= setTimeout(() => void this.flush(), this.opts.delayMs);
    });
  }

  /** Sends what is queued (after the batch in flight); resolves when the queue is empty. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.running) await this.running;
    if (this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.opts.maxItems);
    this.running = (async () => {
      const t0 = performance.now();
      try {
        const out = await this.run(batch.map((b) => b.item));
        batch.forEach((b, i) => b.resolve(out[i]!));
      } catch (e) {
        for (const b of batch) b.reject(e as Error);
      } finally {
        const ms = performance.now() - t0;
        Object.assign(this.stats, {
          batches: this.stats.batches + 1,
          items: this.stats.items + batch.length,
          largest: Math.max(this.stats.largest, batch.length),
          busyMs: Math.round(this.stats.busyMs + ms),
          slowestMs: Math.round(Math.max(this.stats.slowestMs, ms)),
        });
      }
    })();
    await this.running;
    this.running = undefined;
    if (this.queue.length > 0) await this.flush();
  }
}
