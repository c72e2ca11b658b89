import { EventEmitter } from 'node:events';
import type { ExitEvent, ForkEvent, TraceEvent } from './events.js';
import { descendantsOf, readStat } from './procfs.js';

/**
 * Which processes descend from the registered root pids. Learned as it happens from fork events
 * (a child that lives a few ms is gone before /proc can be read), completed from /proc PPid for
 * what happened before we looked, and kept after a process's parent exits (it was reparented, but
 * it is still the job's). A pid is a process only together with its start: a pid that exits and
 * reappears is a new process, recognised by start ticks (/proc, exit events) and by event order.
 *
 * Events: 'fork' (ProcessRecord), 'exit' (ProcessRecord).
 */

export interface ProcessRecord {
  pid: number;
  parent: number | undefined;
  /** The registered root this process descends from (itself for a root). */
  root: number;
  /** /proc/PID/stat start time (clock ticks), when known. */
  startTicks?: number;
  /** Fork event time (CLOCK_MONOTONIC ns), when learned from one. */
  bornNs?: bigint;
  exitNs?: bigint;
  /** Date.now() when the exit was noticed; exited records stay looked-up-able for a grace time. */
  exitedAt?: number;
}

export interface LineageOptions {
  procRoot?: string;
  /** How long an exited process can still be looked up (its late connections still map to its job). */
  exitedGraceMs?: number;
  /** How long forks of unknown parents are remembered, for events read out of order across CPUs
   * and for children born just before their parent was registered. */
  recentForkMs?: number;
}

interface RecentFork {
  parent: number;
  ns: bigint;
  at: number;
}

const RECENT_MAX = 16_384;
/** With live fork events, how old a pass over /proc a registration may use (see addRoot). */
const SHARED_PASS_MAX_AGE_MS = 1_000;

/** Sets of pids under a key (a root, a parent): what a registration or an end walks, so that
 * its cost grows with the family, not with every process tracked. */
class PidIndex {
  private readonly sets = new Map<number, Set<number>>();
  add(key: number, pid: number): void {
    const s = this.sets.get(key);
    if (s) s.add(pid);
    else this.sets.set(key, new Set([pid]));
  }
  delete(key: number, pid: number): void {
    const s = this.sets.get(key);
    if (s?.delete(pid) && !s.size) this.sets.delete(key);
  }
  of(key: number): number[] {
    return [...(this.sets.get(key) ?? [])];
  }
}

export class Lineage extends EventEmitter {
  private records = new Map<number, ProcessRecord>();
  /** records by their root, and by their parent. */
  private readonly byRoot = new PidIndex();
  private readonly byParent = new PidIndex();
  private alive = new Set<number>();
  private recentForks = new Map<number, RecentFork>();
  /** recentForks by parent. */
  private readonly forksByParent = new PidIndex();
  /** The registered roots: another root's registration or fork events do not take them over. */
  private readonly roots = new Set<number>();
  private prunedAt = -Infinity;
  private recentExits = new Map<number, { ns: bigint; startTicks: number; at: number }>();
  private events = 0;
  private readonly procRoot: string;
  private readonly exitedGraceMs: number;
  private readonly recentForkMs: number;

  constructor(options: LineageOptions = {}) {
    super();
    this.procRoot = options.procRoot ?? '/proc';
    this.exitedGraceMs = options.exitedGraceMs ?? 60_000;
    this.recentForkMs = options.recentForkMs ?? 10_000;
  }

  /** Whether fork events are arriving now (the tracer is live); set by followForkEvents(). */
  private forkEventsLive: () => boolean = () => false;

  /** Tells the lineage how to know that fork events arrive (the tracer's state). While they
   * do, a registration's search of /proc may use a pass up to SHARED_PASS_MAX_AGE_MS old — the
   * fork events of that window are in recentForks — so that registrations arriving together on
   * a node of 10,000 processes share one pass instead of each reading every /proc/PID/stat
   * (this kernel has no /proc/PID/task/TID/children). */
  followForkEvents(live: () => boolean): void {
    this.forkEventsLive = live;
  }

  /** Follows fork and exit events of a tracer; returns the unsubscribe function. */
  attach(source: EventEmitter): () => void {
    const on = (ev: TraceEvent) => {
      if (ev.kind === 'fork') this.onFork(ev);
      else if (ev.kind === 'exit') this.onExit(ev);
    };
    source.on('event', on);
    return () => source.off('event', on);
  }

