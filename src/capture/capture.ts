import { EventEmitter } from 'node:events';
import type { LocalAddresses } from './addresses.js';
import { CONNECTION_FILTER, SNAPLEN } from './filter.js';
import { TcpdumpRun, type RunEnd } from './tcpdump.js';
import type { ConnEvent } from './events.js';
import { DirectionMerge } from './direction-merge.js';

export interface CaptureOptions {
  /** Interfaces to watch; the config's comma-separated INTERFACE string is accepted as is. */
  interfaces: string | readonly string[];
  /** This host's addresses: decides which end of a segment is local. The caller refreshes it. */
  local: LocalAddresses;
  /** The interfaces are jobs' links (a container's veth, a VM's tap, host side): each is
   * captured one direction per tcpdump (-Q in: sent by the job), and the job's end of a
   * segment is told by direction, not by address. */
  link?: boolean;
  /** tcpdump binary. */
  tcpdump?: string;
  /** Command prefix for tcpdump, e.g. ['ip', 'netns', 'exec', 'ns1'] in tests. Empty in production. */
  wrap?: readonly string[];
  /** tcpdump -y: force a link type, e.g. 'LINUX_SLL' on 'any' (libpcap 1.10 picks LINUX_SLL2). */
  linkType?: string;
  /** tcpdump -B: kernel buffer in KiB (libpcap's default is 2 MiB). */
  bufferKiB?: number;
  /** How long tcpdump may take to print "listening on". */
  readyTimeoutMs?: number;
  /** Restart backoff after tcpdump dies: first delay, doubled per failure up to max. */
  restartDelayMs?: { min: number; max: number };
}

/** A time during which an interface was not captured: opens and closes in it were missed, so
 * whoever keeps connection state should rescan sockets. */
export interface CaptureGap {
  iface: string;
  /** Epoch ms when tcpdump was found dead. */
  start: number;
  /** Epoch ms when its replacement was listening again. */
  end: number;
  reason: string;
}

export interface CaptureDown {
  iface: string;
  time: number;
  reason: string;
}

export interface InterfaceStats {
  iface: string;
  /** tcpdump's pid while it runs. */
  pid: number | undefined;
  listening: boolean;
  linkType: number | undefined;
  frames: number;
  events: number;
  /** Frames read but not turned into events, by reason (undecodable, not local, …). */
  skipped: Record<string, number>;
  /** Sum of tcpdump's "packets dropped by kernel" over its runs (reported at exit or on
   * requestKernelStats()); a tcpdump killed with SIGKILL reports nothing. */
  kernelDropped: number;
  /** Sum of tcpdump's own "packets captured", reported alongside kernelDropped: equal to frames
   * once every run has reported. */
  reportedCaptured: number;
  restarts: number;
  lastError: string | undefined;
}

export interface CaptureEvents {
  event: [ConnEvent];
  gap: [CaptureGap];
  down: [CaptureDown];
  /** Something odd that did not stop capture (a listener threw, a corrupt stream, …). */
  warning: [string];
}

/**
 * Watches connection opens and closes on the configured interfaces: one supervised tcpdump per
 * interface, its pcap stream parsed here. start() resolves once every tcpdump listens.
 */
export class Capture extends EventEmitter<CaptureEvents> {
  private readonly watchers: InterfaceWatcher[];
  /** A link's two directions, put back in capture order. */
  readonly merge: DirectionMerge | undefined;

  constructor(opts: CaptureOptions) {
    super();
    const names = (typeof opts.interfaces === 'string' ? opts.interfaces.split(',') : [...opts.interfaces])
      .map((s) => s.trim())
      .filter(Boolean);
    if (!names.length) throw new Error('capture: no interface configured');
    if (new Set(names).size !== names.length) throw new Error(`capture: interface listed twice in ${names.join(',')}`);
    if (names.includes('any') && names.length > 1) {
      throw new Error(`capture: 'any' already covers every interface; ${names.join(',')} would report segments twice`);
    }
    for (const n of names) {
      // tcpdump would take "-x" as an option; interface names never start with "-".
      if (n.startsWith('-') || /\s/.test(n)) throw new Error(`capture: bad interface name ${JSON.stringify(n)}`);
    }
    if (opts.link) {
      this.merge = new DirectionMerge((e) => {
        try {
          this.emit('event', e);
        } catch (err) {
          if (this.listenerCount('warning')) this.emit('warning', `event listener threw: ${(err as Error).message}`);
        }
      });
    }
    this.watchers = opts.link
      ? names.flatMap((n) => [new InterfaceWatcher(n, opts, this, 'in'), new InterfaceWatcher(n, opts, this, 'out')])
      : names.map((n) => new InterfaceWatcher(n, opts, this));
  }

