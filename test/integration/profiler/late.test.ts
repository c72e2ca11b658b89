import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { World, type LoggedConnection } from './harness.js';
import { waitForListen } from '../../support/netns.js';
import { oracleCounts, oracleFlows } from '../../support/oracle.js';

// Late registration (LATE_GRACE, default 30 s): a connection opened before its process was
// registered is counted from its first packet whatever happened meanwhile — the server still
// sending, the server's half-close, or both FINs (then it is logged at the registration,
// flagged late). Checked against conntrack in the node namespace.
const PEER = resolve(__dirname, 'late-peer.py');
let w: World;
beforeAll(async () => {
  w = await World.create('late');
});
afterAll(async () => w?.destroy());

interface Client {
  proc: ChildProcess;
  connected: Promise<void>;
  closed: Promise<void>;
  gate: string;
}

function client(port: number, gated: boolean): Client {
  const gate = join(w.servedDir, `gate-${port}-${Math.random().toString(36).slice(2)}`);
  const proc = w.spawn(w.node.ns, 'python3', [PEER, 'client', w.remote.v4, String(port), ...(gated ? ['--gate', gate] : [])]);
  const said = (word: string) =>
    new Promise<void>((res, rej) => {
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()).includes(word) && res());
      proc.once('exit', () => rej(new Error(`client exited before "${word}"`)));
    });
  return { proc, connected: said('connected'), closed: said('closed'), gate };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function expectExact(r: LoggedConnection | undefined, what: string): Promise<void> {
  expect(r, what).toBeDefined();
  expect(r, what).toMatchObject({ counted: true, partial: false, late: true });
  await w.expectOracleMatch([r!]);
}

describe('late registration within LATE_GRACE', () => {
  it('counts from the first packet at 1 s and 10 s after the SYN: server still sending, half-closed, both FINs', async () => {
    const [paced, quick] = [8500, 8501];
    w.spawn(w.remote.ns, 'python3', [PEER, 'server', w.remote.v4, String(paced), '--send', String(1 << 20), '--pace-s', '14']);
    w.spawn(w.remote.ns, 'python3', [PEER, 'server', w.remote.v4, String(quick), '--send', '200000']);
    await waitForListen(w.remote.ns, paced);
    await waitForListen(w.remote.ns, quick);
    const scenarios = [1_000, 10_000].flatMap((delay) => [
      { name: `still sending, registered after ${delay} ms`, delay, c: client(paced, false), job: `send.${delay}` },
      { name: `server half-closed, registered after ${delay} ms`, delay, c: client(quick, true), job: `half.${delay}` },
      { name: `both FINs, registered after ${delay} ms`, delay, c: client(quick, false), job: `done.${delay}` },
    ]);
    const t0 = Date.now();
    await Promise.all(scenarios.map((s) => s.c.connected));
    // Both FINs: closed well before the registration.
    await Promise.all(scenarios.filter((s) => s.job.startsWith('done')).map((s) => s.c.closed));
    for (const delay of [1_000, 10_000]) {
      await sleep(t0 + delay - Date.now());
      for (const s of scenarios.filter((x) => x.delay === delay)) await w.register(s.job, s.c.proc.pid!);
      for (const s of scenarios.filter((x) => x.delay === delay && x.job.startsWith('half'))) writeFileSync(s.c.gate, '');
    }
    expect(existsSync(scenarios[1]!.c.gate)).toBe(true);
    await Promise.all(scenarios.map((s) => s.c.closed));
    const recs = await w.waitForRecords(scenarios.length, (r) => scenarios.some((s) => s.job === r.job), 30_000);
    for (const s of scenarios) {
      const r = recs.find((x) => x.job === s.job);
      await expectExact(r, s.name);
      expect(r!.pid, s.name).toBe(s.c.proc.pid);
      expect(r!.bytes_in, s.name).toBeGreaterThan(s.job.startsWith('send') ? 1 << 20 : 200_000);
    }
    const health = JSON.parse((await w.daemon.curl('/v1/health')).body);
    expect(health.late_grace).toMatchObject({ configured_s: 30, shortened_to_s: null });
  }, 60_000);
});

