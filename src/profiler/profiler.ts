import type { Config } from '../config/config.js';
import type { DaemonControl, DaemonObserver, EndResult, Health, JobDetail, JobSummary, JobTallies, Traffic } from './control.js';
import { Registry, RequestError, isAlive, type ProcessClaim, type ProfiledProcess } from '../registry/registry.js';
import { ZERO, addCounts, jobSummary, jobTallies, processView } from './views.js';
import type { ConnectionLog } from '../log/connection-log.js';
import type { ConnectionRecord, EndReason } from '../log/record.js';
import type { CounterEngine, Installed } from '../counters/engine.js';
import type { Capture, CaptureGap } from '../capture/index.js';
import type { ResolveStack } from '../resolve/index.js';
import { ConnectionTracker } from './tracker.js';
import type { TrackedConnection } from './connections.js';
import { Scope } from './scope.js';
import { LinkSites, type LinkOpener } from './link-sites.js';
import { diag } from '../util/diag.js';
import { awaitLive, everyFigureReadAt, LIVE_FRESH_MS, LIVE_WAIT_ALWAYS_BELOW, oldestRead } from './live-view.js';
import { healthProblems, lateGraceOf, type LateGrace } from './health.js';
import { Upkeep } from './upkeep.js';
import { JobEnds } from './job-ends.js';

export interface ProfilerParts {
  config: Config;
  log: ConnectionLog;
  engine?: CounterEngine;
  resolve?: ResolveStack;
  capture?: Capture;
  /** Which connections are a job's, and which interface (log) each crosses. Default (no
   * kernel parts, API tests): no routes known. */
  scope?: Scope;
  /** Most unclaimed connections whose counters the grace list keeps (room in the flows set). */
  maxUnclaimed?: number;
  /** Jobs in containers and VMs: their own links (absent: host processes only). */
  links?: LinkOpener;
}

/**
 * The orchestrator: keeps the registry, the tracked connections and the log consistent, and
 * answers the API. Kernel-facing parts are reached only through their narrow interfaces.
 */
export class Profiler implements DaemonControl {
  readonly registry = new Registry();
  readonly tracker: ConnectionTracker;
  /** Containers' and VMs' links, each with its own tracker. */
  readonly links: LinkSites | undefined;
  private readonly startedAt = Date.now();
  private readonly upkeep: Upkeep;
  private stopping = false;
  private readonly jobEnds = new JobEnds();
  private onShutdown: ((reason: string) => void) | undefined;
  /** Totals of connections already logged, per job, for the API's job totals. */
  private readonly closedTotals = new Map<string, Traffic & { connections: number }>();
  readonly counters = {
    registrations: 0,
    registrationsRefused: 0,
    processesEnded: 0,
    jobsEnded: 0,
    recordsLogged: 0,
    uncountedConnections: 0,
  };

  constructor(private readonly parts: ProfilerParts) {
    this.tracker = new ConnectionTracker({
      registry: this.registry,
      log: { write: (r) => this.record(r) },
      engine: parts.engine,
      resolve: parts.resolve,
      followChildren: parts.config.followChildren,
      capacity: parts.config.rulesThreshold,
      scope: (parts.scope ??= new Scope({ configured: parts.config.interfaces, isLocal: () => false, deviceFor: async () => undefined })),
      graceMs: parts.config.lateGrace * 1000,
      maxUnclaimed: parts.maxUnclaimed ?? 100_000,
    });
    const lineage = parts.resolve?.lineage;
    this.links =
      parts.links && lineage
        ? new LinkSites({
            opener: parts.links,
            configured: parts.config.interfaces,
            isAlive: (pid) => {
              const p = this.registry.process(pid);
              return p !== undefined && isAlive(p);
            },
            newTracker: (site, engine, resolver, iface) =>
              new ConnectionTracker({
                registry: this.registry,
                log: { write: (r) => this.record(r) },
                engine,
                resolve: { resolver, lineage },
                site,
                followChildren: parts.config.followChildren,
                capacity: parts.config.rulesThreshold,
                scope: parts.scope!.forLink(iface),
                graceMs: parts.config.lateGrace * 1000,
                maxUnclaimed: parts.maxUnclaimed ?? 100_000,
              }),
          })
        : undefined;
    this.upkeep = new Upkeep(this.tracker, this.registry, parts.engine, () => this.links);
  }