  /** Registers a root. False when no such live process exists. Its existing descendants are
   * found in /proc, and children forked moments before registration from recent fork events. */
  async addRoot(pid: number): Promise<boolean> {
    const st = await readStat(pid, this.procRoot);
    if (!st) return false;
    const prior = this.records.get(pid);
    const same = prior && !prior.exitedAt && (prior.startTicks === undefined || prior.startTicks === st.startTicks);
    const rec: ProcessRecord = same ? prior : { pid, parent: st.ppid, root: pid };
    rec.startTicks = st.startTicks;
    this.put(rec);
    // Already a descendant of another root: registered itself, it heads its own family now, as
    // its existing and its future children do (these inherit rec.root).
    this.setRoot(rec, pid);
    this.roots.add(pid);
    this.alive.add(pid);
    this.reroot(pid, pid);
    this.adoptRecent(pid, rec.bornNs ?? 0n);
    await this.refresh([pid], this.forkEventsLive() ? SHARED_PASS_MAX_AGE_MS : 0);
    return true;
  }

  /** Forgets a root and everything that descends from it through it; or, when the root
   * descends from another registered root, gives its family back to that one (FOLLOW_CHILDREN:
   * they are that job's again). */
  removeRoot(pid: number): void {
    this.roots.delete(pid);
    const parent = this.records.get(this.records.get(pid)?.parent ?? -1);
    const outer = parent && parent.root !== pid && this.roots.has(parent.root) ? parent.root : undefined;
    for (const p of this.byRoot.of(pid)) {
      const rec = this.records.get(p)!;
      if (outer !== undefined) this.setRoot(rec, outer);
      else {
        this.drop(rec);
        this.alive.delete(p);
      }
    }
  }

  /** Live processes descending from a root (roots included). Do not mutate. */
  live(): ReadonlySet<number> {
    return this.alive;
  }

  /** Processes of a root's family, live or exited within the grace time (the root included). */
  membersOf(root: number): number[] {
    return this.byRoot.of(root);
  }

  isTracked(pid: number): boolean {
    return this.alive.has(pid);
  }

  /** The record of a tracked process, also of one that exited less than the grace time ago. */
  lookup(pid: number): ProcessRecord | undefined {
    const rec = this.records.get(pid);
    return rec ? { ...rec } : undefined;
  }

  rootOf(pid: number): number | undefined {
    return this.records.get(pid)?.root;
  }