describe('late registration of a parent whose child already finished', () => {
  it('claims the exited child\'s closed connection under the child\'s pid', async () => {
    w.file('blob', 150_000);
    await w.serveHttp(8000);
    const sh = w.spawn(w.node.ns, 'sh', ['-c', `curl -sf -o /dev/null http://${w.remote.v4}:8000/blob; echo fetched; exec sleep 60`]);
    await new Promise<void>((res) => sh.stdout!.on('data', (d: Buffer) => d.toString().includes('fetched') && res()));
    await sleep(1_000);
    await w.register('parent.0', sh.pid!);
    const [r] = await w.waitForRecords(1, (x) => x.job === 'parent.0');
    await expectExact(r, 'the child\'s download');
    expect(r!.pid).not.toBe(sh.pid);
    expect(r!.bytes_in).toBeGreaterThan(150_000);
  });
});

describe('past the grace, and across a restart', () => {
  it('counts from the registration, flagged partial; a closed one past the grace is not claimed', async () => {
    const d = await w.restartDaemon({ LATE_GRACE: '2', GC_INTERVAL: '1' });
    const [port, quick] = [8502, 8504];
    w.spawn(w.remote.ns, 'python3', [PEER, 'server', w.remote.v4, String(port), '--send', String(600_000), '--pace-s', '8']);
    w.spawn(w.remote.ns, 'python3', [PEER, 'server', w.remote.v4, String(quick), '--send', '50000']);
    await waitForListen(w.remote.ns, port);
    await waitForListen(w.remote.ns, quick);
    const open = client(port, false);
    const closed = client(quick, false);
    await open.connected;
    await closed.closed;
    await sleep(4_000); // 2 s grace, then at most a 1 s collection
    await w.register('past.0', open.proc.pid!);
    await w.register('pastclosed.0', closed.proc.pid!);
    await open.closed;
    const [r] = await w.waitForRecords(1, (x) => x.job === 'past.0');
    // Found in /proc at the registration: opened before it (late), counted from it (partial).
    expect(r).toMatchObject({ counted: true, partial: true, late: true, pid: open.proc.pid });
    expect(w.records().filter((x) => x.job === 'pastclosed.0')).toEqual([]);
    const o = oracleCounts(await oracleFlows(w.node.ns), { family: 4, localAddr: r!.local_addr, localPort: r!.local_port, remoteAddr: r!.remote_addr, remotePort: r!.remote_port })!;
    expect(r!.bytes_in).toBeLessThan(o.bytesIn - 100_000); // what came before the registration is missing
    expect(d).toBeDefined();
  }, 40_000);

  it('a restart during the grace counts nothing twice: the crashed run\'s part is recovered, the rest counted anew', async () => {
    await w.restartDaemon({});
    const port = 8503;
    // Paced over 20 s: a restart under load (start-up, harvest) takes seconds, and the new run
    // must still see a good part of the transfer.
    w.spawn(w.remote.ns, 'python3', [PEER, 'server', w.remote.v4, String(port), '--send', String(1_000_000), '--pace-s', '20']);
    await waitForListen(w.remote.ns, port);
    const c = client(port, false);
    await c.connected;
    await w.register('restart.0', c.proc.pid!);
    await sleep(2_000);
    w.daemon.child.kill('SIGKILL');
    await w.restartDaemon({}); // harvests the crashed run's counters as `recovered`
    await w.register('restart.0', c.proc.pid!);
    await c.closed;
    const recs = await w.waitForRecords(2, (x) => x.job === 'restart.0' || (x.end_reason === 'recovered' && x.remote_port === port));
    const recovered = recs.find((x) => x.end_reason === 'recovered')!;
    const final = recs.find((x) => x.end_reason === 'fin')!;
    expect(recovered).toBeDefined();
    expect(final).toMatchObject({ partial: true, local_port: recovered.local_port });
    const o = oracleCounts(await oracleFlows(w.node.ns), { family: 4, localAddr: final.local_addr, localPort: final.local_port, remoteAddr: final.remote_addr, remotePort: final.remote_port })!;
    expect(recovered.bytes_in).toBeGreaterThan(50_000);
    expect(final.bytes_in).toBeGreaterThan(50_000);
    expect(recovered.bytes_in + final.bytes_in).toBeLessThanOrEqual(o.bytesIn);
  }, 60_000);
});
