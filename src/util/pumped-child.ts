import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';

/**
 * A child process whose output a worker thread reads, so that the child never waits for the
 * daemon's event loop. bpftrace and tcpdump block on a full stdout pipe (64 KB); meanwhile the
 * kernel's buffer behind them fills and drops: under a burst of 50,000 connections, with the
 * loop busy for seconds at a time, 46,704 eBPF events were lost and capture missed a third of
 * the SYNs. The worker's loop only reads and forwards, so the pipe is drained whatever the main
 * loop does; what it read waits, in order, in the worker's message queue.
 *
 * Events: 'spawn' (pid); 'stdout' (lines: string[], or in bytes mode chunk: Buffer); 'stderr'
 * (lines: string[]); 'error' (Error: could not start); 'exit' (code, signal) once the process
 * has exited and all its output has been emitted.
 */
export interface PumpOptions {
  env?: NodeJS.ProcessEnv;
  /** stdout as lines (default) or as raw bytes (a pcap stream). */
  stdout?: 'lines' | 'bytes';
  /** Lines starting with one of `prefixes` are dropped in the reader when their `field`-th
   * space-separated field is not among the values set by keepOnly() (none set: all kept). */
  filter?: { prefixes: string[]; field: number; keep?: string[] };
}

export class PumpedChild extends EventEmitter {
  pid: number | undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  private readonly worker: Worker;
  /** A signal asked for before the child was known to run: sent once it is. */
  private killed: NodeJS.Signals | undefined;

  constructor(file: string, args: readonly string[], options: PumpOptions = {}) {
    super();
    const workerData = { file, args: [...args], env: options.env ?? process.env, bytes: options.stdout === 'bytes', filter: options.filter };
    this.worker = new Worker(PUMP, { eval: true, workerData });
    this.worker.on('message', (m: PumpMessage) => {
      if (m.t === 'spawn') {
        this.pid = m.pid;
        if (this.killed) this.kill(this.killed);
        this.emit('spawn', m.pid);
      } else if (m.t === 'lines' && m.stderr) {
        this.emit('stderr', m.lines);
      } else if (m.t === 'lines') {
        this.filtered += m.dropped;
        for (let i = 0; i < m.lines.length; i += SLICE_LINES) this.queue.push(m.lines.slice(i, i + SLICE_LINES));
        this.drainLater();
      } else if (m.t === 'bytes') {
        const all = Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength);
        for (let i = 0; i < all.length; i += SLICE_BYTES) this.queue.push(all.subarray(i, i + SLICE_BYTES));
        this.drainLater();
      } else if (m.t === 'error') {
        this.emit('error', new Error(m.message));
      } else {
        this.queue.push(() => {
          this.exitCode = m.code;
          this.signalCode = m.signal;
          void this.worker.terminate();
          this.emit('exit', m.code, m.signal);
        });
        this.drainLater();
      }
    });
    // The worker itself failing is the child's failure to report: say so, never hang.
    this.worker.on('error', (e) => {
      if (this.pid !== undefined) this.kill('SIGKILL');
      this.emit('error', new Error(`output reader failed: ${e.message}`));
    });
  }

  /**
   * Output not yet emitted, in order, in slices: one slice per turn of the loop. Node hands a
   * port's whole backlog over in one callback, so after a busy stretch a burst's events would
   * all be handled before the loop could answer a request (a health check waited 7.6 s).
   */
  private queue: Array<string[] | Buffer | (() => void)> = [];
  private draining = false;

  private drainLater(): void {
    if (this.draining) return;
    this.draining = true;
    setImmediate(() => this.drain());
  }

  private drain(): void {
    const next = this.queue.shift();
    if (next === undefined) {
      this.draining = false;
      return;
    }
    if (typeof next === 'function') next();
    else this.emit('stdout', next);
    setImmediate(() => this.drain());
  }

  /** Lines the filter dropped in the reader. */
  filtered = 0;

  /** The values the filter keeps from now on; undefined: keep every line. */
  keepOnly(values: readonly string[] | undefined): void {
    this.worker.postMessage({ keep: values ? [...values] : null });
  }

  get running(): boolean {
    return this.pid !== undefined && this.exitCode === null && this.signalCode === null;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    // Signalled from here, not through the worker: this also works while the process exits.
    if (this.pid === undefined) this.killed = signal;
    if (this.running) {
      try {
        process.kill(this.pid!, signal);
      } catch {
        /* gone already */
      }
    }
  }
}

