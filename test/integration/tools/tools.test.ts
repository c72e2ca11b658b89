import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPair, exited, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { CLI, startDaemon, type RunningDaemon } from '../../support/daemon.js';
import { run } from '../../../src/util/exec.js';
import { promtoolCheckMetrics } from '../../support/promtool.js';

// The operators' tools against a real daemon in a private namespace, with real traffic: curl in
// the daemon's namespace to python's http.server in the remote one. Every client command runs
// inside the namespace (`ip netns exec NS node dist/cli.js …`), as an operator on that node would.

let pair: Pair;
let daemon: RunningDaemon;
let url: string;
const FILE_BYTES = 300_000;
const work = mkdtempSync(join(tmpdir(), 'netprof-tools-'));

function cli(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000) {
  const e = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return run('ip', ['netns', 'exec', pair.node.ns, 'env', ...e, process.execPath, CLI, ...args], { timeout: timeoutMs });
}
const d = () => ['--daemon', `http://127.0.0.1:${daemon.port}`];

async function shutdown(d: RunningDaemon): Promise<void> {
  await d.curl('/shutdown');
  await exited(d.child);
}

beforeAll(async () => {
  pair = await createPair('tools');
  const www = join(work, 'www');
  await run('mkdir', ['-p', www]);
  writeFileSync(join(www, 'file'), Buffer.alloc(FILE_BYTES, 7));
  writeFileSync(join(www, 'big'), Buffer.alloc(20_000_000, 7));
  nsSpawn(pair.remote.ns, 'python3', ['-m', 'http.server', '--bind', pair.remote.v4, '8000'], { cwd: www, stdio: 'ignore' });
  await waitForListen(pair.remote.ns, 8000);
  url = `http://${pair.remote.v4}:8000/file`;
  daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0' });
});
afterAll(async () => {
  await daemon?.kill();
  await pair?.destroy();
});

