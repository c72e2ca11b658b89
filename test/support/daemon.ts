import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { exited, nsRun, nsSpawn } from './netns.js';

export const CLI = resolve(__dirname, '../../dist/cli.js');

export interface RunningDaemon {
  ns: string;
  port: number;
  logDir: string;
  child: ChildProcess;
  /** The daemon's diagnostics so far (stderr). */
  stderr(): string;
  /** GET (or another method) through curl inside the namespace, as a scheduler would call. */
  curl(path: string, method?: string, body?: string): Promise<{ status: number; body: string }>;
  /** SIGKILL if still running; used in afterAll. */
  kill(): Promise<void>;
}

/** Resolves when the daemon says it is ready; rejects, with what it said, if it exits or takes
 * longer than 20 s. */
export function daemonReady(child: ChildProcess, stderr: () => string): Promise<void> {
  return new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`daemon not ready after 20 s:\n${stderr()}`)), 20_000);
    const check = () => {
      if (stderr().includes('netprof daemon ready')) {
        clearTimeout(t);
        child.stderr!.off('data', check);
        res();
      }
    };
    child.stderr!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(t);
      rej(new Error(`daemon exited with ${code}:\n${stderr()}`));
    });
  });
}

let nextPort = 18000 + (process.pid % 1000);

/** Every daemon this test file started, for test/support/on-failure.ts. */
export const startedDaemons: RunningDaemon[] = [];

/** Starts `netprof daemon` inside the namespace and waits until it is ready. */
export async function startDaemon(ns: string, config: Record<string, string> = {}, extraArgs: string[] = []): Promise<RunningDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'netprof-daemon-'));
  const logDir = join(dir, 'log');
  const port = nextPort++;
  const text = ['[CONFIG]', `LOG_DIR = ${logDir}`, ...Object.entries(config).map(([k, v]) => `${k} = ${v}`)].join('\n');
  writeFileSync(join(dir, 'config.ini'), `${text}\n`);
  const child = nsSpawn(ns, process.execPath, [CLI, 'daemon', '--config', join(dir, 'config.ini'), ...extraArgs, String(port)]);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await daemonReady(child, () => err);
  const daemon: RunningDaemon = {
    ns,
    port,
    logDir,
    child,
    stderr: () => err,
    async curl(path, method = 'GET', body) {
      const args = ['-s', '-g', '-o', '-', '-w', '\n%{http_code}', '-X', method, `http://127.0.0.1:${port}${path}`];
      if (body !== undefined) args.push('-H', 'Content-Type: application/json', '--data-binary', body);
      const r = await nsRun(ns, 'curl', args);
      const at = r.stdout.lastIndexOf('\n');
      return { status: Number(r.stdout.slice(at + 1)), body: r.stdout.slice(0, at) };
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
    },
  };
  startedDaemons.push(daemon);
  return daemon;
}
