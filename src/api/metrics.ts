import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import type { DaemonControl, Traffic } from '../profiler/control.js';
import type { ConnectionRecord } from '../log/record.js';
import type { TrackerStats } from '../profiler/tracker.js';
import type { InterfaceStats } from '../capture/capture.js';
import type { LogStats } from '../log/connection-log.js';
import { methodNotAllowed, send } from './http.js';
import { SelfUsageReader } from './self-usage.js';

/**
 * GET /metrics: the Prometheus text format, from a registry of its own (never prom-client's
 * global one), filled on each scrape from DaemonControl.
 *
 * Labels stay bounded: `job_id` and `pid`, never a connection's addresses or ports. The batch
 * job's label is `job_id`, not `job`, because Prometheus gives every scraped series a target
 * label `job` (the scrape job's name) and would rename ours to `exported_job`. A job's series
 * show its open connections' live counts plus its closed connections' totals; once the job ends
 * its final totals stay for a grace period (METRICS_GRACE, 5 minutes by default) so that a
 * scrape sees them, then its series disappear. Per job, only the first METRICS_PROCESSES pids
 * get series of their own; the others are summed under pid="other", so a job that forks a
 * thousand workers costs a dozen series, not thousands.
 */

/** How long an ended job's final totals stay on /metrics. */
export const ENDED_JOB_GRACE_MS = 5 * 60_000;
/** Processes per job with series of their own. */
export const PROCESS_SERIES_PER_JOB = 10;
/** The pid label of the processes beyond the limit, summed. */
export const OTHER_PIDS = 'other';

interface Tally extends Traffic {
  connections: number;
}

interface EndedJob {
  endedAt: number;
  /** Final totals per pid: every connection of an ended job has been logged. */
  processes: Map<number, Tally>;
}

const zero = (): Tally => ({ bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0, connections: 0 });

function addCounts(t: Tally, r: ConnectionRecord): void {
  if (!r.counts) return;
  t.bytes_in += r.counts.bytesIn;
  t.bytes_out += r.counts.bytesOut;
  t.packets_in += r.counts.packetsIn;
  t.packets_out += r.counts.packetsOut;
}

export interface MetricsOptions {
  graceMs?: number;
  /** Processes per job with series of their own (0: none). */
  processLimit?: number;
  /** LOG_BUFFER, exported so that an alert can compare the buffer's fill with it. */
  logBufferLimit?: number;
  now?: () => number;
}

export class Metrics {
  readonly registry = new Registry();
  /** Closed connections of live jobs, per job and pid, from the records as they are logged. */
  private readonly closed = new Map<string, Map<number, Tally>>();
  private readonly ended = new Map<string, EndedJob>();
  /** Per job, the pids that have series of their own, in the order first seen (stable: a pid
   * never moves between its own series and "other", which would break both counters). */
  private readonly slots = new Map<string, Set<number>>();
  private readonly graceMs: number;
  private readonly processLimit: number;
  private readonly logBufferLimit: number | undefined;
  private readonly usage = new SelfUsageReader();
  private readonly now: () => number;
  private scraping: Promise<unknown> = Promise.resolve();
  readonly stop: () => void;

  private readonly m;

