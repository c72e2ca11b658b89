import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createNamespace, destroyNamespace, exited, nsRun, nsSpawn, waitForListen } from '../../support/netns.js';
import { CLI, daemonReady } from '../../support/daemon.js';
import { runOk } from '../../../src/util/exec.js';

/**
 * A pool in namespaces: a "site" namespace with a web server and a real Prometheus (Debian's),
 * and worker nodes, each its own namespace joined to the site by a veth pair, each running a
 * netprof daemon. Prometheus scrapes the daemons over the veths with the shipped scrape config
 * (deploy/prometheus/prometheus.yml) and rules, at a 1 s interval. Addresses are private to
 * these namespaces: node i is 10.77.i.1, the site 10.77.i.2 on its veth to node i.
 */

const DEPLOY = resolve(__dirname, '../../../deploy/prometheus');
export const PROM_PORT = 9090;

/** A jsonl record as the daemon writes it (the fields these tests read). */
export interface Logged {
  job: string;
  pid: number;
  end_reason: string;
  end: string;
  counted: boolean;
  bytes_in: number;
  bytes_out: number;
  remote_addr: string;
}

export interface PoolNode {
  name: string;
  ns: string;
  addr: string;
  /** The site's address as this node reaches it. */
  site: string;
  port: number;
  dir: string;
  logDir: string;
  daemon?: ChildProcess;
  stderr: string;
}

export class Pool {
  readonly token = randomBytes(16).toString('hex');
  readonly dir = mkdtempSync(join(tmpdir(), 'netprof-pool-'));
  readonly www = join(this.dir, 'www');
  readonly nodes: PoolNode[] = [];
  private readonly children: ChildProcess[] = [];
  private prom?: ChildProcess;
  private promErr = '';
  site = '';

  static async create(nodes: number, config: Record<string, string>): Promise<Pool> {
    const p = new Pool();
    // A worker that dies before afterAll: netns.ts deletes the namespaces at exit, but the
    // processes in them (Prometheus, the web server, daemons) would outlive a deleted namespace.
    process.once('exit', () => {
      for (const c of [...p.children, ...p.nodes.map((n) => n.daemon)]) if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    });
    try {
      await p.build(nodes, config);
    } catch (e) {
      await p.destroy();
      throw e;
    }
    return p;
  }

