import type { ConnKey } from '../connection.js';
import type { CounterEngine } from '../counters/engine.js';
import type { Attribution, Lineage, ResolveOptions } from '../resolve/index.js';
import type { ConnectionRecord } from '../log/record.js';
import type { Registry } from '../registry/registry.js';
import type { Scope } from './scope.js';

/** What a ConnectionTracker is built from: the host's parts, or a job's link's. */

/** Where records go: the connection log, by way of the profiler's totals. */
export interface RecordSink {
  write(record: ConnectionRecord): void;
}

/** What the tracker asks of the resolve stack: the resolver of its namespace (or, on a VM's
 * tap, one that names the VM's process) and the shared process lineage. */
export interface TrackerResolve {
  resolver: { resolve(key: ConnKey, opts: ResolveOptions): Promise<Attribution>; on(event: 'refined', fn: (key: ConnKey, now: Attribution) => void): unknown };
  lineage: Lineage;
}

/** Where a tracker counts, when it is not the daemon's own namespace. */
export interface TrackerSite {
  /** The job's link (host-side device) every connection of this tracker crosses. */
  link: string;
  /** A VM's tap: the connections are the guest's, its own processes unseen. */
  guest: boolean;
  /** The process whose /proc/PID/net tables are the namespace's sockets; undefined (a VM): no
   * socket table to read, the guest's sockets are in another kernel. */
  netPid(): number | undefined;
  /** The address and port the job's end has beyond NAT (conntrack of our namespace). */
  translate?(key: ConnKey): Promise<{ addr: string; port: number } | undefined>;
}

export interface TrackerParts {
  registry: Registry;
  log: RecordSink;
  engine?: CounterEngine;
  resolve?: TrackerResolve;
  /** Default: the daemon's own namespace. */
  site?: TrackerSite;
  followChildren: boolean;
  /** RULES_THRESHOLD: at this many counted connections the garbage collector runs first. */
  capacity: number;
  /** Which connections are a job's, and the interface (log) of each. */
  scope: Scope;
  /** LATE_GRACE in ms (0: off). */
  graceMs: number;
  /** Most unclaimed connections whose datapath counters are kept (the flows set's room). */
  maxUnclaimed: number;
}

