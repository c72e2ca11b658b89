import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Family } from '../../../src/connection.js';
import { NetlinkStore } from '../../../src/counters/netlink-store.js';
import { tableText, type SetElement } from '../../../src/counters/nft-ruleset.js';
import { NftablesEngine } from '../../../src/counters/nftables.js';
import type { Tuple } from '../../../src/counters/tuple.js';
import { diag } from '../../../src/util/diag.js';
import { createPair, type Pair } from '../../support/netns.js';
import { runMany } from './harness.js';
import { nftNamespace, type NftNamespace } from './nft-namespace.js';

/** The netlink codec (native/nfset through NetlinkStore) against the real kernel, in private
 * namespaces; what it writes is checked with nft's own listing. */

const t4 = (i: number, port = 80): Tuple => ({ family: 4, saddr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 60000), daddr: '192.0.2.1', dport: port });
const t6 = (i: number): Tuple => ({ family: 6, saddr: `fd00::${i.toString(16)}`, sport: 2000 + i, daddr: '2001:db8::1', dport: 443 });
const TEST_SETS = `table inet t {
  set f4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; size 65536; flags dynamic; counter; }
  set f6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; size 65536; flags dynamic; counter; }
  set o4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; size 65536; }
  set small { type ipv4_addr . inet_service . ipv4_addr . inet_service; size 100; flags dynamic; counter; }
}
`;

describe('netlink element store (libnftnl over our own socket)', () => {
  let ns: NftNamespace;
  let pair: Pair;
  let store: NetlinkStore;
  const nftFile = (text: string): Promise<void> => ns.load(text);
  const listed = (table: string, set: string): Promise<SetElement[]> => ns.listed(table, set);

  beforeAll(async () => {
    ns = await nftNamespace('nlstore');
    pair = ns.pair;
    await ns.load(TEST_SETS);
    store = new NetlinkStore('t', pair.node.ns);
  });

  afterAll(async () => {
    await store?.close();
    await ns?.destroy();
  });

  it('adds with comments, reads by key, dumps and deletes, as nft sees them (IPv4 and IPv6)', async () => {
    const hostile = 'pid=7 job=a "q" $(x) ; # ünï 🚀';
    expect(await store.apply([
      { op: 'add', set: 'f4', elems: [{ tuple: t4(1) }, { tuple: t4(2) }] },
      { op: 'add', set: 'f6', elems: [{ tuple: t6(1) }] },
      { op: 'add', set: 'o4', elems: [{ tuple: t4(1), comment: hostile }] },
    ])).toBe(true);
    expect((await listed('t', 'o4'))[0]).toEqual({ tuple: t4(1), comment: hostile });
    expect((await listed('t', 'f6')).map((e) => e.tuple)).toEqual([t6(1)]);
    expect(await store.get('o4', 4, [t4(1)])).toEqual([{ tuple: t4(1), comment: hostile, counter: { packets: 0, bytes: 0 } }]);
    expect(await store.get('f6', 6, [t6(1), t6(2)])).toEqual([{ tuple: t6(1), counter: { packets: 0, bytes: 0 } }, undefined]);
    expect((await store.dump('f4', 4))!.map((e) => e.tuple).sort(byPort)).toEqual([t4(1), t4(2)]);
    expect(await store.apply([{ op: 'delete', set: 'f4', elems: [{ tuple: t4(1) }, { tuple: t4(2) }] }, { op: 'delete', set: 'f6', elems: [{ tuple: t6(1) }] }, { op: 'delete', set: 'o4', elems: [{ tuple: t4(1) }] }])).toBe(true);
    expect(await listed('t', 'f4')).toEqual([]);
    expect(await store.dump('o4', 4)).toEqual([]);
  });

  it('reports missing keys wherever they fall, and a missing set as an error', async () => {
    const present = [3, 5, 6, 9].map((i) => t4(i));
    await store.apply([{ op: 'add', set: 'f4', elems: present.map((tuple) => ({ tuple })) }]);
    const asked = Array.from({ length: 12 }, (_, i) => t4(i));
    const got = await store.get('f4', 4, asked);
    expect(got.map((e) => (e ? 1 : 0)).join('')).toBe('000101100100');
    expect(await store.get('f4', 4, [t4(100), t4(101)])).toEqual([undefined, undefined]);
    await expect(store.get('nosuch', 4, [t4(1)])).rejects.toThrow(/No such file or directory/);
    expect(await store.dump('nosuch', 4)).toBeUndefined();
    await store.apply([{ op: 'delete', set: 'f4', elems: present.map((tuple) => ({ tuple })) }]);
  });

  it('is all or nothing: a refused message (a missing element to delete) changes nothing', async () => {
    expect(await store.apply([{ op: 'add', set: 'f4', elems: [{ tuple: t4(20) }] }, { op: 'delete', set: 'f4', elems: [{ tuple: t4(21) }] }])).toBe(false);
    expect(store.lastError).toMatch(/No such file or directory/);
    expect(await listed('t', 'f4')).toEqual([]);
  });

  it('moves 20,000 elements with comments in one transaction of many messages, reads them all by key', async () => {
    const n = 20_000; // ~1.7 MB of messages: 64 KB each at most, one sendmsg
    const tuples = Array.from({ length: n }, (_, i) => t4(i, 8080));
    const comment = (i: number): string => `pid=${i + 1} job=${'j'.repeat(90)}-${i}`;
    expect(await store.apply([{ op: 'add', set: 'o4', elems: tuples.map((tuple, i) => ({ tuple, comment: comment(i) })) }])).toBe(true);
    const dumped = (await store.dump('o4', 4))!;
    expect(dumped).toHaveLength(n);
    const got = await store.get('o4', 4, tuples);
    expect(got.every((e, i) => e?.comment === comment(i) && e.tuple.sport === tuples[i]!.sport)).toBe(true);
    expect((await listed('t', 'o4')).length).toBe(n);
    expect(await store.apply([{ op: 'delete', set: 'o4', elems: tuples.map((tuple) => ({ tuple })) }])).toBe(true);
    expect(await store.dump('o4', 4)).toEqual([]);
  });

  it('refuses a batch that would overfill a set, and changes nothing', async () => {
    const elems = Array.from({ length: 101 }, (_, i) => ({ tuple: t4(i) }));
    expect(await store.apply([{ op: 'add', set: 'small', elems }])).toBe(false);
    expect(await store.dump('small', 4)).toEqual([]);
    expect(await store.apply([{ op: 'add', set: 'small', elems: elems.slice(0, 100) }])).toBe(true);
    expect(await store.apply([{ op: 'add', set: 'small', elems: elems.slice(100) }])).toBe(false);
    expect(await store.dump('small', 4)).toHaveLength(100);
  });

  it('reads the datapath’s counters exactly while the datapath adds elements concurrently', async () => {
    // The engine's own table: every SYN on veth0 creates elements in flows4.
    const layout = { table: 'dp', interfaces: ['veth0'], flowsSize: 65536, ownersSize: 1000, priority: 500 };
    await nftFile(tableText(layout));
    const dp = new NetlinkStore('dp', pair.node.ns);
    try {
      const ours = Array.from({ length: 500 }, (_, i) => t4(i, 9));
      const traffic = runMany(pair, 4, 5101, 46000, 300, 500);
      let rounds = 0;
      let done = false;
      void traffic.finally(() => (done = true));
      while (!done) {
        // Our own elements come and go in the same set the datapath fills meanwhile.
        expect(await dp.apply([{ op: 'add', set: 'flows4', elems: ours.map((tuple) => ({ tuple })) }])).toBe(true);
        expect((await dp.get('flows4', 4, ours)).every(Boolean)).toBe(true);
        expect(await dp.dump('flows4', 4)).toBeDefined();
        expect(await dp.apply([{ op: 'delete', set: 'flows4', elems: ours.map((tuple) => ({ tuple })) }])).toBe(true);
        rounds++;
        // The addon's calls are synchronous: let the traffic's child processes report.
        await new Promise((res) => setTimeout(res, 5));
      }
      const keys = await traffic;
      expect(rounds).toBeGreaterThan(1);
      const dumped = (await dp.dump('flows4', 4))!;
      expect(dumped).toHaveLength(600); // both directions of 300 connections, none of ours
      const byNft = new Map((await listed('dp', 'flows4')).map((e) => [JSON.stringify(e.tuple), e.counter]));
      for (const e of dumped) expect(e.counter).toEqual(byNft.get(JSON.stringify(e.tuple)));
      const tuples = keys.flatMap((k): Tuple[] => [
        { family: 4, saddr: k.localAddr, sport: k.localPort, daddr: k.remoteAddr, dport: k.remotePort },
        { family: 4, saddr: k.remoteAddr, sport: k.remotePort, daddr: k.localAddr, dport: k.localPort },
      ]);
      const got = await dp.get('flows4', 4, tuples);
      expect(got.every((e) => e && e.counter!.bytes > 500 && e.counter!.packets >= 4)).toBe(true);
      expect(got.map((e) => e!.counter)).toEqual(tuples.map((t) => byNft.get(JSON.stringify(t))));
    } finally {
      await dp.close();
    }
  });

  it('refuses a closed store, and its socket stays in the namespace it was made in', async () => {
    const s = new NetlinkStore('t', pair.node.ns);
    await s.close();
    await expect(s.get('f4', 4, [t4(1)])).rejects.toThrow(/closed/);
    // The machine's own namespace has no table t: a store made there sees none.
    const host = new NetlinkStore('t');
    try {
      expect(await host.dump('f4', 4)).toBeUndefined();
    } finally {
      await host.close();
    }
  });
});

