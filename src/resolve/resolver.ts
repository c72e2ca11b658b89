import { EventEmitter } from 'node:events';
import { stat } from 'node:fs/promises';
import type { ConnKey } from '../connection.js';
import { canonicalAddr, isWildcard, keyId, tupleId } from './addr.js';
import type { SocketEvent, TraceEvent } from './events.js';
import type { Lineage } from './lineage.js';
import { SocketIndex, TCP_STATE, type TcpRow } from './procfs.js';
import { SharedTcpTables } from './tcp-tables.js';

/**
 * Connection → process. First from eBPF events (exact: the kernel saw that process connect or
 * accept), then from /proc (the fd tables of tracked processes), then — for an incoming connection
 * not yet accepted — the process holding the listening socket (right job, maybe not the exact
 * child). What none of these finds is reported unresolved with the reason, never guessed.
 *
 * Events: 'refined' (key: ConnKey, now: Attribution, before: Attribution) when an eBPF event
 * arrives for a connection that was answered inexactly or not at all (e.g. an accept after the
 * listener answer).
 */

/** Longest wait for an event, in waitMs, while the tracer's output is behind. */
const MAX_WAIT_FACTOR = 10;
/** How often waits past their time are looked at. */
const WAIT_TICK_MS = 20;

interface Wait {
  /** The connection's time, or when the wait began if later (epoch ms). */
  since: number;
  /** When it may give up, and when it must. */
  deadline: number;
  last: number;
  done: (k: Kept | undefined) => void;
}

export type AttributionSource = 'ebpf-connect' | 'ebpf-accept' | 'procfs' | 'listener' | 'tap';

export type Attribution =
  | { pid: number; source: AttributionSource; exact: boolean }
  | { pid: undefined; source: 'unresolved'; reason: string };

export interface ResolveOptions {
  /** Who sent the SYN: 'local' = a process here connected, 'remote' = a process here accepts. */
  opener: 'local' | 'remote';
  /** Epoch ms when the connection's first packet was seen; events much older belong to an
   * earlier connection that used the same tuple. */
  time: number;
}

/** What the resolver needs of the tracer (the Tracer class, or a fake in unit tests). */
export interface EventSource extends EventEmitter {
  readonly live: boolean;
  /** Asks for this namespace's socket events (the Tracer may drop others); returns the undo. */
  serve?(netns: number): () => void;
}

export interface ResolverOptions {
  lineage: Lineage;
  /** Absent or not live: /proc only. */
  tracer?: EventSource;
  /** The network namespace served, named by a process in it: 'self' for the daemon, which runs in
   * the namespace it profiles; tests in the host namespace pass a pid inside the test namespace.
   * Decides both the /proc/PID/net tables read and which eBPF events count (by namespace inode). */
  netPid?: number | 'self';
  /** Longest wait for an eBPF event that has not been read yet. */
  waitMs?: number;
  /** How long unclaimed events are kept, and inexact answers watched for refinement. */
  eventTtlMs?: number;
  maxEvents?: number;
  /** An event this much older than ResolveOptions.time is for an earlier connection. */
  staleToleranceMs?: number;
  procRoot?: string;
}

export type UnresolvedCode = 'no-tracked-processes' | 'closed' | 'not-owned' | 'ambiguous' | 'not-accepted' | 'proc-error';

export interface ResolverStats {
  bySource: Record<AttributionSource | 'unresolved', number>;
  unresolved: Partial<Record<UnresolvedCode, number>>;
  refined: number;
  /** eBPF socket events kept for lookup now, and ignored because of another network namespace. */
  eventsKept: number;
  eventsOtherNetns: number;
  /** Resolves that had to wait for an event, and how long in total. */
  waits: number;
  waitedMs: number;
}

interface Kept {
  ev: SocketEvent;
  /** Epoch ms of the kernel event. */
  at: number;
  received: number;
}

interface Watch {
  key: ConnKey;
  before: Attribution;
  time: number;
  until: number;
}

