import { it } from 'vitest';
import { NetlinkStore } from '../../../src/counters/netlink-store.js';
import { tableText } from '../../../src/counters/nft-ruleset.js';
import type { Tuple } from '../../../src/counters/tuple.js';
import { nftNamespace } from './nft-namespace.js';
const t4 = (i: number, port = 7000): Tuple => ({ family: 4, saddr: `10.9.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 60000), daddr: '192.0.2.9', dport: port });
it('churn', async () => {
  const ns = await nftNamespace('chn');
  try {
    await ns.load(tableText({ table: 'dp', interfaces: ['veth0'], flowsSize: 65536, ownersSize: 1000, priority: 500 }));
    const other = new NetlinkStore('dp', ns.pair.node.ns);
    const churn = Array.from({ length: 2000 }, (_, i) => t4(i, 7200));
    const end = Date.now() + Number(process.env.CHURN_S ?? 60) * 1000;
    let n = 0;
    while (Date.now() < end) {
      await other.apply([{ op: 'add', set: 'flows4', elems: churn.map((tuple) => ({ tuple })) }]);
      await other.apply([{ op: 'delete', set: 'flows4', elems: churn.map((tuple) => ({ tuple })) }]);
      n++;
      await new Promise((r) => setImmediate(r));
    }
    console.log('rounds', n);
    await other.close();
  } finally { await ns.destroy(); }
}, 300000);
