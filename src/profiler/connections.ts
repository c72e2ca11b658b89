import { keyString, type ConnKey } from '../connection.js';
import type { BeginOutcome, Counts } from '../counters/engine.js';
import type { ProfiledProcess } from '../registry/registry.js';

/** A connection of a profiled process, from its first sight until its record is written. */
export interface TrackedConnection {
  id: string;
  /** Which connection on this 4-tuple it is (see TupleGenerations). */
  generation: number;
  key: ConnKey;
  iface: string;
  job: string;
  pid: number;
  owner: string;
  openedBy: 'local' | 'remote' | 'unknown';
  /** Epoch ms of the SYN, when seen. */
  start?: number;
  attribution: string;
  counting: BeginOutcome;
  /** Why a connection that should have been counted from its first packet was not (the
   * record's note). */
  partialWhy?: string;
  /** Why it is not counted ('no-room'): RULES_THRESHOLD, or what the engine said. */
  uncountedWhy?: string;
  /** Settles when counting has been set up; until then `counting` is not yet known. */
  begun?: Promise<BeginOutcome>;
  /** FINs seen in each direction: data still flows after the first one (half-close). */
  finSent: boolean;
  finReceived: boolean;
  /** Set once the close has been seen and the record is being made. */
  closing?: 'fin' | 'rst' | 'gc';
  /** Set by the one finish() that ends it; settles when that call's records are written. */
  ending?: Promise<void>;
  /** Its begin has settled (`counting` is known). */
  begunSettled?: boolean;
  /** It opened before its process was registered (claimed at the registration). */
  late?: boolean;
  /** Both directions had closed (or it was reset) before it was claimed. */
  closedBeforeClaim?: boolean;
  /** Counted on a job's link (a container's veth, a VM's tap): its host-side device. */
  link?: string;
  /** A VM's connection: the guest's, its pid the VM's process. */
  guest?: boolean;
  /** The job's end as NAT made it (the address the remote saw). */
  translated?: { addr: string; port: number };
  translating?: Promise<void>;
  /** The kernel's counters as last read (for the live view). */
  counts?: Counts;
  /** When those were read (epoch ms, when the read began). */
  countsAt?: number;
}

/** What starting to track a connection takes. */
export interface NewConnection {
  /** keyString(key), when the caller has it. */
  id?: string;
  key: ConnKey;
  iface: string;
  proc: ProfiledProcess;
  openedBy: TrackedConnection['openedBy'];
  start?: number;
  attribution: string;
  generation?: number;
  /** The datapath has counted it since `start` (default: when start is known). */
  countedSinceStart?: boolean;
  late?: boolean;
}

/** The tracked connections, indexed by key and by owning process. */
export class ConnectionTable {
  private readonly byId = new Map<string, TrackedConnection>();
  private readonly byPid = new Map<number, Set<string>>();

  add(c: TrackedConnection): void {
    this.byId.set(c.id, c);
    let set = this.byPid.get(c.pid);
    if (!set) this.byPid.set(c.pid, (set = new Set()));
    set.add(c.id);
  }

  get(key: ConnKey): TrackedConnection | undefined {
    return this.byId.get(keyString(key));
  }

  /** As get(), by keyString(key), for callers that have it already. */
  getById(id: string): TrackedConnection | undefined {
    return this.byId.get(id);
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  delete(c: TrackedConnection): void {
    this.byId.delete(c.id);
    const set = this.byPid.get(c.pid);
    set?.delete(c.id);
    if (set?.size === 0) this.byPid.delete(c.pid);
  }

  /** A process's connections (most have none: then one shared empty list, nothing made). */
  ofPid(pid: number): readonly TrackedConnection[] {
    const ids = this.byPid.get(pid);
    return ids ? [...ids].map((id) => this.byId.get(id)!) : ConnectionTable.NONE;
  }

  private static readonly NONE: readonly TrackedConnection[] = Object.freeze([]);

  all(): TrackedConnection[] {
    return [...this.byId.values()];
  }

  get size(): number {
    return this.byId.size;
  }
}
