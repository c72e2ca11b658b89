#!/usr/bin/env node
// Keyed reads and changes over netlink, synchronous against on the thread pool (issue 14):
// per-call time for 1 … 20,000 keys, and the longest the event loop stood still during each kind
// of call. Decides NetlinkStore's ASYNC_MIN_KEYS (docs/counters.md).
//
//   node bench/reads.mjs [--n=20000] [--reps=200]      (after `npm run setup`; root)
//
// Runs in a private network namespace, deleted at the end (also on failure).
import { cleanupAll, createPair } from './lib/ns.mjs';
import { median } from './lib/proc.mjs';
import { Kernel } from '../dist/counters/kernel.js';
import { encodeKeys } from '../dist/counters/netlink-store.js';
import { loadNfset } from '../dist/counters/nfset-addon.js';
import { tableText } from '../dist/counters/nft-ruleset.js';

const opt = (name, dflt) => Number(process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt);
const N = opt('n', 20_000);
const REPS = opt('reps', 200);
const tuple = (i) => ({ family: 4, saddr: `10.1.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 60000), daddr: '10.2.0.1', dport: 5000 });

/** The longest gap between 1 ms timer ticks while fn runs: how long the loop was blocked. */
async function stall(fn) {
  let last = performance.now();
  let worst = 0;
  const t = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  await new Promise((r) => setTimeout(r, 5));
  last = performance.now();
  await fn();
  await new Promise((r) => setImmediate(r));
  worst = Math.max(worst, performance.now() - last);
  clearInterval(t);
  return worst;
}

const pair = await createPair('reads');
try {
  const kernel = new Kernel(pair.node.ns);
  const layout = { table: 'bench', flowsSize: 4 * N + 1024, ownersSize: N + 1024, priority: 500, interfaces: ['veth0'] };
  await kernel.withBatchFile(tableText(layout), async (path) => {
    const r = await kernel.run('nft', ['-f', path]);
    if (r.code) throw new Error(r.stderr);
  });
  const addon = loadNfset();
  const h = addon.open(`/run/netns/${pair.node.ns}`, 'bench', 1);
  const all = encodeKeys(4, Array.from({ length: N }, (_, i) => ({ tuple: tuple(i) })));
  addon.apply(h, [[0, 'flows4', 16, all, null]]);
  console.log(`| keys (set of ${N}) | sync | async (thread pool) | loop stalled, sync | loop stalled, async |`);
  console.log('|---|---|---|---|---|');
  for (const k of [1, 8, 32, 64, 128, 1000, N]) {
    const keys = all.subarray(0, 16 * k);
    const reps = Math.max(3, Math.min(REPS, Math.round((REPS * 100) / k)));
    const r = { sync: [], async: [], stallSync: [], stallAsync: [] };
    for (let i = 0; i < reps; i++) {
      let t0 = performance.now();
      if (addon.get(h, 'flows4', 16, keys)[0].length !== k) throw new Error('short');
      r.sync.push(performance.now() - t0);
      t0 = performance.now();
      if ((await addon.getAsync(h, 'flows4', 16, keys))[0].length !== k) throw new Error('short');
      r.async.push(performance.now() - t0);
    }
    for (let i = 0; i < 3; i++) {
      r.stallSync.push(await stall(async () => addon.get(h, 'flows4', 16, keys)));
      r.stallAsync.push(await stall(() => addon.getAsync(h, 'flows4', 16, keys)));
    }
    const f = (ms) => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(1)} ms`);
    console.log(`| ${k} | ${f(median(r.sync))} | ${f(median(r.async))} | ${f(median(r.stallSync))} | ${f(median(r.stallAsync))} |`);
  }
  // Changes: a batch as the engine makes one per connection (both directions' elements added to
  // flows4, the owner's to owners4 with its comment), then deleted again.
  const other = encodeKeys(4, Array.from({ length: N }, (_, i) => ({ tuple: tuple(N + i) })));
  const batch = (k, op) => [
    [op, 'flows4', 16, other.subarray(0, 16 * k), null],
    [op, 'owners4', 16, other.subarray(16 * k, 32 * k), op === 0 ? Array.from({ length: k }, (_, i) => `pid=${i} job=bench`) : null],
  ];
  console.log('');
  console.log(`| connections changed (add, then delete; set of ${N}) | sync | async (thread pool) | loop stalled, sync | loop stalled, async |`);
  console.log('|---|---|---|---|---|');
  for (const k of [1, 8, 32, 64, 128, 1000, 5000]) {
    const reps = Math.max(3, Math.min(REPS, Math.round((REPS * 20) / k)));
    const r = { sync: [], async: [], stallSync: [], stallAsync: [] };
    for (let i = 0; i < reps; i++) {
      let t0 = performance.now();
      addon.apply(h, batch(k, 0));
      addon.apply(h, batch(k, 2));
      r.sync.push((performance.now() - t0) / 2);
      t0 = performance.now();
      await addon.applyAsync(h, batch(k, 0));
      await addon.applyAsync(h, batch(k, 2));
      r.async.push((performance.now() - t0) / 2);
    }
    for (let i = 0; i < 3; i++) {
      r.stallSync.push(await stall(async () => addon.apply(h, batch(k, 0))));
      addon.apply(h, batch(k, 2));
      r.stallAsync.push(await stall(() => addon.applyAsync(h, batch(k, 0))));
      addon.apply(h, batch(k, 2));
    }
    const f = (ms) => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(1)} ms`);
    console.log(`| ${k} | ${f(median(r.sync))} | ${f(median(r.async))} | ${f(median(r.stallSync))} | ${f(median(r.stallAsync))} |`);
  }
  addon.close(h);
  await kernel.close();
} finally {
  await cleanupAll();
}
