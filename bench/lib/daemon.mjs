// The netprof daemon as the benchmark runs it: `ip netns exec NS node dist/cli.js daemon
// --config FILE PORT`, jsonl log, never rolled, API reached with curl inside the namespace.
import { request } from 'node:http';
import { closeSync, createWriteStream, mkdtempSync, openSync, readSync, statSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { exited, nsRun, nsSpawn } from './ns.mjs';
import { createTime } from './proc.mjs';

export const ROOT = resolve(new URL('../..', import.meta.url).pathname);
export let CLI = join(ROOT, 'dist/cli.js');
/** Which build of the daemon to run (run.mjs builds a snapshot of the commit it reports). */
export function useCli(path) {
  CLI = path;
}
let nextPort = 19000 + (process.pid % 500);

/**
 * Starts the daemon and waits for "netprof daemon ready". Returns its handle with
 * startupMs (spawn → ready line). opts.cpuProf: directory for `node --cpu-prof`; opts.parent:
 * where its config and log go.
 */
export async function startDaemon(ns, config, opts = {}) {
  // Under the run's own directory (opts.parent), which the run removes at its end.
  const dir = mkdtempSync(join(opts.parent ?? tmpdir(), 'netprof-bench-'));
  const logDir = join(dir, 'log');
  const port = nextPort++;
  // opts.socket: also serve the API on a Unix socket (dir/api.sock), which the benchmark calls
  // directly with node:http: no curl process per call in the figures.
  const text = ['[CONFIG]', `LOG_DIR = ${logDir}`, 'LOG_FORMAT = jsonl', 'MAX_BYTES = 0', ...(opts.socket ? ['SOCKET = api.sock'] : []), ...Object.entries(config).map(([k, v]) => `${k} = ${v}`)];
  writeFileSync(join(dir, 'config.ini'), `${text.join('\n')}\n`);
  // Diagnostics (not in the figures): NETPROF_BENCH_NODE_ARGS adds node options to every daemon
  // (e.g. "--trace-gc"), NETPROF_BENCH_STDOUT appends their stdout to a file.
  const extra = (process.env.NETPROF_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const nodeArgs = [...(opts.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProf}`] : []), ...extra];
  const t0 = performance.now();
  const child = nsSpawn(ns, process.execPath, [...nodeArgs, CLI, 'daemon', '--config', join(dir, 'config.ini'), String(port)]);
  let err = '';
  child.stderr.on('data', (d) => (err += d.toString()));
  if (process.env.NETPROF_BENCH_STDOUT) child.stdout.pipe(createWriteStream(process.env.NETPROF_BENCH_STDOUT, { flags: 'a' }));
  else child.stdout.resume();
  await new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`daemon not ready after 30 s:\n${err}`)), 30_000);
    const check = () => {
      if (err.includes('netprof daemon ready')) {
        clearTimeout(t);
        child.stderr.off('data', check);
        res();
      }
    };
    child.stderr.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(t);
      rej(new Error(`daemon exited with ${code}:\n${err}`));
    });
  });
  const startupMs = performance.now() - t0;
  const d = {
    ns,
    port,
    dir,
    logDir,
    logFile: join(logDir, `${config.INTERFACE ?? 'lo'}.log`),
    child,
    pid: child.pid,
    startupMs,
    stderr: () => err,
    socket: opts.socket ? join(dir, 'api.sock') : undefined,
    /** One API call over the Unix socket: { status, body, ms }. */
    call(method, path, body, timeoutMs) {
      return callSocket(d.socket, method, path, body, timeoutMs);
    },
    /** Which element path the nftables engine took (auto falls back to nft with a warning). */
    elementPath() {
      if (config.ENGINE === 'iptables') return undefined;
      if (config.ELEMENTS === 'nft') return 'nft';
      return err.includes('counting through the nft program instead of netlink') ? 'nft' : 'netlink';
    },
    async curl(path, method = 'GET') {
      const r = await nsRun(ns, 'curl', ['-s', '-g', '-m', '120', '-o', '-', '-w', '\n%{http_code}', '-X', method, `http://127.0.0.1:${port}${path}`]);
      const at = r.stdout.lastIndexOf('\n');
      return { status: Number(r.stdout.slice(at + 1)), body: r.stdout.slice(0, at) };
    },
    async register(job, pid) {
      const r = await d.curl(`/startprofile/jobid=${job},pid=${pid},owner=root,birthdate=${createTime(pid)}`);
      if (r.status !== 200 || r.body !== '0') throw new Error(`register ${pid}: ${r.status} ${r.body}`);
    },
    async stats() {
      const r = await d.curl('/v1/stats');
      if (r.status !== 200) throw new Error(`/v1/stats: ${r.status} ${r.body}`);
      return JSON.parse(r.body);
    },
    /** /shutdown, then waits for exit; resolves with ms from the request to the exit. */
    async shutdown(timeoutMs = 120_000) {
      const t = performance.now();
      const r = await d.curl('/shutdown');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited(child);
      clearTimeout(timer);
      return { ms: performance.now() - t, answer: r.status, code };
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
    },
  };
  return d;
}

/** An HTTP call over a Unix socket, timed from the request to the last byte of the answer. */
export function callSocket(socketPath, method, path, body, timeoutMs = 120_000) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const headers = body ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } : {};
    const req = request({ socketPath, method, path, agent: false, headers, timeout: timeoutMs }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode, body: Buffer.concat(chunks).toString(), ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer after ${timeoutMs} ms`)));
    req.on('error', rej);
    req.end(body);
  });
}

/**
 * Follows a jsonl log as it grows (inotify, plus a 20 ms poll as a fallback) and stamps each
 * record with the wall-clock time it was seen in the file.
 */
export class LogWatcher {
  constructor(file) {
    this.file = file;
    this.offset = 0;
    this.partial = '';
    this.records = [];
    this.fd = undefined;
    this.watcher = undefined;
    this.timer = setInterval(() => this.poll(), 20);
  }

  poll() {
    const now = performance.timeOrigin + performance.now();
    try {
      if (this.fd === undefined) {
        this.fd = openSync(this.file, 'r');
        try {
          this.watcher = watch(this.file, () => this.poll());
        } catch {
          /* poll only */
        }
      }
      const size = statSync(this.file).size;
      while (this.offset < size) {
        const buf = Buffer.alloc(Math.min(1 << 20, size - this.offset));
        const n = readSync(this.fd, buf, 0, buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        const text = this.partial + buf.subarray(0, n).toString('utf8');
        const lines = text.split('\n');
        this.partial = lines.pop();
        for (const l of lines) if (l) this.records.push({ seen: now, r: JSON.parse(l) });
      }
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
  }

  close() {
    this.poll();
    clearInterval(this.timer);
    this.watcher?.close();
    if (this.fd !== undefined) closeSync(this.fd);
  }
}
