import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import type { ConnectionView, JobDetail } from '../profiler/control.js';
import { EXIT, RefusedError, UnreachableError, call, callJson, jobPath, type Endpoint } from './client.js';
import { register } from './commands.js';
import { bytes, endpointText, table } from './format.js';
import { LogParser, expandLogPaths, readLog, type LoggedConnection } from './logfile.js';

/**
 * `netprof run [--job ID] -- COMMAND [ARGS…]`: runs COMMAND profiled from its first instruction.
 *
 * Node cannot exec(2) in place, so the command runs in a child started stopped: a tiny trampoline
 * `sh -c 'kill -STOP $$ && exec "$@"' netprof-run COMMAND ARGS…` stops itself before exec; we
 * register its pid with the daemon, then send SIGCONT and it execs COMMAND under the same pid.
 * The registered process *is* the command, so it is covered whether FOLLOW_CHILDREN is yes or no
 * (its own children are covered only with yes). The command line never enters the shell string:
 * it travels as the trampoline's positional parameters.
 */

/** After the command exits, how long to wait for the daemon to see its connections close. */
const SETTLE_MS = 2000;

const TRAMPOLINE = 'kill -STOP $$ && exec "$@"';

export interface RunOptions {
  job?: string;
  /** Fail (without running the command) when the daemon cannot register it. */
  require?: boolean;
  quiet?: boolean;
  /** Write `bytes_in=N` … lines here at the end, for shell wrappers. */
  totals?: string;
  /** Read the job's exact per-connection records from this log (file, base name or directory). */
  log?: string;
  poll?: string;
}

interface Seen {
  view: ConnectionView;
  pid: number;
}

const err = (s: string) => process.stderr.write(s);

export async function run(e: Endpoint, argv: string[], o: RunOptions): Promise<number> {
  const job = o.job ?? `run-${process.pid}-${Math.floor(Date.now() / 1000)}`;
  const pollMs = o.poll === undefined ? 1000 : Number(o.poll) * 1000;
  const began = Date.now();
  const child = spawn('/bin/sh', ['-c', TRAMPOLINE, 'netprof-run', ...argv], { stdio: 'inherit' });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: 127, signal: null }));
  });
  const pid = child.pid;
  if (pid === undefined) {
    err(`netprof run: cannot start /bin/sh\n`);
    return 127;
  }
  // Signals meant for the command: the terminal's SIGINT/SIGQUIT reach it through the process
  // group already; the rest (a batch system's SIGTERM to this pid) are passed on.
  const forward = (s: NodeJS.Signals) => () => {
    if (s !== 'SIGINT' && s !== 'SIGQUIT') child.kill(s);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGQUIT', 'SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'];
  const handlers = signals.map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);

  let registered = false;
  const stopped = await waitStopped(pid, exit);
  if (stopped) {
    try {
      await register(e, job, pid);
      registered = true;
    } catch (x) {
      const why = x instanceof RefusedError ? `refused (${x.status}): ${x.message}` : (x as Error).message;
      if (o.require) {
        child.kill('SIGKILL');
        await exit;
        err(`netprof run: not running the command: cannot register it for job ${job}: ${why}\n`);
        return x instanceof UnreachableError ? EXIT.UNREACHABLE : EXIT.REFUSED;
      }
      err(`netprof run: running unprofiled: cannot register it for job ${job}: ${why}\n`);
    }
  }

  const seen = new Map<string, Seen>();
  let polling = false;
  const poll = async () => {
    if (polling) return;
    polling = true;
    try {
      const d = await callJson<JobDetail>(e, 'GET', jobPath(job));
      remember(seen, d);
    } catch {
      /* a missed poll only loses detail; the totals come from the daemon at the end */
    } finally {
      polling = false;
    }
  };
  const timer = registered && pollMs > 0 ? setInterval(() => void poll(), pollMs) : undefined;
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    /* it already died */
  }
  const { code, signal } = await exit;
  if (timer) clearInterval(timer);
  for (const [s, h] of handlers) process.off(s, h);
  const status = signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1);
  const seconds = (Date.now() - began) / 1000;

  if (!registered) return status;
  let final: JobDetail | undefined;
  try {
    // The command has exited; the daemon sees its connections' FINs a moment later. Ending the
    // job first would log them as ended by the job instead of closed, so give them a moment.
    const settle = Date.now() + SETTLE_MS;
    for (;;) {
      final = await callJson<JobDetail>(e, 'GET', jobPath(job));
      if (final.open_connections === 0 || Date.now() >= settle) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    remember(seen, final);
    const a = await call(e, 'DELETE', jobPath(job));
    if (a.status !== 200) err(`netprof run: could not end job ${job}: HTTP ${a.status} ${a.body.trim()}\n`);
  } catch (x) {
    err(`netprof run: could not read or end job ${job}: ${(x as Error).message}\n`);
  }
  let logged: LoggedConnection[] | undefined;
  if (o.log) logged = await readJobLog(o.log, job).catch((x: Error) => (err(`netprof run: --log ${o.log}: ${x.message}\n`), undefined));

  const totals = summaryTotals(final, logged);
  if (o.totals) {
    const lines = Object.entries({ status, ...totals, seconds: seconds.toFixed(3) }).map(([k, v]) => `${k}=${v}\n`);
    try {
      writeFileSync(o.totals, lines.join(''));
    } catch (x) {
      err(`netprof run: --totals ${o.totals}: ${(x as Error).message}\n`);
    }
  }
  if (!o.quiet) err(summary(job, status, signal, seconds, totals, [...seen.values()], logged));
  return status;
}

