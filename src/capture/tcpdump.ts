import { PumpedChild } from '../util/pumped-child.js';
import type { LocalAddresses } from './addresses.js';
import { decodeFrame } from './decode.js';
import { linkSegmentEvents, segmentEvents, type ConnEvent } from './events.js';
import { PcapStreamReader } from './pcap-stream.js';

export interface RunOptions {
  iface: string;
  /** Program and arguments, spawned without a shell. */
  command: readonly string[];
  readyTimeoutMs: number;
  /** Which end of a segment is ours: the host's own addresses, or — on a job's link, captured
   * one direction per run — the direction itself. */
  local: LocalAddresses | 'from-job' | 'to-job';
  onFrame(linkType: number): void;
  onEvent(e: ConnEvent): void;
  onSkip(reason: string): void;
  onWarning(msg: string): void;
}

export interface RunEnd {
  /** Epoch ms when the process was gone and its output fully read. */
  time: number;
  reason: string;
}

const STOP_GRACE_MS = 3_000;
const STDERR_KEEP = 20;

/**
 * One tcpdump process writing pcap to stdout, read by a worker thread (util/pumped-child.ts):
 * tcpdump blocked on a full pipe while the loop was busy lets the kernel drop packets (10,068 of
 * a 50,000-connection burst's 100,000 SYNs and SYN-ACKs with the loop busy 1.5 s of every 2).
 * Everything it wrote is parsed before `ended` resolves, so events always precede the news of
 * its death.
 */
export class TcpdumpRun {
  readonly ready: Promise<void>;
  readonly ended: Promise<RunEnd>;
  listening = false;
  listeningSince: number | undefined;
  finished = false;
  /** Latest "packets captured" / "dropped by kernel" tcpdump reported (cumulative per run). */
  reportedCaptured = 0;
  kernelDropped = 0;

  private readonly child: PumpedChild;
  private readonly reader = new PcapStreamReader();
  private stderrLines: string[] = [];
  private stderrTail = '';
  private failure: string | undefined;

  constructor(private readonly o: RunOptions) {
    const [file, ...args] = o.command;
    if (!file) throw new Error('capture: empty tcpdump command');
    this.child = new PumpedChild(file, args, { stdout: 'bytes' });

    let markReady!: () => void;
    let markFailed!: (e: Error) => void;
    this.ready = new Promise<void>((res, rej) => {
      markReady = res;
      markFailed = rej;
    });
    // Nobody may be waiting on ready for a restart that dies; avoid an unhandled rejection.
    this.ready.catch(() => {});
    const readyTimer = setTimeout(() => {
      this.fail(`tcpdump did not start listening within ${o.readyTimeoutMs} ms`);
    }, o.readyTimeoutMs);

    this.child.on('stdout', (chunk: Buffer) => this.onData(chunk));
    this.child.on('stderr', (lines: string[]) => {
      if (this.onStderr(lines.map((l) => `${l}\n`).join('')) && !this.listening) {
        this.listening = true;
        this.listeningSince = Date.now();
        clearTimeout(readyTimer);
        markReady();
      }
    });

    this.ended = new Promise<RunEnd>((resolve) => {
      let spawnError: string | undefined;
      this.child.on('error', (e) => (spawnError = `cannot run ${file}: ${e.message}`));
      // 'exit' comes after the process exited *and* its stdout/stderr were emitted.
      this.child.on('exit', (code: number | null, signal: NodeJS.Signals | null) => {
        clearTimeout(readyTimer);
        this.finished = true;
        this.onStderr('\n');
        const how = signal ? `killed by ${signal}` : `exited with status ${code}`;
        const said = this.stderrLines.filter((l) => !/^tcpdump: listening on|packets? (captured|received|dropped)/.test(l));
        const reason = spawnError ?? this.failure ?? `tcpdump ${how}${said.length ? `: ${said.slice(-3).join(' | ')}` : ''}`;
        if (!this.listening) markFailed(new Error(`capture on ${o.iface}: ${reason}`));
        resolve({ time: Date.now(), reason });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  requestStats(): void {
    if (!this.finished && this.listening) this.child.kill('SIGUSR1');
  }

  /** SIGTERM (tcpdump then prints its counters), SIGKILL if it lingers. */
  async stop(): Promise<void> {
    if (this.finished) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS);
    await this.ended;
    clearTimeout(timer);
  }

  /** Ends the run for a reason of ours (corrupt stream, no readiness): the supervisor restarts. */
  private fail(reason: string): void {
    if (this.finished) return;
    this.failure ??= reason;
    this.child.kill('SIGKILL');
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    try {
      this.reader.push(chunk, (rec, h) => {
        this.o.onFrame(h.linkType);
        let evs: ConnEvent[] | string;
        try {
          const d = decodeFrame(h.linkType, rec.data);
          evs = !d.ok ? d.reason : typeof this.o.local === 'string' ? linkSegmentEvents(d.segment, rec.timeMs, this.o.iface, this.o.local === 'from-job') : segmentEvents(d.segment, rec.timeMs, this.o.iface, this.o.local);
        } catch {
          evs = 'decoder-error'; // a bug of ours must cost one frame, not the capture
        }
        if (typeof evs === 'string') return this.o.onSkip(evs);
        for (const e of evs) this.o.onEvent(e);
      });
    } catch (e) {
      // The stream cannot be resynchronised (pcap has no markers): start a fresh tcpdump.
      this.o.onWarning(`bad pcap stream from tcpdump: ${(e as Error).message}`);
      this.fail(`bad pcap stream: ${(e as Error).message}`);
    }
  }

  /** Collects stderr lines; returns true when tcpdump says it listens. */
  private onStderr(text: string): boolean {
    const lines = (this.stderrTail + text).split('\n');
    this.stderrTail = lines.pop() ?? '';
    let listening = false;
    for (const line of lines) {
      if (/^tcpdump: listening on /.test(line)) listening = true;
      const captured = /(\d+) packets? captured/.exec(line);
      if (captured) this.reportedCaptured = Number(captured[1]);
      const dropped = /(\d+) packets? dropped by kernel/.exec(line);
      if (dropped) this.kernelDropped = Number(dropped[1]);
      this.stderrLines.push(line);
      if (this.stderrLines.length > STDERR_KEEP) this.stderrLines.shift();
    }
    return listening;
  }
}