export class Resolver extends EventEmitter {
  private readonly kept = new Map<string, Kept>();
  private readonly waiters = new Map<string, Set<(k: Kept | undefined) => void>>();
  private readonly watches = new Map<string, Watch>();
  private readonly index: SocketIndex;
  private readonly o: Required<Omit<ResolverOptions, 'tracer'>> & { tracer: EventSource | undefined };
  private readonly detach: () => void;
  private liveSince = Infinity;
  /** The newest kernel time (epoch ms) of any event read, and when it was read: how far the
   * tracer's output has been read. */
  private eventsReadUpTo = 0;
  private eventReceivedAt = 0;
  /** The socket tables, one read shared by the lookups it can serve. */
  private readonly tables: SharedTcpTables;
  private readonly st: ResolverStats = {
    bySource: { 'ebpf-connect': 0, 'ebpf-accept': 0, procfs: 0, listener: 0, tap: 0, unresolved: 0 },
    unresolved: {},
    refined: 0,
    eventsKept: 0,
    eventsOtherNetns: 0,
    waits: 0,
    waitedMs: 0,
  };

  private constructor(options: ResolverOptions, private readonly netns: number) {
    super();
    this.o = {
      tracer: options.tracer,
      lineage: options.lineage,
      netPid: options.netPid ?? 'self',
      waitMs: options.waitMs ?? 300,
      eventTtlMs: options.eventTtlMs ?? 30_000,
      maxEvents: options.maxEvents ?? 65_536,
      // Events carry CLOCK_MONOTONIC times converted at arrival, captures the kernel's realtime
      // stamp: the two agree to well under a millisecond. A connect or accept event is never
      // older than its own connection's SYN, so one older than that by more than this is an
      // earlier connection's on the same tuple (a churning client reuses ports within a second,
      // and another process may take them).
      staleToleranceMs: options.staleToleranceMs ?? 250,
      procRoot: options.procRoot ?? '/proc',
    };
    this.index = new SocketIndex(this.o.procRoot);
    this.tables = new SharedTcpTables(this.o.netPid, this.o.procRoot);
    const tracer = this.o.tracer;
    if (tracer?.live) this.liveSince = Date.now();
    const onEvent = (ev: TraceEvent) => {
      const now = Date.now();
      const at = now - Number(process.hrtime.bigint() - ev.ns) / 1e6; // the kernel's time, epoch ms
      this.eventsReadUpTo = Math.max(this.eventsReadUpTo, at);
      this.eventReceivedAt = now;
      if (ev.kind === 'connect' || ev.kind === 'accept') this.onSocketEvent(ev, at, now);
    };
    const onStatus = (s: { state: string }) => {
      if (s.state === 'live') this.liveSince = Math.min(this.liveSince, Date.now());
    };
    tracer?.on('event', onEvent);
    tracer?.on('status', onStatus);
    const unserve = tracer?.serve?.(netns);
    this.detach = () => {
      tracer?.off('event', onEvent);
      tracer?.off('status', onStatus);
      unserve?.();
    };
  }

  /** Reads the served namespace's inode, then builds the resolver. */
  static async create(options: ResolverOptions): Promise<Resolver> {
    const procRoot = options.procRoot ?? '/proc';
    const netPid = options.netPid ?? 'self';
    const ns = await stat(`${procRoot}/${netPid}/ns/net`).catch((e: Error) => {
      throw new Error(`cannot identify the network namespace of ${netPid}: ${e.message}`);
    });
    return new Resolver(options, ns.ino);
  }

  async resolve(key: ConnKey, opts: ResolveOptions): Promise<Attribution> {
    const id = keyId(key);
    let kept = this.fresh(id, opts.time);
    // Events only exist for connections opened while the tracer ran.
    if (!kept && this.o.tracer?.live && opts.time >= this.liveSince - this.o.staleToleranceMs) {
      const t0 = performance.now();
      kept = await this.waitFor(id, opts.time);
      this.st.waits += 1;
      this.st.waitedMs += performance.now() - t0;
    }
    if (kept) return this.counted(fromEvent(kept.ev));
    const viaProc = await this.fromProc(key, opts).catch(
      (e: Error): Answer => ({ a: { pid: undefined, source: 'unresolved', reason: `reading /proc failed: ${e.message}` }, code: 'proc-error' }),
    );
    const a = viaProc.a;
    if (a.pid === undefined) {
      const why = this.o.tracer?.live ? `no eBPF event within ${this.o.waitMs} ms` : 'eBPF not running';
      viaProc.a = { ...a, reason: `${a.reason}; ${why}` };
    }
    if (viaProc.a.pid === undefined || !viaProc.a.exact) this.watch(id, key, viaProc.a, opts.time);
    return this.counted(viaProc.a, viaProc.code);
  }

