import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnKey } from '../../../src/connection.js';
import { IptablesEngine } from '../../../src/counters/iptables.js';
import { createPair, exited, nsRun, type Pair } from '../../support/netns.js';
import { oracleCounts, oracleFlows, startOracle } from '../../support/oracle.js';
import { expectHarvestAfterKill, expectExact, expectFromNow, HOSTILE_JOBS, runCase, runMany, startDriver } from './harness.js';

const owner = { pid: 4242, job: 'job-1' };

describe('iptables engine, real traffic against conntrack', () => {
  let pair: Pair;
  let engine: IptablesEngine;
  const foreignBefore: Record<string, string> = {};
  let work = '';

  const ipt = async (tool: string, ...args: string[]): Promise<string> => {
    const r = await nsRun(pair.node.ns, tool, ['-w', ...args]);
    if (r.code !== 0) throw new Error(`${tool} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const begin = async (keys: ConnKey[]): Promise<void> => {
    expect(await engine.begin(keys.map((key) => ({ key, owner })))).toEqual(keys.map(() => 'from-now'));
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'np-ipt-'));
    pair = await createPair('ipt');
    await startOracle(pair.node.ns);
    // Someone else's rules, there first: an ACCEPT that would hide traffic from appended jumps.
    for (const tool of ['iptables', 'ip6tables']) {
      await ipt(tool, '-N', 'FOREIGN');
      await ipt(tool, '-A', 'FOREIGN', '-p', 'tcp', '--dport', '9', '-j', 'DROP');
      await ipt(tool, '-A', 'INPUT', '-j', 'FOREIGN');
      await ipt(tool, '-A', 'INPUT', '-p', 'tcp', '-j', 'ACCEPT');
      await ipt(tool, '-A', 'OUTPUT', '-p', 'tcp', '-m', 'comment', '--comment', 'not ours', '-j', 'ACCEPT');
      foreignBefore[tool] = await ipt(tool, '-S');
    }
    engine = new IptablesEngine({ capacity: 1_010, netns: pair.node.ns });
    expect(await engine.start()).toEqual([]);
  });

  afterAll(async () => {
    await engine?.stop().catch(() => undefined);
    await pair?.destroy();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('counts a bulk transfer both ways from when its rules are installed', async () => {
    const { keys } = await runCase(pair, { family: 4, node: 'client', port: 5001, clientPort: 40001, clientSend: 3_000_000, serverSend: 5_000_000, established: begin });
    const [got] = await engine.end(keys);
    expectFromNow(got, oracleCounts(await oracleFlows(pair.node.ns), keys[0]!), { out: 3_000_000, in: 5_000_000, earlyOut: 0, earlyIn: 0 });
    expect(engine.size()).toBe(0);
  });

  it('misses what a client sends at once after connect, and a server at once after accept — no more', async () => {
    const { keys: ck } = await runCase(pair, { family: 4, node: 'client', port: 5002, clientPort: 40002, clientEarly: 20_000, serverSend: 1000, established: begin });
    const { keys: sk } = await runCase(pair, { family: 4, node: 'server', port: 5003, clientPort: 40003, serverEarly: 30_000, clientSend: 10, serverSend: 500, established: begin });
    const [c, s] = await engine.end([...ck, ...sk]);
    const flows = await oracleFlows(pair.node.ns); // after the engine's read: conntrack's counts only grow
    expectFromNow(c, oracleCounts(flows, ck[0]!), { out: 0, in: 1000, earlyOut: 20_000, earlyIn: 0 });
    expectFromNow(s, oracleCounts(flows, sk[0]!), { out: 500, in: 10, earlyOut: 30_000, earlyIn: 0 });
  });

  it('counts what a half-closed connection sends after the first FIN', async () => {
    const { keys } = await runCase(pair, { family: 4, node: 'client', port: 5004, clientPort: 40004, clientSend: 1000, serverAfterEof: true, serverSend: 2_000_000, established: begin });
    const [got] = await engine.end(keys);
    expectFromNow(got, oracleCounts(await oracleFlows(pair.node.ns), keys[0]!), { out: 1000, in: 2_000_000, earlyOut: 0, earlyIn: 0 });
  });

  it('counts IPv6', async () => {
    const { keys } = await runCase(pair, { family: 6, node: 'server', port: 5005, clientPort: 40005, clientSend: 700_000, serverSend: 900_000, established: begin });
    const [got] = await engine.end(keys);
    expectFromNow(got, oracleCounts(await oracleFlows(pair.node.ns), keys[0]!), { out: 900_000, in: 700_000, earlyOut: 0, earlyIn: 0 });
  });

  it('counts a loopback connection once per direction', async () => {
    const { keys } = await runCase(pair, { family: 4, node: 'loopback', port: 5006, clientPort: 40006, clientSend: 400_000, serverSend: 600_000, established: begin });
    const [client, server] = await engine.end(keys);
    const flows = await oracleFlows(pair.node.ns); // after the engine's read: conntrack's counts only grow
    expectFromNow(client, oracleCounts(flows, keys[0]!), { out: 400_000, in: 600_000, earlyOut: 0, earlyIn: 0 });
    expectFromNow(server, oracleCounts(flows, keys[1]!), { out: 600_000, in: 400_000, earlyOut: 0, earlyIn: 0 });
  });

  it('counts 1,000 short connections exactly when begun before their SYN; no-room beyond capacity', async () => {
    const keys = Array.from({ length: 1000 }, (_, i): ConnKey => ({ family: 4, localAddr: pair.node.v4, localPort: 41000 + i, remoteAddr: pair.remote.v4, remotePort: 5008 }));
    const t0 = Date.now();
    await begin(keys);
    const tBegin = Date.now() - t0;
    const extra = Array.from({ length: 20 }, (_, i): ConnKey => ({ family: 4, localAddr: '10.9.9.9', localPort: 1 + i, remoteAddr: '10.9.9.8', remotePort: 80 }));
    const more = await engine.begin(extra.map((key) => ({ key, owner })));
    expect(more.filter((o) => o === 'no-room')).toHaveLength(10);
    expect(engine.size()).toBe(1010);
    await runMany(pair, 4, 5008, 41000, 1000, 300);
    const flows = await oracleFlows(pair.node.ns);
    const t1 = Date.now();
    const got = await engine.read(keys);
    const tRead = Date.now() - t1;
    keys.forEach((k, i) => expectExact(got[i], oracleCounts(flows, k), 300, 300));
    const t2 = Date.now();
    await engine.end([...keys, ...extra]);
    const tEnd = Date.now() - t2;
    expect(engine.size()).toBe(0);
    expect(await ipt('iptables', '-S', 'NETPROF_IN')).toBe('-N NETPROF_IN\n');
    console.log(`iptables, 1000 connections: begin ${tBegin} ms, read ${tRead} ms, end ${tEnd} ms`);
  });

  it('keeps hostile job ids intact and harvests a killed process’s rules', async () => {
    const keys: ConnKey[] = HOSTILE_JOBS.map((_, i) => ({ family: 6, localAddr: pair.node.v6, localPort: 43000 + i, remoteAddr: pair.remote.v6, remotePort: 443 }));
    await engine.begin(keys.map((key, i) => ({ key, owner: { pid: 7 + i, job: HOSTILE_JOBS[i]! } })));
    expect((await engine.list()).map((x) => x.owner!.job).sort()).toEqual([...HOSTILE_JOBS].sort());
    await engine.end(keys);

    await expectHarvestAfterKill(pair, 'iptables', 'CRASHED', HOSTILE_JOBS[2]!, new IptablesEngine({ capacity: 10, netns: pair.node.ns, chainPrefix: 'CRASHED' }));
  });

  it('stop() removes its chains and jumps and leaves foreign rules exactly as they were', async () => {
    await engine.stop();
    for (const tool of ['iptables', 'ip6tables']) expect(await ipt(tool, '-S')).toBe(foreignBefore[tool]);
  });
});