  /** Every record passes here: kept in the job's totals, then written. */
  private record(r: ConnectionRecord): void {
    if (!r.counts) this.counters.uncountedConnections += 1;
    this.parts.log.write(r);
    this.counters.recordsLogged += 1;
    this.notify((o) => o.record?.(r));
    // A crashed run's harvested records are logged, but are no part of a job profiled now (a
    // job re-registered after the restart would count them twice); nor is a job nobody profiles.
    if (r.reason === 'recovered' || !this.registry.job(r.job)) return;
    const t = this.closedTotals.get(r.job) ?? { ...ZERO, connections: 0 };
    addCounts(t, r.counts);
    t.connections += 1;
    this.closedTotals.set(r.job, t);
  }

  private get connections() {
    return this.tracker.table;
  }

  /** Open connections of a process, on the host and on its links. */
  private readonly everywhere = {
    ofPid: (pid: number): readonly TrackedConnection[] => {
      const here = this.tracker.table.ofPid(pid);
      const there = this.links?.ofPid(pid);
      return there?.length ? [...here, ...there] : here;
    },
  };

  /** Logs what a crashed run left (harvested by the engine's start), then listens to capture and
   * starts the periodic upkeep (garbage collection, the counters' check). */
  async start(recovered: Installed[] = []): Promise<void> {
    for (const r of recovered) await this.logRecovered(r);
    const capture = this.parts.capture;
    capture?.on('event', (ev) => this.tracker.onEvent(ev));
    capture?.on('gap', (gap) => void this.afterGap(gap));
    this.upkeep.start(this.parts.config.gcInterval);
  }

  /** Connections opened while capture was down: found from the socket tables. */
  private async afterGap(gap: CaptureGap): Promise<void> {
    diag.warn('capture gap: rescanning the sockets of profiled processes', { iface: gap.iface, reason: gap.reason, gap_ms: gap.end - gap.start });
    const lineage = this.parts.resolve?.lineage;
    await this.tracker.claimConnectionsOf(lineage ? lineage.live() : this.registry.processes().map((p) => p.pid), { late: false });
  }

  /** A crashed run counted it for a job: it is logged under the interface the kernel routes it
   * by now (that run's INTERFACE may have differed), never dropped. */
  private async logRecovered(r: Installed): Promise<void> {
    const scope = await this.parts.scope!.ofFound(r.key);
    this.record({
      job: r.owner?.job ?? '?',
      pid: r.owner?.pid ?? 0,
      owner: '?',
      iface: scope.iface ?? ('device' in scope && scope.device ? scope.device : this.parts.config.interfaces[0]!),
      family: r.key.family,
      localAddr: r.key.localAddr,
      localPort: r.key.localPort,
      remoteAddr: r.key.remoteAddr,
      remotePort: r.key.remotePort,
      openedBy: 'unknown',
      end: Date.now(),
      reason: 'recovered',
      counts: r.counts,
      partial: true,
      attribution: 'recovered',
      note: 'left by a run that did not stop cleanly; counts up to its end',
    });
  }

  /** The daemon sets what happens on shutdown (stop everything, then exit). */
  setShutdownHandler(fn: (reason: string) => void): void {
    this.onShutdown = fn;
  }

  async register(job: string, claim: ProcessClaim): Promise<{ process: ProfiledProcess; added: boolean }> {
    this.refuseWhileStopping();
    try {
      const info = this.registry.verify(claim);
      const existing = this.registry.process(claim.pid);
      if (existing && existing.startTicks !== info.startTicks && !isAlive(existing)) {
        // The pid was reused: the earlier process died unnoticed. Close its books first.
        await this.endProcesses([existing], 'process-end');
      }
      this.jobEnds.refuseIfEnding(job);
      const started = !this.registry.job(job);
      const result = this.registry.add(job, info);
      this.counters.registrations += 1;
      if (started) this.notify((o) => o.jobStarted?.(job));
      if (result.added) {
        diag.info('process registered', { job, pid: info.pid, user: result.process.user });
        await this.jobEnds.claiming(job, this.adopt(result.process));
      }
      return result;
    } catch (e) {
      this.counters.registrationsRefused += 1;
      throw e;
    }
  }

  async endProcess(job: string, claim: ProcessClaim): Promise<EndResult> {
    this.refuseWhileStopping();
    const proc = this.registry.find(job, claim);
    const logged = await this.endProcesses([proc], 'process-end');
    return { processes: 1, connectionsLogged: logged };
  }