  /**
   * The tracked processes holding the connection's socket now. An accepted connection is
   * attributed to the accepting process; a forking server's child that serves it is found here
   * (lineage knows the child, its fd table holds the socket once the parent closed its copy).
   */
  async owners(key: ConnKey): Promise<number[]> {
    const id = keyId(key);
    const row = (await this.tables.read(Date.now())).byId.get(id);
    if (!row || !row.inode) return [];
    return this.index.owners(row.inode, this.o.lineage.live());
  }

  stats(): ResolverStats {
    return { ...this.st, bySource: { ...this.st.bySource }, unresolved: { ...this.st.unresolved }, eventsKept: this.kept.size };
  }

  close(): void {
    this.detach();
    for (const set of this.waiters.values()) for (const w of set) w(undefined);
    this.waiters.clear();
    this.waiting.clear();
    clearTimeout(this.ticking);
  }

  private onSocketEvent(ev: SocketEvent, at: number, now: number): void {
    if (ev.netns !== this.netns) {
      this.st.eventsOtherNetns += 1;
      return;
    }
    const k: Kept = { ev, at, received: now };
    const id = tupleId(ev.localAddr, ev.localPort, ev.remoteAddr, ev.remotePort);
    this.kept.delete(id); // re-insert at the end: the map's order is its expiry order
    this.kept.set(id, k);
    this.expire(now);
    for (const w of this.waiters.get(id) ?? []) w(k);
    const watch = this.watches.get(id);
    if (watch && k.at >= watch.time - this.o.staleToleranceMs) {
      this.watches.delete(id);
      this.st.refined += 1;
      this.emit('refined', watch.key, fromEvent(ev), watch.before);
    }
  }

  private expire(now: number): void {
    for (const [id, k] of this.kept) {
      if (this.kept.size <= this.o.maxEvents && now - k.received <= this.o.eventTtlMs) break;
      this.kept.delete(id);
    }
    for (const [id, w] of this.watches) {
      if (this.watches.size <= this.o.maxEvents && w.until >= now) break;
      this.watches.delete(id);
    }
  }

  private fresh(id: string, time: number): Kept | undefined {
    const k = this.kept.get(id);
    return k && k.at >= time - this.o.staleToleranceMs ? k : undefined;
  }

  /**
   * Waits for the connection's event until the tracer's output has been read past its time plus
   * waitMs. A timer alone would give up on events already written but not yet read: after the
   * loop was busy for longer than waitMs every wait's timer fires before the pipe is read (timers
   * run first), and under a burst every connection fell through to /proc. So past waitMs the
   * wait goes on while events still flow and none read so far is that late (at most
   * MAX_WAIT_FACTOR × waitMs), and gives up only after one more turn of the loop. One ticker
   * checks every wait, in the order they began (25,000 waits with a timer each cost a second of
   * CPU under the burst).
   */
  private waitFor(id: string, time: number): Promise<Kept | undefined> {
    return new Promise((resolve) => {
      const set = this.waiters.get(id) ?? new Set();
      this.waiters.set(id, set);
      const began = Date.now();
      const w: Wait = { since: Math.max(time, began), deadline: began + this.o.waitMs, last: began + MAX_WAIT_FACTOR * this.o.waitMs, done: () => undefined };
      w.done = (k: Kept | undefined) => {
        if (k && k.at < time - this.o.staleToleranceMs) return; // an earlier connection's event
        if (!set.delete(w.done)) return;
        this.waiting.delete(w);
        if (!set.size) this.waiters.delete(id);
        resolve(k);
      };
      set.add(w.done);
      this.waiting.add(w);
      this.tickLater();
    });
  }

  private readonly waiting = new Set<Wait>();
  private ticking: NodeJS.Timeout | undefined;

  private tickLater(): void {
    this.ticking ??= setTimeout(() => this.tick(), WAIT_TICK_MS);
  }

  /** Gives up the waits that are over; they began in deadline order, so the first one still
   * waiting ends the pass. */
  private tick(): void {
    this.ticking = undefined;
    const now = Date.now();
    const flowing = now - this.eventReceivedAt < this.o.waitMs;
    const over: Wait[] = [];
    for (const w of this.waiting) {
      if (now < w.deadline) break;
      const behind = flowing && this.eventsReadUpTo < w.since + this.o.waitMs;
      if (behind && now < w.last) break;
      over.push(w);
      this.waiting.delete(w);
    }
    if (over.length) setImmediate(() => over.forEach((w) => w.done(undefined)));
    if (this.waiting.size) this.tickLater();
  }

