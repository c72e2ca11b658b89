import type { Family } from '../connection.js';
import type { Counts } from './engine.js';
import { canonicalAddr, type Tuple } from './tuple.js';

/**
 * What the nftables engine installs and says to nft, with no I/O: the table's text (fixed
 * words, names checked below) and element batches as JSON (so that no job id, whatever its
 * quotes, `#`, `;` or `$()`, can change a command's meaning).
 */

export interface NftLayout {
  table: string;
  /** Interfaces whose SYN / SYN-ACK create elements; undefined: all. */
  interfaces?: readonly string[];
  flowsSize: number;
  ownersSize: number;
  /** Hook priority of both chains (after the usual filter at 0: counts what the firewall let pass). */
  priority: number;
  /** A job's link (a container's veth or a VM's tap, host side): the table is then of the
   * netdev family, its chains hooked on that device's ingress (from the job) and egress (to
   * the job), so every frame the job exchanges is counted once, bridged, routed or NATed
   * later, with the job's own addresses. */
  link?: string;
  /** Seconds a failed datapath `add` is remembered in pend4/pend6 (PEND_TIMEOUT_S if omitted):
   * the retry's window, and how long begin() can still tell a retried element from one that
   * counted its handshake. */
  pendTimeout?: number;
}

/** Default pendTimeout: a begin more than this after the SYN (LATE_GRACE's default is 30 s)
 * would take a retried element for one that counted the handshake. */
export const PEND_TIMEOUT_S = 120;
/** pendTimeout for a LATE_GRACE (s): a claim that late, plus a minute of the daemon's lag. */
export const pendTimeoutFor = (lateGrace = 0): number => Math.max(PEND_TIMEOUT_S, lateGrace + 60);

export type TableFamily = 'inet' | 'netdev';
export const tableFamily = (l: Pick<NftLayout, 'link'>): TableFamily => (l.link === undefined ? 'inet' : 'netdev');
/** The chains tableText installs, by the layout's family. */
export const chainsOf = (l: Pick<NftLayout, 'link'>): readonly string[] => (l.link === undefined ? ['output', 'input'] : ['ingress', 'egress']);
/** Egress on an Ethernet link counts the frame with its 14-byte header; ingress and the inet
 * hooks count from the IP header. Taken off each packet read from an egress element. */
export const ETHERNET_HEADER = 14;

export const flowsSet = (f: Family): string => (f === 4 ? 'flows4' : 'flows6');
export const ownersSet = (f: Family): string => (f === 4 ? 'owners4' : 'owners6');
/** Tuples whose datapath `add` to the flows set failed (counter-less: see countingRules). */
export const pendSet = (f: Family): string => (f === 4 ? 'pend4' : 'pend6');

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/;
const IFNAME = /^[A-Za-z0-9_.@+-]{1,15}$/;

export function checkLayout(l: NftLayout): void {
  if (!NAME.test(l.table)) throw new Error(`bad nftables table name ${JSON.stringify(l.table)}`);
  for (const i of [...(l.interfaces ?? []), ...(l.link === undefined ? [] : [l.link])]) if (!IFNAME.test(i)) throw new Error(`bad interface name ${JSON.stringify(i)}`);
  if (l.interfaces && l.interfaces.length === 0) throw new Error('empty interface list: nothing would be counted');
  for (const n of [l.flowsSize, l.ownersSize, l.priority, l.pendTimeout ?? PEND_TIMEOUT_S]) if (!Number.isInteger(n)) throw new Error(`not an integer: ${n}`);
}

/** `table …; delete table …`: removes our table if it exists, in the same transaction as what follows. */
export function dropTableText(table: string, family: TableFamily = 'inet'): string {
  return `table ${family} ${table}\ndelete table ${family} ${table}\n`;
}

/**
 * The whole table, replacing any previous one atomically. Each TCP packet is counted once, in
 * the element of its own direction (rules in countingRules):
 *  - a SYN (no ACK) first deletes both directions' elements (left over from an earlier
 *    connection on the same 4-tuple, which would otherwise add its bytes), then `add` creates
 *    the originator's element and counts the SYN;
 *  - a SYN-ACK `add`s the responder's element (counted; a retransmitted one is counted too:
 *    `add` on an existing element only counts);
 *  - every other packet is counted by the lookup when its element exists;
 *  - an `add` the kernel could not do (its per-CPU counter, docs/counters.md) leaves the tuple
 *    in pend4/6, and the tuple's next packets retry it.
 * Loopback packets pass output and input; they are counted at output only (`iif lo` also covers
 * traffic to the host's own non-127 addresses, which is routed via lo).
 */
