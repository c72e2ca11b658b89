import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DaemonControl, Health } from '../profiler/control.js';
import type { ConnectionRecord } from '../log/record.js';
import type { TrackerStats } from '../profiler/tracker.js';
import type { InterfaceStats } from '../capture/capture.js';
import type { LogStats } from '../log/connection-log.js';
import { methodNotAllowed, sendChunks } from './http.js';
import { SelfUsageReader } from './self-usage.js';
import { CONTENT_TYPE, ExpositionWriter, escapeLabel, type Family } from './exposition.js';
import { JobBlocks, PER_JOB, sameAsWritten, type JobEntry, type JobRow, type Tally } from './job-blocks.js';
import { F } from './metric-families.js';
import { addTraffic } from '../profiler/views.js';
import { diag } from '../util/diag.js';

/**
 * GET /metrics: the Prometheus text format, written on each scrape from DaemonControl: one
 * shared read of the counters, one pass over every job's tallies, then the text in slices that
 * leave the event loop free in between (a scrape at 10,000 jobs must not stall the API).
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
/** How soon after a job starts or ends its series are written, ahead of the next scrape. */
export const WRITE_AHEAD_MS = 1_000;
/** Jobs started or ended since the last pass over all after which the write ahead is one. */
export const FULL_PASS_AFTER = 1_000;
/** Processes per job with series of their own. */
export const PROCESS_SERIES_PER_JOB = 10;
/** The pid label of the processes beyond the limit, summed. */
export const OTHER_PIDS = 'other';

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

/** The daemon-wide series of one scrape: a counter's samples add up, a gauge's replace. */
class DaemonWide {
  readonly samples = new Map<Family, Map<string, number>>();

  put(f: Family, value: number, labels: Record<string, string> = {}): void {
    let s = this.samples.get(f);
    if (!s) this.samples.set(f, (s = new Map()));
    const key = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
    s.set(key, f.type === 'counter' ? (s.get(key) ?? 0) + value : value);
  }
}

export class Metrics {
  /** Closed connections of live jobs, per job and pid, from the records as they are logged. */
  private readonly closed = new Map<string, Map<number, Tally>>();
  private readonly ended = new Map<string, EndedJob>();
  private readonly graceMs: number;
  private readonly processLimit: number;
  private readonly logBufferLimit: number | undefined;
  private readonly usage = new SelfUsageReader();
  private readonly now: () => number;
  private scraping: Promise<unknown> = Promise.resolve();
  /** Jobs started or ended since the last write ahead, and its timer. */
  private readonly startedOrEnded = new Set<string>();
  private ahead: NodeJS.Timeout | undefined;
  /** Jobs started or ended since the last pass over all. */
  private sinceFullPass = 0;
  /** The per-job series as of the last scrape, rendered again only where figures moved. */
  private readonly blocks = new JobBlocks();
  readonly stop: () => void;
  readonly contentType = CONTENT_TYPE;

