import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk, type RunResult } from '../util/exec.js';
import { NftSession } from './nft-session.js';

/**
 * How an engine reaches the kernel's tools: argument arrays (no shell), optionally inside a
 * network namespace (tests), batch input through a file in a private directory (`nft -f -` and
 * the *-restore tools misbehave when fed from Node's stdin pipe), and one operation at a time so
 * a read-then-delete never interleaves with another change.
 */
export class Kernel {
  private tail: Promise<unknown> = Promise.resolve();
  private session: NftSession | undefined;

  constructor(private readonly netns?: string) {}

  /** One nft command line in the long-lived session (started on first use). */
  nft(line: string): Promise<RunResult> {
    this.session ??= new NftSession({ netns: this.netns });
    return this.session.run(line);
  }

  /** Sessions started so far (0 if nft() was never called). */
  get nftSessions(): number {
    return this.session?.started ?? 0;
  }

  run(file: string, args: readonly string[]): Promise<RunResult> {
    return this.netns ? run('ip', ['netns', 'exec', this.netns, file, ...args]) : run(file, args);
  }

  runOk(file: string, args: readonly string[]): Promise<string> {
    return this.netns ? runOk('ip', ['netns', 'exec', this.netns, file, ...args]) : runOk(file, args);
  }

  /** Writes a batch to a private file (mode 0600 in a fresh 0700 directory, removed afterwards
   * so that even a killed daemon leaves at most one behind), passes its path to fn. */
  async withBatchFile<T>(content: string, fn: (path: string) => Promise<T>): Promise<T> {
    const dir = await mkdtemp(join(tmpdir(), 'netprof-batch-'));
    const path = join(dir, 'batch');
    try {
      await writeFile(path, content, { mode: 0o600 });
      return await fn(path);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Runs fn after every operation queued before it has settled. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Ends the nft session, if any. */
  async close(): Promise<void> {
    this.session?.close();
    this.session = undefined;
  }
}
