import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { createPair, exited, nsRun, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { createTime } from '../../support/procs.js';
import { daemonReady } from '../../support/daemon.js';

export const PEER = resolve(__dirname, 'peer.py');
const ENTRY = resolve(__dirname, 'run-daemon.mjs');
export const TOKEN = 'hardening-test-token.0123456789';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request over the daemon's Unix socket: reachable from the test's own namespace, since
 * a socket file is reached through the file system, not the network. */
export function sockCall(socketPath: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((res, rej) => {
    const req = request({ socketPath, method, path, agent: false, headers: { ...(body !== undefined ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}), ...headers } }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.concat(chunks).toString('utf8') }));
      r.on('error', rej);
    });
    req.on('error', rej);
    req.setTimeout(20_000, () => req.destroy(new Error(`no answer to ${method} ${path.slice(0, 80)} in 20 s`)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export interface RawReply {
  /** HTTP status of the first answer, 0 if none came. */
  status: number;
  text: string;
  error?: string;
}

/** Raw bytes on a new socket connection, for requests no HTTP client would send; reads until the
 * server closes (or timeoutMs). */
export function rawSock(socketPath: string, bytes: Buffer, timeoutMs = 15_000): Promise<RawReply> {
  return new Promise((res) => {
    const s = connect(socketPath);
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const done = () => {
      clearTimeout(t);
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      res({ status: m ? Number(m[1]) : 0, text, ...(error ? { error } : {}) });
    };
    const t = setTimeout(() => {
      error = 'timeout';
      s.destroy();
    }, timeoutMs);
    s.on('connect', () => s.end(bytes));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', done);
  });
}

export interface DaemonOpts {
  config?: Record<string, string>;
  /** Mount a tmpfs of this many KiB over LOG_DIR in the daemon's own mount namespace. */
  tmpfsLogKiB?: number;
}

/** A daemon in a private namespace, reachable on its Unix socket; restartable on the same config
 * and log directory (kill -9 tests). */
export class Daemon {
  child!: ChildProcess;
  private err = '';
  private errBefore = '';
  readonly dir = mkdtempSync(join(tmpdir(), 'netprof-hard-'));
  readonly logDir = join(this.dir, 'log');
  readonly socket = join(this.dir, 'api.sock');
  readonly configFile = join(this.dir, 'config.ini');

  constructor(
    readonly ns: string,
    private readonly opts: DaemonOpts = {},
  ) {
    const config = { LOG_DIR: this.logDir, LOG_FORMAT: 'jsonl', SOCKET: this.socket, LISTEN: 'none', ...(opts.config ?? {}) };
    writeFileSync(this.configFile, ['[CONFIG]', ...Object.entries(config).map(([k, v]) => `${k} = ${v}`)].join('\n') + '\n');
  }

  async start(): Promise<this> {
    const args = [ENTRY, '--config', this.configFile];
    if (this.opts.tmpfsLogKiB) {
      // unshare -m: a mount namespace of the daemon's own, so the tmpfs is seen by nobody else and
      // vanishes with it. The test reaches it through /proc/<pid>/root.
      const sh = `mkdir -p "$1" && mount -t tmpfs -o size=${this.opts.tmpfsLogKiB}k netprof-test "$1" && shift && exec "$@"`;
      this.child = nsSpawn(this.ns, 'unshare', ['-m', '--propagation', 'private', 'sh', '-c', sh, 'sh', this.logDir, process.execPath, ...args]);
    } else {
      this.child = nsSpawn(this.ns, process.execPath, args);
    }
    this.errBefore += this.err;
    this.err = '';
    const child = this.child;
    child.stdout!.resume();
    child.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
    await daemonReady(child, () => this.err);
    return this;
  }

  /** This run's diagnostics (stderr), or every run's. */
  stderr(all = false): string {
    return all ? this.errBefore + this.err : this.err;
  }

  /** Diagnostics as parsed JSON lines. */
  diags(): Array<Record<string, unknown> & { msg: string; level: string }> {
    return this.err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
    const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    return sockCall(this.socket, method, path, text, { ...(text !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers });
  }

  async json(path: string): Promise<any> {
    const r = await this.call('GET', path);
    if (r.status >= 300) throw new Error(`${path}: ${r.status} ${r.body}`);
    return JSON.parse(r.body);
  }

  /** Where the log directory is as the daemon sees it (inside its tmpfs, if any). */
  get logView(): string {
    return this.opts.tmpfsLogKiB ? `/proc/${this.child.pid}/root${this.logDir}` : this.logDir;
  }

  /** The jsonl log's records; a line that is not JSON is returned as {torn: line}. */
  records(): any[] {
    const dir = this.logView;
    if (!existsSync(dir)) return [];
    return readdirSync(dir)
      .filter((f) => f.includes('.log'))
      .sort()
      .flatMap((f) =>
        readFileSync(join(dir, f), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => {
            try {
              return JSON.parse(l);
            } catch {
              return { torn: l };
            }
          }),
      );
  }

  async waitForRecords(n: number, filter: (r: any) => boolean = () => true, timeoutMs = 20_000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.records().filter(filter);
      if (found.length >= n || Date.now() > deadline) return found;
      await sleep(100);
    }
  }

  async kill9(): Promise<void> {
    if (this.alive) this.child.kill('SIGKILL');
    await exited(this.child);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A registered-to-be process in the node namespace that makes TCP connections on command. */
export class Client {
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      this.lines.push(l);
      this.waiter?.();
    });
    child.stderr!.resume();
  }

  get pid(): number {
    return this.child.pid!;
  }

  get birthdate(): number {
    return createTime(this.pid);
  }

  /** Sends a command, resolves when the client says it is done. */
  async do(cmd: string, timeoutMs = 60_000): Promise<void> {
    this.child.stdin!.write(`${cmd}\n`);
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (Date.now() > deadline) throw new Error(`client ${this.pid}: no answer to ${cmd}`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 200);
      });
    }
    const line = this.lines.shift()!;
    if (!line.startsWith('ok')) throw new Error(`client ${this.pid}: ${line}`);
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}

