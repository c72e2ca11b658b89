import type { ConnKey } from '../../src/connection.js';
import type { Counts } from '../../src/counters/engine.js';
import { canonicalAddr } from '../../src/counters/tuple.js';
import { nsRun } from './netns.js';

/**
 * An independent count of the same bytes: conntrack's per-flow accounting inside a test
 * namespace. Conntrack only tracks in a namespace once a rule there uses it, hence the tiny
 * `table inet oracle` with a `ct state` rule at both hooks the engines count at.
 */

export async function startOracle(ns: string): Promise<void> {
  const steps: string[][] = [
    ['sysctl', '-qw', 'net.netfilter.nf_conntrack_acct=1'],
    ['nft', 'add', 'table', 'inet', 'oracle'],
    ['nft', 'add', 'chain', 'inet', 'oracle', 'out', '{ type filter hook output priority 0; }'],
    ['nft', 'add', 'chain', 'inet', 'oracle', 'in', '{ type filter hook input priority 0; }'],
    ['nft', 'add', 'rule', 'inet', 'oracle', 'out', 'ct', 'state', 'new', 'counter'],
    ['nft', 'add', 'rule', 'inet', 'oracle', 'in', 'ct', 'state', 'new', 'counter'],
  ];
  for (const [file, ...args] of steps) {
    const r = await nsRun(ns, file!, args);
    if (r.code !== 0) throw new Error(`oracle: ${file} ${args.join(' ')}: ${r.stderr}`);
  }
}

interface Direction {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  packets: number;
  bytes: number;
}

interface Flow {
  orig: Direction;
  reply: Direction;
}

/** All TCP flows conntrack knows in the namespace. */
export async function oracleFlows(ns: string): Promise<Flow[]> {
  const flows: Flow[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const r = await nsRun(ns, 'conntrack', ['-L', '-o', 'extended', '-p', 'tcp', '-f', family]);
    if (r.code !== 0) throw new Error(`conntrack -L: ${r.stderr}`);
    const fam = family === 'ipv4' ? 4 : 6;
    for (const line of r.stdout.split('\n')) {
      const kv = [...line.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!] as const);
      const get = (name: string, nth: number): string | undefined => kv.filter(([k]) => k === name)[nth]?.[1];
      if (get('src', 0) === undefined || get('bytes', 1) === undefined) continue;
      const side = (nth: number) => ({
        src: canonicalAddr(fam, get('src', nth)!),
        dst: canonicalAddr(fam, get('dst', nth)!),
        sport: Number(get('sport', nth)),
        dport: Number(get('dport', nth)),
        packets: Number(get('packets', nth)),
        bytes: Number(get('bytes', nth)),
      });
      flows.push({ orig: side(0), reply: side(1) });
    }
  }
  return flows;
}

/** Conntrack's counts of a connection seen from key's local end; undefined if not tracked. */
export function oracleCounts(flows: readonly Flow[], key: ConnKey): Counts | undefined {
  const l = canonicalAddr(key.family, key.localAddr);
  const r = canonicalAddr(key.family, key.remoteAddr);
  for (const f of flows) {
    const o = f.orig;
    if (o.src === l && o.sport === key.localPort && o.dst === r && o.dport === key.remotePort) {
      return { bytesOut: o.bytes, packetsOut: o.packets, bytesIn: f.reply.bytes, packetsIn: f.reply.packets };
    }
    if (o.src === r && o.sport === key.remotePort && o.dst === l && o.dport === key.localPort) {
      return { bytesOut: f.reply.bytes, packetsOut: f.reply.packets, bytesIn: o.bytes, packetsIn: o.packets };
    }
    // Behind DNAT (a published port) the local end is the reply's source, not the original's
    // destination, which is the address the remote dialled.
    const p = f.reply;
    if (p.src === l && p.sport === key.localPort && p.dst === r && p.dport === key.remotePort) {
      return { bytesOut: p.bytes, packetsOut: p.packets, bytesIn: o.bytes, packetsIn: o.packets };
    }
  }
  return undefined;
}
