import type { Config } from '../config/config.js';
import type { DaemonControl, EndResult, Health, JobDetail, JobSummary, ProcessView, ConnectionView, Traffic } from '../api/control.js';
import { Registry, RequestError, isAlive, type ProcessClaim, type ProfiledProcess } from '../registry/registry.js';
import type { ConnectionLog } from '../log/connection-log.js';
import type { ConnectionRecord, EndReason } from '../log/record.js';
import type { CounterEngine, Counts } from '../counters/engine.js';
import { ConnectionTable, type TrackedConnection } from './connections.js';
import { diag } from '../util/diag.js';

export interface ProfilerParts {
  config: Config;
  log: ConnectionLog;
  engine?: CounterEngine;
}

const ZERO: Traffic = { bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0 };

/**
 * The orchestrator: keeps the registry, the tracked connections and the log consistent, and
 * answers the API. Kernel-facing parts are reached only through their narrow interfaces.
 */
export class Profiler implements DaemonControl {
  readonly registry = new Registry();
  readonly connections = new ConnectionTable();
  private readonly startedAt = Date.now();
  private stopping = false;
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

  constructor(private readonly parts: ProfilerParts) {}

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
      const result = this.registry.add(job, info);
      this.counters.registrations += 1;
      if (result.added) diag.info('process registered', { job, pid: info.pid, user: result.process.user });
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
    const j = this.registry.job(job);
    if (!j) throw new RequestError(404, `job ${job} is not profiled`);
    const procs = [...j.processes.values()];
    const logged = await this.endProcesses(procs, 'job-end');
    this.registry.removeJob(job);
    this.closedTotals.delete(job);
    this.counters.jobsEnded += 1;
    return { processes: procs.length, connectionsLogged: logged };
  }

  shutdown(reason: string): void {
    if (this.stopping) return;
    if (this.onShutdown) this.onShutdown(reason);
  }

  /** Logs every open connection and forgets every process: the daemon's last act. */
  async stop(): Promise<number> {
    this.stopping = true;
    return this.endProcesses(this.registry.processes(), 'shutdown');
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Ends processes: logs their connections still open, then forgets them. */
  private async endProcesses(procs: ProfiledProcess[], reason: EndReason): Promise<number> {
    const conns = procs.flatMap((p) => this.connections.ofPid(p.pid));
    await this.finish(conns, reason);
    for (const p of procs) this.registry.remove(p);
    this.counters.processesEnded += procs.length;
    return conns.length;
  }

  /** Reads the final counters of these connections, stops counting them and logs them. */
  async finish(conns: TrackedConnection[], reason: EndReason): Promise<void> {
    if (conns.length === 0) return;
    const engine = this.parts.engine;
    let finals: Array<Counts | undefined> = conns.map(() => undefined);
    let note: string | undefined;
    if (engine) {
      try {
        finals = await engine.end(conns.map((c) => c.key));
      } catch (e) {
        note = `counters could not be read: ${(e as Error).message}`;
        diag.error('reading final counters failed', { error: (e as Error).message, connections: conns.length });
      }
    }
    conns.forEach((c, i) => {
      this.connections.delete(c);
      this.logRecord(c, reason, finals[i], note);
    });
  }

  private logRecord(c: TrackedConnection, reason: EndReason, counts: Counts | undefined, note?: string): void {
    const record: ConnectionRecord = {
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
      partial: counts !== undefined && c.counting === 'from-now',
      attribution: c.attribution,
      note: counts === undefined ? (note ?? (c.counting === 'no-room' ? 'not counted: RULES_THRESHOLD reached' : 'not counted')) : undefined,
    };
    if (!counts) this.counters.uncountedConnections += 1;
    this.parts.log.write(record);
    this.counters.recordsLogged += 1;
    const t = this.closedTotals.get(c.job) ?? { ...ZERO, connections: 0 };
    addCounts(t, counts);
    t.connections += 1;
    this.closedTotals.set(c.job, t);
  }

  private refuseWhileStopping(): void {
    if (this.stopping) throw new RequestError(503, 'the daemon is shutting down');
  }

  // --- views for the API ---

  jobs(): JobSummary[] {
    return this.registry.jobs().map((j) => this.summary(j.id));
  }

  job(id: string): JobDetail | undefined {
    const j = this.registry.job(id);
    if (!j) return undefined;
    return { ...this.summary(id), process_list: [...j.processes.values()].map((p) => this.processView(p)) };
  }

  private summary(id: string): JobSummary {
    const j = this.registry.job(id)!;
    const closed = this.closedTotals.get(id);
    const totals: Traffic = { ...ZERO };
    let open = 0;
    for (const p of j.processes.values()) {
      for (const c of this.connections.ofPid(p.pid)) {
        open += 1;
        addCounts(totals, c.counts);
      }
    }
    if (closed) addTraffic(totals, closed);
    return {
      job: id,
      registered_at: new Date(j.registeredAt).toISOString(),
      processes: j.processes.size,
      open_connections: open,
      closed_connections: closed?.connections ?? 0,
      ...totals,
    };
  }

  private processView(p: ProfiledProcess): ProcessView {
    const conns = this.connections.ofPid(p.pid).map((c) => connectionView(c));
    const totals: Traffic = { ...ZERO };
    for (const c of conns) addTraffic(totals, c);
    return {
      pid: p.pid,
      owner: p.user,
      uid: p.uid,
      birthdate: p.startTime,
      parent: p.parent ?? null,
      alive: isAlive(p),
      connections: conns,
      ...totals,
    };
  }

  health(): Health {
    return {
      status: this.stopping ? 'stopping' : 'ok',
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      engine: this.parts.engine?.name ?? 'none',
      interfaces: this.parts.config.interfaces,
      problems: this.parts.log.stats.lastError ? [`connection log: ${this.parts.log.stats.lastError}`] : [],
    };
  }

  stats(): Record<string, unknown> {
    return {
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      jobs: this.registry.jobs().length,
      processes: this.registry.processes().length,
      connections_tracked: this.connections.size,
      profiler: this.counters,
      log: this.parts.log.stats,
    };
  }
}

function connectionView(c: TrackedConnection): ConnectionView {
  const t: Traffic = { ...ZERO };
  addCounts(t, c.counts);
  return {
    interface: c.iface,
    local_addr: c.key.localAddr,
    local_port: c.key.localPort,
    remote_addr: c.key.remoteAddr,
    remote_port: c.key.remotePort,
    opened_by: c.openedBy,
    since: c.start ? new Date(c.start).toISOString() : null,
    state: c.closing ? 'closing' : c.finSent || c.finReceived ? 'half-closed' : 'open',
    counted: c.counting !== 'no-room',
    partial: c.counting === 'from-now',
    attribution: c.attribution,
    ...t,
  };
}

function addCounts(t: Traffic, c: Counts | undefined): void {
  if (!c) return;
  t.bytes_in += c.bytesIn;
  t.bytes_out += c.bytesOut;
  t.packets_in += c.packetsIn;
  t.packets_out += c.packetsOut;
}

function addTraffic(t: Traffic, c: Traffic): void {
  t.bytes_in += c.bytes_in;
  t.bytes_out += c.bytes_out;
  t.packets_in += c.packets_in;
  t.packets_out += c.packets_out;
}