  async endJob(job: string): Promise<EndResult> {
    this.refuseWhileStopping();
    if (!this.registry.job(job)) throw new RequestError(404, `job ${job} is not profiled`);
    return this.jobEnds.end(job, () => this.endJobNow(job));
  }

  private async endJobNow(job: string): Promise<EndResult> {
    const procs = [...this.registry.job(job)!.processes.values()];
    const logged = await this.endProcesses(procs, 'job-end');
    this.registry.removeJob(job);
    this.closedTotals.delete(job);
    this.counters.jobsEnded += 1;
    this.notify((o) => o.jobEnded?.(job));
    return { processes: procs.length, connectionsLogged: logged };
  }

  async giveLink(job: string, pid: number, device: string): Promise<{ link: string; bridge: string | null; logged_as: string }> {
    this.refuseWhileStopping();
    const proc = this.registry.find(job, { pid });
    if (!this.links) throw new RequestError(501, 'links are counted with ENGINE = nftables only');
    const lineage = this.parts.resolve?.lineage;
    const { link, iface } = await this.links.give(proc, lineage ? lineage.membersOf(pid) : [pid], device);
    return { link: link.device, bridge: link.master ?? null, logged_as: iface };
  }

  /** Late registration: the process (and its children) may have connected already. */
  private async adopt(proc: ProfiledProcess): Promise<void> {
    const lineage = this.parts.resolve?.lineage;
    await lineage?.addRoot(proc.pid);
    // Also children that connected and exited before the registration (their fork events).
    const family = lineage ? lineage.membersOf(proc.pid) : [proc.pid];
    await this.tracker.claimConnectionsOf(family, { late: true });
    // A container's or VM's process: its traffic crosses its own links, counted there.
    await this.links?.attach(proc, family);
  }

  shutdown(reason: string): void {
    if (this.stopping) return;
    if (this.onShutdown) this.onShutdown(reason);
  }

  /** Logs every open connection and forgets every process: the daemon's last act. */
  async stop(): Promise<number> {
    this.stopping = true;
    this.upkeep.stop();
    const logged = (await this.tracker.finishAll('shutdown')) + ((await this.links?.stopAll()) ?? 0);
    await this.endProcesses(this.registry.processes(), 'shutdown');
    return logged;
  }

  /** Ends processes: logs their connections still open, then forgets them. */
  private async endProcesses(procs: ProfiledProcess[], reason: EndReason): Promise<number> {
    // A process that connected just before it exited may still have its connection in the
    // pipeline (its eBPF line not read yet): let what was captured before this call land.
    await this.tracker.settle();
    const all = this.withChildren(procs);
    const conns = all.flatMap((p) => this.connections.ofPid(p.pid));
    await this.tracker.finish(conns, reason);
    const onLinks = (await this.links?.ended(all, reason)) ?? 0;
    for (const p of all) {
      this.registry.remove(p);
      if (p.parent === undefined) this.parts.resolve?.lineage.removeRoot(p.pid);
    }
    this.counters.processesEnded += procs.length;
    return conns.length + onLinks;
  }

  /** The processes and the children FOLLOW_CHILDREN added for them, at any depth. */
  private withChildren(procs: ProfiledProcess[]): ProfiledProcess[] {
    const out = new Map(procs.map((p) => [p.pid, p]));
    let grew = true;
    while (grew) {
      grew = false;
      for (const p of this.registry.processes()) {
        if (p.parent !== undefined && out.has(p.parent) && !out.has(p.pid)) {
          out.set(p.pid, p);
          grew = true;
        }
      }
    }
    return [...out.values()];
  }

  private refuseWhileStopping(): void {
    if (this.stopping) throw new RequestError(503, 'the daemon is shutting down');
  }

  // --- observers (GET /metrics) ---

  private readonly observers = new Set<DaemonObserver>();

  observe(observer: DaemonObserver): () => void {
    this.observers.add(observer);
    return () => void this.observers.delete(observer);
  }

  /** An observer that throws must not break logging or ending a job. */
  private notify(fn: (o: DaemonObserver) => void): void {
    for (const o of this.observers) {
      try {
        fn(o);
      } catch (e) {
        diag.error('observer failed', { error: (e as Error).message });
      }
    }
  }

  // --- views for the API ---

  jobs(): JobSummary[] {
    return this.registry.jobs().map((j) => jobSummary(j, this.everywhere, this.closedTotals.get(j.id)));
  }

