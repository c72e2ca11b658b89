import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ASYNC_MIN_KEYS, encodeKeys, NetlinkStore } from '../../../src/counters/netlink-store.js';
import { loadNfset } from '../../../src/counters/nfset-addon.js';
import { settledDump } from '../../../src/counters/nft-flows.js';
import { tableText, type SetElement } from '../../../src/counters/nft-ruleset.js';
import type { Tuple } from '../../../src/counters/tuple.js';
import type { Pair } from '../../support/netns.js';
import { runMany } from './harness.js';
import { nftNamespace, type NftNamespace } from './nft-namespace.js';

/** Keyed reads and big changes on libuv's thread pool (issue 14): the event loop runs on
 * meanwhile, the socket serves one request at a time, and the counters read are the kernel's,
 * as nft lists them. */

const t4 = (i: number, port = 7000): Tuple => ({ family: 4, saddr: `10.9.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 60000), daddr: '192.0.2.9', dport: port });
const keyOfTuple = (t: Tuple): string => JSON.stringify(t);

describe('asynchronous keyed reads over netlink', () => {
  let ns: NftNamespace;
  let pair: Pair;
  let store: NetlinkStore;
  const listed = (set: string): Promise<SetElement[]> => ns.listed('dp', set);

  beforeAll(async () => {
    ns = await nftNamespace('nlasync');
    pair = ns.pair;
    // The engine's own table: every SYN on veth0 creates elements in flows4, counted by the datapath.
    await ns.load(tableText({ table: 'dp', interfaces: ['veth0'], flowsSize: 65536, ownersSize: 1000, priority: 500 }));
    store = new NetlinkStore('dp', pair.node.ns);
  });

  afterAll(async () => {
    await store?.close();
    await ns?.destroy();
  });

  it('reads thousands of keys over several requests, datapath counters exact, missing keys where they fall, while the loop runs on', async () => {
    const keys = await runMany(pair, 4, 5201, 47000, 200, 3000);
    const traffic = keys.flatMap((k): Tuple[] => [
      { family: 4, saddr: k.localAddr, sport: k.localPort, daddr: k.remoteAddr, dport: k.remotePort },
      { family: 4, saddr: k.remoteAddr, sport: k.remotePort, daddr: k.localAddr, dport: k.localPort },
    ]);
    // 5,000 elements of our own (the kernel gets 1,024 keys per request), every 7th key asked
    // for absent, including at the requests' edges.
    const ours = Array.from({ length: 5000 }, (_, i) => t4(i));
    const absent = (i: number): boolean => i % 7 === 3 || i === 1023 || i === 1024 || i === 4999;
    expect(await store.apply([{ op: 'add', set: 'flows4', elems: ours.filter((_, i) => !absent(i)).map((tuple) => ({ tuple })) }])).toBe(true);
    const asked = [...ours.slice(0, 2500), ...traffic, ...ours.slice(2500)];
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    const got = await store.get('flows4', 4, asked);
    clearInterval(ticker);
    expect(ticks).toBeGreaterThan(0); // timers ran while the kernel answered
    const byNft = new Map((await listed('flows4')).map((e) => [keyOfTuple(e.tuple), e.counter]));
    expect(got).toHaveLength(asked.length);
    got.forEach((e, i) => {
      const t = asked[i]!;
      const mine = i < 2500 ? i : i >= 2500 + traffic.length ? i - traffic.length : -1;
      if (mine >= 0 && absent(mine)) return expect(e).toBeUndefined();
      expect(e?.tuple).toEqual(t);
      expect(e?.counter).toEqual(byNft.get(keyOfTuple(t)));
    });
    // What a user checks: each of the 200 connections moved its 3,000 bytes each way.
    for (const e of got.slice(2500, 2500 + traffic.length)) expect(e!.counter!.bytes).toBeGreaterThan(3000);
    expect(got.filter((e) => e === undefined)).toHaveLength(ours.filter((_, i) => absent(i)).length);
    expect(await store.apply([{ op: 'delete', set: 'flows4', elems: ours.filter((_, i) => !absent(i)).map((tuple) => ({ tuple })) }])).toBe(true);
  });

  it('queues changes behind a read in flight, and reads right while another socket changes the same set', async () => {
    const stable = Array.from({ length: 4000 }, (_, i) => t4(i, 7100));
    const churn = Array.from({ length: 2000 }, (_, i) => t4(i, 7200));
    const later = Array.from({ length: 100 }, (_, i) => t4(i, 7300));
    expect(await store.apply([{ op: 'add', set: 'flows4', elems: stable.map((tuple) => ({ tuple })) }])).toBe(true);
    const other = new NetlinkStore('dp', pair.node.ns);
    let reading = true;
    try {
      let rounds = 0;
      // Another socket adds and deletes elements of the same set for as long as we read.
      const churner = (async () => {
        while (reading) {
          expect(await other.apply([{ op: 'add', set: 'flows4', elems: churn.map((tuple) => ({ tuple })) }])).toBe(true);
          expect(await other.apply([{ op: 'delete', set: 'flows4', elems: churn.map((tuple) => ({ tuple })) }])).toBe(true);
          rounds++;
          await new Promise((r) => setImmediate(r));
        }
      })();
      for (let i = 0; i < 5; i++) {
        // Made while the read holds our socket: they wait for it (never EBUSY), in order.
        const read = store.get('flows4', 4, [...stable, ...later]);
        const add = store.apply([{ op: 'add', set: 'flows4', elems: later.map((tuple) => ({ tuple })) }]);
        const reread = store.get('flows4', 4, later);
        const del = store.apply([{ op: 'delete', set: 'flows4', elems: later.map((tuple) => ({ tuple })) }]);
        const got = await read;
        expect(got.slice(0, stable.length).every((e, j) => e?.tuple.sport === stable[j]!.sport && e.counter?.packets === 0)).toBe(true);
        expect(got.slice(stable.length).every((e) => e === undefined)).toBe(true); // the add came after
        expect(await add).toBe(true);
        expect((await reread).every(Boolean)).toBe(true);
        expect(await del).toBe(true);
      }
      reading = false;
      await churner;
      expect(rounds).toBeGreaterThan(0);
      // Read by key, not dumped: a dump resumes by element count, so one made while (or just
      // after) a set changes can skip or repeat elements (see docs/counters.md).
      const kept = await store.get('flows4', 4, stable);
      expect(kept.filter((e) => e?.counter?.packets === 0)).toHaveLength(stable.length);
      expect(await store.get('flows4', 4, churn).then((got) => got.filter(Boolean))).toHaveLength(0);
      // What the harvest does with a set nobody changes any more: dumps until two agree.
      const settled = (await settledDump(store, 'flows4', 4))!.filter((e) => e.tuple.dport === 7100);
      expect(new Set(settled.map((e) => e.tuple.sport)).size).toBe(stable.length);
    } finally {
      reading = false;
      await other.close();
      expect(await store.apply([{ op: 'delete', set: 'flows4', elems: stable.map((tuple) => ({ tuple })) }])).toBe(true);
    }
  });

  it('the addon refuses a second call on a busy socket (EBUSY), and closes it once the read is done', async () => {
    const addon = loadNfset();
    const h = addon.open(`/run/netns/${pair.node.ns}`, 'dp', 1);
    const keys = encodeKeys(4, Array.from({ length: 3000 }, (_, i) => ({ tuple: t4(i, 7400) })));
    const read = addon.getAsync(h, 'flows4', 16, keys);
    expect(() => addon.get(h, 'flows4', 16, keys)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(() => addon.apply(h, [[0, 'flows4', 16, keys, null]])).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    expect(() => addon.applyAsync(h, [[0, 'flows4', 16, keys, null]])).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    addon.close(h); // while the read is in flight: done at its completion
    const [found] = await read;
    expect(found.every((f) => f === 0)).toBe(true);
    expect(() => addon.get(h, 'flows4', 16, keys)).toThrow(/closed/);
    expect(() => addon.getAsync(h, 'flows4', 16, keys)).toThrow(/closed/);
    // The same for a change in flight: its keys are copied, so a caller reusing the Buffer at
    // once changes nothing of what is applied.
    const h2 = addon.open(`/run/netns/${pair.node.ns}`, 'dp', 1);
    const applying = addon.applyAsync(h2, [[0, 'flows4', 16, keys, null]]);
    expect(() => addon.get(h2, 'flows4', 16, keys)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    const original = Buffer.from(keys);
    keys.fill(0);
    await applying;
    const [added] = addon.get(h2, 'flows4', 16, original);
    expect(added.every((f) => f === 1)).toBe(true);
    addon.apply(h2, [[2, 'flows4', 16, original, null]]);
    addon.close(h2);
  });

  it('applies a big change on the thread pool: the loop runs on, the elements and comments are there, a refused one changes nothing', async () => {
    const flows = Array.from({ length: 6000 }, (_, i) => t4(i, 7500));
    const owners = flows.slice(0, 900); // owners4 holds 1,000
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    const ok = await store.apply([
      { op: 'add', set: 'flows4', elems: flows.map((tuple) => ({ tuple })) },
      { op: 'add', set: 'owners4', elems: owners.map((tuple, i) => ({ tuple, comment: `pid=${i} job=j${i % 7}` })) },
    ]);
    clearInterval(ticker);
    expect(ok).toBe(true);
    expect(ticks).toBeGreaterThan(0);
    const listedFlows = new Set((await listed('flows4')).map((e) => keyOfTuple(e.tuple)));
    expect(flows.every((t) => listedFlows.has(keyOfTuple(t)))).toBe(true);
    const listedOwners = await listed('owners4');
    expect(listedOwners).toHaveLength(owners.length);
    const comment = new Map(listedOwners.map((e) => [keyOfTuple(e.tuple), e.comment]));
    owners.forEach((t, i) => expect(comment.get(keyOfTuple(t))).toBe(`pid=${i} job=j${i % 7}`));
    // One transaction: a batch whose last message the kernel refuses (no such set) changes nothing.
    const more = Array.from({ length: 200 }, (_, i) => t4(i, 7600));
    expect(await store.apply([
      { op: 'add', set: 'flows4', elems: more.map((tuple) => ({ tuple })) },
      { op: 'add', set: 'nosuch', elems: more.map((tuple) => ({ tuple })) },
    ])).toBe(false);
    expect(store.lastError).toMatch(/No such file or directory/);
    expect((await store.get('flows4', 4, more)).every((e) => e === undefined)).toBe(true);
    expect(await store.apply([
      { op: 'delete', set: 'owners4', elems: owners.map((tuple) => ({ tuple })) },
      { op: 'delete', set: 'flows4', elems: flows.map((tuple) => ({ tuple })) },
    ])).toBe(true);
    expect(await listed('owners4')).toHaveLength(0);
  });

  it('refuses malformed changes with a TypeError, at once and on the pool, and changes nothing', async () => {
    const addon = loadNfset();
    const h = addon.open(`/run/netns/${pair.node.ns}`, 'dp', 1);
    try {
      const keys = encodeKeys(4, [{ tuple: t4(1, 7700) }]);
      const good = [0, 'flows4', 16, keys, null] as const;
      const bad: unknown[][] = [[null], [[9, 'flows4', 16, keys, null]], [[0, 42, 16, keys, null]], [[0, 'flows4', 16, 'not a buffer', null]], [[0, 'flows4', 5, keys, null]], [good, 7]];
      for (const ops of bad) {
        expect(() => addon.apply(h, ops as never)).toThrow(TypeError);
        expect(() => addon.applyAsync(h, ops as never)).toThrow(TypeError);
      }
      const [found] = addon.get(h, 'flows4', 16, keys); // nothing of the good op before the bad one
      expect([...found]).toEqual([0]);
    } finally {
      addon.close(h);
    }
  });

  it('reports a missing set as an error, from the thread pool too', async () => {
    const many = Array.from({ length: ASYNC_MIN_KEYS + 1 }, (_, i) => t4(i));
    await expect(store.get('nosuch', 4, many)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(store.get('nosuch', 4, many.slice(0, 1))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await store.dump('nosuch', 4)).toBeUndefined();
  });
});
