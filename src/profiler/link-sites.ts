import type { ConnKey } from '../connection.js';
import type { CounterEngine } from '../counters/engine.js';
import type { ConnEvent } from '../capture/events.js';
import type { CaptureGap, InterfaceStats } from '../capture/capture.js';
import type { JobLink } from '../resolve/links.js';
import type { EndReason } from '../log/record.js';
import type { ProfiledProcess } from '../registry/registry.js';
import type { ConnectionTracker, TrackerResolve, TrackerSite } from './tracker.js';
import type { TrackedConnection } from './connections.js';
import { diag } from '../util/diag.js';
import { RequestError } from '../registry/registry.js';

/** What the daemon's kernel-facing side gives for a job's link. */
export interface OpenedLink {
  engine: CounterEngine;
  capture: {
    on(e: 'event', fn: (ev: ConnEvent) => void): unknown;
    on(e: 'gap', fn: (g: CaptureGap) => void): unknown;
    stats(): InterfaceStats[];
    stop(): Promise<void>;
  };
  resolver: TrackerResolve['resolver'];
  translate?: TrackerSite['translate'];
  /** Stops capture and attribution and removes the link's counters. */
  close(): Promise<void>;
}

export interface LinkOpener {
  /** A registered process's own links: a container's veths (its namespace is not ours), a
   * VM's taps; none for a process of the daemon's namespace. */
  discover(pid: number): Promise<JobLink[]>;
  /** A tap (or any link) of our namespace by name, for a hypervisor that hands its VM's tap
   * over rather than holding it: undefined when there is no such interface. */
  named(device: string): Promise<JobLink | undefined>;
  /** Starts counting and capturing on the link (the engine started, capture listening). */
  open(link: JobLink, pid: number): Promise<OpenedLink>;
}

interface LinkSite {
  link: JobLink;
  /** The name its records are logged under: the configured link, bridge, or `any`. */
  iface: string;
  /** Registered processes that brought it: it lives while one of them does. */
  pids: Set<number>;
  opened: OpenedLink;
  tracker: ConnectionTracker;
}

export interface LinkSitesParts {
  opener: LinkOpener;
  /** INTERFACE as configured. */
  configured: readonly string[];
  /** A tracker for a site (the profiler's registry, log and settings). */
  newTracker(site: TrackerSite, engine: CounterEngine, resolve: OpenedLink['resolver'], iface: string): ConnectionTracker;
  isAlive(pid: number): boolean;
}

/**
 * Jobs in containers and VMs: each registered process's own links, counted where the job's
 * frames enter and leave the host (see docs/virtual.md). A link is in scope when INTERFACE
 * names it, its bridge, or `any` — the one rule of docs/scope.md: its connections cross that
 * interface. One tracker per link, fed by that link's capture.
 */
export class LinkSites {
  private readonly sites = new Map<string, LinkSite>();
  private readonly opening = new Map<string, Promise<LinkSite | undefined>>();
  /** Closes under way, by device: a new site of the link must wait until the old one's table
   * (netprof_l<ifindex>, the same name) is gone, or the old close deletes the new one's. */
  private readonly closing = new Map<string, { site: LinkSite; done: Promise<void> }>();
  /** stopAll() ran: nothing opens any more. */
  private stopped = false;
  readonly stats = { opened: 0, closed: 0, outOfScope: 0, failed: 0 };
  private readonly failures = new Map<string, string>();

  constructor(private readonly parts: LinkSitesParts) {}

  trackers(): ConnectionTracker[] {
    return [...this.sites.values()].map((s) => s.tracker);
  }

  /** The configured name a link's connections are logged under, or undefined: out of scope. */
  private logName(link: JobLink): string | undefined {
    const c = this.parts.configured;
    if (c.includes('any')) return 'any';
    if (c.includes(link.device)) return link.device;
    if (link.master !== undefined && c.includes(link.master)) return link.master;
    return undefined;
  }