  constructor(
    private readonly control: DaemonControl,
    opts: MetricsOptions = {},
  ) {
    this.graceMs = opts.graceMs ?? ENDED_JOB_GRACE_MS;
    this.processLimit = opts.processLimit ?? PROCESS_SERIES_PER_JOB;
    this.logBufferLimit = opts.logBufferLimit;
    this.now = opts.now ?? Date.now;
    const unobserve = control.observe({ record: (r) => this.onRecord(r), jobStarted: (job) => this.writeAhead(job), jobEnded: (job) => this.onJobEnded(job) });
    this.stop = () => {
      unobserve();
      clearTimeout(this.ahead);
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
    this.writeAhead(job);
  }

  /** Writes a started or ended job's series soon, ahead of the next scrape: a burst of
   * registrations would otherwise leave all of its jobs' text to that scrape (at 10,000 jobs,
   * the whole answer). In the scrapes' queue, so that it never interleaves with one; what it
   * writes is compared with the figures again at the scrape. Once many jobs have come or gone
   * since the last pass over all (nobody scrapes), it makes one: the next scrape then finds
   * every block current, and a first pass over thousands of jobs (its code not yet compiled,
   * its garbage collections) is not that scrape's to wait for. */
  private writeAhead(job: string): void {
    this.startedOrEnded.add(job);
    this.sinceFullPass += 1;
    this.ahead ??= setTimeout(() => {
      this.ahead = undefined;
      const only = this.sinceFullPass >= FULL_PASS_AFTER ? undefined : new Set(this.startedOrEnded);
      this.startedOrEnded.clear();
      this.scraping = this.scraping.then(async () => {
        this.putRows(only);
        await this.blocks.prepare(new ExpositionWriter());
      }).catch((e: Error) => diag.warn('cannot write /metrics ahead', { error: e.message }));
    }, WRITE_AHEAD_MS).unref();
  }

  /** The exposition text (for tests and tools; the API sends renderChunks()'s bytes). */
  async render(): Promise<string> {
    return Buffer.concat(await this.renderChunks()).toString('utf8');
  }

  /** Scrapes run one at a time so that one never sees another's values. The answer comes in
   * pieces (most of them kept from earlier scrapes): never joined, they are written as they are. */
  renderChunks(): Promise<Buffer[]> {
    const next = this.scraping.then(() => this.collect());
    this.scraping = next.catch(() => undefined);
    return next;
  }

  private async collect(): Promise<Buffer[]> {
    await this.control.refreshCounts();
    // No await from here to the rows: the profiler's tallies and the records this object has
    // observed are of the same moment (a record in between would count a connection twice,
    // and a counter that then drops back reads as a reset to Prometheus).
    const health = this.control.health();
    const stats = this.control.stats();
    this.putRows();
    const w = new ExpositionWriter();
    const wide = this.daemonWide(health, stats);
    for (const f of Object.values(F)) {
      w.family(f);
      if (PER_JOB.has(f)) {
        await this.blocks.write(w, f);
        continue;
      }
      const samples = wide.samples.get(f);
      if (samples) for (const [labels, v] of samples) w.sample(f.name, labels, v);
      else if (!f.labelled) w.sample(f.name, '', 0);
    }
    return w.finish();
  }

  /** Puts every job's row into the blocks (`only`: just these jobs, and nothing is dropped):
   * live jobs from the profiler's tallies plus this object's closed records, then the ended jobs
   * still in their grace period. */
  private putRows(only?: ReadonlySet<string>): void {
    const now = this.now();
    for (const [job, e] of this.ended) if (now - e.endedAt >= this.graceMs) this.ended.delete(job);
    if (!only) {
      this.blocks.begin();
      this.sinceFullPass = 0;
    }
    this.control.eachTally((d) => {
      if (only && !only.has(d.job)) return;
      const job = this.blocks.job(d.job);
      if (this.ended.delete(d.job)) job.pids.clear(); // the id is in use again
      if (!this.closed.has(d.job) && sameAsWritten(job, d)) {
        this.blocks.keep(job);
        return;
      }
      // Per pid: its closed connections (also of pids gone), plus its open ones live.
      const perPid = new Map<number, Tally & { open: number }>();
      for (const [pid, c] of this.closed.get(d.job) ?? []) perPid.set(pid, { ...c, open: 0 });
      for (const p of d.processes) {
        const t = perPid.get(p.pid);
        if (t) {
          addTraffic(t, p);
          t.open += p.open_connections;
        } else perPid.set(p.pid, { bytes_in: p.bytes_in, bytes_out: p.bytes_out, packets_in: p.packets_in, packets_out: p.packets_out, connections: 0, open: p.open_connections });
      }
      const t = { bytes_in: d.bytes_in, bytes_out: d.bytes_out, packets_in: d.packets_in, packets_out: d.packets_out, connections: d.closed_connections };
      this.blocks.put(job, { labels: job.labels, t, open: d.open_connections, processes: d.processes.length, procs: this.processRows(job, perPid) });
    }, only);
    // Records of jobs that are neither live nor ended (never registered here): not kept.
    if (!only) for (const job of this.closed.keys()) if (!this.blocks.putNow(job)) this.closed.delete(job);
    for (const [id, e] of this.ended) {
      if (only && !only.has(id)) continue;
      const total = zero();
      for (const t of e.processes.values()) {
        addTraffic(total, t);
        total.connections += t.connections;
      }
      const job = this.blocks.job(id);
      const perPid = new Map([...e.processes].map(([pid, t]) => [pid, { ...t, open: 0 }]));
      this.blocks.put(job, { labels: job.labels, t: total, open: 0, processes: 0, endedAt: e.endedAt, procs: this.processRows(job, perPid) });
    }
    if (!only) this.blocks.end();
  }

  /** A job's per-process rows: its first `processLimit` pids each, the rest summed as "other". */
  private processRows(job: JobEntry, perPid: Map<number, Tally & { open: number }>): JobRow['procs'] {
    if (this.processLimit === 0) return [];
    const out: JobRow['procs'] = [];
    const rest = zero();
    let restOpen = 0;
    let folded = 0;
    for (const [pid, t] of perPid) {
      let labels = job.pids.get(pid);
      if (labels === undefined && job.pids.size < this.processLimit) job.pids.set(pid, (labels = `${job.labels},pid="${pid}"`));
      if (labels !== undefined) {
        out.push({ labels, t, open: t.open });
        continue;
      }
      folded += 1;
      addTraffic(rest, t);
      rest.connections += t.connections;
      restOpen += t.open;
    }
    if (folded) out.push({ labels: `${job.labels},pid="${OTHER_PIDS}"`, t: rest, open: restOpen });
    return out;
  }

  private daemonWide(health: Health, stats: Record<string, unknown>): DaemonWide {
    const d = new DaemonWide();
    const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
    d.put(F.up, 1);
    for (const s of ['ok', 'degraded', 'stopping']) d.put(F.health, health.status === s ? 1 : 0, { status: s });
    d.put(F.problems, health.problems.length);
    const g = health.late_grace;
    if (g) {
      d.put(F.lateGrace, g.configured_s, { kind: 'configured' });
      d.put(F.lateGrace, g.shortened_to_s ?? g.configured_s, { kind: 'effective' });
      d.put(F.unclaimed, g.unclaimed_held);
      d.put(F.releasedEarly, g.released_early);
    }
    d.put(F.uptime, health.uptime_s);
    d.put(F.jobs, num(stats.jobs));
    d.put(F.processes, num(stats.processes));
    d.put(F.tracked, num(stats.connections_tracked));
    d.put(F.installed, num(stats.counters_installed));
    const profiler = (stats.profiler ?? {}) as Record<string, unknown>;
    d.put(F.registrations, num(profiler.registrations));
    d.put(F.refused, num(profiler.registrationsRefused));
    d.put(F.uncounted, num(profiler.uncountedConnections));
    const t = stats.connections as TrackerStats | undefined;
    if (t) {
      for (const [kind, n] of Object.entries(t.events)) d.put(F.events, num(n), { kind });
      d.put(F.opened, num(t.opened));
      for (const [reason, n] of Object.entries(t.closed)) d.put(F.closedAll, num(n), { reason });
      d.put(F.unresolved, num(t.unresolved));
      d.put(F.notProfiled, num(t.notProfiled));
      d.put(F.noRoom, num(t.noRoom));
      d.put(F.gcRuns, num(t.gcRuns));
      d.put(F.gcReclaimed, num(t.gcReclaimed));
      d.put(F.engineErrors, num(t.engineErrors));
      d.put(F.repaired, num(t.countersRestored));
      d.put(F.ownApi, num(t.ownApi));
      for (const [why, n] of Object.entries(t.outOfScope ?? {})) d.put(F.outOfScope, num(n), { why });
    }
    const ebpf = stats.ebpf as { state?: string; lost?: number; restarts?: number } | undefined;
    if (ebpf) {
      for (const s of ['live', 'off', 'starting', 'restarting', 'unavailable', 'stopped']) d.put(F.ebpf, ebpf.state === s ? 1 : 0, { state: s });
      d.put(F.ebpfLost, num(ebpf.lost));
      d.put(F.ebpfRestarts, num(ebpf.restarts));
    }
    if (this.logBufferLimit !== undefined) d.put(F.logLimit, this.logBufferLimit);
    const u = this.usage.read();
    for (const [part, v] of [['daemon', u.daemon], ['helpers', u.helpers]] as const) {
      d.put(F.cpu, v.cpuSeconds, { part });
      d.put(F.rss, v.rssBytes, { part });
    }
    for (const c of (stats.capture ?? []) as InterfaceStats[]) {
      const iface = { interface: c.iface };
      d.put(F.frames, num(c.frames), iface);
      for (const [reason, n] of Object.entries(c.skipped ?? {})) d.put(F.skipped, num(n), { ...iface, reason });
      d.put(F.dropped, num(c.kernelDropped), iface);
      d.put(F.restarts, num(c.restarts), iface);
      d.put(F.listening, c.listening ? 1 : 0, iface);
    }
    const log = stats.log as LogStats | undefined;
    if (log) {
      d.put(F.logWritten, num(log.written));
      d.put(F.logBuffered, num(log.buffered));
      d.put(F.logOverflowed, num(log.overflowed));
      d.put(F.logErrors, num(log.writeErrors));
    }
    d.put(F.endedJobs, this.ended.size);
    return d;
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
  sendChunks(res, 200, await metrics.renderChunks(), metrics.contentType);
}