/** Waits until the trampoline has stopped itself (state T in /proc), or has exited. */
async function waitStopped(pid: number, exit: Promise<unknown>): Promise<boolean> {
  let gone = false;
  void exit.then(() => (gone = true));
  const deadline = Date.now() + 10_000;
  while (!gone && Date.now() < deadline) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'T' || state === 't') return true;
      if (state === 'Z' || state === 'X') return false;
    } catch {
      return false;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  return false;
}

const connKey = (c: ConnectionView) => `${c.local_addr}|${c.local_port}|${c.remote_addr}|${c.remote_port}`;

function remember(seen: Map<string, Seen>, d: JobDetail): void {
  for (const p of d.process_list) {
    for (const c of p.connections) {
      const prev = seen.get(connKey(c));
      if (!prev || c.bytes_in + c.bytes_out >= prev.view.bytes_in + prev.view.bytes_out) seen.set(connKey(c), { view: c, pid: p.pid });
    }
  }
}

async function readJobLog(path: string, job: string): Promise<LoggedConnection[]> {
  const found: LoggedConnection[] = [];
  const parser = new LogParser((c) => c.job === job && found.push(c));
  for (const f of expandLogPaths([path])) await readLog(f, parser);
  return found;
}

interface Totals {
  bytes_in: number;
  bytes_out: number;
  packets_in: number;
  packets_out: number;
  connections: number;
}

function summaryTotals(d: JobDetail | undefined, logged: LoggedConnection[] | undefined): Totals {
  if (logged && logged.length) {
    const t = { bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0, connections: logged.length };
    for (const c of logged) {
      t.bytes_in += c.bytesIn ?? 0;
      t.bytes_out += c.bytesOut ?? 0;
      t.packets_in += c.packetsIn ?? 0;
      t.packets_out += c.packetsOut ?? 0;
    }
    return t;
  }
  return {
    bytes_in: d?.bytes_in ?? 0,
    bytes_out: d?.bytes_out ?? 0,
    packets_in: d?.packets_in ?? 0,
    packets_out: d?.packets_out ?? 0,
    connections: (d?.open_connections ?? 0) + (d?.closed_connections ?? 0),
  };
}

function summary(job: string, status: number, signal: string | null, seconds: number, t: Totals, seen: Seen[], logged: LoggedConnection[] | undefined): string {
  const how = signal ? `killed by ${signal} (status ${status})` : `exited with status ${status}`;
  let s = `netprof: job ${job}: command ${how} after ${seconds.toFixed(2)} s\n`;
  s += `netprof: ${t.connections} connections, ${bytes(t.bytes_in)} in (${t.bytes_in}), ${bytes(t.bytes_out)} out (${t.bytes_out})\n`;
  const rows: string[][] = logged
    ? logged.map((c) => [String(c.pid), endpointText(c.localAddr, c.localPort), endpointText(c.remoteAddr, c.remotePort), c.bytesIn === undefined ? '-' : String(c.bytesIn), c.bytesOut === undefined ? '-' : String(c.bytesOut)])
    : seen.map(({ view: c, pid }) => [String(pid), endpointText(c.local_addr, c.local_port), endpointText(c.remote_addr, c.remote_port), `≥${c.bytes_in}`, `≥${c.bytes_out}`]);
  if (rows.length) {
    s += table(['PID', 'LOCAL', 'REMOTE', 'IN', 'OUT'], rows, [true, false, false, true, true])
      .split('\n')
      .filter(Boolean)
      .map((l) => `netprof:   ${l}\n`)
      .join('');
  }
  if (!logged && t.connections > seen.length) {
    s += `netprof:   (${t.connections - seen.length} connections closed between polls are in the totals only; --log DIR lists each one exactly)\n`;
  }
  return s;
}
