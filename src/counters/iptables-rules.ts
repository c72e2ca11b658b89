import type { Family } from '../connection.js';
import type { CounterOwner } from './engine.js';
import { canonicalAddr, ownerTag, parseOwnerTag, type Tuple } from './tuple.js';

/**
 * The iptables engine's words, with no I/O: rule lines for `iptables-restore --noflush` and a
 * parser of `iptables -x -v -n -L <chain>`.
 */

export const COMMENT_PREFIX = 'netprof ';

/** A counting rule (no target) for one direction; the comment names the owner. */
export function ruleSpec(t: Tuple, owner: CounterOwner): string {
  const bits = t.family === 4 ? 32 : 128;
  return `-p tcp -s ${t.saddr}/${bits} -d ${t.daddr}/${bits} --sport ${t.sport} --dport ${t.dport} -m comment --comment ${restoreQuote(COMMENT_PREFIX + ownerTag(owner))}`;
}

/** Quoting as iptables-restore's tokenizer reads it: inside double quotes, `\` escapes `"` and `\`. */
export function restoreQuote(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(s)) throw new Error('comment contains a control character');
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** A restore file for the filter table; lines are applied in order, atomically. */
export function restoreFile(lines: readonly string[]): string {
  return ['*filter', ...lines, 'COMMIT', ''].join('\n');
}

export interface ListedRule {
  tuple: Tuple;
  packets: number;
  bytes: number;
  owner?: CounterOwner;
}

// pkts bytes [target] prot opt in out source destination tcp spt:N dpt:N /* comment */
const RULE = /^\s*(\d+)\s+(\d+)\s+.*?\s(\S+)\s+(\S+)\s+tcp spt:(\d+) dpt:(\d+)(?: \/\* (.*) \*\/)?\s*$/;

/** Our rules in a chain listing. Ports are whole fields (the original's grep took 8080 for 80);
 * lines that are not a netprof counting rule are ignored. */
export function parseChainListing(family: Family, text: string): ListedRule[] {
  const rules: ListedRule[] = [];
  for (const line of text.split('\n')) {
    const m = RULE.exec(line);
    if (!m) continue;
    const comment = m[7];
    if (comment === undefined || !comment.startsWith(COMMENT_PREFIX)) continue;
    const addr = (a: string): string => canonicalAddr(family, a.replace(/\/(32|128)$/, ''));
    const owner = parseOwnerTag(comment.slice(COMMENT_PREFIX.length));
    rules.push({
      tuple: { family, saddr: addr(m[3]!), sport: Number(m[5]), daddr: addr(m[4]!), dport: Number(m[6]) },
      packets: Number(m[1]),
      bytes: Number(m[2]),
      ...(owner ? { owner } : {}),
    });
  }
  return rules;
}
