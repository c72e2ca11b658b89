/**
 * The one interface the profiler uses to count bytes in the kernel. Two implementations:
 * nftables (sets with per-element counters, filled from the datapath on SYN) and iptables (the
 * original's rule pairs, made right). Every call takes a batch: one kernel transaction per
 * batch, never one per connection.
 */

import type { ConnKey } from '../connection.js';

export type { ConnKey };

/** Bytes are IP-level (headers included), as netfilter counts them. */
export interface Counts {
  bytesIn: number;
  packetsIn: number;
  bytesOut: number;
  packetsOut: number;
  /** One direction's counter was missing while the connection ran: the figures are a lower
   * bound (the record says partial). */
  incomplete?: true;
}

/** Who a counted connection belongs to; stored in the kernel beside the counter (a comment) so a
 * crashed run's counters can be harvested with their owner. */
export interface CounterOwner {
  job: string;
  pid: number;
}

export type BeginOutcome =
  /** Counting since the connection's first packet (nftables' datapath made its elements at the
   * SYN and SYN-ACK). */
  | 'from-first-packet'
  /** Not counted from the first packet: earlier packets are missing from the counts (partial).
   * Counting started at begin, or (nftables) at a later packet that retried a failed datapath add. */
  | 'from-now'
  /** RULES_THRESHOLD (or the kernel's set size) reached: not counted. */
  | 'no-room';

export interface Installed {
  key: ConnKey;
  /** Undefined when its counters were found missing (removed behind our back). */
  counts: Counts | undefined;
  owner?: CounterOwner;
}

export interface BeginItem {
  key: ConnKey;
  owner: CounterOwner;
  /** The caller saw the connection open (its SYN or SYN-ACK) on a watched interface: the
   * datapath has been counting it since, and the engine need not look. */
  seenOpening?: boolean;
  /** With seenOpening: whose SYN was seen. Its direction's element is the one the datapath
   * created at once (the other waits for the SYN-ACK). */
  openedBy?: 'local' | 'remote';
}

/** What repair() found and put back. */
export interface Repair {
  reason: string;
  /** Connections counted again from now: what passed while the counters were gone is lost. */
  restarted: ConnKey[];
}

export interface CounterEngine {
  readonly name: 'nftables' | 'iptables';
  /** Creates the daemon's own table/chains. Before that, harvests and removes what a crashed run
   * left; returns what was harvested so it can be logged as recovered. */
  start(): Promise<Installed[]>;
  /** Makes sure each connection is counted and tagged with its owner. */
  begin(items: ReadonlyArray<BeginItem>): Promise<BeginOutcome[]>;
  /** Current counters; undefined for a connection that is not counted. */
  read(keys: readonly ConnKey[]): Promise<Array<Counts | undefined>>;
  /** Final counters, then stops counting those connections. */
  end(keys: readonly ConnKey[]): Promise<Array<Counts | undefined>>;
  /** Stops counting connections whose 4-tuple a new connection has already taken over (its SYN
   * restarted the counters): nothing is read for them, and the counters, now the new
   * connection's, are left in place for its own begin. */
  forget(keys: readonly ConnKey[]): Promise<void>;
  /** Stops counting connections that belong to nobody we profile (nftables adds every SYN). */
  discard(keys: readonly ConnKey[]): Promise<void>;
  /** Periodic garbage collection: removes counters nobody began that were already unowned at the
   * previous sweep (so garbage lives at most two sweep periods). Returns how many connections'
   * counters it removed. `inUse`: connections the caller is about to begin (their begin may
   * still be queued), which must be kept. iptables installs nothing unowned: always 0. */
  sweep(inUse?: readonly ConnKey[]): Promise<number>;
  /** The connections begun and not yet ended, with owners and counters (a crashed run's are
   * returned by start(), then removed). */
  list(): Promise<Installed[]>;
  /** How many connections are counted for registered owners now. */
  size(): number;
  /** Checks that what this engine installed is still in place — someone may flush the ruleset
   * behind the daemon's back — and if not, reinstalls it; undefined when all was well. */
  repair(): Promise<Repair | undefined>;
  /** Removes everything this daemon installed. */
  stop(): Promise<void>;
}