  /** True when `pid` descends from `ancestor` (or is it), through the recorded parents. */
  descendsFrom(pid: number, ancestor: number): boolean {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && hops < 4096; hops++) {
      if (p === ancestor) return true;
      p = this.records.get(p)?.parent;
    }
    return false;
  }

  /**
   * Completes from /proc: adds live descendants of tracked processes that no event told about
   * (forked before the tracer ran, or with eBPF off), and notices exits and reused pids (the
   * fallback when no exit event came).
   */
  async refresh(from: Iterable<number> = this.alive, maxAgeMs = 0): Promise<void> {
    const start = new Set(from);
    for (const pid of start) {
      const rec = this.records.get(pid);
      if (!rec || rec.exitedAt) continue;
      const st = await readStat(pid, this.procRoot);
      if (!st || (rec.startTicks !== undefined && rec.startTicks !== st.startTicks)) {
        this.markExited(rec, undefined);
        start.delete(pid);
      } else {
        rec.startTicks = st.startTicks;
      }
    }
    if (!start.size) return this.prune();
    for (const st of await descendantsOf(start, this.procRoot, maxAgeMs)) {
      const known = this.records.get(st.pid);
      if (known && !known.exitedAt && (known.startTicks === undefined || known.startTicks === st.startTicks)) {
        known.startTicks = st.startTicks;
        continue;
      }
      const parent = this.records.get(st.ppid);
      if (!parent || parent.exitedAt) continue;
      this.add({ pid: st.pid, parent: st.ppid, root: parent.root, startTicks: st.startTicks });
      // An older pass: its processes' children forked since are in the fork events only.
      if (maxAgeMs > 0) this.adoptRecent(st.pid, 0n);
    }
    this.prune();
  }

  onFork(ev: ForkEvent): void {
    if (++this.events % 1024 === 0) this.prune();
    this.forgetFork(ev.child);
    this.recentForks.set(ev.child, { parent: ev.parent, ns: ev.ns, at: Date.now() });
    this.forksByParent.add(ev.parent, ev.child);
    if (this.recentForks.size > RECENT_MAX) this.forgetFork(this.recentForks.keys().next().value!);
    const parent = this.records.get(ev.parent);
    if (!parent || !this.existedAt(parent, ev.ns)) return;
    this.forked(ev.parent, ev.child, ev.ns, parent.root);
  }

  onExit(ev: ExitEvent): void {
    if (++this.events % 1024 === 0) this.prune();
    this.recentExits.set(ev.pid, { ns: ev.ns, startTicks: ev.startTicks, at: Date.now() });
    if (this.recentExits.size > RECENT_MAX) this.recentExits.delete(this.recentExits.keys().next().value!);
    const rec = this.records.get(ev.pid);
    if (!rec || rec.exitedAt) return;
    if (rec.startTicks !== undefined && rec.startTicks !== ev.startTicks) return; // another incarnation
    if (rec.bornNs !== undefined && ev.ns < rec.bornNs) return; // the previous holder of the pid
    this.markExited(rec, ev.ns);
  }

  private existedAt(rec: ProcessRecord, ns: bigint): boolean {
    return (rec.bornNs === undefined || ns >= rec.bornNs) && (rec.exitNs === undefined || ns <= rec.exitNs) && (!rec.exitedAt || rec.exitNs !== undefined);
  }

  private forked(parent: number, child: number, ns: bigint, root: number): void {
    const prior = this.records.get(child);
    if (prior && prior.bornNs !== undefined && prior.bornNs >= ns) return; // already know a later one
    if (prior && !prior.exitedAt && this.roots.has(child)) return; // a registered root's own birth
    const rec = this.add({ pid: child, parent, root, bornNs: ns });
    // Its exit may have been read before its fork (per-CPU buffers are not merged in order).
    const exit = this.recentExits.get(child);
    if (exit && exit.ns >= ns) {
      rec.startTicks = exit.startTicks;
      this.markExited(rec, exit.ns);
    }
    this.adoptRecent(child, ns);
  }

  /** Children of `pid` whose fork events arrived before we knew `pid` was tracked. */
  private adoptRecent(pid: number, notBefore: bigint): void {
    const root = this.records.get(pid)!.root;
    for (const child of this.forksByParent.of(pid)) {
      const f = this.recentForks.get(child)!;
      if (f.ns < notBefore || this.records.get(child)?.bornNs === f.ns) continue;
      if (Date.now() - f.at > this.recentForkMs) continue;
      this.forked(pid, child, f.ns, root);
    }
  }

  private add(rec: ProcessRecord): ProcessRecord {
    this.put(rec);
    this.alive.add(rec.pid);
    this.emit('fork', { ...rec });
    return rec;
  }

  /** Records rec (replacing an earlier process of its pid) and indexes it. */
  private put(rec: ProcessRecord): void {
    const old = this.records.get(rec.pid);
    if (old && old !== rec) this.drop(old);
    if (old === rec) return;
    this.records.set(rec.pid, rec);
    this.byRoot.add(rec.root, rec.pid);
    if (rec.parent !== undefined) this.byParent.add(rec.parent, rec.pid);
  }

  private drop(rec: ProcessRecord): void {
    this.records.delete(rec.pid);
    this.byRoot.delete(rec.root, rec.pid);
    if (rec.parent !== undefined) this.byParent.delete(rec.parent, rec.pid);
  }

  private forgetFork(child: number): void {
    const f = this.recentForks.get(child);
    if (!f) return;
    this.recentForks.delete(child);
    this.forksByParent.delete(f.parent, child);
  }

  /** Gives every recorded descendant of pid (not pid itself) this root, walking down the
   * parent index (what descendsFrom walks up). */
  private reroot(pid: number, root: number): void {
    const seen = new Set([pid]);
    const todo = [pid];
    while (todo.length) {
      for (const child of this.byParent.of(todo.pop()!)) {
        if (seen.has(child) || this.roots.has(child)) continue; // another root keeps its family
        seen.add(child);
        todo.push(child);
        this.setRoot(this.records.get(child)!, root);
      }
    }
  }

  private setRoot(rec: ProcessRecord, root: number): void {
    if (rec.root === root) return;
    this.byRoot.delete(rec.root, rec.pid);
    rec.root = root;
    this.byRoot.add(root, rec.pid);
  }

  private markExited(rec: ProcessRecord, ns: bigint | undefined): void {
    rec.exitedAt = Date.now();
    if (ns !== undefined) rec.exitNs = ns;
    this.alive.delete(rec.pid);
    this.emit('exit', { ...rec });
  }

  /** Forgets what is past its grace. At most once a second: it walks every record, and each
   * registration asks (what is forgotten a second late is only kept a second longer). */
  private prune(): void {
    const now = Date.now();
    if (performance.now() - this.prunedAt < 1_000) return;
    this.prunedAt = performance.now();
    for (const rec of this.records.values()) {
      if (rec.exitedAt && now - rec.exitedAt > this.exitedGraceMs) this.drop(rec);
    }
    for (const [pid, f] of this.recentForks) if (now - f.at > this.recentForkMs) this.forgetFork(pid);
    for (const [pid, x] of this.recentExits) if (now - x.at > this.recentForkMs) this.recentExits.delete(pid);
  }
}
