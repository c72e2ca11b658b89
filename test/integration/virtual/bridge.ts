import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOk } from '../../../src/util/exec.js';
import { createNamespace, destroyNamespace, nsRun } from '../../support/netns.js';
import type { Pair } from '../../support/netns.js';
import type { World } from '../profiler/harness.js';

/**
 * The shape of Docker's and podman's default networking, without a runtime: a bridge in the
 * node namespace (where the daemon runs), "containers" as namespaces of their own whose eth0
 * is a veth port of it, forwarding and masquerading out of the node's uplink, and published
 * ports as DNAT — what docker0 or podman0 and their rules do. The real runtimes are tested in
 * containers.test.ts; this stand-in covers the edge cases quickly.
 */

export const BRIDGE = 'br0';
const V4 = (n: number) => `10.77.0.${n}`;
const V6 = (n: number) => `fd77::${n}`;

export interface StandIn {
  ns: string;
  /** The host-side veth, the port of the bridge. */
  port: string;
  v4: string;
  v6: string;
}

/** Before the daemon starts: INTERFACE names the bridge. */
export async function nodeBridge(world: Pick<Pair, 'node' | 'remote'>): Promise<void> {
  const n = world.node.ns;
  const ip = (...args: string[]) => runOk('ip', ['-n', n, ...args]);
  await ip('link', 'add', BRIDGE, 'type', 'bridge');
  await ip('addr', 'add', `${V4(1)}/24`, 'dev', BRIDGE);
  await ip('addr', 'add', `${V6(1)}/64`, 'dev', BRIDGE, 'nodad');
  await ip('link', 'set', BRIDGE, 'up');
  for (const s of ['net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']) await nsRun(n, 'sysctl', ['-qw', s]);
  // The remote reaches the containers' IPv6 subnet through the node (routed, no NAT), like a
  // routed IPv6 container network; IPv4 is masqueraded, like docker0.
  await runOk('ip', ['-n', world.remote.ns, 'route', 'add', 'fd77::/64', 'via', world.node.v6]);
  await nftIn(n, [
    'table ip np_test_nat {',
    '  chain pre { type nat hook prerouting priority -100; policy accept;',
    `    iifname "${world.node.ifname}" tcp dport 8080 dnat to ${V4(2)}:80`,
    '  }',
    '  chain post { type nat hook postrouting priority 100; policy accept;',
    `    ip saddr 10.77.0.0/24 oifname "${world.node.ifname}" masquerade`,
    '  }',
    '}',
  ]);
}

/** A "container": its own namespace, eth0 on the node's bridge, default routes via it. */
export async function standIn(world: World, n: number): Promise<StandIn> {
  const ns = await createNamespace(`c${n}`);
  const port = `vc${n}-${process.pid % 1000}`.slice(0, 15);
  try {
    await runOk('ip', ['link', 'add', port, 'netns', world.node.ns, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await runOk('ip', ['-n', world.node.ns, 'link', 'set', port, 'master', BRIDGE, 'up']);
    await runOk('ip', ['-n', ns, 'addr', 'add', `${V4(n)}/24`, 'dev', 'eth0']);
    await runOk('ip', ['-n', ns, 'addr', 'add', `${V6(n)}/64`, 'dev', 'eth0', 'nodad']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', V4(1)]);
    await runOk('ip', ['-n', ns, '-6', 'route', 'add', 'default', 'via', V6(1)]);
  } catch (e) {
    await destroyNamespace(ns);
    throw e;
  }
  return { ns, port, v4: V4(n), v6: V6(n) };
}

async function nftIn(ns: string, lines: string[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'netprof-nat-'));
  try {
    writeFileSync(join(dir, 'rules.nft'), `${lines.join('\n')}\n`);
    await runOk('ip', ['netns', 'exec', ns, 'nft', '-f', join(dir, 'rules.nft')]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Our link tables left in the node namespace (none once a link's job ended). */
export async function linkTables(ns: string): Promise<string[]> {
  const r = await nsRun(ns, 'nft', ['-j', 'list', 'tables', 'netdev']);
  return (JSON.parse(r.stdout || '{"nftables":[]}').nftables as Array<{ table?: { name: string } }>).flatMap((i) => (i.table && i.table.name.startsWith('netprof') ? [i.table.name] : []));
}
