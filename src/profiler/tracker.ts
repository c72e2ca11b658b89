import { keyString, type ConnKey } from '../connection.js';
import type { ConnEvent } from '../capture/events.js';
import type { Attribution } from '../resolve/index.js';
import type { EndReason } from '../log/record.js';
import { Membership } from './membership.js';
import { ConnectionTable, type NewConnection, type TrackedConnection } from './connections.js';
import { Claims } from './claims.js';
import { Counting, type Ending } from './counting.js';
import { TupleGenerations } from './tuple-generations.js';
import { UnclaimedConnections, isClosed, type Unclaimed } from './unclaimed.js';
import { KERNEL_SHORT_NOTE, RESTARTED_NOTE, REUSED_NOTE, toRecord } from './records.js';
import { emptyStats, type TrackerStats } from './tracker-stats.js';
import { LiveCounts } from './live-counts.js';
import type { TrackerParts } from './tracker-parts.js';
import { EventChains } from './event-chains.js';
import { Collector, type CollectedTracker } from './collector.js';

export type { TrackerStats };
export type { RecordSink, TrackerParts, TrackerResolve, TrackerSite } from './tracker-parts.js';

/** After both FINs (or an RST) the record waits this long, so the last ACK is counted too. */
const CLOSE_GRACE_MS = 25;
/** How long a connection is remembered after its record is written or its counters are given
 * up, so that its late FIN, RST or SYN-ACK is recognised without another lookup. */
const IGNORE_TTL_MS = 30_000;
/**
 * From connection events to records: resolves who opened a connection, keeps those of profiled
 * processes (and their children) counted, and writes each one's record when it ends. Events of
 * one connection are handled in order; different connections go in parallel.
 */
export class ConnectionTracker {
  readonly table = new ConnectionTable();
  private readonly chains = new EventChains((id) => {
    if (!this.table.has(id) && !this.unclaimed.has(id)) this.generations.release(id);
  });
  private readonly generations = new TupleGenerations();
  /** Our connections whose record is written: id → until when their late events are
   * duplicates rather than unknown (IGNORE_TTL_MS after the record, which claims read back). */
  private readonly finished = new Map<string, number>();
  /** Connections nobody profiles (yet): the grace list a late registration claims from. */
  readonly unclaimed: UnclaimedConnections;
  private readonly counting: Counting;
  private readonly collector: Collector;
  private readonly claims: Claims;
  /** When the engine last had to reinstall its counters (someone flushed them). */
  private countersRestartedAt = 0;
  readonly stats: TrackerStats = emptyStats();
  private readonly membership: Membership;
  private readonly live: LiveCounts;

  constructor(private readonly parts: TrackerParts) {
    this.unclaimed = new UnclaimedConnections({ graceMs: parts.graceMs, rememberMs: Math.max(parts.graceMs, IGNORE_TTL_MS), maxHeld: parts.maxUnclaimed });
    this.membership = new Membership(parts.registry, parts.followChildren ? parts.resolve?.lineage : undefined, this.stats);
    this.counting = new Counting(parts.engine, this.stats, { capacity: parts.capacity, thresholdGc: () => this.collector.atThreshold() });
    this.collector = new Collector(this.collectable(), parts.registry, this.counting, this.stats, parts.engine !== undefined);
    this.claims = new Claims({
      table: this.table,
      unclaimed: this.unclaimed,
      chains: this.chains,
      stats: this.stats,
      scope: parts.scope,
      profiledProcess: (pid) => this.membership.profiledProcess(pid),
      track: (c) => this.track(c),
      scheduleClose: (c, reason) => this.scheduleClose(c, reason),
      netPid: () => this.netPid(),
      finishedSince: (id, since) => (this.finished.get(id) ?? -Infinity) - IGNORE_TTL_MS >= since,
    });
    this.live = new LiveCounts((conns) => this.counting.read(conns), () => this.table.all());
    parts.resolve?.resolver.on('refined', (key: ConnKey, now: Attribution) => this.refine(key, now));
  }

  /** Capture's entry point. Never throws: a failure is counted and reported. */
  onEvent(ev: ConnEvent): void {
    this.stats.events[ev.kind] += 1;
    const id = keyString(ev.key);
    const gen = this.generations.observe(id, ev.kind);
    this.chains.enqueue(id, () => this.handle(ev, id, gen), ev.kind);
  }

  /** How the engine's begin, end and discard batches are going. */
  batchStats(): Record<string, unknown> {
    return this.counting.batchStats();
  }

  /** Resolves once the events received before this call have been handled (later ones may go
   * on): ending a process must first let its last connections reach the table. */
  settle(): Promise<void> {
    return this.chains.settle();
  }

  /** Resolves once every event received so far has been handled, and those after it too. */
  drain(): Promise<void> {
    return this.chains.drain();
  }