  /** Starts every tcpdump; rejects (with tcpdump's own message) if one never gets to listen. */
  async start(): Promise<void> {
    const results = await Promise.allSettled(this.watchers.map((w) => w.start()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await this.stop();
      throw failed.reason;
    }
  }

  /** Stops every tcpdump (SIGTERM, then SIGKILL) after delivering what it already captured. */
  async stop(): Promise<void> {
    await Promise.all(this.watchers.map((w) => w.stop()));
    this.merge?.flush(true);
  }

  /** Asks each tcpdump for its kernel counters (SIGUSR1); stats() shows them a moment later. */
  requestKernelStats(): void {
    for (const w of this.watchers) w.requestKernelStats();
  }

  stats(): InterfaceStats[] {
    return this.watchers.map((w) => w.stats());
  }
}

/** One interface: keeps a tcpdump running and restarts it with backoff when it dies. */
class InterfaceWatcher {
  private run: TcpdumpRun | undefined;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private delay: number;
  private readonly s: InterfaceStats;
  private droppedInFinishedRuns = 0;
  private capturedInFinishedRuns = 0;

  constructor(
    readonly iface: string,
    private readonly opts: CaptureOptions,
    private readonly out: Capture,
    private readonly direction?: 'in' | 'out',
  ) {
    this.delay = opts.restartDelayMs?.min ?? 250;
    this.s = {
      iface: direction ? `${iface}:${direction}` : iface, pid: undefined, listening: false, linkType: undefined, frames: 0, events: 0,
      skipped: {}, kernelDropped: 0, reportedCaptured: 0, restarts: 0, lastError: undefined,
    };
  }

  async start(): Promise<void> {
    if (this.run && !this.run.finished) return;
    this.stopping = false;
    await this.launch();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    await this.run?.stop();
  }

  requestKernelStats(): void {
    this.run?.requestStats();
  }

  stats(): InterfaceStats {
    const live = this.run && !this.run.finished ? this.run : undefined;
    return {
      ...this.s,
      pid: live?.pid,
      listening: !!this.run?.listening && !this.run.finished,
      skipped: { ...this.s.skipped },
      kernelDropped: this.droppedInFinishedRuns + (live?.kernelDropped ?? 0),
      reportedCaptured: this.capturedInFinishedRuns + (live?.reportedCaptured ?? 0),
    };
  }

  /** Starts one tcpdump run and resolves when it listens; rejects if it dies first. */
  private launch(): Promise<void> {
    const o = this.opts;
    const args = ['-i', this.iface, '-n', '-s', String(SNAPLEN), '-U', '--immediate-mode', '-w', '-'];
    if (o.linkType) args.push('-y', o.linkType);
    if (o.bufferKiB) args.push('-B', String(o.bufferKiB));
    if (this.direction) args.push('-Q', this.direction);
    args.push(CONNECTION_FILTER);
    const run = new TcpdumpRun({
      iface: this.iface,
      command: [...(o.wrap ?? []), o.tcpdump ?? 'tcpdump', ...args],
      readyTimeoutMs: o.readyTimeoutMs ?? 10_000,
      local: this.direction === undefined ? o.local : this.direction === 'in' ? 'from-job' : 'to-job',
      onEvent: (e) => {
        this.s.events++;
        if (this.out.merge) this.out.merge.push(e);
        else this.tell('event', e);
      },
      onFrame: (linkType) => {
        this.s.frames++;
        this.s.linkType = linkType;
      },
      onSkip: (reason) => (this.s.skipped[reason] = (this.s.skipped[reason] ?? 0) + 1),
      onWarning: (m) => this.warn(m),
    });
    this.run = run;
    run.ended.then((end) => this.onEnd(run, end));
    return run.ready;
  }

  private onEnd(run: TcpdumpRun, end: RunEnd): void {
    this.droppedInFinishedRuns += run.kernelDropped;
    this.capturedInFinishedRuns += run.reportedCaptured;
    if (this.stopping || !run.listening) return; // a start() failure is reported by start()
    this.s.lastError = end.reason;
    this.tell('down', { iface: this.iface, time: end.time, reason: end.reason });
    // A run that had been healthy for a while resets the backoff.
    if (end.time - (run.listeningSince ?? end.time) > 10_000) this.delay = this.opts.restartDelayMs?.min ?? 250;
    this.scheduleRestart(end.time, end.reason);
  }

  private scheduleRestart(gapStart: number, reason: string): void {
    const max = this.opts.restartDelayMs?.max ?? 30_000;
    this.restartTimer = setTimeout(() => {
      if (this.stopping) return;
      this.s.restarts++;
      this.launch().then(
        () => this.tell('gap', { iface: this.iface, start: gapStart, end: Date.now(), reason }),
        (err: Error) => {
          if (this.stopping) return;
          this.s.lastError = err.message;
          this.warn(`restart failed: ${err.message}`);
          this.scheduleRestart(gapStart, reason);
        },
      );
    }, this.delay);
    this.delay = Math.min(max, this.delay * 2);
  }

  /** Emits without letting a listener's exception escape: these run inside stream and promise
   * callbacks, where a throw would kill the capture loop or become an unhandled rejection. */
  private tell<K extends keyof CaptureEvents>(name: K, ...args: CaptureEvents[K]): void {
    try {
      (this.out.emit as (n: K, ...a: CaptureEvents[K]) => boolean)(name, ...args);
    } catch (err) {
      this.warn(`${name} listener threw: ${(err as Error).message}`);
    }
  }

  private warn(msg: string): void {
    try {
      if (this.out.listenerCount('warning')) this.out.emit('warning', `${this.iface}: ${msg}`);
    } catch {
      /* a throwing warning listener has nowhere left to report to */
    }
  }
}
