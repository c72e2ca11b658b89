import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { createPair, exited, nsRun, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { startDaemon, type RunningDaemon } from '../../support/daemon.js';
import { oracleCounts, oracleFlows, startOracle } from '../../support/oracle.js';
import { createTime } from '../../support/procs.js';
import type { ConnKey } from '../../../src/connection.js';

/** A jsonl record as the daemon writes it. */
export interface LoggedConnection {
  job: string;
  pid: number;
  interface: string;
  family: 'ipv4' | 'ipv6';
  local_addr: string;
  local_port: number;
  remote_addr: string;
  remote_port: number;
  opened_by: string;
  start: string | null;
  end_reason: string;
  counted: boolean;
  bytes_in: number;
  packets_in: number;
  bytes_out: number;
  packets_out: number;
  partial: boolean;
  late?: boolean;
  attribution: string;
  note?: string;
}

/**
 * A "node" namespace running the daemon and the jobs, a "remote" one serving files over HTTP
 * (python3 -m http.server on IPv4 and IPv6), and a conntrack oracle counting the same packets
 * in the node namespace.
 */
export class World {
  readonly servedDir = mkdtempSync(join(tmpdir(), 'netprof-www-'));
  private readonly children: ChildProcess[] = [];
  private constructor(
    readonly pair: Pair,
    public daemon: RunningDaemon,
    private readonly config: Record<string, string>,
  ) {}

  /** prepare: what must exist before the daemon starts (an interface INTERFACE names). */
  static async create(tag: string, config: Record<string, string> = {}, prepare?: (pair: Pair) => Promise<void>): Promise<World> {
    const pair = await createPair(tag);
    try {
      await prepare?.(pair);
      await startOracle(pair.node.ns);
      const full = { INTERFACE: 'veth0,lo', LOG_FORMAT: 'jsonl', ...config };
      const daemon = await startDaemon(pair.node.ns, full);
      return new World(pair, daemon, full);
    } catch (e) {
      await pair.destroy();
      throw e;
    }
  }

  /** Stops the daemon (cleanly, unless it is already dead) and starts a new one, with these
   * settings over the world's; records() then reads the new one's log. */
  async restartDaemon(config: Record<string, string>): Promise<RunningDaemon> {
    const old = this.daemon;
    if (old.child.exitCode === null && old.child.signalCode === null) {
      await old.curl('/shutdown');
      await exited(old.child);
    } else await exited(old.child);
    this.daemon = await startDaemon(this.pair.node.ns, { ...this.config, ...config });
    return this.daemon;
  }

  get node() {
    return this.pair.node;
  }

  get remote() {
    return this.pair.remote;
  }

  /** A file of random bytes served by the remote's web server. */
  file(name: string, size: number): string {
    writeFileSync(join(this.servedDir, name), randomBytes(size));
    return name;
  }

  async serveHttp(port = 8000): Promise<void> {
    this.spawn(this.remote.ns, 'python3', ['-m', 'http.server', String(port), '--bind', '::', '--directory', this.servedDir]);
    await waitForListen(this.remote.ns, port);
  }

  /** A long-running program in a namespace, killed at teardown. */
  spawn(ns: string, file: string, args: string[]): ChildProcess {
    const c = nsSpawn(ns, file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    c.stdout!.resume();
    c.stderr!.resume();
    this.children.push(c);
    return c;
  }

  /** Registers a process with the original path API, as a scheduler would. */
  async register(job: string, pid: number): Promise<void> {
    const r = await this.daemon.curl(`/startprofile/jobid=${job},pid=${pid},owner=root,birthdate=${createTime(pid)}`);
    expect(r, `register ${pid}`).toEqual({ status: 200, body: '0' });
  }

  /** A registered shell: its script runs only after it is registered (it waits for a line on
   * stdin), so every connection it makes is made by a profiled process or its children. */
  async registeredShell(job: string, script: string): Promise<{ pid: number; done: Promise<number | null> }> {
    const sh = this.spawn(this.node.ns, 'sh', ['-c', `read go; ${script}`]);
    await this.register(job, sh.pid!);
    sh.stdin!.write('go\n');
    return { pid: sh.pid!, done: exited(sh) };
  }

  records(): LoggedConnection[] {
    const dir = this.daemon.logDir;
    if (!existsSync(dir)) return [];
    return readdirSync(dir)
      .filter((f) => f.includes('.log'))
      .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as LoggedConnection));
  }

  /** Waits until the log holds `n` records matching the filter. */
  async waitForRecords(n: number, filter: (r: LoggedConnection) => boolean = () => true, timeoutMs = 20_000): Promise<LoggedConnection[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.records().filter(filter);
      if (found.length >= n || Date.now() > deadline) return found;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Compares each record with conntrack's count of the same connection: equal, but for the last
   * ACK or two after the close (counting stops once the close is seen). */
  async expectOracleMatch(records: LoggedConnection[], opts: { open?: boolean; within?: number } = {}): Promise<void> {
    const flows = await oracleFlows(this.node.ns);
    for (const r of records) {
      const key: ConnKey = { family: r.family === 'ipv6' ? 6 : 4, localAddr: r.local_addr, localPort: r.local_port, remoteAddr: r.remote_addr, remotePort: r.remote_port };
      const o = oracleCounts(flows, key);
      const where = `${r.local_addr}:${r.local_port} ↔ ${r.remote_addr}:${r.remote_port}`;
      expect(o, `conntrack knows ${where}`).toBeDefined();
      expect(r.counted, `${where}${r.note ? ` (${r.note})` : ""}`).toBe(true);
      const ack = r.family === 'ipv6' ? 72 : 52;
      if (opts.within !== undefined) {
        // Counted on a job's link, not where conntrack counts: the host may re-segment what it
        // forwards there, so a header's worth either way.
        for (const [ours, theirs, dir] of [[r.bytes_in, o!.bytesIn, 'IN'], [r.bytes_out, o!.bytesOut, 'OUT']] as const) {
          expect(Math.abs(ours - theirs), `${where} ${dir}: ${ours} vs conntrack ${theirs}`).toBeLessThanOrEqual(opts.within);
        }
        continue;
      }
      // None invented…
      expect(r.bytes_in, `${where} IN`).toBeLessThanOrEqual(o!.bytesIn);
      expect(r.bytes_out, `${where} OUT`).toBeLessThanOrEqual(o!.bytesOut);
      if (opts.open) continue; // the connection went on after its record: conntrack saw more
      // …and no payload byte lost: at most two bare ACKs missing in each direction.
      expect(o!.bytesIn - r.bytes_in, `${where} IN vs conntrack`).toBeLessThanOrEqual(2 * ack);
      expect(o!.bytesOut - r.bytes_out, `${where} OUT vs conntrack`).toBeLessThanOrEqual(2 * ack);
      expect(o!.packetsIn - r.packets_in, `${where} IN packets`).toBeLessThanOrEqual(2);
      expect(o!.packetsOut - r.packets_out, `${where} OUT packets`).toBeLessThanOrEqual(2);
    }
  }

  /** Runs a program in the node namespace and waits for it. */
  run(file: string, args: string[]) {
    return nsRun(this.node.ns, file, args, 60_000);
  }

  async destroy(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    await this.daemon.kill();
    await this.pair.destroy();
  }
}