describe('the nftables engine without the addon', () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await createPair('nlfallback');
  });
  afterAll(async () => {
    await pair?.destroy();
  });

  it('falls back to the nft program with a warning naming the fix, or refuses when netlink is required', async () => {
    const warn = vi.spyOn(diag, 'warn').mockImplementation(() => undefined);
    const options = { capacity: 10, interfaces: ['veth0'], netns: pair.node.ns, addonPath: '/nonexistent/nfset.node' };
    const auto = new NftablesEngine(options);
    try {
      expect(await auto.start()).toEqual([]);
      expect(auto.elementPath).toBe('nft');
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/nft program instead of netlink/), { error: expect.stringMatching(/npm run setup.*libnftnl-dev/) });
      const k = { family: 4 as Family, localAddr: pair.node.v4, localPort: 40100, remoteAddr: pair.remote.v4, remotePort: 80 };
      expect(await auto.begin([{ key: k, owner: { pid: 1, job: 'j' } }])).toEqual(['from-now']);
      expect(await auto.end([k])).toEqual([{ bytesIn: 0, packetsIn: 0, bytesOut: 0, packetsOut: 0 }]);
    } finally {
      await auto.stop();
      warn.mockRestore();
    }
    const strict = new NftablesEngine({ ...options, elements: 'netlink' });
    await expect(strict.start()).rejects.toThrow(/cannot load \/nonexistent\/nfset\.node.*npm run setup/);
  });
});

function byPort(a: Tuple, b: Tuple): number {
  return a.sport - b.sport;
}