  private async handle(ev: ConnEvent, id: string, gen: number): Promise<void> {
    const tracked = this.table.getById(id);
    if (ev.kind === 'syn' || ev.kind === 'syn-ack') {
      if (tracked) {
        if (ev.kind === 'syn' && (tracked.finSent || tracked.finReceived || tracked.closing)) {
          // The same four-tuple opens again: the old connection is over.
          this.stats.tupleReused += 1;
          await this.finish([tracked], tracked.closing === 'rst' ? 'rst' : 'fin');
        } else {
          // A SYN-ACK confirms what the SYN opened; a second SYN is a retransmission.
          if (ev.kind === 'syn') this.stats.duplicateEvents += 1;
          return;
        }
      } else if (this.isFinished(id, ev.time)) {
        if (ev.kind === 'syn-ack') return;
        this.finished.delete(id); // a new connection on a tuple seen before: look again
      } else {
        const u = this.unclaimed.get(id);
        if (u && u.generation === gen) {
          if (ev.kind === 'syn') this.stats.duplicateEvents += 1;
          return; // a SYN-ACK confirms it, a second SYN is a retransmission
        }
        // A new connection on the tuple: its SYN replaced the old one's counters.
        if (u) this.unclaimed.forget(id);
      }
      // We sent the SYN, or received the SYN-ACK: opened here.
      const openedBy = (ev.kind === 'syn') === ev.sent ? 'local' : 'remote';
      return this.open(ev, id, openedBy, gen);
    }
    if (!tracked) {
      const u = this.unclaimed.get(id);
      if (u && u.generation === gen) {
        if (ev.kind === 'rst') u.rst = true;
        else if (ev.sent) u.finSent = true;
        else u.finReceived = true;
        // With LATE_GRACE = 0 nobody can claim it once it closed: its counters can go now.
        if (this.unclaimed.graceMs === 0 && u.pid !== undefined && isClosed(u) && this.unclaimed.isHeld(id)) this.giveUp([u]);
        return;
      }
      if (this.isFinished(id, ev.time)) this.stats.duplicateEvents += 1;
      else this.stats.closesOfUnknown += 1;
      return;
    }
    if (tracked.closing) {
      this.stats.duplicateEvents += 1;
      return;
    }
    if (ev.kind === 'rst') return this.scheduleClose(tracked, 'rst');
    if (ev.sent) tracked.finSent = true;
    else tracked.finReceived = true;
    // A half-closed connection still carries data the other way: wait for both FINs.
    if (tracked.finSent && tracked.finReceived) return this.scheduleClose(tracked, 'fin');
  }

  /** Discards the datapath counters of unclaimed connections whose grace is over (unless a new
   * connection took the tuple: then they are the new one's). */
  private giveUp(list: readonly Unclaimed[]): void {
    const items: Ending[] = [];
    for (const u of list) {
      this.unclaimed.release(u);
      const taken = () => this.generations.superseded(u.id, u.generation) || this.table.has(u.id);
      // Asked again when the discard runs (≥ 50 ms on), then also of a newer one still unclaimed.
      // A new connection's events still queued count too: a leaked element is swept later, a
      // deleted one is a connection's counts lost.
      if (!taken()) items.push({ key: u.key, stale: () => taken() || this.chains.has(u.id) || (this.unclaimed.get(u.id) ?? u) !== u });
    }
    this.counting.discard(items);
  }

  /** Remembers a connection nobody profiles, in the grace list; gives up the oldest when full. */
  private leaveUnclaimed(u: Unclaimed): void {
    // Reserved: elements the datapath holds that the list does not — discards still queued, and
    // connections still on their way to it (this one's own chain excluded).
    const early = this.unclaimed.add(u, Date.now(), this.counting.discardsPending + Math.max(0, this.chains.size - 1));
    if (early.length) this.giveUp(early);
  }