  /** A registration: finds the process's links, starts counting on new ones, claims what its
   * family already has open there. Returns the links now counted for it. */
  async attach(proc: ProfiledProcess, family: Iterable<number>): Promise<JobLink[]> {
    let links: JobLink[];
    try {
      links = await this.parts.opener.discover(proc.pid);
    } catch (e) {
      this.fail(`pid ${proc.pid}`, `cannot find the links of pid ${proc.pid}: ${(e as Error).message}`);
      return [];
    }
    const counted: JobLink[] = [];
    for (const link of links) {
      const iface = this.logName(link);
      if (iface === undefined) {
        this.stats.outOfScope += 1;
        diag.warn('a registered process’s link is not counted: INTERFACE names neither it nor its bridge', { pid: proc.pid, link: link.device, bridge: link.master ?? null });
        continue;
      }
      const site = await this.join(link, iface, proc.pid);
      if (!site) continue;
      counted.push(link);
      await site.tracker.claimConnectionsOf(family, { late: true });
    }
    return counted;
  }

  /** POST /v1/…/links: a link given explicitly to a registered process (its VM's tap). */
  async give(proc: ProfiledProcess, family: Iterable<number>, device: string): Promise<{ link: JobLink; iface: string }> {
    const link = await this.parts.opener.named(device);
    if (!link) throw new RequestError(404, `no interface ${device} in the daemon's network namespace`);
    const iface = this.logName(link);
    if (iface === undefined) throw new RequestError(409, `INTERFACE names neither ${device} nor its bridge${link.master ? ` ${link.master}` : ''}: its connections would not be in scope`);
    const site = await this.join(link, iface, proc.pid);
    if (!site) throw new RequestError(500, this.failures.get(link.device) ?? `cannot count on ${device}`);
    await site.tracker.claimConnectionsOf(family, { late: true });
    return { link, iface };
  }

  /** The link's site with the process in it: a site that began closing while this waited
   * (its last process ended) is not joined, a new one is opened after it. */
  private async join(link: JobLink, iface: string, pid: number): Promise<LinkSite | undefined> {
    for (;;) {
      const site = await this.site(link, iface, pid);
      if (!site) return undefined;
      if (this.sites.get(link.device) !== site) continue;
      site.pids.add(pid);
      return site;
    }
  }

  private site(link: JobLink, iface: string, pid: number): Promise<LinkSite | undefined> {
    const known = this.sites.get(link.device);
    let carried: number[] = [];
    if (known && known.link.ifindex !== link.ifindex) {
      // The same name on another interface: the old one was deleted and a new one made, behind
      // which its processes now are.
      carried = [...known.pids];
      void this.close(known, 'gc');
    } else if (known) return Promise.resolve(known);
    let p = this.opening.get(link.device);
    if (!p) {
      const closed = this.closing.get(link.device)?.done ?? Promise.resolve();
      p = closed
        .then(async () => {
          const s = this.stopped ? undefined : await this.open(link, iface, pid);
          for (const q of carried) if (s && this.parts.isAlive(q)) s.pids.add(q);
          return s;
        })
        .finally(() => this.opening.delete(link.device));
      this.opening.set(link.device, p);
    }
    return p;
  }

  private async open(link: JobLink, iface: string, pid: number): Promise<LinkSite | undefined> {
    let opened: OpenedLink;
    try {
      opened = await this.parts.opener.open(link, pid);
    } catch (e) {
      this.fail(link.device, `cannot count on ${link.kind === 'vm' ? 'tap' : 'veth'} ${link.device} of pid ${pid}: ${(e as Error).message}`);
      return undefined;
    }
    this.failures.delete(link.device);
    const pids = new Set<number>([pid]);
    const site: TrackerSite = {
      link: link.device,
      guest: link.kind === 'vm',
      // A container's sockets are in its namespace's tables, read through any live process of it.
      netPid: () => (link.kind === 'vm' ? undefined : [...pids].find((p) => this.parts.isAlive(p))),
      ...(opened.translate ? { translate: opened.translate } : {}),
    };
    const tracker = this.parts.newTracker(site, opened.engine, opened.resolver, iface);
    // Events carry the configured name (bridge, or `any`): it decides the log, as for the host.
    opened.capture.on('event', (ev) => tracker.onEvent({ ...ev, iface }));
    opened.capture.on('gap', () => void tracker.claimConnectionsOf(pids, { late: false }));
    const s: LinkSite = { link, iface, pids, opened, tracker };
    this.sites.set(link.device, s);
    this.stats.opened += 1;
    diag.info('counting on a job’s link', { link: link.device, kind: link.kind, bridge: link.master ?? null, logged_as: iface, pid });
    return s;
  }

  private fail(what: string, message: string): void {
    this.stats.failed += 1;
    this.failures.set(what, message);
    diag.error(message);
  }