/** Per turn of the loop: ~1 ms of event parsing, and the work it starts. */
const SLICE_LINES = 256;
const SLICE_BYTES = 16 * 1024;

type PumpMessage =
  | { t: 'spawn'; pid: number }
  | { t: 'lines'; lines: string[]; stderr: boolean; dropped: number }
  | { t: 'bytes'; bytes: Uint8Array }
  | { t: 'error'; message: string }
  | { t: 'exit'; code: number | null; signal: NodeJS.Signals | null };

/** The worker: plain JS run with eval (no file to find next to the compiled module, also under
 * the test runner). Output goes out in batches: what one turn of its loop read, lines at most
 * 2,048 per message; bytes in a buffer of their own, transferred, not copied. */
const PUMP = String.raw`
const { spawn } = require('node:child_process');
const { createInterface } = require('node:readline');
const { parentPort, workerData } = require('node:worker_threads');
const child = spawn(workerData.file, workerData.args, { stdio: ['ignore', 'pipe', 'pipe'], env: workerData.env });
child.once('spawn', () => parentPort.postMessage({ t: 'spawn', pid: child.pid }));
child.once('error', (e) => parentPort.postMessage({ t: 'error', message: e.message }));
const filter = workerData.filter;
let keep = filter && filter.keep ? new Set(filter.keep) : null;
let dropped = 0;
parentPort.on('message', (m) => { keep = m.keep ? new Set(m.keep) : null; });
const unwanted = (line) => {
  if (!keep || !filter.prefixes.some((p) => line.startsWith(p))) return false;
  return !keep.has(line.split(' ', filter.field + 1)[filter.field]);
};
const lines = { false: [], true: [] };
let chunks = [];
let size = 0;
let scheduled = false;
const flush = () => {
  scheduled = false;
  lastFlush = Date.now();
  if (size) {
    const out = new Uint8Array(new ArrayBuffer(size));
    let at = 0;
    for (const c of chunks) { out.set(c, at); at += c.length; }
    chunks = [];
    size = 0;
    parentPort.postMessage({ t: 'bytes', bytes: out }, [out.buffer]);
  }
  for (const key of ['false', 'true']) {
    if (lines[key].length || (key === 'false' && dropped)) parentPort.postMessage({ t: 'lines', lines: lines[key], stderr: key === 'true', dropped: key === 'false' ? dropped : 0 });
    if (key === 'false') dropped = 0;
    lines[key] = [];
  }
};
// At most one hand-over per HANDOVER_MS: each message wakes the main thread (at 1,000
// connections a second, tcpdump writes 4,000 packets one by one). After a quiet spell, at once.
const HANDOVER_MS = 5;
let lastFlush = 0;
const later = () => {
  if (scheduled) return;
  scheduled = true;
  const wait = lastFlush + HANDOVER_MS - Date.now();
  if (wait > 0) setTimeout(flush, wait);
  else setImmediate(flush);
};
const byLine = (stream, stderr) =>
  createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
    if (!stderr && unwanted(line)) { dropped += 1; return later(); }
    const list = lines[stderr];
    list.push(line);
    if (list.length >= 2048) flush();
    else later();
  });
if (workerData.bytes) child.stdout.on('data', (c) => { chunks.push(c); size += c.length; later(); });
else byLine(child.stdout, false);
byLine(child.stderr, true);
child.once('close', (code, signal) => {
  flush();
  parentPort.postMessage({ t: 'exit', code, signal });
});
`;
