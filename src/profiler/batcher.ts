/**
 * Coalesces single requests into batches: the engines make one kernel transaction per batch, so
 * 300 connections closing together cost one `nft` run, not 300. A batch goes when it is full or
 * when `delayMs` has passed since its first item; one batch runs at a time, in order.
 */
export class Batcher<I, O> {
  private queue: Array<{ item: I; resolve: (o: O) => void; reject: (e: Error) => void }> = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    private readonly opts: { maxItems: number; delayMs: number },
  ) {}

  push(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.queue.length >= this.opts.maxItems) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.opts.delayMs);
    });
  }

  /** Sends what is queued now; resolves when it (and every earlier batch) has run. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue;
    this.queue = [];
    this.running = this.running.then(async () => {
      if (batch.length === 0) return;
      try {
        const out = await this.run(batch.map((b) => b.item));
        batch.forEach((b, i) => b.resolve(out[i]!));
      } catch (e) {
        for (const b of batch) b.reject(e as Error);
      }
    });
    return this.running;
  }
}
