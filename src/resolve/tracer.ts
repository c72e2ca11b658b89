import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { access } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { run } from '../util/exec.js';
import { parseEventLine, type TraceEvent } from './events.js';
import { BPF_PROGRAM } from './program.js';
import { PumpedChild } from '../util/pumped-child.js';

/**
 * Runs bpftrace as a child process and turns its lines into events, so attribution happens when
 * the process acts rather than when /proc is read later (a 1 ms connection is gone by then).
 *
 * States: off (disabled by config) · starting · live · restarting (died after being live; retried
 * with backoff) · unavailable (could not start at all: the reason says why; callers use /proc) ·
 * stopped.
 */

export type TracerState = 'off' | 'starting' | 'live' | 'restarting' | 'unavailable' | 'stopped';

export interface TracerStatus {
  state: TracerState;
  reason?: string;
}

export interface TracerOptions {
  /** false = EBPF off: never start bpftrace. */
  enabled?: boolean;
  bpftrace?: string;
  tracefs?: string;
  /** Time allowed from spawn to the first observed event. */
  readyTimeoutMs?: number;
  /** Restart delays after a crash: initial, doubled each failure, capped. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

export interface TracerStats {
  state: TracerState;
  reason?: string;
  lines: number;
  events: Record<TraceEvent['kind'], number>;
  malformed: number;
  /** Connect and accept events of namespaces no resolver serves, dropped unparsed. */
  otherNamespaces: number;
  /** Events the kernel dropped because bpftrace read too slowly ("Lost N events"). */
  lost: number;
  restarts: number;
  /** Spawn to first event seen, of the latest start. */
  startupMs?: number;
  /** Kernel event → line parsed here, over the latest socket events. */
  latencyMs?: { count: number; p50: number; p99: number; max: number };
}

const NOISE = /couldn't set RLIMIT_MEMLOCK/;
const LOST = /^Lost (\d+) events/;
const LATENCY_SAMPLES = 4096;

export class Tracer extends EventEmitter {
  private child: PumpedChild | undefined;
  private st: TracerStatus;
  private stopping = false;
  private backoff: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private latency: number[] = [];
  private counters = { lines: 0, malformed: 0, lost: 0, restarts: 0, otherNamespaces: 0, startupMs: undefined as number | undefined };
  private kinds: Record<TraceEvent['kind'], number> = { connect: 0, accept: 0, fork: 0, exit: 0 };
  private readonly opts: Required<Omit<TracerOptions, 'log'>> & Pick<TracerOptions, 'log'>;
  private readonly killOnExit = () => this.child?.kill('SIGKILL');

  constructor(options: TracerOptions = {}) {
    super();
    this.opts = {
      enabled: true,
      bpftrace: 'bpftrace',
      tracefs: '/sys/kernel/tracing',
      readyTimeoutMs: 20_000,
      backoffInitialMs: 1_000,
      backoffMaxMs: 30_000,
      ...options,
    };
    this.backoff = this.opts.backoffInitialMs;
    this.st = this.opts.enabled ? { state: 'stopped' } : { state: 'off', reason: 'eBPF switched off by configuration' };
  }

  get status(): TracerStatus {
    return { ...this.st };
  }

  /** The running bpftrace's pid (for diagnostics and tests). */
  get pid(): number | undefined {
    return this.child?.running ? this.child.pid : undefined;
  }

  /** Network namespaces (inode → resolvers serving it) whose connect and accept events are
   * wanted. While none is named, every event is. */
  private readonly served = new Map<number, number>();