  constructor(
    private readonly control: DaemonControl,
    opts: MetricsOptions = {},
  ) {
    this.graceMs = opts.graceMs ?? ENDED_JOB_GRACE_MS;
    this.processLimit = opts.processLimit ?? PROCESS_SERIES_PER_JOB;
    this.logBufferLimit = opts.logBufferLimit;
    this.now = opts.now ?? Date.now;
    this.stop = control.observe({ record: (r) => this.onRecord(r), jobEnded: (job) => this.onJobEnded(job) });
    const registers = [this.registry];
    const counter = (name: string, help: string, labelNames: string[] = []) => new Counter({ name, help, labelNames, registers });
    const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers });
    this.m = {
      up: gauge('netprof_up', '1 while the daemon answers'),
      health: gauge('netprof_health', 'the daemon health: 1 for the current status', ['status']),
      problems: gauge('netprof_health_problems', 'problems /v1/health reports (capture down, eBPF lost, log unwritable)'),
      uptime: gauge('netprof_uptime_seconds', 'seconds since the daemon started'),
      jobs: gauge('netprof_jobs', 'jobs profiled now'),
      processes: gauge('netprof_processes', 'processes profiled now'),
      tracked: gauge('netprof_connections_tracked', 'connections tracked now'),
      installed: gauge('netprof_counters_installed', 'connection counters installed in netfilter now'),
      events: counter('netprof_events_total', 'connection events seen by capture, by kind', ['kind']),
      opened: counter('netprof_connections_opened_total', 'connections of profiled processes opened'),
      closedAll: counter('netprof_connections_closed_total', 'connections of profiled processes logged, by why', ['reason']),
      unresolved: counter('netprof_connections_unresolved_total', 'connections no process could be found for'),
      notProfiled: counter('netprof_connections_not_profiled_total', 'connections of processes nobody registered'),
      uncounted: counter('netprof_connections_uncounted_total', 'connections logged without counts (no room, counter lost)'),
      noRoom: counter('netprof_connections_no_room_total', 'connections that found no room at RULES_THRESHOLD'),
      gcRuns: counter('netprof_gc_runs_total', 'garbage collections'),
      gcReclaimed: counter('netprof_gc_reclaimed_total', 'connections reclaimed by garbage collection'),
      engineErrors: counter('netprof_engine_errors_total', 'errors from the counter engine'),
      registrations: counter('netprof_registrations_total', 'process registrations accepted'),
      refused: counter('netprof_registrations_refused_total', 'process registrations refused'),
      frames: counter('netprof_capture_frames_total', 'frames read from capture', ['interface']),
      skipped: counter('netprof_capture_skipped_frames_total', 'frames read but not turned into events (undecodable, not local, ...)', ['interface', 'reason']),
      dropped: counter('netprof_capture_kernel_dropped_total', "packets tcpdump reports the kernel dropped", ['interface']),
      restarts: counter('netprof_capture_restarts_total', 'capture restarts', ['interface']),
      listening: gauge('netprof_capture_listening', '1 while capture on the interface runs', ['interface']),
      logWritten: counter('netprof_log_records_written_total', 'records written to the connection log'),
      logBuffered: gauge('netprof_log_buffered_records', 'records waiting to be written'),
      logOverflowed: counter('netprof_log_overflowed_total', 'records lost because the log buffer was full'),
      logErrors: counter('netprof_log_write_errors_total', 'failed writes to the connection log'),
      logLimit: gauge('netprof_log_buffer_limit_records', 'LOG_BUFFER: records the buffer holds before it overflows'),
      ebpf: gauge('netprof_ebpf_state', 'the eBPF tracer: 1 for its current state (live, off, starting, restarting, unavailable, stopped)', ['state']),
      ebpfLost: counter('netprof_ebpf_lost_events_total', 'tracer events the kernel dropped (bpftrace read too slowly)'),
      ebpfRestarts: counter('netprof_ebpf_restarts_total', 'tracer restarts'),
      lateGrace: gauge('netprof_late_grace_seconds', 'LATE_GRACE: configured, and effective (lower while a flood of unprofiled connections fills the grace list)', ['kind']),
      unclaimed: gauge('netprof_unclaimed_connections', 'unprofiled connections whose counters the grace list keeps now'),
      releasedEarly: counter('netprof_unclaimed_released_early_total', 'unprofiled connections given up before LATE_GRACE was over, for want of room'),
      ownApi: counter('netprof_connections_own_api_total', "connections to or from the daemon's own API (never a job's)"),
      outOfScope: counter('netprof_connections_out_of_scope_total', 'connections found without a packet that cross no configured interface', ['why']),
      repaired: counter('netprof_counters_repaired_total', 'times the counters were found removed behind the daemon (a ruleset flush) and reinstalled'),
      cpu: counter('netprof_daemon_cpu_seconds_total', 'CPU time of the daemon (part="daemon") and of its helpers nft, tcpdump, bpftrace (part="helpers")', ['part']),
      rss: gauge('netprof_daemon_resident_memory_bytes', 'resident memory of the daemon and of its helpers', ['part']),
      endedJobs: gauge('netprof_metrics_ended_jobs', 'ended jobs whose final totals are still shown (METRICS_GRACE)'),
      jobBytes: counter('netprof_job_bytes_total', 'bytes of the job, open connections live plus closed ones (in: received)', ['job_id', 'direction']),
      jobPackets: counter('netprof_job_packets_total', 'packets of the job, open connections live plus closed ones', ['job_id', 'direction']),
      jobOpened: counter('netprof_job_connections_opened_total', 'connections the job opened or accepted', ['job_id']),
      jobClosed: counter('netprof_job_connections_closed_total', 'connections of the job logged', ['job_id']),
      jobOpen: gauge('netprof_job_open_connections', 'connections of the job open now', ['job_id']),
      jobProcesses: gauge('netprof_job_processes', 'processes of the job profiled now', ['job_id']),
      jobEnded: gauge('netprof_job_ended_timestamp_seconds', 'when an ended job ended; its series go METRICS_GRACE later', ['job_id']),
      procBytes: counter('netprof_process_bytes_total', 'bytes of the process (pid="other": the job\'s processes beyond METRICS_PROCESSES), open connections live plus closed ones', ['job_id', 'pid', 'direction']),
      procPackets: counter('netprof_process_packets_total', 'packets of the process, open connections live plus closed ones', ['job_id', 'pid', 'direction']),
      procOpen: gauge('netprof_process_open_connections', 'connections of the process open now', ['job_id', 'pid']),
      procClosed: counter('netprof_process_connections_closed_total', 'connections of the process logged', ['job_id', 'pid']),
    };
  }

  private onRecord(r: ConnectionRecord): void {
    // A crashed run's, harvested at start-up: its daemon's series showed it up to its last
    // scrape, and after the reset increase() would count it again. The profiler's job totals
    // leave it out too.
    if (r.reason === 'recovered') return;
    let perPid = this.closed.get(r.job);
    if (!perPid) this.closed.set(r.job, (perPid = new Map()));
    const t = perPid.get(r.pid) ?? zero();
    t.connections += 1;
    addCounts(t, r);
    perPid.set(r.pid, t);
  }

  private onJobEnded(job: string): void {
    this.ended.set(job, { endedAt: this.now(), processes: this.closed.get(job) ?? new Map() });
    this.closed.delete(job);
  }

  /** The exposition text; scrapes run one at a time so that one never sees another's values. */
  render(): Promise<string> {
    const next = this.scraping.then(() => this.collect());
    this.scraping = next.catch(() => undefined);
    return next;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private async collect(): Promise<string> {
    // Read everything first (job() reads live counters from the kernel), then set values.
    const health = this.control.health();
    const stats = this.control.stats();
    const details = [];
    for (const j of this.control.jobs()) {
      const d = await this.control.job(j.job, { readAll: true });
      if (d) details.push(d);
    }
    const now = this.now();
    for (const [job, e] of this.ended) if (now - e.endedAt >= this.graceMs) this.ended.delete(job);

    this.registry.resetMetrics();
    const m = this.m;
    m.up.set(1);
    for (const s of ['ok', 'degraded', 'stopping']) m.health.set({ status: s }, health.status === s ? 1 : 0);
    m.problems.set(health.problems.length);
    const g = health.late_grace;
    if (g) {
      m.lateGrace.set({ kind: 'configured' }, g.configured_s);
      m.lateGrace.set({ kind: 'effective' }, g.shortened_to_s ?? g.configured_s);
      m.unclaimed.set(g.unclaimed_held);
      m.releasedEarly.inc(g.released_early);
    }
    m.uptime.set(health.uptime_s);
    this.daemonWide(stats);

    const setTraffic = (bytes: Counter, packets: Counter, labels: Record<string, string>, t: Traffic) => {
      bytes.inc({ ...labels, direction: 'in' }, t.bytes_in);
      bytes.inc({ ...labels, direction: 'out' }, t.bytes_out);
      packets.inc({ ...labels, direction: 'in' }, t.packets_in);
      packets.inc({ ...labels, direction: 'out' }, t.packets_out);
    };

    const live = new Set<string>();
    for (const d of details) {
      live.add(d.job);
      if (this.ended.delete(d.job)) this.slots.delete(d.job); // the id is in use again
      const job = { job_id: d.job };
      setTraffic(m.jobBytes, m.jobPackets, job, d);
      const closedHere = d.closed_connections;
      m.jobOpened.inc(job, d.open_connections + closedHere);
      m.jobClosed.inc(job, closedHere);
      m.jobOpen.set(job, d.open_connections);
      m.jobProcesses.set(job, d.processes);
      const closed = this.closed.get(d.job) ?? new Map<number, Tally>();
      const perPid = new Map<number, Tally & { open: number }>();
      for (const pid of new Set([...closed.keys(), ...d.process_list.map((p) => p.pid)])) {
        const view = d.process_list.find((p) => p.pid === pid);
        const c = closed.get(pid) ?? zero();
        perPid.set(pid, {
          bytes_in: c.bytes_in + (view?.bytes_in ?? 0),
          bytes_out: c.bytes_out + (view?.bytes_out ?? 0),
          packets_in: c.packets_in + (view?.packets_in ?? 0),
          packets_out: c.packets_out + (view?.packets_out ?? 0),
          connections: c.connections,
          open: view?.connections.length ?? 0,
        });
      }
      this.processSeries(d.job, perPid, setTraffic);
    }
    // Records of jobs that are neither live nor ended (never registered here): not kept.
    for (const job of this.closed.keys()) if (!live.has(job)) this.closed.delete(job);
    for (const job of this.slots.keys()) if (!live.has(job) && !this.ended.has(job)) this.slots.delete(job);

    m.endedJobs.set(this.ended.size);
    for (const [id, e] of this.ended) {
      const job = { job_id: id };
      const total = zero();
      for (const t of e.processes.values()) {
        total.bytes_in += t.bytes_in;
        total.bytes_out += t.bytes_out;
        total.packets_in += t.packets_in;
        total.packets_out += t.packets_out;
        total.connections += t.connections;
      }
      this.processSeries(id, new Map([...e.processes].map(([pid, t]) => [pid, { ...t, open: 0 }])), setTraffic);
      setTraffic(m.jobBytes, m.jobPackets, job, total);
      m.jobOpened.inc(job, total.connections);
      m.jobClosed.inc(job, total.connections);
      m.jobOpen.set(job, 0);
      m.jobProcesses.set(job, 0);
      m.jobEnded.set(job, e.endedAt / 1000);
    }
    return this.registry.metrics();
  }

  /** A job's per-process series: its first `processLimit` pids each, the rest summed as "other". */
  private processSeries(job: string, perPid: Map<number, Tally & { open: number }>, setTraffic: (b: Counter, p: Counter, l: Record<string, string>, t: Traffic) => void): void {
    if (this.processLimit === 0) return;
    let slots = this.slots.get(job);
    if (!slots) this.slots.set(job, (slots = new Set()));
    const rest = { ...zero(), open: 0 };
    let folded = 0;
    const m = this.m;
    for (const [pid, t] of perPid) {
      if (!slots.has(pid) && slots.size < this.processLimit) slots.add(pid);
      if (slots.has(pid)) {
        const labels = { job_id: job, pid: String(pid) };
        setTraffic(m.procBytes, m.procPackets, labels, t);
        m.procOpen.set(labels, t.open);
        m.procClosed.inc(labels, t.connections);
        continue;
      }
      folded += 1;
      rest.bytes_in += t.bytes_in;
      rest.bytes_out += t.bytes_out;
      rest.packets_in += t.packets_in;
      rest.packets_out += t.packets_out;
      rest.connections += t.connections;
      rest.open += t.open;
    }
    if (folded === 0) return;
    const labels = { job_id: job, pid: OTHER_PIDS };
    setTraffic(m.procBytes, m.procPackets, labels, rest);
    m.procOpen.set(labels, rest.open);
    m.procClosed.inc(labels, rest.connections);
  }

  private daemonWide(stats: Record<string, unknown>): void {
    const m = this.m;
    const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
    m.jobs.set(num(stats.jobs));
    m.processes.set(num(stats.processes));
    m.tracked.set(num(stats.connections_tracked));
    m.installed.set(num(stats.counters_installed));
    const profiler = (stats.profiler ?? {}) as Record<string, unknown>;
    m.registrations.inc(num(profiler.registrations));
    m.refused.inc(num(profiler.registrationsRefused));
    m.uncounted.inc(num(profiler.uncountedConnections));
    const t = stats.connections as TrackerStats | undefined;
    if (t) {
      for (const [kind, n] of Object.entries(t.events)) m.events.inc({ kind }, num(n));
      m.opened.inc(num(t.opened));
      for (const [reason, n] of Object.entries(t.closed)) m.closedAll.inc({ reason }, num(n));
      m.unresolved.inc(num(t.unresolved));
      m.notProfiled.inc(num(t.notProfiled));
      m.noRoom.inc(num(t.noRoom));
      m.gcRuns.inc(num(t.gcRuns));
      m.gcReclaimed.inc(num(t.gcReclaimed));
      m.engineErrors.inc(num(t.engineErrors));
      m.repaired.inc(num(t.countersRestored));
      m.ownApi.inc(num(t.ownApi));
      for (const [why, n] of Object.entries(t.outOfScope ?? {})) m.outOfScope.inc({ why }, num(n));
    }
    const ebpf = stats.ebpf as { state?: string; lost?: number; restarts?: number } | undefined;
    if (ebpf) {
      for (const s of ['live', 'off', 'starting', 'restarting', 'unavailable', 'stopped']) m.ebpf.set({ state: s }, ebpf.state === s ? 1 : 0);
      m.ebpfLost.inc(num(ebpf.lost));
      m.ebpfRestarts.inc(num(ebpf.restarts));
    }
    if (this.logBufferLimit !== undefined) m.logLimit.set(this.logBufferLimit);
    const u = this.usage.read();
    for (const [part, v] of [['daemon', u.daemon], ['helpers', u.helpers]] as const) {
      m.cpu.inc({ part }, v.cpuSeconds);
      m.rss.set({ part }, v.rssBytes);
    }
    for (const c of (stats.capture ?? []) as InterfaceStats[]) {
      const iface = { interface: c.iface };
      m.frames.inc(iface, num(c.frames));
      for (const [reason, n] of Object.entries(c.skipped ?? {})) m.skipped.inc({ ...iface, reason }, num(n));
      m.dropped.inc(iface, num(c.kernelDropped));
      m.restarts.inc(iface, num(c.restarts));
      m.listening.set(iface, c.listening ? 1 : 0);
    }
    const log = stats.log as LogStats | undefined;
    if (log) {
      m.logWritten.inc(num(log.written));
      m.logBuffered.set(num(log.buffered));
      m.logOverflowed.inc(num(log.overflowed));
      m.logErrors.inc(num(log.writeErrors));
    }
  }
}

const attached = new WeakMap<DaemonControl, Metrics>();

/** The daemon's one Metrics, made on first use. The API server makes it when it starts, so
 * records logged before the first scrape are counted. */
export function metricsFor(control: DaemonControl, opts?: MetricsOptions): Metrics {
  let m = attached.get(control);
  if (!m) attached.set(control, (m = new Metrics(control, opts)));
  return m;
}

export async function handleMetrics(req: IncomingMessage, res: ServerResponse, control: DaemonControl): Promise<void> {
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(['GET']);
  const metrics = metricsFor(control);
  send(res, 200, await metrics.render(), metrics.contentType);
}