  async job(id: string, opts: { readAll?: boolean } = {}): Promise<JobDetail | undefined> {
    const before = this.registry.job(id);
    if (!before) return undefined;
    // The job's own connections, read by key (its cost grows with the job, not with all
    // jobs); a metrics scrape (readAll) shares one read of every connection instead. A big
    // job's answer does not wait long for its read (live-view.ts).
    const own = opts.readAll ? undefined : [...before.processes.values()].flatMap((p) => this.connections.ofPid(p.pid));
    const figuresAt = (): number | undefined => (own ? oldestRead(own) : undefined) ?? (this.tracker.countsReadAt || undefined);
    let readAt = await this.readLive(own, id, figuresAt);
    const j = this.registry.job(id);
    if (!j) return undefined;
    readAt ??= figuresAt(); // not waited for: the figures of the last read
    return {
      ...jobSummary(j, this.everywhere, this.closedTotals.get(id)),
      counts_read_at: readAt ? new Date(readAt).toISOString() : null,
      process_list: [...j.processes.values()].map((p) => processView(p, this.everywhere)),
    };
  }

  /** Before a scrape. With LIVE_WAIT_ALWAYS_BELOW connections or more, figures read under
   * LIVE_FRESH_MS ago (a job view's poller keeps a big job's so) are not read again: a read of
   * 10,000 connections is ~100 ms on the thread pool, marshalled on the loop mid-scrape. */
  async refreshCounts(): Promise<void> {
    await this.readLive(undefined, undefined, () => everyFigureReadAt(this.connections.all(), this.tracker.countsReadAt), true);
  }

  eachTally(visit: (t: JobTallies) => void, only?: ReadonlySet<string>): void {
    const jobs = only ? [...only].flatMap((id) => this.registry.job(id) ?? []) : this.registry.jobs();
    for (const j of jobs) visit(jobTallies(j, this.everywhere, this.closedTotals.get(j.id)));
  }

  /** Reads live counters (`own`, or every connection), on the host and on links. A read of
   * tens of thousands of counters takes long (nft lists the whole set): then it is waited for
   * at most LIVE_WAIT_MS, and the caller gives the last figures. Resolves with when the read
   * began, undefined if it was not waited for. */
  private async readLive(own: TrackedConnection[] | undefined, id: string | undefined, figuresAt: () => number | undefined, keepFresh = false): Promise<number | undefined> {
    let readAt: number | undefined;
    // As a view: a node of fewer connections is always read (quick), and waited for.
    const shown = keepFresh && this.connections.size >= LIVE_WAIT_ALWAYS_BELOW ? figuresAt() : undefined;
    const host = shown !== undefined && Date.now() - shown < LIVE_FRESH_MS ? Promise.resolve(shown) : this.tracker.refreshCounts(own, id);
    const refresh = Promise.all([host, this.links?.refresh()]).then(
      ([at]) => void (readAt = at),
      (e: Error) => diag.warn('cannot read live counters', { error: e.message }),
    );
    await awaitLive(refresh, own ? own.length : this.connections.size, figuresAt());
    return readAt;
  }

  health(): Health {
    const grace = this.lateGrace();
    const problems = healthProblems(this.parts, this.links, grace);
    return {
      status: this.stopping ? 'stopping' : problems.length ? 'degraded' : 'ok',
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      engine: this.parts.engine?.name ?? 'none',
      interfaces: this.parts.config.interfaces,
      late_grace: grace,
      problems,
    };
  }

  lateGrace(): LateGrace {
    return lateGraceOf(this.parts, this.tracker.unclaimed.stats());
  }

  stats(): Record<string, unknown> {
    return {
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      jobs: this.registry.jobs().length,
      processes: this.registry.processes().length,
      connections_tracked: this.connections.size,
      counters_installed: this.parts.engine?.size() ?? 0,
      profiler: this.counters,
      connections: this.tracker.stats,
      unclaimed: this.tracker.unclaimed.stats(),
      engine_batches: this.tracker.batchStats(),
      resolver: this.parts.resolve?.resolver.stats(),
      ebpf: this.parts.resolve?.tracer.stats(),
      capture: this.parts.capture?.stats(),
      links: this.links ? { ...this.links.stats, counting: this.links.describe() } : undefined,
      log: this.parts.log.stats,
    };
  }
}