  /** Processes ended: their connections on every link are logged, and a link nobody registered
   * uses any more stops being counted. */
  async ended(procs: readonly ProfiledProcess[], reason: EndReason): Promise<number> {
    let logged = 0;
    const pids = new Set(procs.map((p) => p.pid));
    for (const s of [...this.sites.values()]) {
      await s.tracker.settle();
      const conns = [...pids].flatMap((p) => s.tracker.table.ofPid(p));
      await s.tracker.finish(conns, reason);
      logged += conns.length;
      for (const p of pids) s.pids.delete(p);
      if (s.pids.size === 0) await this.close(s, reason);
    }
    // A link the collector is closing may hold their connections: logged when this returns.
    await Promise.all([...this.closing.values()].filter((c) => [...c.site.pids].some((p) => pids.has(p))).map((c) => c.done));
    for (const p of pids) this.failures.delete(`pid ${p}`);
    return logged;
  }

  /** Collection: each link's own, then links whose processes all died are closed. */
  async collect(): Promise<void> {
    for (const s of [...this.sites.values()]) {
      await s.tracker.gc('periodic');
      if (![...s.pids].some((p) => this.parts.isAlive(p))) await this.close(s, 'gc');
    }
  }

  /** Never rejects: what failed is logged, and the counters are removed whatever happened. */
  private close(s: LinkSite, reason: EndReason): Promise<void> {
    const device = s.link.device;
    const under = this.closing.get(device);
    if (this.sites.get(device) !== s) return under?.site === s ? under.done : Promise.resolve();
    this.sites.delete(device);
    const failed = (what: string, e: unknown) => diag.error(what, { link: device, error: (e as Error).message });
    const done = (async () => {
      try {
        await s.opened.capture.stop();
        await s.tracker.finishAll(reason);
      } catch (e) {
        failed('could not log a link’s connections', e);
      } finally {
        await s.opened.close().catch((e: unknown) => failed('could not remove a link’s counters', e));
      }
      this.stats.closed += 1;
      diag.info('stopped counting on a job’s link', { link: device, reason });
    })().finally(() => {
      if (this.closing.get(device)?.done === done) this.closing.delete(device);
    });
    this.closing.set(device, { site: s, done });
    return done;
  }

  async stopAll(): Promise<number> {
    this.stopped = true;
    await Promise.all(this.opening.values()); // a site opening now is closed below
    let n = 0;
    for (const s of [...this.sites.values()]) {
      n += s.tracker.table.size;
      await this.close(s, 'shutdown');
    }
    await Promise.all([...this.closing.values()].map((c) => c.done));
    return n;
  }

  /** For /v1/health: links that could not be counted, captures that are down. */
  problems(): string[] {
    const out = [...this.failures.values()];
    for (const s of this.sites.values()) for (const i of s.opened.capture.stats()) if (!i.listening) out.push(`capture on ${i.iface} is down: ${i.lastError ?? 'restarting'}`);
    return out;
  }

  /** For /v1/stats. */
  describe(): Array<Record<string, unknown>> {
    return [...this.sites.values()].map((s) => ({
      link: s.link.device,
      kind: s.link.kind,
      bridge: s.link.master ?? null,
      logged_as: s.iface,
      pids: [...s.pids],
      connections_tracked: s.tracker.table.size,
      counters_installed: s.opened.engine.size(),
      capture: s.opened.capture.stats(),
    }));
  }

  ofPid(pid: number): readonly TrackedConnection[] {
    if (!this.sites.size) return [];
    return [...this.sites.values()].flatMap((s) => s.tracker.table.ofPid(pid));
  }

  get size(): number {
    let n = 0;
    for (const s of this.sites.values()) n += s.tracker.table.size;
    return n;
  }

  /** The links a connection key is tracked on (unit tests, the API's views). */
  has(key: ConnKey): boolean {
    return [...this.sites.values()].some((s) => s.tracker.table.get(key) !== undefined);
  }

  async refresh(): Promise<void> {
    await Promise.all([...this.sites.values()].map((s) => s.tracker.refreshCounts()));
  }

  async repair(): Promise<void> {
    for (const s of this.sites.values()) {
      const r = await s.opened.engine.repair().catch(() => undefined);
      if (r) s.tracker.countingRestarted(r.restarted);
    }
  }
}
