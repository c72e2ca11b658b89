/**
 * Holds an engine in a process of its own so a test can kill -9 it: args kind netns name
 * key-json owner-json [elements: netlink|nft]. Prints the begin outcome, then waits to be killed. Runs the built engine
 * (dist/, which `npm test` builds first).
 */
import { IptablesEngine } from '../../../dist/counters/iptables.js';
import { NftablesEngine } from '../../../dist/counters/nftables.js';

const [kind, netns, name, key, owner, elements] = process.argv.slice(2);
const engine =
  kind === 'nftables'
    ? new NftablesEngine({ capacity: 10, netns, table: name, interfaces: ['lo', 'veth0'], elements })
    : new IptablesEngine({ capacity: 10, netns, chainPrefix: name });
await engine.start();
const outcome = await engine.begin([{ key: JSON.parse(key), owner: JSON.parse(owner) }]);
process.stdout.write(`${JSON.stringify(outcome)}\n`);
setInterval(() => undefined, 1 << 30);
