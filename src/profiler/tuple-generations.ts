import type { ConnEvent } from '../capture/events.js';

/**
 * Which connection on a 4-tuple an event belongs to, decided in capture order, before any of
 * the (slower, queued) work for it runs: a SYN after a FIN or RST on the same tuple opens a new
 * connection; a retransmitted SYN does not. The kernel gives a port back as soon as its side is
 * closed (with the default port range, a churning client reused 22 % of its ports within
 * 0.5–0.6 s), and the datapath
 * restarts a tuple's counters at its SYN — so an earlier connection whose counters were not yet
 * read by then can no longer be counted, and must not take the new one's.
 */
export class TupleGenerations {
  /** generation × 2, plus 1 once a FIN or RST was seen. A tuple with no entry is at generation
   * 0 and open: the usual connection, which then costs no entry while it stays open. */
  private readonly byId = new Map<string, number>();

  /** Notes an event as capture delivers it; returns the generation it belongs to. */
  observe(id: string, kind: ConnEvent['kind']): number {
    const t = this.byId.get(id);
    if (t === undefined) {
      if (kind === 'fin' || kind === 'rst') this.byId.set(id, 1);
      return 0;
    }
    const closed = (t & 1) === 1;
    // A SYN after the close opens the next generation; the first FIN or RST closes this one.
    const next = (kind === 'syn' && closed) || ((kind === 'fin' || kind === 'rst') && !closed) ? t + 1 : t;
    if (next !== t) this.byId.set(id, next);
    return next >> 1;
  }

  /** The newest generation seen on this tuple (0 if none is pending). */
  current(id: string): number {
    return (this.byId.get(id) ?? 0) >> 1;
  }

  /** True when a newer connection has opened on this tuple since generation `gen`. */
  superseded(id: string, gen: number): boolean {
    return this.current(id) > gen;
  }

  /** Called when no work for the tuple is pending and no connection on it is tracked. */
  release(id: string): void {
    this.byId.delete(id);
  }
}
