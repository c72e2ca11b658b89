import { keyString } from '../connection.js';
import { socketsOf } from '../resolve/sockets.js';
import type { ProfiledProcess } from '../registry/registry.js';
import { diag } from '../util/diag.js';
import type { ConnectionTable, NewConnection, TrackedConnection } from './connections.js';
import type { EventChains } from './event-chains.js';
import type { Scope } from './scope.js';
import type { TrackerStats } from './tracker-stats.js';
import { isClosed, type Unclaimed, type UnclaimedConnections } from './unclaimed.js';

/** What claiming asks of its tracker. */
export interface ClaimingTracker {
  readonly table: ConnectionTable;
  readonly unclaimed: UnclaimedConnections;
  readonly chains: EventChains;
  readonly stats: TrackerStats;
  readonly scope: Scope;
  profiledProcess(pid: number): ProfiledProcess | undefined;
  track(c: NewConnection): TrackedConnection;
  scheduleClose(conn: TrackedConnection, reason: 'fin' | 'rst'): Promise<void>;
  /** Whose /proc/PID/net tables hold the tracker's sockets; undefined: none to read. */
  netPid(): number | 'self' | undefined;
  /** Whether a record of this 4-tuple was written at or after `since` (epoch ms), within the
   * last IGNORE_TTL_MS; a new SYN on the tuple forgets it. */
  finishedSince(id: string, since: number): boolean;
}

/** Connections a process turns out to own after they opened: from the grace list (seen
 * opening while nobody profiled them) or from its fd table (nothing saw them open). */
export class Claims {
  constructor(private readonly t: ClaimingTracker) {}

  /** A late eBPF event named the owner of a connection left unresolved in the grace list. */
  async resolvedLate(u: Unclaimed, pid: number, source: string): Promise<void> {
    if (this.t.unclaimed.get(u.id) !== u) return;
    u.pid = pid; // not profiled now: a registration within the grace may still claim it
    u.source = source;
    delete u.reason;
    const proc = this.t.profiledProcess(pid);
    if (!proc) return;
    this.t.stats.resolvedLate += 1;
    await this.claimUnclaimed(u, proc, `${source}-late`, false);
  }

  /** Tracks a connection from the grace list, with what was seen of it meanwhile; one that
   * already closed is logged at once. */
  private async claimUnclaimed(u: Unclaimed, proc: ProfiledProcess, attribution: string, late: boolean): Promise<void> {
    if (this.t.table.has(u.id) || this.t.unclaimed.get(u.id) !== u) return; // taken or replaced meanwhile
    const held = this.t.unclaimed.claim(u.id) !== undefined;
    this.t.unclaimed.forget(u.id);
    const scope = this.t.scope.ofCaptured(u.key, u.iface);
    if (scope.iface === undefined) return;
    const closed = isClosed(u);
    if (late) {
      this.t.stats.lateClaimed += 1;
      if (closed) this.t.stats.lateClosed += 1;
    }
    const conn = this.t.track({ id: u.id, key: u.key, iface: scope.iface, proc, openedBy: u.openedBy, start: u.time, attribution, generation: u.generation, countedSinceStart: held, late });
    conn.finSent = u.finSent;
    conn.finReceived = u.finReceived;
    if (closed) conn.closedBeforeClaim = true;
    await conn.begun; // a claim is done once its counting is set up
    if (u.rst) await this.t.scheduleClose(conn, 'rst');
    else if (u.finSent && u.finReceived) await this.t.scheduleClose(conn, 'fin');
  }

  /**
   * A registration (late: the process may have connected before the scheduler told us) or a
   * capture gap: claims these processes' connections. From the grace list first — those seen
   * opening, counted from their first packet, also the ones that have closed since — then from
   * their fd tables the open ones nothing saw open, placed by the kernel's route (counted from
   * their first packet when the datapath still holds them, else from now: partial).
   */
  async ofProcesses(pids: Iterable<number>, opts: { late: boolean }): Promise<number> {
    const family = new Set(pids);
    let claimed = 0;
    const own = (pid: number | undefined): ProfiledProcess | undefined => (pid !== undefined && family.has(pid) ? this.t.profiledProcess(pid) : undefined);
    for (const u of this.t.unclaimed.heldWhere((x) => x.pid !== undefined && family.has(x.pid))) {
      const proc = own(u.pid);
      // Queued behind whatever is pending for it (its FIN may be arriving right now).
      if (!proc || this.t.table.has(u.id)) continue;
      claimed += 1;
      this.t.chains.enqueue(u.id, () => this.claimUnclaimed(u, proc, u.source ?? 'ebpf', opts.late), 'claim');
    }
    await this.t.chains.settle();
    const netPid = this.t.netPid();
    // A socket of this read that capture tracks, queues or has finished since is capture's: each
    // check is made again after every wait below, since capture goes on meanwhile.
    const readAt = Date.now();
    const capturedSince = (id: string) => this.t.table.has(id) || this.t.chains.has(id) || this.t.finishedSince(id, readAt);
    const found = netPid === undefined ? [] : await socketsOf(family, netPid).catch((e: Error) => {
      diag.warn('cannot read the socket tables', { error: e.message });
      return [];
    });
    for (const s of found) {
      const id = keyString(s.key);
      if (capturedSince(id)) continue;
      // A registered process, or (FOLLOW_CHILDREN) a descendant, which joins its ancestor's job.
      const proc = this.t.profiledProcess(s.pid);
      if (!proc) continue;
      const u = this.t.unclaimed.get(id);
      if (u && u.reason !== 'own-api') {
        claimed += 1;
        await this.claimUnclaimed(u, proc, 'procfs', opts.late);
        continue;
      }
      const scope = await this.t.scope.ofFound(s.key);
      if (scope.iface === undefined) {
        if (scope.why === 'own-api') this.t.stats.ownApi += 1;
        else this.t.stats.outOfScope[scope.why] = (this.t.stats.outOfScope[scope.why] ?? 0) + 1;
        continue;
      }
      if (capturedSince(id)) continue;
      this.t.stats.lateFound += 1;
      claimed += 1;
      await this.t.track({ key: s.key, iface: scope.iface, proc, openedBy: 'unknown', attribution: 'procfs', late: opts.late }).begun;
    }
    return claimed;
  }
}
