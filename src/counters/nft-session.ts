import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { RunResult } from '../util/exec.js';

/** What `describe tcp dport` prints: the end of a command's standard output. */
const OUT_MARK = 'payload expression, datatype inet_service';

export interface NftSessionOptions {
  /** Run nft inside this network namespace (tests). */
  netns?: string;
  /** A command with no answer after this long kills the session; the command fails. */
  timeoutMs?: number;
  /** nft -i keeps every line in its history, and each command costs more the longer it is
   * (0.65 ms at first, 2.3 ms after 18,000): a session is replaced after this many commands or
   * this much input, whichever comes first. */
  recycleCommands?: number;
  recycleBytes?: number;
}

interface Pending {
  seq: number;
  resolve: (r: RunResult) => void;
}

/**
 * One long-lived `nft -j -i` for the engine's frequent small commands: a spawned nft costs
 * 15–20 ms (more on a busy machine) where a command in the session costs what the kernel does.
 * Each command is followed by two markers, one that prints to stdout (`describe`, which needs
 * no kernel) and one syntax error on stderr naming a sequence number, so both streams are cut
 * exactly at the command's end. stdbuf makes nft flush stdout per line on a pipe. A new session
 * costs about 10 ms; replacing it every 1,000 commands keeps commands near their first cost.
 */
export class NftSession {
  private child: ChildProcessWithoutNullStreams | undefined;
  private out = '';
  private err = '';
  private seq = 0;
  private sent = 0;
  private commands = 0;
  private current: Pending | undefined;
  private timer: NodeJS.Timeout | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  /** Sessions started, for tests and diagnostics. */
  started = 0;

  constructor(private readonly options: NftSessionOptions = {}) {}

  /** Runs one command line (nft syntax or JSON); code 0 unless nft printed an error. */
  run(line: string): Promise<RunResult> {
    if (/[\r\n]/.test(line)) return Promise.reject(new Error('nft session: a command must be one line'));
    const result = this.tail.then(() => this.exchange(line));
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Kills the session (SIGKILL: at a clean end of input nft would write its history file). */
  close(): void {
    this.fail(new Error('nft session closed'));
  }

  private exchange(line: string): Promise<RunResult> {
    return new Promise<RunResult>((resolve, reject) => {
      const child = this.child ?? this.spawnChild(reject);
      if (!child) return;
      const seq = ++this.seq;
      this.current = { seq, resolve };
      this.rejectCurrent = reject;
      this.timer = setTimeout(() => this.fail(new Error(`nft session: no answer within ${this.options.timeoutMs ?? 60_000} ms`)), this.options.timeoutMs ?? 60_000);
      const text = `${line}\ndescribe tcp dport\nnetprof_sync_${seq}\n`;
      this.sent += text.length;
      this.commands += 1;
      child.stdin.write(text);
    });
  }

  private rejectCurrent: ((e: Error) => void) | undefined;

  private spawnChild(reject: (e: Error) => void): ChildProcessWithoutNullStreams | undefined {
    const args = ['-oL', 'nft', '-j', '-i'];
    const [file, argv] = this.options.netns ? ['ip', ['netns', 'exec', this.options.netns, 'stdbuf', ...args]] : ['stdbuf', args];
    let child: ChildProcessWithoutNullStreams;
    try {
      // HOME that does not exist: nft -i neither reads nor writes a history file.
      child = spawn(file, argv as string[], { stdio: 'pipe', env: { ...process.env, HOME: '/nonexistent' } });
    } catch (e) {
      reject(e as Error);
      return undefined;
    }
    this.child = child;
    this.started++;
    this.sent = 0;
    this.commands = 0;
    this.out = '';
    this.err = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      this.out += d;
      this.check();
    });
    child.stderr.on('data', (d: string) => {
      this.err += d;
      this.check();
    });
    child.stdin.on('error', () => undefined); // a dead nft: reported by 'exit'
    child.on('error', (e) => this.fail(new Error(`nft session: ${e.message}`), child));
    child.on('exit', (code, signal) => this.fail(new Error(`nft session ended (${signal ?? `exit ${code}`})`), child));
    return child;
  }

  /** Completes the current command once both markers' lines have arrived whole. */
  private check(): void {
    const p = this.current;
    if (!p) return;
    // At a line's start: a listing is one line of JSON, so a job id in it cannot fake the mark.
    const outAt = ('\n' + this.out).indexOf('\n' + OUT_MARK);
    const outEnd = outAt < 0 ? -1 : this.out.indexOf('\n', outAt);
    // The marker's error: "Error: syntax error…", the echoed line, a caret line.
    const echoAt = ('\n' + this.err).indexOf(`\nnetprof_sync_${p.seq}\n`);
    const caretEnd = echoAt < 0 ? -1 : this.err.indexOf('\n', this.err.indexOf('\n', echoAt) + 1);
    if (outEnd < 0 || caretEnd < 0) return;
    const stdout = this.out.slice(0, outAt);
    const stderr = this.err.slice(0, Math.max(0, this.err.lastIndexOf('Error:', echoAt)));
    this.out = this.out.slice(outEnd + 1);
    this.err = this.err.slice(caretEnd + 1);
    this.settle();
    p.resolve({ code: /(^|\n)Error:/.test(stderr) ? 1 : 0, stdout, stderr });
    if (this.sent > (this.options.recycleBytes ?? 16 * 1024 * 1024) || this.commands >= (this.options.recycleCommands ?? 1000)) this.stopChild();
  }

  private settle(): void {
    clearTimeout(this.timer);
    this.current = undefined;
    this.rejectCurrent = undefined;
  }

  /** Ends the session: the command under way fails; the next command starts a new session. */
  private fail(error: Error, only?: ChildProcessWithoutNullStreams): void {
    if (only && only !== this.child) return;
    const reject = this.rejectCurrent;
    this.settle();
    this.stopChild();
    reject?.(error);
  }

  private stopChild(): void {
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}