  private async open(ev: ConnEvent, id: string, openedBy: 'local' | 'remote', generation: number): Promise<void> {
    const base: Unclaimed = { id, key: ev.key, iface: ev.iface, time: ev.time, openedBy, generation, finSent: false, finReceived: false, rst: false };
    const scope = this.parts.scope.ofCaptured(ev.key, ev.iface);
    if (scope.iface === undefined) {
      this.stats.ownApi += 1;
      return this.leaveUnclaimed({ ...base, reason: scope.why });
    }
    const resolver = this.parts.resolve?.resolver;
    const attribution: Attribution = resolver
      ? await resolver.resolve(ev.key, { opener: openedBy, time: ev.time })
      : { pid: undefined, source: 'unresolved', reason: 'no resolver' };
    if (attribution.pid === undefined) {
      this.stats.unresolved += 1;
      const why = attribution.reason.split(';')[0]!.replace(/\d+/g, 'N');
      this.stats.unresolvedReasons[why] = (this.stats.unresolvedReasons[why] ?? 0) + 1;
      // The resolver keeps watching: an eBPF event read late may still name the process.
      return this.leaveUnclaimed({ ...base, reason: attribution.reason });
    }
    const proc = this.membership.profiledProcess(attribution.pid);
    if (!proc) {
      this.stats.notProfiled += 1;
      // Its process may be registered within LATE_GRACE: then it is claimed with its counts.
      return this.leaveUnclaimed({ ...base, pid: attribution.pid, source: attribution.source });
    }
    this.stats.attributedBy[attribution.source] = (this.stats.attributedBy[attribution.source] ?? 0) + 1;
    // Not waiting for the begin batch: the connection's FIN is handled meanwhile, and its
    // record waits for the begin in finish() — the begin batch can then wait for company
    // (fewer kernel transactions) without delaying the close.
    this.track({ id, key: ev.key, iface: scope.iface, proc, openedBy, start: ev.time, attribution: attribution.source, generation });
  }

  /** Starts tracking and counting a connection of a profiled process; conn.begun settles when
   * its counting is set up. */
  private track(c: NewConnection): TrackedConnection {
    const id = c.id ?? keyString(c.key);
    const conn: TrackedConnection = {
      id,
      generation: c.generation ?? this.generations.current(id),
      key: c.key,
      iface: c.iface,
      job: c.proc.job,
      pid: c.proc.pid,
      owner: c.proc.user,
      openedBy: c.openedBy,
      start: c.start,
      attribution: c.attribution,
      counting: 'no-room',
      finSent: false,
      finReceived: false,
      ...(c.late ? { late: true } : {}),
      ...(this.parts.site ? { link: this.parts.site.link, ...(this.parts.site.guest ? { guest: true } : {}) } : {}),
    };
    this.table.add(conn);
    this.translate(conn);
    this.stats.opened += 1;
    const seenOpening = c.countedSinceStart ?? c.start !== undefined;
    conn.begun = this.counting.begin(conn, seenOpening).then((outcome) => {
      // Counters reinstalled after this connection opened and before its begin went through:
      // what it sent before is gone with the flushed ones.
      if (outcome === 'from-first-packet' && this.countersRestartedAt > (conn.start ?? 0)) {
        outcome = 'from-now';
        if (conn.start !== undefined) conn.partialWhy = RESTARTED_NOTE; // known to predate the restart
      } else if (outcome === 'from-now' && seenOpening && this.counting.countsFromHandshake()) {
        conn.partialWhy = KERNEL_SHORT_NOTE;
      }
      conn.counting = outcome;
      conn.begunSettled = true;
      return conn.counting;
    });
    return conn;
  }

  /** Looks up, in the background, where NAT put the job's end; the record carries it. */
  private translate(conn: TrackedConnection): void {
    const t = this.parts.site?.translate;
    if (!t) return;
    conn.translating = t(conn.key).then(
      (nat) => {
        if (nat && (nat.addr !== conn.key.localAddr || nat.port !== conn.key.localPort)) conn.translated = nat;
      },
      () => undefined,
    );
  }

  private scheduleClose(conn: TrackedConnection, reason: 'fin' | 'rst'): Promise<void> {
    conn.closing = reason;
    return new Promise((resolve) => {
      setTimeout(() => void this.finish([conn], reason).then(resolve, resolve), CLOSE_GRACE_MS);
    });
  }

  /** A late eBPF event: a more exact owner for a tracked connection, or the owner of one that
   * could not be resolved when it opened. */
  private refine(key: ConnKey, now: Attribution): void {
    if (now.pid === undefined) return;
    const id = keyString(key);
    const u = this.unclaimed.get(id);
    if (u) {
      if (u.reason === 'own-api' || u.pid !== undefined) return;
      return this.chains.enqueue(id, () => this.claims.resolvedLate(u, now.pid!, now.source), 'refined');
    }
    const conn = this.table.getById(id);
    if (!conn || now.pid === conn.pid) return;
    const proc = this.membership.profiledProcess(now.pid);
    if (!proc || proc.job !== conn.job) return;
    this.table.delete(conn);
    conn.pid = proc.pid;
    conn.owner = proc.user;
    conn.attribution = now.source;
    this.table.add(conn);
  }

  /**
   * A registration (late: the process may have connected before the scheduler told us) or a
   * capture gap: claims these processes' connections (see Claims).
   */
  claimConnectionsOf(pids: Iterable<number>, opts: { late: boolean }): Promise<number> {
    return this.claims.ofProcesses(pids, opts);
  }

