#!/usr/bin/env node
// What begin()'s look at the pend sets costs (docs/counters.md, the retry): a dump of pend4 over
// netlink, empty (the usual case) and holding a burst's failed adds, medians of --reps calls.
//
//   node bench/pend-dump.mjs [--reps=200]      (after `npm run setup`; root)
import { createPair } from './lib/ns.mjs';
import { median } from './lib/proc.mjs';
import { Kernel } from '../dist/counters/kernel.js';
import { NetlinkStore } from '../dist/counters/netlink-store.js';
import { tableText } from '../dist/counters/nft-ruleset.js';

const REPS = Number(process.argv.slice(2).find((a) => a.startsWith('--reps='))?.split('=')[1] ?? 200);
const tuple = (i) => ({ family: 4, saddr: `10.1.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 60000), daddr: '10.2.0.1', dport: 5000 });
const pair = await createPair('pdump');
try {
  const kernel = new Kernel(pair.node.ns);
  await kernel.withBatchFile(tableText({ table: 'bench', flowsSize: 65536, ownersSize: 1024, priority: 500, interfaces: ['veth0'] }), async (path) => {
    const r = await kernel.run('nft', ['-f', path]);
    if (r.code) throw new Error(r.stderr);
  });
  const store = new NetlinkStore('bench', pair.node.ns);
  console.log('| pend4 holds | dump (median) |\n|---|---|');
  let held = 0;
  for (const n of [0, 100, 1000, 5000]) {
    if (n > held) await store.apply([{ op: 'add', set: 'pend4', elems: Array.from({ length: n - held }, (_, i) => ({ tuple: tuple(held + i) })) }]);
    held = n;
    const t = [];
    for (let i = 0; i < REPS; i++) {
      const t0 = performance.now();
      if ((await store.dump('pend4', 4)).length !== n) throw new Error('short dump');
      t.push(performance.now() - t0);
    }
    console.log(`| ${n} | ${(median(t) * 1000).toFixed(0)} µs |`);
  }
  await store.close();
  await kernel.close();
} finally {
  await pair.destroy();
}
