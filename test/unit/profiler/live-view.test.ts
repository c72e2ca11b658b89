import { describe, expect, it } from 'vitest';
import type { TrackedConnection } from '../../../src/profiler/connections.js';
import { awaitLive, LIVE_FRESH_MS, LIVE_WAIT_ALWAYS_BELOW, LIVE_WAIT_MS, oldestRead } from '../../../src/profiler/live-view.js';

/** How long a job's view waits for its counters' read (issue 14: p99 ≤ 50 ms at 10,000). */
describe('a job view and its live read', () => {
  const never = new Promise<void>(() => undefined);
  const elapsed = async (p: Promise<void>): Promise<number> => {
    const t0 = performance.now();
    await p;
    return performance.now() - t0;
  };

  it('a small job always waits for its read', async () => {
    let done = false;
    const read = new Promise<void>((r) => setTimeout(() => r(void (done = true)), 80));
    await awaitLive(read, LIVE_WAIT_ALWAYS_BELOW - 1, Date.now());
    expect(done).toBe(true);
  });

  it('a big job answers at once with figures under a second old, else waits at most LIVE_WAIT_MS', async () => {
    const now = Date.now();
    expect(await elapsed(awaitLive(never, LIVE_WAIT_ALWAYS_BELOW, now - LIVE_FRESH_MS + 200, now))).toBeLessThan(20);
    const stale = await elapsed(awaitLive(never, 10_000, now - LIVE_FRESH_MS, now));
    expect(stale).toBeGreaterThanOrEqual(LIVE_WAIT_MS - 2);
    expect(stale).toBeLessThan(LIVE_WAIT_MS + 200);
    expect(await elapsed(awaitLive(Promise.resolve(), 10_000, undefined, now))).toBeLessThan(20);
  });

  it('the figures are as old as the oldest read among the connections that have one', () => {
    const c = (countsAt?: number) => ({ countsAt }) as TrackedConnection;
    expect(oldestRead([c(300), c(), c(100), c(200)])).toBe(100);
    expect(oldestRead([c(), c()])).toBeUndefined();
  });
});
