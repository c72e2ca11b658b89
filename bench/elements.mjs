#!/usr/bin/env node
// The nftables engine's two element paths side by side (issue 14): the nft program in its
// long-lived session (NftStore) and our own netlink socket through libnftnl (NetlinkStore,
// native/nfset). Same set (the engine's flows4 in its own table), same keys, alternating
// rounds in one run so that the shared machine's noise falls on both; medians of --reps rounds.
//
//   node bench/elements.mjs [--n=10000] [--reps=3]      (after `npm run build`; root)
//
// Runs in a private network namespace, deleted at the end (also on failure).
import { cleanupAll, createPair } from './lib/ns.mjs';
import { median } from './lib/proc.mjs';
import { Kernel } from '../dist/counters/kernel.js';
import { NetlinkStore } from '../dist/counters/netlink-store.js';
import { NftStore } from '../dist/counters/nft-store.js';
import { tableText } from '../dist/counters/nft-ruleset.js';

const opt = (name, dflt) => Number(process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt);
const N = opt('n', 10_000);
const REPS = opt('reps', 3);
const SINGLES = 200;

const tuple = (i) => ({ family: 4, saddr: `10.1.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 60000), daddr: '10.2.0.1', dport: 5000 });
const elems = Array.from({ length: N }, (_, i) => ({ tuple: tuple(i) }));
const comment = (i) => `pid=${100000 + i} job=schedd#${i}.0#1700000000`;

async function time(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6; // ms
}

async function must(p, what) {
  if (!(await p)) throw new Error(`${what} refused`);
}

/** One round on one store: returns ms per operation. */
async function round(store) {
  const r = {};
  r.add = await time(() => must(store.apply([{ op: 'add', set: 'flows4', elems }]), 'add'));
  r.addOwners = await time(() => must(store.apply([{ op: 'add', set: 'owners4', elems: elems.map((e, i) => ({ ...e, comment: comment(i) })) }]), 'add owners'));
  r.dump = await time(async () => {
    if ((await store.dump('flows4', 4)).length !== N) throw new Error('dump short');
  });
  for (const k of [1, 100, 1000]) {
    const asked = Array.from({ length: k }, (_, i) => tuple((i * 7919) % N));
    r[`get${k}`] = await time(async () => {
      if ((await store.get('flows4', 4, asked)).some((e) => !e)) throw new Error('get missed');
    });
  }
  const singles = Array.from({ length: SINGLES }, (_, i) => ({ tuple: { ...tuple(i), dport: 6000 } }));
  r.single = (await time(async () => {
    for (const e of singles) await must(store.apply([{ op: 'add', set: 'flows4', elems: [e] }]), 'single add');
  })) / SINGLES;
  await must(store.apply([{ op: 'delete', set: 'flows4', elems: singles }]), 'delete singles');
  r.delete = await time(() => must(store.apply([{ op: 'delete', set: 'flows4', elems }, { op: 'delete', set: 'owners4', elems }]), 'delete'));
  return r;
}

const pair = await createPair('elements');
try {
  const ns = pair.node.ns;
  const kernel = new Kernel(ns);
  const layout = { table: 'bench', flowsSize: 4 * N + 1024, ownersSize: 2 * N, priority: 500, interfaces: ['veth0'] };
  await kernel.withBatchFile(tableText(layout), async (path) => {
    const r = await kernel.run('nft', ['-f', path]);
    if (r.code) throw new Error(r.stderr);
  });
  const stores = { nft: new NftStore(kernel, 'bench'), netlink: new NetlinkStore('bench', ns) };
  const results = { nft: [], netlink: [] };
  for (let rep = 0; rep < REPS; rep++) {
    for (const name of rep % 2 ? ['netlink', 'nft'] : ['nft', 'netlink']) results[name].push(await round(stores[name]));
  }
  await stores.netlink.close();
  await kernel.close();
  const ops = [
    ['add', `add ${N} in one batch`, N],
    ['addOwners', `add ${N} owners with comments, one batch`, N],
    ['delete', `delete ${N} + ${N} owners in one batch`, 2 * N],
    ['dump', `dump ${N} with counters`, N],
    ['get1', `read 1 key's counter (set of ${N})`, 0],
    ['get100', `read 100 keys (set of ${N})`, 0],
    ['get1000', `read 1,000 keys (set of ${N})`, 0],
    ['single', 'one add per command (mean of 200)', 0],
  ];
  const fmt = (ms, per) => (per ? `${ms.toFixed(1)} ms (${((ms * 1000) / per).toFixed(1)} µs/element)` : ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`);
  console.log(`| operation (medians of ${REPS}, one run, alternating) | nft session | netlink (libnftnl) |`);
  console.log('|---|---|---|');
  const json = {};
  for (const [key, label, per] of ops) {
    const m = Object.fromEntries(Object.entries(results).map(([s, rs]) => [s, median(rs.map((r) => r[key]))]));
    json[key] = m;
    console.log(`| ${label} | ${fmt(m.nft, per)} | ${fmt(m.netlink, per)} |`);
  }
  console.error(JSON.stringify({ n: N, reps: REPS, medians_ms: json }));
} finally {
  await cleanupAll();
}
