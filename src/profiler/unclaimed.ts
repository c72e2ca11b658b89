import type { ConnKey } from '../connection.js';

/** A connection seen opening that no profiled process has claimed (yet). */
export interface Unclaimed {
  id: string;
  key: ConnKey;
  /** The interface its SYN or SYN-ACK was captured on. */
  iface: string;
  /** Epoch ms of that packet: the connection's start. */
  time: number;
  openedBy: 'local' | 'remote';
  generation: number;
  /** The process the resolver named (not profiled then); undefined: nothing could say. */
  pid?: number;
  source?: string;
  /** Why it could not be attributed, when unresolved. */
  reason?: string;
  finSent: boolean;
  finReceived: boolean;
  rst: boolean;
}

export interface UnclaimedOptions {
  /** LATE_GRACE: how long its datapath counters are kept for a registration to claim them. */
  graceMs: number;
  /** How long it is remembered at all (its FIN and RST are then recognised, not unknown). */
  rememberMs: number;
  /** Most connections whose counters are kept at once: the flows set must keep room for the
   * profiled ones. Beyond, the oldest are given up early and the grace is reported shortened. */
  maxHeld: number;
}

export interface UnclaimedStats {
  held: number;
  remembered: number;
  /** Given up before their grace was over, to stay within maxHeld. */
  releasedEarly: number;
  /** The shortest age at which one was given up early in the last grace period (ms). */
  shortestGraceMs: number | undefined;
  claimed: number;
}

/**
 * The grace list: connections nobody profiles, kept in capture order so that a registration up
 * to LATE_GRACE later can still claim them with their counters from the first packet, whatever
 * happened meanwhile (the datapath counted them from their SYN; only giving them up removes
 * that). Giving up (release) is the caller's discard of their counters.
 */
export class UnclaimedConnections {
  /** Counters kept, oldest first. */
  private readonly held = new Map<string, Unclaimed>();
  /** Counters given up, remembered only to recognise their events, oldest first. */
  private readonly released = new Map<string, { time: number; entry: Unclaimed }>();
  private releasedEarly = 0;
  private lastEarly: { at: number; ageMs: number } | undefined;
  private claimedCount = 0;

  constructor(private readonly o: UnclaimedOptions) {}

  get graceMs(): number {
    return this.o.graceMs;
  }

  /**
   * Adds one; returns those given up early to make room (their counters must be discarded).
   * `reserved`: connections whose elements are in the set but not in the list — discards not
   * yet done, connections still on their way through the pipeline — which the room must allow.
   */
  add(u: Unclaimed, now = Date.now(), reserved = 0): Unclaimed[] {
    this.forget(u.id);
    this.held.set(u.id, u);
    const early: Unclaimed[] = [];
    while (this.held.size > 0 && this.held.size + reserved > this.o.maxHeld) {
      const oldest = this.held.values().next().value!;
      this.release(oldest);
      early.push(oldest);
      this.releasedEarly += 1;
      const ageMs = Math.max(0, now - oldest.time);
      if (!this.lastEarly || now - this.lastEarly.at > this.o.graceMs || ageMs < this.lastEarly.ageMs) this.lastEarly = { at: now, ageMs };
    }
    return early;
  }

  /** Its entry, whether its counters are still kept or not. */
  get(id: string): Unclaimed | undefined {
    return this.held.get(id) ?? this.released.get(id)?.entry;
  }

  isHeld(id: string): boolean {
    return this.held.has(id);
  }

  has(id: string): boolean {
    return this.held.has(id) || this.released.has(id);
  }

  /** Takes it out for tracking: only while its counters are kept (else it counts from now). */
  claim(id: string): Unclaimed | undefined {
    const u = this.held.get(id);
    if (!u) return undefined;
    this.held.delete(id);
    this.claimedCount += 1;
    return u;
  }

  /** Forgets it without giving up counters: a new connection took the tuple (its SYN replaced
   * them), or it was claimed otherwise. */
  forget(id: string): void {
    this.held.delete(id);
    this.released.delete(id);
  }

  /** Gives up its counters now (LATE_GRACE = 0 and it closed); still remembered. */
  release(u: Unclaimed): void {
    this.held.delete(u.id);
    this.released.set(u.id, { time: u.time, entry: u });
  }

  /** Held connections matching the test, oldest first. */
  heldWhere(test: (u: Unclaimed) => boolean): Unclaimed[] {
    return [...this.held.values()].filter(test);
  }

  heldKeys(): ConnKey[] {
    return [...this.held.values()].map((u) => u.key);
  }

  /**
   * Ends the grace of connections older than it (their counters must be discarded; returned)
   * and forgets those older than rememberMs (their ids returned as `forgotten`).
   */
  expire(now = Date.now()): { released: Unclaimed[]; forgotten: string[] } {
    const released: Unclaimed[] = [];
    for (const u of this.held.values()) {
      if (now - u.time <= this.o.graceMs) break;
      released.push(u);
    }
    for (const u of released) this.release(u);
    const forgotten: string[] = [];
    for (const [id, r] of this.released) {
      if (now - r.time <= this.o.rememberMs) break;
      forgotten.push(id);
    }
    for (const id of forgotten) this.released.delete(id);
    return { released, forgotten };
  }

  stats(now = Date.now()): UnclaimedStats {
    const recent = this.lastEarly && now - this.lastEarly.at <= Math.max(this.o.graceMs, 60_000);
    return {
      held: this.held.size,
      remembered: this.released.size,
      releasedEarly: this.releasedEarly,
      shortestGraceMs: recent ? this.lastEarly!.ageMs : undefined,
      claimed: this.claimedCount,
    };
  }
}

/** Both FINs seen, or an RST. */
export function isClosed(u: Unclaimed): boolean {
  return u.rst || (u.finSent && u.finReceived);
}
