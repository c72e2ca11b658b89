import type { TrackedConnection } from './connections.js';

/**
 * How long a job's view waits for its counters' read. Below LIVE_WAIT_ALWAYS_BELOW open
 * connections a read is quick and always waited for. From there on (a job's 10,000
 * connections are 20,000 keys, ~100 ms on the thread pool) the view answers at once with
 * figures less than LIVE_FRESH_MS old (a poller's previous read), and otherwise waits for the
 * read at most LIVE_WAIT_MS, then shows the last figures with their time.
 */
export const LIVE_WAIT_MS = 50;
export const LIVE_WAIT_ALWAYS_BELOW = 1_000;
export const LIVE_FRESH_MS = 1_000;

/** Settles when the view may be built: the read is done, or need not (or no longer) be waited for. */
export async function awaitLive(read: Promise<unknown>, connections: number, figuresAt: number | undefined, now = Date.now()): Promise<void> {
  if (connections < LIVE_WAIT_ALWAYS_BELOW) return void (await read);
  if (figuresAt !== undefined && now - figuresAt < LIVE_FRESH_MS) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([read, new Promise((r) => (timer = setTimeout(r, LIVE_WAIT_MS)))]);
  clearTimeout(timer);
}

/** When the figures shown for these connections were read: the oldest read among them (epoch
 * ms); undefined if none was ever read. A connection not read yet shows no figures and does not
 * count. */
export function oldestRead(conns: readonly TrackedConnection[]): number | undefined {
  let oldest: number | undefined;
  for (const c of conns) if (c.countsAt !== undefined && (oldest === undefined || c.countsAt < oldest)) oldest = c.countsAt;
  return oldest;
}

/** When the figures of every connection were read (epoch ms): the oldest read among those a read
 * can refresh, by the last full read or since by a job view's own (a poller of a big job keeps
 * them fresh), and never older than the last full read; undefined if none was ever read. */
export function everyFigureReadAt(conns: readonly TrackedConnection[], fullReadAt: number): number | undefined {
  return Math.max(fullReadAt, oldestRead(conns.filter((c) => c.counting !== 'no-room' && !c.closing)) ?? 0) || undefined;
}