  private watch(id: string, key: ConnKey, before: Attribution, time: number): void {
    this.watches.delete(id);
    this.watches.set(id, { key, before, time, until: Date.now() + this.o.eventTtlMs });
    this.expire(Date.now());
  }

  private counted(a: Attribution, code?: UnresolvedCode): Attribution {
    this.st.bySource[a.source] += 1;
    if (a.pid === undefined && code) this.st.unresolved[code] = (this.st.unresolved[code] ?? 0) + 1;
    return a;
  }

  private async fromProc(key: ConnKey, { opener, time }: ResolveOptions): Promise<Answer> {
    const lineage = this.o.lineage;
    if (!lineage.live().size) return unresolved('no-tracked-processes', 'no tracked process is alive');
    const id = keyId(key);
    const { rows, byId } = await this.tables.read(time);
    const row = byId.get(id);
    if (row && row.inode) {
      let pids = await this.index.owners(row.inode, lineage.live());
      if (!pids.length) {
        await lineage.refresh(); // a process forked since the last look and no event told us
        pids = await this.index.owners(row.inode, lineage.live());
      }
      if (pids.length) return this.pick(pids, 'procfs', `socket inode ${row.inode}`);
      return unresolved('not-owned', `socket inode ${row.inode} is held by no tracked process`);
    }
    if (opener === 'remote' && (!row || row.state === TCP_STATE.SYN_RECV || row.state === TCP_STATE.ESTABLISHED)) {
      return this.fromListener(key, rows);
    }
    if (row) return unresolved('closed', `socket no longer held by any process (state ${stateName(row.state)})`);
    return unresolved('closed', 'connection not in the tcp table (closed before the lookup)');
  }

  /** An incoming connection not accepted yet belongs to whoever holds the listening socket. */
  private async fromListener(key: ConnKey, rows: TcpRow[]): Promise<Answer> {
    const local = canonicalAddr(key.localAddr).addr;
    const listeners = rows.filter(
      (r) => r.state === TCP_STATE.LISTEN && r.localPort === key.localPort && (r.localAddr === local || isWildcard(r.localAddr)),
    );
    // A listener on the exact address takes the connection before a wildcard one.
    const exact = listeners.filter((r) => r.localAddr === local);
    const chosen = exact.length ? exact : listeners;
    if (!chosen.length) return unresolved('not-accepted', `not accepted yet and nothing listens on port ${key.localPort}`);
    const pids = new Set<number>();
    for (const r of chosen) for (const p of await this.index.owners(r.inode, this.o.lineage.live())) pids.add(p);
    if (!pids.size) return unresolved('not-owned', `not accepted yet; the listener on port ${key.localPort} is held by no tracked process`);
    return this.pick([...pids], 'listener', `listener on port ${key.localPort}`);
  }

  /** One holder: that one. Several (a socket inherited across fork): the one all others descend
   * from, marked inexact. Unrelated holders: unresolved. */
  private pick(pids: number[], source: 'procfs' | 'listener', what: string): Answer {
    if (pids.length === 1) return { a: { pid: pids[0]!, source, exact: source === 'procfs' } };
    const lineage = this.o.lineage;
    const top = pids.find((p) => pids.every((q) => lineage.descendsFrom(q, p)));
    if (top !== undefined) return { a: { pid: top, source, exact: false } };
    return unresolved('ambiguous', `${what} is shared by unrelated processes ${pids.join(', ')}`);
  }
}

interface Answer {
  a: Attribution;
  code?: UnresolvedCode;
}

function unresolved(code: UnresolvedCode, reason: string): Answer {
  return { a: { pid: undefined, source: 'unresolved', reason }, code };
}

function fromEvent(ev: SocketEvent): Attribution {
  return { pid: ev.pid, source: ev.kind === 'connect' ? 'ebpf-connect' : 'ebpf-accept', exact: true };
}

function stateName(state: number): string {
  return Object.entries(TCP_STATE).find(([, v]) => v === state)?.[0] ?? String(state);
}