describe('netprof status, start, end, end-job, shutdown: exit statuses scripts rely on', () => {
  it('status: 0 and the daemon health; --json parses; 3 when nothing listens; 2 on a usage error', async () => {
    const r = await cli(['status', ...d()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^daemon +http:\/\/127\.0\.0\.1:\d+: ok, up \d+ s, engine nftables, interfaces veth0$/m);
    const j = await cli(['status', ...d(), '--json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ health: { status: 'ok' }, jobs: [] });
    const dead = await cli(['status', '--daemon', 'http://127.0.0.1:1']);
    expect(dead.code).toBe(3);
    expect(dead.stderr).toMatch(/cannot reach the daemon at http:\/\/127\.0\.0\.1:1: ECONNREFUSED/);
    expect((await cli(['status', '--bogus'])).code).toBe(2);
    expect((await cli(['start', 'onlyjob'])).code).toBe(2);
    expect((await cli(['start', '1', 'notapid', ...d()])).code).toBe(2);
  });

  it('start registers a live pid (0), refuses a wrong owner with the reason (1); end and end-job end it (0); an unknown job is refused (1)', async () => {
    const sleeper = nsSpawn(pair.node.ns, 'sleep', ['600'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 100));
    // `ip netns exec` execs sleep: the child's pid is sleep's.
    const pid = String(sleeper.pid);
    try {
      const bad = await cli(['start', 'tools-1', pid, '--owner', 'nobody', ...d()]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^netprof: refused \(422\): process \d+ belongs to root/);
      const ok = await cli(['start', 'tools-1', pid, '--owner', 'root', ...d()]);
      expect(ok.code).toBe(0);
      expect(ok.stdout).toBe(`profiling: job tools-1, pid ${pid} (root, started ${JSON.parse((await cli(['start', 'tools-1', pid, ...d(), '--json'])).stdout).birthdate})\n`);
      expect((await cli(['end', 'tools-1', pid, ...d()])).stdout).toBe(`ended: job tools-1, pid ${pid}, 0 open connections logged\n`);
      expect((await cli(['start', 'tools-1', pid, ...d()])).code).toBe(0);
      const ej = await cli(['end-job', 'tools-1', ...d(), '--json']);
      expect(ej.code).toBe(0);
      expect(JSON.parse(ej.stdout)).toEqual({ job: 'tools-1', processes_ended: 1, connections_logged: 0 });
      const again = await cli(['end-job', 'tools-1', ...d()]);
      expect(again.code).toBe(1);
      expect(again.stderr).toBe('netprof: refused (404): job tools-1 is not profiled\n');
    } finally {
      sleeper.kill('SIGKILL');
    }
  });
});

describe('netprof run', () => {
  it('registers the command before its first connection, exits with its status, prints each connection; the log, the API and /metrics agree', async () => {
    const totals = join(work, 'totals');
    const r = await cli(['run', '--job', 'run-A', ...d(), '--totals', totals, '--log', daemon.logDir, '--', 'curl', '-sS', '-o', '/dev/null', url]);
    expect(r.code, r.stderr).toBe(0);
    // curl connects at once: only registration before exec can have seen it.
    expect(r.stderr).toMatch(/^netprof: job run-A: command exited with status 0 after [\d.]+ s\nnetprof: 1 connections, /);
    expect(r.stderr).toMatch(new RegExp(`netprof: +\\d+ +10\\.\\d+\\.0\\.1:\\d+ +${pair.remote.v4.replace(/\./g, '\\.')}:8000 +(\\d+) +(\\d+)\\n`));
    const t = Object.fromEntries(readFileSync(totals, 'utf8').trim().split('\n').map((l) => l.split('=')));
    expect(t).toMatchObject({ status: '0', connections: '1' });
    expect(Number(t.bytes_in)).toBeGreaterThan(FILE_BYTES);
    expect(Number(t.bytes_out)).toBeGreaterThan(0);
    // The job was ended: it is gone from the API, and its final totals stay on /metrics.
    expect(JSON.parse((await daemon.curl('/v1/jobs')).body).jobs).toEqual([]);
    const m = (await daemon.curl('/metrics')).body;
    expect(m).toContain(`netprof_job_bytes_total{job_id="run-A",direction="in"} ${t.bytes_in}`);
    expect(m).toContain(`netprof_job_bytes_total{job_id="run-A",direction="out"} ${t.bytes_out}`);
    expect(m).toMatch(/netprof_job_connections_closed_total\{job_id="run-A"\} 1/);
    expect(m).toMatch(new RegExp(`netprof_process_bytes_total\\{job_id="run-A",pid="\\d+",direction="in"\\} ${t.bytes_in}`));
    expect(m).toMatch(/netprof_job_ended_timestamp_seconds\{job_id="run-A"\} \d+/);
    // Bounded labels: never a connection's address or port.
    expect(m).not.toContain(pair.remote.v4);
    expect(m).not.toContain(':8000');
    // The report over the daemon's log says the same.
    const rep = await cli(['report', '--json', '--job', 'run-A', daemon.logDir]);
    expect(rep.code, rep.stderr).toBe(0);
    const job = JSON.parse(rep.stdout).jobs[0];
    expect(job).toMatchObject({ job: 'run-A', connections: 1, bytes_in: Number(t.bytes_in), bytes_out: Number(t.bytes_out), hosts: [{ host: pair.remote.v4, share: 1 }] });
  });

  it("exits with the command's status, 128+N for a signal, 127 for a missing command", async () => {
    expect((await cli(['run', ...d(), '-q', '--', 'sh', '-c', 'exit 7'])).code).toBe(7);
    expect((await cli(['run', ...d(), '-q', '--', 'sh', '-c', 'kill -TERM $$'])).code).toBe(143);
    expect((await cli(['run', ...d(), '-q', '--', '/nonexistent/cmd'])).code).toBe(127);
  });

  it('with the daemon unreachable: runs the command unprofiled with a warning; --require refuses with 3 and does not run it', async () => {
    const marker = join(work, 'ran');
    const r = await cli(['run', '--daemon', 'http://127.0.0.1:1', '--', 'sh', '-c', 'exit 5']);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/running unprofiled: cannot register it for job run-\d+-\d+: cannot reach the daemon/);
    const q = await cli(['run', '--require', '--daemon', 'http://127.0.0.1:1', '--', 'touch', marker]);
    expect(q.code).toBe(3);
    expect(() => readFileSync(marker)).toThrow();
  });

  it('with FOLLOW_CHILDREN = no the command itself is still covered (it is the registered pid)', async () => {
    // One daemon per network namespace: the shared one stops while this one runs.
    await shutdown(daemon);
    const d2 = await startDaemon(pair.node.ns, { INTERFACE: 'veth0', FOLLOW_CHILDREN: 'no', LOG_FORMAT: 'jsonl' });
    try {
      const r = await cli(['run', '--job', 'nofollow', '--daemon', `http://127.0.0.1:${d2.port}`, '--log', d2.logDir, '--', 'curl', '-sS', '-o', '/dev/null', url]);
      expect(r.code, r.stderr).toBe(0);
      const bytesIn = /netprof: 1 connections, .* in \((\d+)\)/.exec(r.stderr)?.[1];
      expect(Number(bytesIn), r.stderr).toBeGreaterThan(FILE_BYTES);
      // --log read the jsonl record: the connection line has exact figures, not "≥" live ones.
      expect(r.stderr).toMatch(new RegExp(`:8000 +${bytesIn} +\\d+\\n`));
    } finally {
      await shutdown(d2);
      daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0' });
    }
  });
});

describe('netprof top and /metrics while a job transfers', () => {
  it('top --once shows the job, its process and the open connection with a rate; /metrics shows it live', async () => {
    // A 16 Mbit/s link from the server, so the transfer runs at a steady rate while we look.
    await run('ip', ['netns', 'exec', pair.remote.ns, 'tc', 'qdisc', 'add', 'dev', 'veth0', 'root', 'tbf', 'rate', '16mbit', 'burst', '32kb', 'latency', '200ms']);
    const slow = nsSpawn(pair.node.ns, process.execPath, [CLI, 'run', '--job', 'slow', ...d(), '-q', '--', 'curl', '-sS', '-o', '/dev/null', url.replace(/file$/, 'big')]);
    try {
      // Wait until the daemon sees the connection.
      const deadline = Date.now() + 10_000;
      let seen = false;
      while (!seen && Date.now() < deadline) {
        const j = await daemon.curl('/v1/jobs/slow');
        seen = j.status === 200 && JSON.parse(j.body).open_connections === 1;
        if (!seen) await new Promise((r) => setTimeout(r, 100));
      }
      expect(seen).toBe(true);
      const t = await cli(['top', '--once', ...d()]);
      expect(t.code, t.stderr).toBe(0);
      const frame = t.stdout;
      console.log(frame);
      expect(frame).toMatch(/^netprof top — http:\/\/127\.0\.0\.1:\d+ — ok/);
      expect(frame).toMatch(/^job slow +1 open, 0 closed/m);
      expect(frame).toMatch(/^ +pid \d+ +root +1 open/m);
      // The connection line: its rate in is non-zero (curl reads at ~60 KiB/s).
      const line = frame.split('\n').find((l) => l.includes(`→ ${pair.remote.v4}:8000`));
      expect(line).toBeDefined();
      expect(line).toMatch(/ open /);
      const [inRate] = [...line!.matchAll(/([\d.]+) (B|KiB|MiB)\/s/g)];
      expect(inRate).toBeDefined();
      expect(Number(inRate![1]) * (inRate![2] === 'KiB' ? 1024 : inRate![2] === 'MiB' ? 1 << 20 : 1)).toBeGreaterThan(500_000); // 16 Mbit/s ≈ 2 MB/s
      const m = (await daemon.curl('/metrics')).body;
      expect(m).toMatch(/netprof_job_open_connections\{job_id="slow"\} 1/);
      expect(m).toMatch(/netprof_process_open_connections\{job_id="slow",pid="\d+"\} 1/);
      expect(Number(/netprof_job_bytes_total\{job_id="slow",direction="in"\} (\d+)/.exec(m)?.[1])).toBeGreaterThan(0);
      expect(m).toMatch(/^netprof_health\{status="ok"\} 1$/m);
      expect(m).toMatch(/^netprof_capture_frames_total\{interface="veth0"\} \d+$/m);
      expect(m).toMatch(/^netprof_events_total\{kind="syn"\} \d+$/m);
      expect(m).toMatch(/^netprof_counters_installed 1$/m);
      // What Prometheus parses, and its lint, accept the real answer.
      const check = await promtoolCheckMetrics(m);
      expect(check.code, check.out).toBe(0);
    } finally {
      slow.kill('SIGTERM');
      await new Promise((r) => slow.once('exit', r));
      await run('ip', ['netns', 'exec', pair.remote.ns, 'tc', 'qdisc', 'del', 'dev', 'veth0', 'root']);
    }
  });

  it('shutdown: 0, and the daemon exits 0', async () => {
    const r = await cli(['shutdown', ...d()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('the daemon is shutting down\n');
    expect(await new Promise((res) => (daemon.child.exitCode !== null ? res(daemon.child.exitCode) : daemon.child.once('exit', res)))).toBe(0);
    expect((await cli(['status', ...d()])).code).toBe(3);
  });
});