  /** A resolver serves this namespace until the returned function is called. Events of other
   * namespaces are dropped by the reader thread: bpftrace sees the whole host, and under the
   * burst half its events were the remote end's accepts, parsed here only to be ignored. */
  serve(netns: number): () => void {
    this.served.set(netns, (this.served.get(netns) ?? 0) + 1);
    this.child?.keepOnly(this.keptNamespaces());
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.served.get(netns) ?? 1) - 1;
      if (n > 0) this.served.set(netns, n);
      else this.served.delete(netns);
      this.child?.keepOnly(this.served.size ? this.keptNamespaces() : undefined);
    };
  }

  private keptNamespaces(): string[] {
    return [...this.served.keys()].map(String);
  }

  /** True while events flow; resolve waits for events only then. */
  get live(): boolean {
    return this.st.state === 'live';
  }

  stats(): TracerStats {
    const s = [...this.latency].sort((a, b) => a - b);
    const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
    return {
      ...this.status,
      lines: this.counters.lines,
      events: { ...this.kinds },
      malformed: this.counters.malformed,
      otherNamespaces: this.counters.otherNamespaces + (this.child?.filtered ?? 0),
      lost: this.counters.lost,
      restarts: this.counters.restarts,
      ...(this.counters.startupMs !== undefined && { startupMs: this.counters.startupMs }),
      ...(s.length && { latencyMs: { count: s.length, p50: q(0.5), p99: q(0.99), max: s[s.length - 1]! } }),
    };
  }

  /** Starts bpftrace and resolves once probes are seen firing, or with the reason they are not. */
  async start(): Promise<TracerStatus> {
    if (this.st.state === 'off') return this.status;
    this.stopping = false;
    const failure = await this.launch();
    if (failure) this.setStatus({ state: 'unavailable', reason: failure });
    return this.status;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (this.st.state !== 'off') this.setStatus({ state: 'stopped' });
    if (!child?.running) {
      child?.kill('SIGTERM'); // not known to run yet: killed as soon as it is
      return;
    }
    const gone = new Promise<void>((res) => child.once('exit', () => res()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    await gone;
    clearTimeout(timer);
  }

  private setStatus(s: TracerStatus): void {
    this.st = s;
    // Starting (every start), live, off and stopped are the normal course; a warning is for a lost tracer.
    const trouble = s.state === 'restarting' || s.state === 'unavailable';
    this.opts.log?.(trouble ? 'warn' : 'info', `eBPF tracer ${s.state}`, s.reason ? { reason: s.reason } : undefined);
    this.emit('status', this.status);
  }

  /** One attempt: undefined when live, else the reason. */
  private async launch(): Promise<string | undefined> {
    this.setStatus({ state: this.counters.restarts ? 'restarting' : 'starting' });
    const tracefs = await ensureTracefs(this.opts.tracefs);
    if (tracefs) return tracefs;
    if (this.stopping) return 'stopped while starting';

    const t0 = performance.now();
    // Read by a worker thread: see util/pumped-child.ts.
    const child = new PumpedChild(this.opts.bpftrace, ['-B', 'none', '-e', BPF_PROGRAM], {
      // Connect and accept lines of namespaces nobody serves never reach this thread.
      filter: { prefixes: ['C ', 'A '], field: 8, ...(this.served.size ? { keep: this.keptNamespaces() } : {}) },
      // Room for many connects in SYN_SENT at once, and for bursts between reads.
      env: { ...process.env, BPFTRACE_MAP_KEYS_MAX: '65536', BPFTRACE_PERF_RB_PAGES: String(perfPagesPerCpu()) },
    });
    this.child = child;
    process.once('exit', this.killOnExit);
    const stderr: string[] = [];
    let ready: (() => void) | undefined;
    const firstEvent = new Promise<void>((res) => (ready = res));
    let attached = false;
    const pokes = new Set<number>();

    const onLine = (line: string, fromStderr: boolean) => {
      const ev = parseEventLine(line);
      if (ev) {
        this.counters.lines += 1;
        this.kinds[ev.kind] += 1;
        if (ev.kind === 'connect' || ev.kind === 'accept') this.sampleLatency(ev.ns);
        if (ev.kind === 'exit' && pokes.has(ev.pid)) ready?.();
        this.emit('event', ev);
        return;
      }
      const lost = LOST.exec(line);
      if (lost) {
        this.counters.lost += Number(lost[1]);
        this.opts.log?.('warn', 'eBPF events lost', { lost: Number(lost[1]) });
      } else if (/^Attaching \d+ probes/.test(line)) {
        attached = true;
      } else if (!line.trim() || NOISE.test(line)) {
        /* harmless */
      } else if (fromStderr) {
        stderr.push(line.trim());
        if (stderr.length > 5) stderr.shift();
      } else {
        this.counters.malformed += 1;
      }
    };
    child.on('stdout', (lines: string[]) => {
      for (const l of lines) onLine(l, false);
    });
    child.on('stderr', (lines: string[]) => {
      for (const l of lines) onLine(l, true);
    });

    const spawnError = new Promise<string>((res) => child.once('error', (e) => res(`cannot run ${this.opts.bpftrace}: ${e.message}`)));
    const exit = new Promise<string>((res) =>
      child.once('exit', (code, sig) => res(`bpftrace exited (${sig ?? `status ${code}`})${stderr.length ? `: ${stderr.join(' | ')}` : ''}`)),
    );
    // Probes attach one by one, in program order, after "Attaching N probes"; the exit probe is
    // the last, so seeing the exit of a child of our own proves all of them are live.
    const poke = setInterval(() => {
      if (!attached) return;
      const p = spawn('true', [], { stdio: 'ignore' }).on('error', () => {});
      if (p.pid) pokes.add(p.pid);
    }, 100);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((res) => {
      timer = setTimeout(() => res(`no event within ${this.opts.readyTimeoutMs} ms of starting bpftrace`), this.opts.readyTimeoutMs);
    });
    const outcome = await Promise.race([firstEvent.then(() => undefined), spawnError, exit, timeout]);
    clearInterval(poke);
    clearTimeout(timer);
    if (outcome !== undefined) {
      process.removeListener('exit', this.killOnExit);
      child.kill('SIGKILL');
      return outcome;
    }
    this.counters.startupMs = Math.round(performance.now() - t0);
    this.setStatus({ state: 'live' });
    const liveSince = Date.now();
    void exit.then((why) => this.onDeath(why, liveSince));
    return undefined;
  }

  private onDeath(why: string, liveSince: number): void {
    process.removeListener('exit', this.killOnExit);
    this.counters.otherNamespaces += this.child?.filtered ?? 0;
    if (this.stopping) return;
    if (Date.now() - liveSince > 60_000) this.backoff = this.opts.backoffInitialMs; // it had been healthy
    this.scheduleRestart(why);
  }

  private scheduleRestart(why: string): void {
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.opts.backoffMaxMs);
    this.counters.restarts += 1;
    this.setStatus({ state: 'restarting', reason: `${why}; restarting in ${delay} ms` });
    this.restartTimer = setTimeout(async () => {
      if (this.stopping) return;
      const failure = await this.launch();
      if (failure && !this.stopping) this.scheduleRestart(failure);
    }, delay);
  }

  private sampleLatency(ns: bigint): void {
    const ms = Number(process.hrtime.bigint() - ns) / 1e6;
    if (this.latency.length >= LATENCY_SAMPLES) this.latency.shift();
    this.latency.push(ms);
  }
}

/**
 * bpftrace's perf buffer, per CPU: 16 MiB in all, at least 256 pages (1 MiB) per CPU, a power of
 * two. The buffer holds what the kernel reports while bpftrace itself waits for a CPU: with the
 * two cores loaded 8 times over, 1 MiB per CPU lost 7,683 of a 40,000-connection burst's events
 * (each line ~100 bytes; the burst's connects and its accepts are ~8 MB).
 */
export function perfPagesPerCpu(cpus = availableParallelism()): number {
  const pages = Math.max(256, Math.floor((16 * 1024 * 1024) / 4096 / Math.max(1, cpus)));
  return 2 ** Math.floor(Math.log2(pages));
}

/** bpftrace needs tracefs for tracepoints; mount it when it is missing. Returns a reason on failure. */
export async function ensureTracefs(dir: string): Promise<string | undefined> {
  const probe = `${dir}/available_events`;
  if (await exists(probe)) return undefined;
  const r = await run('mount', ['-t', 'tracefs', 'nodev', dir]);
  if (await exists(probe)) return undefined;
  return `tracefs is not mounted at ${dir} and mounting it failed: ${r.stderr.trim() || `mount exit status ${r.code}`}`;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
