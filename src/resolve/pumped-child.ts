import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';

/**
 * A child process whose output a worker thread reads, so that the child never waits for the
 * daemon's event loop. bpftrace blocks on a full stdout pipe (64 KB, ~600 lines); meanwhile the
 * kernel's perf buffer fills and drops events: under a burst of 50,000 connections, with the
 * loop busy for seconds at a time, 46,704 events were lost and their connections went to /proc.
 * The worker's loop only reads and forwards, so the pipe is drained whatever the main loop does;
 * what it read waits, in order, in the worker's message queue.
 *
 * Events: 'spawn' (pid), 'lines' (lines: string[], fromStderr: boolean), 'error' (Error: could
 * not start), 'exit' (code, signal) after the last line.
 */
export class PumpedChild extends EventEmitter {
  pid: number | undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  private readonly worker: Worker;
  /** A signal asked for before the child was known to run: sent when it is. */
  private killed: NodeJS.Signals | undefined;

  constructor(file: string, args: readonly string[], env: NodeJS.ProcessEnv) {
    super();
    this.worker = new Worker(PUMP, { eval: true, workerData: { file, args: [...args], env } });
    this.worker.on('message', (m: PumpMessage) => {
      if (m.t === 'spawn') {
        this.pid = m.pid;
        if (this.killed) this.kill(this.killed);
        this.emit('spawn', m.pid);
      } else if (m.t === 'lines') {
        this.emit('lines', m.lines, m.stderr);
      } else if (m.t === 'error') {
        this.emit('error', new Error(m.message));
      } else {
        this.exitCode = m.code;
        this.signalCode = m.signal;
        void this.worker.terminate();
        this.emit('exit', m.code, m.signal);
      }
    });
    // The worker itself failing is the child's failure to report: say so, never hang.
    this.worker.on('error', (e) => {
      if (this.pid !== undefined) this.kill('SIGKILL');
      this.emit('error', new Error(`output reader failed: ${e.message}`));
    });
  }

  get running(): boolean {
    return this.pid !== undefined && this.exitCode === null && this.signalCode === null;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    // Signalled from here, not through the worker: this also works while the process exits.
    this.killed = signal;
    if (this.running) {
      try {
        process.kill(this.pid!, signal);
      } catch {
        /* gone already */
      }
    }
  }
}

type PumpMessage =
  | { t: 'spawn'; pid: number }
  | { t: 'lines'; lines: string[]; stderr: boolean }
  | { t: 'error'; message: string }
  | { t: 'exit'; code: number | null; signal: NodeJS.Signals | null };

/** The worker: plain JS run with eval (no file to find next to the compiled module, also under
 * the test runner). Lines go out in batches: one message per read chunk, at most 2,048 lines. */
const PUMP = String.raw`
const { spawn } = require('node:child_process');
const { createInterface } = require('node:readline');
const { parentPort, workerData } = require('node:worker_threads');
const child = spawn(workerData.file, workerData.args, { stdio: ['ignore', 'pipe', 'pipe'], env: workerData.env });
child.once('spawn', () => parentPort.postMessage({ t: 'spawn', pid: child.pid }));
child.once('error', (e) => parentPort.postMessage({ t: 'error', message: e.message }));
const pending = { false: [], true: [] };
let scheduled = false;
const flush = () => {
  scheduled = false;
  for (const key of ['false', 'true']) {
    if (pending[key].length) parentPort.postMessage({ t: 'lines', lines: pending[key], stderr: key === 'true' });
    pending[key] = [];
  }
};
const pump = (stream, stderr) =>
  createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
    const list = pending[stderr];
    list.push(line);
    if (list.length >= 2048) flush();
    else if (!scheduled) { scheduled = true; setImmediate(flush); }
  });
pump(child.stdout, false);
pump(child.stderr, true);
child.once('close', (code, signal) => {
  flush();
  parentPort.postMessage({ t: 'exit', code, signal });
});
`;
