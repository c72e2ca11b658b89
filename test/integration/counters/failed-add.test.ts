import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnKey, Family } from '../../../src/connection.js';
import { NftablesEngine } from '../../../src/counters/nftables.js';
import { parseSets } from '../../../src/counters/nft-ruleset.js';
import { createPair, nsRun, type Pair } from '../../support/netns.js';
import { oracleCounts, oracleFlows, startOracle } from '../../support/oracle.js';
import { runCase } from './harness.js';

/**
 * The datapath's failed `add` (docs/counters.md): the tuple goes to pend4/6 and the
 * connection's next packet retries the add. Provoked deterministically with the real rules: the
 * flows set is filled to its `size` from user space, so the SYN's and SYN-ACK's adds fail as a
 * drained per-CPU reserve makes them fail (the same NULL from the element's allocation, the
 * same NFT_BREAK); room is then made, and the next packets must create the elements and count.
 */

const SIZE = 4;
const owner = { pid: 4242, job: 'pend' };

describe.each(['netlink', 'nft'] as const)('failed datapath adds over %s', (elements) => {
  let pair: Pair;
  let engine: NftablesEngine;

  const nft = async (...args: string[]): Promise<string> => {
    const r = await nsRun(pair.node.ns, 'nft', args);
    if (r.code !== 0) throw new Error(`nft ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const ids = async (set: string): Promise<string[]> => {
    const els = parseSets(await nft('-j', 'list', 'set', 'inet', 'pend', set)).get(set) ?? [];
    return els.map((e) => `${e.tuple.saddr} ${e.tuple.sport} ${e.tuple.daddr} ${e.tuple.dport}`).sort();
  };
  const junk = (f: Family, i: number): string => (f === 4 ? `192.0.2.1 . ${1000 + i} . 192.0.2.2 . 80` : `2001:db8::1 . ${1000 + i} . 2001:db8::2 . 80`);
  const id = (k: ConnKey, dir: 'out' | 'in'): string =>
    dir === 'out' ? `${k.localAddr} ${k.localPort} ${k.remoteAddr} ${k.remotePort}` : `${k.remoteAddr} ${k.remotePort} ${k.localAddr} ${k.localPort}`;

  beforeAll(async () => {
    pair = await createPair('pend');
    await startOracle(pair.node.ns);
    engine = new NftablesEngine({ capacity: 10, interfaces: ['veth0'], table: 'pend', setSize: SIZE, netns: pair.node.ns, elements });
    await engine.start();
  });
  afterAll(async () => {
    await engine?.stop().catch(() => undefined);
    await pair?.destroy();
  });

  it.each([4, 6] as const)('IPv%s: an add that failed at the SYN is made by a later packet, which it counts; begin says partial', async (f) => {
    const flows = `flows${f}`;
    await nft('add', 'element', 'inet', 'pend', flows, `{ ${Array.from({ length: SIZE }, (_, i) => junk(f, i)).join(', ')} }`);
    let key: ConnKey | undefined;
    const port = 6000 + f;
    await runCase(pair, {
      family: f,
      node: 'client',
      port,
      clientPort: 42000 + f,
      clientSend: 30_000,
      serverSend: 50_000,
      established: async ([k]) => {
        key = k;
        // The handshake happened on a full set: no element, both tuples in pend.
        expect(await ids(flows)).toHaveLength(SIZE);
        expect(await ids(`pend${f}`)).toEqual([id(k!, 'out'), id(k!, 'in')].sort());
        await nft('delete', 'element', 'inet', 'pend', flows, `{ ${junk(f, 0)}, ${junk(f, 1)} }`);
      },
    });
    const k = key!;
    expect((await ids(flows)).filter((e) => e === id(k, 'out') || e === id(k, 'in'))).toHaveLength(2);
    // The elements exist, as if the datapath had made them at the SYN; pend tells begin otherwise.
    expect(await engine.begin([{ key: k, owner, seenOpening: true, openedBy: 'local' }])).toEqual(['from-now']);
    const [got] = await engine.end([k]);
    // Its end forgets the failed adds too: a late packet of the tuple (a last ACK) would
    // otherwise make the element again, unowned.
    expect((await ids(`pend${f}`)).filter((e) => e === id(k, 'out') || e === id(k, 'in'))).toEqual([]);
    expect((await ids(flows)).filter((e) => e === id(k, 'out') || e === id(k, 'in'))).toEqual([]);
    const oracle = oracleCounts(await oracleFlows(pair.node.ns), k);
    expect(got && oracle).toBeTruthy();
    // Every payload byte after the room was made, and not the handshake: the SYN and SYN-ACK
    // (and the ACK the full set also refused) are in conntrack's counts only.
    expect(got!.bytesOut).toBeGreaterThan(30_000);
    expect(got!.bytesIn).toBeGreaterThan(50_000);
    expect(got!.packetsOut).toBeLessThanOrEqual(oracle!.packetsOut - 2);
    expect(got!.packetsIn).toBeLessThanOrEqual(oracle!.packetsIn - 1);
    expect(oracle!.packetsOut - got!.packetsOut).toBeLessThanOrEqual(3);
    expect(oracle!.packetsIn - got!.packetsIn).toBeLessThanOrEqual(2);
    await nft('flush', 'set', 'inet', 'pend', flows);
  }, 40_000);

  it('a new SYN on a tuple forgets its earlier failed adds: counted from the first packet', async () => {
    const port = 6010;
    const clientPort = 42010;
    const out = `${pair.node.v4} . ${clientPort} . ${pair.remote.v4} . ${port}`;
    const back = `${pair.remote.v4} . ${port} . ${pair.node.v4} . ${clientPort}`;
    await nft('add', 'element', 'inet', 'pend', 'pend4', `{ ${out}, ${back} }`);
    let key: ConnKey | undefined;
    await runCase(pair, {
      family: 4,
      node: 'client',
      port,
      clientPort,
      clientSend: 1000,
      serverSend: 2000,
      established: async ([k]) => {
        key = k;
        // (The previous test's tuples stay there until their timeout.)
        expect((await ids('pend4')).filter((e) => e === id(k!, 'out') || e === id(k!, 'in'))).toEqual([]);
      },
    });
    expect(await engine.begin([{ key: key!, owner, seenOpening: true, openedBy: 'local' }])).toEqual(['from-first-packet']);
    const [got] = await engine.end([key!]);
    const oracle = oracleCounts(await oracleFlows(pair.node.ns), key!);
    expect(Math.abs(got!.packetsOut - oracle!.packetsOut)).toBeLessThanOrEqual(2);
    expect(Math.abs(got!.packetsIn - oracle!.packetsIn)).toBeLessThanOrEqual(2);
  }, 30_000);
});