/** Node and remote namespaces, a TCP server on the remote, the daemon on the node. */
export class Bed {
  readonly children: ChildProcess[] = [];
  readonly port = 7000;
  private constructor(
    readonly pair: Pair,
    readonly daemon: Daemon,
  ) {}

  static async create(tag: string, opts: DaemonOpts = {}): Promise<Bed> {
    const pair = await createPair(tag);
    const daemon = new Daemon(pair.node.ns, { ...opts, config: { INTERFACE: 'veth0,lo', ...(opts.config ?? {}) } });
    const bed = new Bed(pair, daemon);
    try {
      const server = nsSpawn(pair.remote.ns, 'python3', [PEER, 'server', String(bed.port)]);
      server.stdout!.resume();
      server.stderr!.resume();
      bed.children.push(server);
      await waitForListen(pair.remote.ns, bed.port);
      await daemon.start();
      return bed;
    } catch (e) {
      await bed.destroy();
      throw e;
    }
  }

  /** A client process in the node namespace talking to the remote server (IPv4, or IPv6). */
  client(v6 = false): Client {
    const c = nsSpawn(this.pair.node.ns, 'python3', [PEER, 'client', v6 ? this.pair.remote.v6 : this.pair.remote.v4, String(this.port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.children.push(c);
    return new Client(c);
  }

  /** Registers over /v1 (any job id: it is percent-encoded in the path). */
  async register(job: string, c: Client, headers: Record<string, string> = {}): Promise<Reply> {
    return this.daemon.call('POST', `/v1/jobs/${encodeURIComponent(job)}/processes`, { pid: c.pid, owner: 'root', birthdate: c.birthdate }, headers);
  }

  /** Our table in the namespace, as nft -j lists it; undefined if absent. */
  async table(name = 'netprof'): Promise<any[] | undefined> {
    const r = await nsRun(this.pair.node.ns, 'nft', ['-j', 'list', 'table', 'inet', name]);
    if (r.code !== 0) return undefined;
    return JSON.parse(r.stdout).nftables;
  }

  /** Elements of one of our sets (owners4, flows4 …). */
  async elements(set: string): Promise<any[]> {
    const t = (await this.table()) ?? [];
    return t.find((i) => i.set?.name === set)?.set.elem ?? [];
  }

  async destroy(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    if (this.daemon.child) await this.daemon.kill9();
    await this.pair.destroy();
  }
}
