import type { Counts } from '../counters/engine.js';
import type { ConnectionRecord, EndReason } from '../log/record.js';
import type { TrackedConnection } from './connections.js';

export const REUSED_NOTE = 'not counted: a new connection reused its 4-tuple before its counters were read';
/** Not counted, its reason unrecorded: Counting.begin gives every 'no-room' its own (uncountedWhy). */
const NO_ROOM_NOTE = 'not counted';
const MISSING_NOTE = 'counter missing';
/** Partial, though seen opening on a counting engine: the datapath's add failed (docs/counters.md). */
export const KERNEL_SHORT_NOTE = 'partial: the kernel did not make its counter at the handshake (a full set, or a burst that exhausted its per-CPU reserve); counted from shortly after';
export const RESTARTED_NOTE = 'partial: its counters were removed behind the daemon and reinstalled; what passed meanwhile is missing';
const ONE_WAY_NOTE = 'one direction was not counted (the kernel did not create its counter): a lower bound';
export const GONE_BEFORE_CLAIM_NOTE =
  'not counted: it closed before its process was registered, and its counters were no longer kept (past LATE_GRACE, or the engine counts only from registration)';

/** A tracked connection's record, from its final counts (undefined: none could be read). */
export function toRecord(c: TrackedConnection, reason: EndReason, counts: Counts | undefined, note?: string): ConnectionRecord {
  // Closed before anyone claimed it, and not counted from its first packet: what counting
  // started at the claim saw is nothing of it, so there is no figure to give.
  if (c.closedBeforeClaim && c.counting !== 'from-first-packet' && counts) {
    counts = undefined;
    note ??= GONE_BEFORE_CLAIM_NOTE;
  }
  return {
    job: c.job,
    pid: c.pid,
    owner: c.owner,
    iface: c.iface,
    family: c.key.family,
    localAddr: c.key.localAddr,
    localPort: c.key.localPort,
    remoteAddr: c.key.remoteAddr,
    remotePort: c.key.remotePort,
    openedBy: c.openedBy,
    start: c.start,
    end: Date.now(),
    reason,
    counts,
    partial: counts !== undefined && (c.counting === 'from-now' || counts.incomplete === true),
    ...(c.late ? { late: true } : {}),
    ...(c.link ? { link: c.link } : {}),
    ...(c.guest ? { guest: true } : {}),
    ...(c.translated ? { translated: c.translated } : {}),
    attribution: c.attribution,
    note: counts === undefined ? (note ?? (c.counting === 'no-room' ? (c.uncountedWhy ?? NO_ROOM_NOTE) : MISSING_NOTE)) : counts.incomplete ? ONE_WAY_NOTE : c.counting === 'from-now' ? c.partialWhy : undefined,
  };
}
