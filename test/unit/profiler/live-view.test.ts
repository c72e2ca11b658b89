import { describe, expect, it } from 'vitest';
import type { TrackedConnection } from '../../../src/profiler/connections.js';
import { awaitLive, everyFigureReadAt, LIVE_FRESH_MS, LIVE_WAIT_ALWAYS_BELOW, LIVE_WAIT_MS, oldestRead } from '../../../src/profiler/live-view.js';

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

  it("a scrape's figures: the oldest read a read can refresh, never older than the last full read", () => {
    const c = (countsAt?: number, more: Partial<TrackedConnection> = {}) => ({ countsAt, counting: 'from-first-packet', ...more }) as TrackedConnection;
    // A job view's own reads since the full read at 100: the oldest of them.
    expect(everyFigureReadAt([c(500), c(400), c()], 100)).toBe(400);
    // One not refreshed by the full read (its element gone) shows figures older than it.
    expect(everyFigureReadAt([c(50), c(400)], 100)).toBe(100);
    // Closing or without room: no read refreshes them, so they do not make the others stale.
    expect(everyFigureReadAt([c(10, { closing: 'fin' }), c(20, { counting: 'no-room' }), c(400)], 100)).toBe(400);
    expect(everyFigureReadAt([c()], 0)).toBeUndefined();
  });
});
