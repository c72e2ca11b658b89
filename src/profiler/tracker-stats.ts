import type { ConnEvent } from '../capture/events.js';
import type { EndReason } from '../log/record.js';

export interface TrackerStats {
  events: Record<ConnEvent['kind'], number>;
  opened: number;
  closed: Record<EndReason, number>;
  notProfiled: number;
  unresolved: number;
  unresolvedReasons: Record<string, number>;
  attributedBy: Record<string, number>;
  /** Connections to or from the daemon's own API: never a job's. */
  ownApi: number;
  /** Found without a packet (late registration, a capture gap) but crossing no configured
   * interface, by why: not counted, not logged. */
  outOfScope: Record<string, number>;
  duplicateEvents: number;
  closesOfUnknown: number;
  tupleReused: number;
  /** Connections whose 4-tuple a new connection took before their counters were read. */
  tupleReusedBeforeRead: number;
  /** The owner had exited by the time its connection was looked at (kept: it was registered). */
  ownerExitedFirst: number;
  /** A registered pid now names another process: its new connections are not the job's. */
  pidReused: number;
  childrenAdded: number;
  /** Unresolved when they opened, attributed by a late eBPF event (also still in `unresolved`). */
  resolvedLate: number;
  /** Open connections found at a registration or after a capture gap (from /proc). */
  lateFound: number;
  /** Connections claimed at their process's registration from the grace list, with their
   * counts from the first packet; `lateClosed` of them had already closed. */
  lateClaimed: number;
  lateClosed: number;
  noRoom: number;
  /** Times the engine found its counters removed behind its back and reinstalled them. */
  countersRestored: number;
  gcRuns: number;
  gcReclaimed: number;
  gcSwept: number;
  engineErrors: number;
}

export function emptyStats(): TrackerStats {
  return {
    events: { syn: 0, 'syn-ack': 0, fin: 0, rst: 0 },
    opened: 0,
    closed: { fin: 0, rst: 0, 'process-end': 0, 'job-end': 0, shutdown: 0, recovered: 0, gc: 0 },
    notProfiled: 0,
    unresolved: 0,
    unresolvedReasons: {},
    attributedBy: {},
    ownApi: 0,
    outOfScope: {},
    duplicateEvents: 0,
    closesOfUnknown: 0,
    tupleReused: 0,
    tupleReusedBeforeRead: 0,
    ownerExitedFirst: 0,
    pidReused: 0,
    childrenAdded: 0,
    resolvedLate: 0,
    lateFound: 0,
    lateClaimed: 0,
    lateClosed: 0,
    noRoom: 0,
    countersRestored: 0,
    gcRuns: 0,
    gcReclaimed: 0,
    gcSwept: 0,
    engineErrors: 0,
  };
}