export function tableText(l: NftLayout): string {
  checkLayout(l);
  if (l.link !== undefined) return linkTableText(l, l.link);
  const ifs = (dir: 'iifname' | 'oifname'): string =>
    l.interfaces ? ` ${dir} { ${l.interfaces.map((i) => `"${i}"`).join(', ')} }` : '';
  const rules = (dir: 'iifname' | 'oifname'): string[] => countingRules((f) => `meta nfproto ${f === 4 ? 'ipv4' : 'ipv6'} meta l4proto tcp`, ifs(dir));
  return [
    dropTableText(l.table).trimEnd(),
    `table inet ${l.table} {`,
    ...sets(l),
    `  chain output { type filter hook output priority ${l.priority}; policy accept;`,
    ...rules('oifname').map((r) => `    ${r}`),
    '  }',
    `  chain input { type filter hook input priority ${l.priority}; policy accept;`,
    '    iif "lo" return',
    ...rules('iifname').map((r) => `    ${r}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * Each packet counted in its own direction's element (see tableText). A dynamic-set `add` that
 * cannot allocate its element ends its rule there (NFT_BREAK) and evaluation goes on with the
 * next rule, while one that succeeds runs on to the rule's `accept`: so the rule after each
 * `add` runs only when the add failed, and records the tuple in the counter-less pend set (a
 * slab allocation, not the per-CPU counter that fails). `accept` ends only our chain (later
 * hooks and chains still see the packet) and keeps a counted packet off the retry's lookup:
 * the retry costs a lookup only to packets that have no element, on the configured interfaces.
 */
function countingRules(proto: (f: Family) => string, ifs = ''): string[] {
  const parts = ([4, 6] as const).map((f) => {
    const ip = f === 4 ? 'ip' : 'ip6';
    const fwd = `${ip} saddr . tcp sport . ${ip} daddr . tcp dport`;
    const back = `${ip} daddr . tcp dport . ${ip} saddr . tcp sport`;
    const s = `@${flowsSet(f)}`;
    const p = `@${pendSet(f)}`;
    const syn = `${proto(f)} tcp flags & (syn|ack) == syn${ifs}`;
    const synAck = `${proto(f)} tcp flags & (syn|ack) == syn|ack${ifs}`;
    return {
      later: [
        // The common case: an element exists, the packet is counted, nothing else runs.
        `${proto(f)} tcp flags & syn == 0 ${fwd} ${s} accept`,
        // No element, but its add failed earlier: try again (counts this packet when it works).
        // Only where adds are made: other interfaces' packets skip the lookup.
        `${proto(f)} tcp flags & syn == 0${ifs} ${fwd} ${p} add ${s} { ${fwd} }`,
      ],
      opening: [
        // A new connection also forgets an earlier one's failed adds, which would mark it partial.
        `${syn} delete ${s} { ${back} } delete ${s} { ${fwd} } delete ${p} { ${back} } delete ${p} { ${fwd} } add ${s} { ${fwd} } accept`,
        `${syn} add ${p} { ${fwd} }`,
        `${synAck} add ${s} { ${fwd} } accept`,
        `${synAck} add ${p} { ${fwd} }`,
      ],
    };
  });
  // Packets other than a SYN meet only their family's two rules: an uncounted one then leaves at
  // the accept below instead of passing every SYN rule; and what is not TCP leaves at once.
  return ['meta l4proto != tcp accept', ...parts.flatMap((x) => x.later), 'tcp flags & syn == 0 accept', ...parts.flatMap((x) => x.opening)];
}

function sets(l: NftLayout): string[] {
  const pend = ` flags dynamic,timeout; timeout ${l.pendTimeout ?? PEND_TIMEOUT_S}s;`;
  const set = (name: string, f: Family, extra: string, size: number): string =>
    `  set ${name} { type ${f === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_service . ${f === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_service; size ${size};${extra} }`;
  return [
    set('flows4', 4, ' flags dynamic; counter;', l.flowsSize),
    set('flows6', 6, ' flags dynamic; counter;', l.flowsSize),
    set('owners4', 4, '', l.ownersSize),
    set('owners6', 6, '', l.ownersSize),
    // No counter (nothing per-CPU to allocate); entries expire, so the set needs no sweep.
    set('pend4', 4, pend, l.flowsSize),
    set('pend6', 6, pend, l.flowsSize),
  ];
}

/** A job's link: the same sets and rules on the device's ingress and egress hooks. */
function linkTableText(l: NftLayout, device: string): string {
  const rules = countingRules((f) => `meta protocol ${f === 4 ? 'ip' : 'ip6'} meta l4proto tcp`);
  const chain = (hook: 'ingress' | 'egress'): string[] => [
    `  chain ${hook} { type filter hook ${hook} device "${device}" priority ${l.priority}; policy accept;`,
    ...rules.map((r) => `    ${r}`),
    '  }',
  ];
  return [dropTableText(l.table, 'netdev').trimEnd(), `table netdev ${l.table} {`, ...sets(l), ...chain('ingress'), ...chain('egress'), '}', ''].join('\n');
}

export interface ElementSpec {
  tuple: Tuple;
  comment?: string;
}

type Json = Record<string, unknown>;

function elementCmd(op: 'add' | 'delete', family: TableFamily, table: string, set: string, elems: readonly ElementSpec[]): Json {
  const elem = elems.map(({ tuple: t, comment }) => {
    const val = { concat: [t.saddr, t.sport, t.daddr, t.dport] };
    return comment === undefined ? val : { elem: { val, comment } };
  });
  return { [op]: { element: { family, table, name: set, elem } } };
}

/** One `nft -j -f` batch: a list of element additions and deletions, applied atomically. */
export class ElementBatch {
  private readonly cmds: Json[] = [];
  constructor(
    private readonly table: string,
    private readonly family: TableFamily = 'inet',
  ) {}

  add(set: string, elems: readonly ElementSpec[]): this {
    if (elems.length) this.cmds.push(elementCmd('add', this.family, this.table, set, elems));
    return this;
  }

  delete(set: string, elems: readonly ElementSpec[]): this {
    if (elems.length) this.cmds.push(elementCmd('delete', this.family, this.table, set, elems));
    return this;
  }

  get empty(): boolean {
    return this.cmds.length === 0;
  }

  /** One line of ASCII: job ids in comments travel as \u escapes, which nft's JSON parser
   * decodes, so no locale or line editor between us and nft can alter them. */
  toJson(): string {
    return JSON.stringify({ nftables: this.cmds }).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  }
}

export interface SetElement {
  tuple: Tuple;
  counter?: { packets: number; bytes: number };
  comment?: string;
}

/** Elements of our sets in `nft -j list set|table` output, keyed by set name; addresses canonical. */
export function parseSets(jsonText: string): Map<string, SetElement[]> {
  const doc = JSON.parse(jsonText) as { nftables?: unknown };
  if (!Array.isArray(doc.nftables)) throw new Error('nft -j output without an "nftables" array');
  const sets = new Map<string, SetElement[]>();
  for (const item of doc.nftables as Json[]) {
    const set = item.set as Json | undefined;
    if (!set || typeof set.name !== 'string') continue;
    const type = set.type as unknown;
    const family: Family | undefined = Array.isArray(type) && type[0] === 'ipv4_addr' ? 4 : Array.isArray(type) && type[0] === 'ipv6_addr' ? 6 : undefined;
    if (!family) continue;
    const elems = Array.isArray(set.elem) ? (set.elem as unknown[]) : [];
    sets.set(set.name, elems.map((e) => parseElement(family, e)));
  }
  return sets;
}

function parseElement(family: Family, e: unknown): SetElement {
  const wrapped = (e as Json | null)?.elem as Json | undefined;
  const val = (wrapped ? wrapped.val : e) as Json | undefined;
  const parts = val?.concat;
  if (!Array.isArray(parts) || parts.length !== 4) throw new Error(`unexpected set element ${JSON.stringify(e)}`);
  const port = (p: unknown): number => {
    const n = typeof p === 'number' ? p : typeof p === 'string' && /^\d+$/.test(p) ? Number(p) : NaN;
    if (!Number.isInteger(n)) throw new Error(`unexpected port ${JSON.stringify(p)} (service names are not expected in -j output)`);
    return n;
  };
  const out: SetElement = {
    tuple: {
      family,
      saddr: canonicalAddr(family, String(parts[0])),
      sport: port(parts[1]),
      daddr: canonicalAddr(family, String(parts[2])),
      dport: port(parts[3]),
    },
  };
  const counter = wrapped?.counter as Json | undefined;
  if (counter) out.counter = { packets: Number(counter.packets), bytes: Number(counter.bytes) };
  if (typeof wrapped?.comment === 'string') out.comment = wrapped.comment;
  return out;
}

/** A connection's counts from its two directions' elements (a missing one counts zero). */
export function countsOf(out?: SetElement, inn?: SetElement): Counts {
  return {
    bytesOut: out?.counter?.bytes ?? 0,
    packetsOut: out?.counter?.packets ?? 0,
    bytesIn: inn?.counter?.bytes ?? 0,
    packetsIn: inn?.counter?.packets ?? 0,
  };
}