  private async build(n: number, config: Record<string, string>): Promise<void> {
    this.site = await createNamespace('cl-site');
    mkdirSync(this.www);
    for (let i = 1; i <= n; i++) {
      const ns = await createNamespace(`cl-wn${i}`);
      const node: PoolNode = { name: `wn${i}`, ns, addr: `10.77.${i}.1`, site: `10.77.${i}.2`, port: 18500 + i, dir: join(this.dir, `wn${i}`), logDir: join(this.dir, `wn${i}`, 'log'), stderr: '' };
      this.nodes.push(node);
      await runOk('ip', ['link', 'add', `wn${i}`, 'netns', this.site, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', ns]);
      await runOk('ip', ['-n', this.site, 'addr', 'add', `${node.site}/24`, 'dev', `wn${i}`]);
      await runOk('ip', ['-n', this.site, 'link', 'set', `wn${i}`, 'up']);
      await runOk('ip', ['-n', ns, 'addr', 'add', `${node.addr}/24`, 'dev', 'veth0']);
      await runOk('ip', ['-n', ns, 'link', 'set', 'veth0', 'up']);
      mkdirSync(node.dir);
      const text = ['[CONFIG]', `LOG_DIR = ${node.logDir}`, 'INTERFACE = veth0', 'LOG_FORMAT = jsonl', 'LISTEN = 0.0.0.0', `TOKEN = ${this.token}`, ...Object.entries(config).map(([k, v]) => `${k} = ${v}`)];
      writeFileSync(join(node.dir, 'config.ini'), `${text.join('\n')}\n`);
    }
    this.spawn(this.site, 'python3', ['-m', 'http.server', '8000', '--bind', '0.0.0.0', '--directory', this.www]);
    await waitForListen(this.site, 8000);
    await Promise.all(this.nodes.map((node) => this.startDaemon(node)));
  }

  file(name: string, size: number): string {
    writeFileSync(join(this.www, name), randomBytes(size));
    return name;
  }

  /** A long-running program in a namespace, killed at teardown. */
  spawn(ns: string, file: string, args: string[]): ChildProcess {
    const c = nsSpawn(ns, file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    c.stdout!.resume();
    c.stderr!.resume();
    this.children.push(c);
    return c;
  }

  /** Starts (or restarts) the node's daemon on its fixed port and log directory, so that
   * Prometheus sees the same target before and after. */
  async startDaemon(node: PoolNode): Promise<void> {
    const child = nsSpawn(node.ns, process.execPath, [CLI, 'daemon', '--config', join(node.dir, 'config.ini'), String(node.port)]);
    node.daemon = child;
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      node.stderr = err;
    });
    child.stdout!.resume();
    await daemonReady(child, () => err);
  }

  /** Orderly (the /shutdown a scheduler would send) or kill -9. */
  async stopDaemon(node: PoolNode, how: 'shutdown' | 'kill'): Promise<void> {
    const d = node.daemon!;
    if (how === 'shutdown') await this.api(node, 'POST', '/v1/shutdown');
    else d.kill('SIGKILL');
    await exited(d);
  }

  /** A call to the node's API from inside the node, with the token. */
  async api(node: PoolNode, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
    const args = ['-s', '-g', '-o', '-', '-w', '\n%{http_code}', '-X', method, '-H', `Authorization: Bearer ${this.token}`, `http://127.0.0.1:${node.port}${path}`];
    if (body !== undefined) args.push('-H', 'Content-Type: application/json', '--data-binary', JSON.stringify(body));
    const r = await nsRun(node.ns, 'curl', args);
    const at = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(at + 1)), body: r.stdout.slice(0, at) };
  }

  async register(node: PoolNode, job: string, pid: number): Promise<void> {
    const r = await this.api(node, 'POST', `/v1/jobs/${encodeURIComponent(job)}/processes`, { pid });
    if (r.status !== 201 && r.status !== 200) throw new Error(`register ${job}/${pid} on ${node.name}: ${r.status} ${r.body}`);
  }

  async endJob(node: PoolNode, job: string): Promise<void> {
    const r = await this.api(node, 'DELETE', `/v1/jobs/${encodeURIComponent(job)}`);
    if (r.status !== 200) throw new Error(`end ${job} on ${node.name}: ${r.status} ${r.body}`);
  }

  /** A job's shell on a node: registered before its script runs (it waits for a line), and
   * alive after it (it waits for another) until killed, so the job stays live until ended. */
  async job(node: PoolNode, job: string, script: string): Promise<{ pid: number; done: Promise<void>; sh: ChildProcess }> {
    const sh = this.spawn(node.ns, 'sh', ['-c', `read go; ${script}; echo done; read end`]);
    await this.register(node, job, sh.pid!);
    const done = new Promise<void>((res) => {
      let out = '';
      sh.stdout!.on('data', (d: Buffer) => ((out += d.toString()), out.includes('done\n') && res()));
    });
    sh.stdin!.write('go\n');
    return { pid: sh.pid!, done, sh };
  }

  records(node: PoolNode): Logged[] {
    if (!existsSync(node.logDir)) return [];
    return readdirSync(node.logDir)
      .filter((f) => f.includes('.log'))
      .flatMap((f) => readFileSync(join(node.logDir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Logged));
  }

  /** Debian's prometheus in the site namespace, with the shipped config at a 1 s interval. */
  async startPrometheus(): Promise<void> {
    const etc = join(this.dir, 'prometheus');
    mkdirSync(etc);
    for (const f of readdirSync(DEPLOY)) copyFileSync(join(DEPLOY, f), join(etc, f));
    const shipped = readFileSync(join(DEPLOY, 'prometheus.yml'), 'utf8');
    const config = shipped.replaceAll('/etc/prometheus/', `${etc}/`).replace(/scrape_interval: 15s/, 'scrape_interval: 1s').replace(/evaluation_interval: 15s/, 'evaluation_interval: 1s');
    if (config === shipped.replaceAll('/etc/prometheus/', `${etc}/`)) throw new Error('the shipped prometheus.yml no longer says scrape_interval: 15s');
    writeFileSync(join(etc, 'prometheus.yml'), config);
    writeFileSync(join(etc, 'netprof.token'), `${this.token}\n`, { mode: 0o600 });
    writeFileSync(join(etc, 'netprof-nodes.yml'), `- targets:\n${this.nodes.map((n) => `    - ${n.addr}:${n.port}\n`).join('')}`);
    const prom = this.spawn(this.site, 'prometheus', [`--config.file=${join(etc, 'prometheus.yml')}`, `--storage.tsdb.path=${join(this.dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${PROM_PORT}`]);
    prom.stderr!.on('data', (d: Buffer) => (this.promErr += d.toString()));
    this.prom = prom;
    await waitForListen(this.site, PROM_PORT, 20_000);
  }

  prometheusLog(): string {
    return this.promErr;
  }

  /** An instant query through Prometheus' HTTP API; throws with Prometheus' error. */
  async query(expr: string, time?: number): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const args = ['-s', '-G', `http://127.0.0.1:${PROM_PORT}/api/v1/query`, '--data-urlencode', `query=${expr}`];
    if (time !== undefined) args.push('--data-urlencode', `time=${time}`);
    const r = await nsRun(this.site, 'curl', args);
    const j = JSON.parse(r.stdout || '{}') as { status: string; error?: string; data?: { result: never[] } };
    if (j.status !== 'success') throw new Error(`${expr}: ${j.error ?? r.stdout + r.stderr}`);
    return j.data!.result;
  }

  /** A range query: each series' values from start to end (epoch seconds) at `step`. */
  async queryRange(expr: string, start: number, end: number, step: number): Promise<{ metric: Record<string, string>; values: [number, string][] }[]> {
    const args = ['-s', '-G', `http://127.0.0.1:${PROM_PORT}/api/v1/query_range`, '--data-urlencode', `query=${expr}`, '--data-urlencode', `start=${start}`, '--data-urlencode', `end=${end}`, '--data-urlencode', `step=${step}`];
    const r = await nsRun(this.site, 'curl', args);
    const j = JSON.parse(r.stdout || '{}') as { status: string; error?: string; data?: { result: never[] } };
    if (j.status !== 'success') throw new Error(`${expr}: ${j.error ?? r.stdout + r.stderr}`);
    return j.data!.result;
  }

  /** Polls `check` every 250 ms until it returns something other than undefined. */
  async until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await check();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async destroy(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    for (const n of this.nodes) if (n.daemon) n.daemon.kill('SIGKILL');
    await Promise.all([...this.nodes.map((n) => n.daemon && exited(n.daemon)), this.prom && exited(this.prom)]);
    // Whatever still runs inside (a SIGKILLed daemon's tcpdump or bpftrace) dies with them.
    for (const n of this.nodes) await destroyNamespace(n.ns);
    if (this.site) await destroyNamespace(this.site);
  }
}
