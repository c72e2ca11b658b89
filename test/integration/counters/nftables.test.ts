import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnKey } from '../../../src/connection.js';
import { NftablesEngine } from '../../../src/counters/nftables.js';
import { createPair, exited, nsRun, type Pair } from '../../support/netns.js';
import { oracleCounts, oracleFlows, startOracle } from '../../support/oracle.js';
import { expectHarvestAfterKill, expectExact, HOSTILE_JOBS, runCase, runMany, startDriver } from './harness.js';

const owner = { pid: 4242, job: 'job-1' };
const FOREIGN = `table inet foreign {
  set blocked { type ipv4_addr . inet_service; flags dynamic; counter; elements = { 192.0.2.1 . 9 }; }
  chain input { type filter hook input priority 0; policy accept;
    tcp dport 9 counter drop
  }
  chain output { type filter hook output priority 500; policy accept;
    ip daddr 192.0.2.9 counter
  }
}
`;

// The same engine over both element paths: our netlink socket (native/nfset) and the nft program.
describe.each(['netlink', 'nft'] as const)('nftables engine over %s, real traffic against conntrack', (elements) => {
  let pair: Pair;
  let engine: NftablesEngine;
  let foreignBefore = '';
  let work = '';

  const nft = async (...args: string[]): Promise<string> => {
    const r = await nsRun(pair.node.ns, 'nft', args);
    if (r.code !== 0) throw new Error(`nft ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const flowsCount = async (): Promise<number> => {
    let n = 0;
    for (const s of ['flows4', 'flows6']) n += (JSON.parse(await nft('-j', 'list', 'set', 'inet', 'netprof', s)).nftables[1].set.elem ?? []).length;
    return n;
  };
  const beginRead = async (keys: ConnKey[]): Promise<void> => {
    expect(await engine.begin(keys.map((key) => ({ key, owner })))).toEqual(keys.map(() => 'from-first-packet'));
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'np-nft-'));
    pair = await createPair('nft');
    await startOracle(pair.node.ns);
    await writeFile(join(work, 'foreign.nft'), FOREIGN);
    await nft('-f', join(work, 'foreign.nft'));
    foreignBefore = await nft('list', 'table', 'inet', 'foreign');
    expect(foreignBefore).toContain('192.0.2.1 . 9');
    engine = new NftablesEngine({ capacity: 1_010, interfaces: ['lo', 'veth0'], netns: pair.node.ns, elements });
    expect(await engine.start()).toEqual([]);
    expect(engine.elementPath).toBe(elements);
  });

  afterAll(async () => {
    await engine?.stop().catch(() => undefined);
    await pair?.destroy();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('counts a bulk transfer both ways from the first packet, begun mid-connection', async () => {
    let keys: ConnKey[] = [];
    await runCase(pair, { family: 4, node: 'client', port: 5001, clientPort: 40001, clientSend: 3_000_000, serverSend: 5_000_000, established: async (k) => { keys = k; await beginRead(k); } });
    const [got] = await engine.end(keys);
    expectExact(got, oracleCounts(await oracleFlows(pair.node.ns), keys[0]!), 3_000_000, 5_000_000);
    expect(engine.size()).toBe(0);
  });

  it('counts a client that sends at once after connect, and a server that sends at once after accept', async () => {
    const { keys: ck } = await runCase(pair, { family: 4, node: 'client', port: 5002, clientPort: 40002, clientEarly: 200_000, serverEarly: 0, serverSend: 1000 });
    await beginRead(ck); // after the close: the datapath already counted everything
    const { keys: sk } = await runCase(pair, { family: 4, node: 'server', port: 5003, clientPort: 40003, serverEarly: 300_000, clientSend: 10 });
    await beginRead(sk);
    const [c, s] = await engine.end([...ck, ...sk]);
    const flows = await oracleFlows(pair.node.ns); // after the engine's read: conntrack's counts only grow
    expectExact(c, oracleCounts(flows, ck[0]!), 200_000, 1000);
    expectExact(s, oracleCounts(flows, sk[0]!), 300_000, 10);
  });

  it('counts what a half-closed connection sends after the first FIN', async () => {
    const { keys } = await runCase(pair, { family: 4, node: 'client', port: 5004, clientPort: 40004, clientSend: 1000, serverAfterEof: true, serverSend: 2_000_000, established: beginRead });
    const [got] = await engine.end(keys);
    expectExact(got, oracleCounts(await oracleFlows(pair.node.ns), keys[0]!), 1000, 2_000_000);
  });

  it('counts IPv6', async () => {
    const { keys } = await runCase(pair, { family: 6, node: 'server', port: 5005, clientPort: 40005, clientSend: 700_000, serverSend: 900_000, established: beginRead });
    const [got] = await engine.end(keys);
    expectExact(got, oracleCounts(await oracleFlows(pair.node.ns), keys[0]!), 900_000, 700_000);
    expect((JSON.parse(await nft('-j', 'list', 'set', 'inet', 'netprof', 'flows4')).nftables[1].set.elem ?? []).length).toBe(0);
  });

  for (const ownAddress of [false, true]) {
    it(`counts a loopback connection once per direction${ownAddress ? ' (to the host’s own address, routed via lo)' : ''}`, async () => {
      const port = ownAddress ? 5007 : 5006;
      const { keys } = await runCase(pair, { family: 4, node: 'loopback', ownAddress, port, clientPort: 40000 + port, clientSend: 400_000, serverSend: 600_000, established: beginRead });
      // Ending one end must not stop the other end's counting.
      const [client] = await engine.end([keys[0]!]);
      const [server] = await engine.end([keys[1]!]);
      const flows = await oracleFlows(pair.node.ns); // after the engine's read: conntrack's counts only grow
      expectExact(client, oracleCounts(flows, keys[0]!), 400_000, 600_000);
      expectExact(server, oracleCounts(flows, keys[1]!), 600_000, 400_000);
      expect(await flowsCount()).toBe(0);
    });
  }

  it('counts 1,000 short connections exactly, and says no-room beyond capacity', async () => {
    const keys = await runMany(pair, 4, 5008, 41000, 1000, 300);
    const t0 = Date.now();
    const outcomes = await engine.begin(keys.map((key, i) => ({ key, owner: { pid: 1000 + i, job: 'many' } })));
    const tBegin = Date.now() - t0;
    expect(outcomes.every((o) => o === 'from-first-packet')).toBe(true);
    const flows = await oracleFlows(pair.node.ns);
    const t1 = Date.now();
    const got = await engine.read(keys);
    const tRead = Date.now() - t1;
    keys.forEach((k, i) => expectExact(got[i], oracleCounts(flows, k), 300, 300));
    const extra = Array.from({ length: 20 }, (_, i): ConnKey => ({ family: 4, localAddr: '10.9.9.9', localPort: 1 + i, remoteAddr: '10.9.9.8', remotePort: 80 }));
    const more = await engine.begin(extra.map((key) => ({ key, owner })));
    expect(more.filter((o) => o === 'from-now')).toHaveLength(10);
    expect(more.filter((o) => o === 'no-room')).toHaveLength(10);
    expect(engine.size()).toBe(1010);
    const t2 = Date.now();
    await engine.end([...keys, ...extra]);
    const tEnd = Date.now() - t2;
    expect(engine.size()).toBe(0);
    expect(await flowsCount()).toBe(0);
    console.log(`nftables over ${elements}, 1000 connections: begin ${tBegin} ms, read ${tRead} ms, end ${tEnd} ms`);
  });

  it('begins a connection whose SYN it did not see from now; discards and sweeps unowned ones', async () => {
    let late: ConnKey | undefined;
    await runCase(pair, {
      family: 4, node: 'client', port: 5009, clientPort: 40009, clientEarly: 50_000, clientSend: 100_000,
      established: async ([k]) => {
        await engine.discard([k!]); // as if it predated the daemon
        expect(await flowsCount()).toBe(0);
        expect(await engine.begin([{ key: k!, owner }])).toEqual(['from-now']);
        late = k;
      },
    });
    const [got] = await engine.end([late!]);
    const o = oracleCounts(await oracleFlows(pair.node.ns), late!)!;
    expect(got!.bytesOut).toBeGreaterThan(100_000);
    expect(got!.bytesOut).toBeLessThan(o.bytesOut);

    // Unowned connections: discard removes named ones at once; a sweep removes the rest only
    // once they have been unowned for a whole sweep period.
    const keys = await runMany(pair, 4, 5010, 42000, 30, 100);
    expect(await flowsCount()).toBe(60);
    await engine.discard(keys.slice(0, 10));
    expect(await flowsCount()).toBe(40);
    await engine.begin([{ key: keys[10]!, owner }]);
    // keys[11]'s begin is still queued: the caller names it in use, and it survives the sweeps.
    expect(await engine.sweep([keys[11]!])).toBe(0);
    expect(await engine.sweep([keys[11]!])).toBe(18);
    expect(await flowsCount()).toBe(4);
    // Seen opening: begun without a listing, its datapath counters kept.
    const before = await engine.read([keys[11]!]);
    expect(await engine.begin([{ key: keys[11]!, owner, seenOpening: true }])).toEqual(['from-first-packet']);
    const [after] = await engine.end([keys[11]!]);
    expect(before[0]).toBeUndefined(); // not begun yet: not reported
    expect(after!.bytesOut).toBeGreaterThan(100);
    await engine.end([keys[10]!]);
    expect(await flowsCount()).toBe(0);
  });

  it('reports a connection the datapath did not count as uncounted, and one missed direction as incomplete', async () => {
    // Three finished connections; the kernel's elements of the first are gone and of the second
    // its incoming direction (what a failed insert from the datapath leaves), the third intact.
    const keys = await runMany(pair, 4, 5011, 44000, 3, 2000);
    const tuple = (k: ConnKey, dir: 'out' | 'in'): string =>
      dir === 'out' ? `${k.localAddr} . ${k.localPort} . ${k.remoteAddr} . ${k.remotePort}` : `${k.remoteAddr} . ${k.remotePort} . ${k.localAddr} . ${k.localPort}`;
    await nft('delete', 'element', 'inet', 'netprof', 'flows4', `{ ${tuple(keys[0]!, 'out')}, ${tuple(keys[0]!, 'in')}, ${tuple(keys[1]!, 'in')} }`);
    const flows = await oracleFlows(pair.node.ns);
    // The tracker saw each open, so begin() adds the missing elements, empty. Over netlink it
    // reads them first (by key): the first connection, with neither element, is counted from
    // now, and its record will say partial. Through nft (no listing on this path) it is found
    // out at the end: nothing counted, so uncounted.
    const first = elements === 'netlink' ? 'from-now' : 'from-first-packet';
    expect(await engine.begin(keys.map((key) => ({ key, owner, seenOpening: true })))).toEqual([first, 'from-first-packet', 'from-first-packet']);
    const [none, half, whole] = await engine.end(keys);
    if (elements === 'netlink') expect(none).toMatchObject({ packetsIn: 0, packetsOut: 0 });
    else expect(none).toBeUndefined();
    expect(half).toMatchObject({ incomplete: true, packetsIn: 0, bytesIn: 0 });
    expect(half!.bytesOut).toBe(oracleCounts(flows, keys[1]!)!.bytesOut);
    expect(whole!.incomplete).toBeUndefined();
    expectExact(whole, oracleCounts(flows, keys[2]!), 2000, 2000);
    expect(await flowsCount()).toBe(0);
  });

  it('forgets a connection whose tuple was taken over: owner gone, the counters left for the new one', async () => {
    const k: ConnKey = { family: 4, localAddr: pair.node.v4, localPort: 45000, remoteAddr: pair.remote.v4, remotePort: 5013 };
    await engine.begin([{ key: k, owner }]);
    expect(await flowsCount()).toBe(2);
    await engine.forget([k]);
    expect(engine.size()).toBe(0);
    expect(await engine.list()).toEqual([]);
    expect(JSON.parse(await nft('-j', 'list', 'set', 'inet', 'netprof', 'owners4')).nftables[1].set.elem ?? []).toEqual([]);
    expect(await flowsCount()).toBe(2);
    // The new connection's begin finds them and counts from its first packet.
    expect(await engine.begin([{ key: k, owner, seenOpening: true }])).toEqual(['from-first-packet']);
    await engine.end([k]);
    expect(await flowsCount()).toBe(0);
  });

  it('keeps hostile job ids intact and harvests a killed process’s counters', async () => {
    const keys: ConnKey[] = HOSTILE_JOBS.map((_, i) => ({ family: 6, localAddr: pair.node.v6, localPort: 43000 + i, remoteAddr: pair.remote.v6, remotePort: 443 }));
    await engine.begin(keys.map((key, i) => ({ key, owner: { pid: 7 + i, job: HOSTILE_JOBS[i]! } })));
    expect((await engine.list()).map((x) => x.owner!.job).sort()).toEqual([...HOSTILE_JOBS].sort());
    await engine.end(keys);

    // A process that began counting, then was killed -9 before it could end or stop.
    await expectHarvestAfterKill(pair, 'nftables', 'crashed', HOSTILE_JOBS[1]!, new NftablesEngine({ capacity: 10, interfaces: ['lo', 'veth0'], netns: pair.node.ns, table: 'crashed', elements }), elements);
  });

  it('repair() notices a flushed chain or a deleted table and reinstalls them with the begun connections', async () => {
    const k: ConnKey = { family: 4, localAddr: pair.node.v4, localPort: 45100, remoteAddr: pair.remote.v4, remotePort: 5014 };
    await engine.begin([{ key: k, owner }]);
    const untilFound = async (): Promise<Awaited<ReturnType<NftablesEngine['repair']>>> => (await engine.repair()) ?? (await engine.repair());
    expect(await engine.repair()).toBeUndefined();
    expect(await engine.repair()).toBeUndefined();
    await nft('flush', 'chain', 'inet', 'netprof', 'input');
    const flushed = await untilFound();
    expect(flushed!.reason).toMatch(/chain input holds 0 rules, not \d+/);
    expect(flushed!.restarted).toEqual([k]);
    await nft('delete', 'table', 'inet', 'netprof');
    expect((await untilFound())!.reason).toMatch(/chain (input|output) of table inet netprof is gone/);
    expect(await flowsCount()).toBe(2);
    expect(await engine.repair()).toBeUndefined();
    expect(await engine.repair()).toBeUndefined();
    await engine.end([k]);
    expect(await flowsCount()).toBe(0);
  });

  it('stop() removes its table and leaves a foreign table exactly as it was', async () => {
    await engine.stop();
    expect(await nft('list', 'table', 'inet', 'foreign')).toBe(foreignBefore);
    const tables = await nft('list', 'tables');
    expect(tables).not.toMatch(/netprof|crashed/);
    expect(tables).toMatch(/inet foreign/);
  });
});