  /** The daemon's last act: one read of every counter, one record per connection. The engine's
   * stop() then removes the counters wholesale, instead of one delete batch per 5,000. */
  async finishAll(reason: EndReason): Promise<number> {
    await this.drain();
    const conns = this.table.all();
    await Promise.all(conns.map((c) => c.begun));
    await Promise.all(conns.map((c) => c.translating));
    const { counts, note } = await this.counting.all();
    let logged = 0;
    for (const c of conns) {
      if (this.table.get(c.key) !== c) continue; // finished by someone else meanwhile
      logged += 1;
      this.table.delete(c);
      this.generations.release(c.id);
      this.stats.closed[reason] += 1;
      const stale = this.generations.superseded(c.id, c.generation);
      this.parts.log.write(toRecord(c, reason, c.counting === 'no-room' || stale ? undefined : counts.get(c.id), stale ? REUSED_NOTE : note));
    }
    return logged;
  }

  /** Final counters, stop counting, one record per connection. A connection another call is
   * already finishing (its FIN's close and its process's end, say) is left to that call: its
   * key twice in one end batch would make the kernel refuse the whole batch. */
  async finish(conns: TrackedConnection[], reason: EndReason): Promise<void> {
    const mine = conns.filter((c) => !c.ending);
    const theirs = conns.flatMap((c) => (c.ending ? [c.ending] : []));
    if (mine.length) {
      const p = this.finishNow(mine, reason);
      for (const c of mine) c.ending = p;
      // Failed: another call may try again.
      p.catch(() => mine.forEach((c) => c.ending === p && (c.ending = undefined)));
      await p;
    }
    await Promise.all(theirs);
  }

  private async finishNow(conns: TrackedConnection[], reason: EndReason): Promise<void> {
    // A process or job may end while a connection's counting is still being set up.
    await Promise.all(conns.map((c) => c.begun));
    await Promise.all(conns.map((c) => c.translating));
    const { finals, reused, note } = await this.counting.end(conns, (c) => this.generations.superseded(c.id, c.generation));
    conns.forEach((c, i) => {
      if (this.table.get(c.key) !== c) return; // finished by someone else meanwhile
      this.table.delete(c);
      if (!this.chains.has(c.id)) this.generations.release(c.id);
      this.finished.set(c.id, Date.now() + IGNORE_TTL_MS);
      this.stats.closed[reason] += 1;
      this.parts.log.write(toRecord(c, reason, finals[i], reused[i] ? REUSED_NOTE : note));
    });
  }

  /** After the engine reinstalled lost counters: those connections now miss what passed while
   * the counters were gone. Returns how many were flagged. */
  countingRestarted(keys: readonly ConnKey[]): number {
    this.countersRestartedAt = Date.now();
    this.stats.countersRestored += 1;
    let flagged = 0;
    for (const k of keys) {
      const c = this.table.get(k);
      if (c && c.counting === 'from-first-packet') {
        [c.counting, c.partialWhy] = ['from-now', RESTARTED_NOTE];
        flagged += 1;
      }
    }
    return flagged;
  }

  /** Refreshes the live counters shown by the API (see LiveCounts). Resolves with when the
   * read that served began. */
  refreshCounts(only?: readonly TrackedConnection[], onlyKey?: string): Promise<number> {
    return this.live.refresh(only, onlyKey);
  }

  /** When the live counts of every connection were last read (epoch ms; 0: never). */
  get countsReadAt(): number {
    return this.live.readAt;
  }

  /** Reclaims what no FIN told us about (see Collector); one collection at a time. */
  gc(why: 'threshold' | 'periodic'): Promise<void> {
    return this.collector.collect(why);
  }

  private collectable(): CollectedTracker {
    return {
      // Not one being ended (a job's end may wait, through a begin, for this very collection)
      // nor one whose begin is still waiting (it may wait for this collection too).
      quietConnections: () => this.table.all().filter((c) => !c.closing && !c.ending && c.begunSettled && !this.chains.has(c.id)),
      finish: (conns, reason) => this.finish(conns, reason),
      expire: (now) => {
        const { released, forgotten } = this.unclaimed.expire(now);
        this.giveUp(released);
        for (const id of forgotten) if (!this.chains.has(id) && !this.table.has(id)) this.generations.release(id);
        for (const [id, until] of this.finished) if (until < now) this.finished.delete(id);
      },
      inUse: () => [...this.table.all().map((c) => c.key), ...this.unclaimed.heldKeys()],
      netPid: () => this.netPid(),
    };
  }

  /** Whose /proc/PID/net tables hold this tracker's sockets ('self': the daemon's). */
  private netPid(): number | 'self' | undefined {
    return this.parts.site ? this.parts.site.netPid() : 'self';
  }

  private isFinished(id: string, time: number): boolean {
    const until = this.finished.get(id);
    return until !== undefined && until >= time;
  }
}
