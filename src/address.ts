import { isIP, isIPv4, isIPv6 } from 'node:net';
import type { Family } from './connection.js';

/**
 * Address text in one canonical form, shared by capture, resolve and counters, so that a key built from packet bytes equals a key built
 * from `ss`, os.networkInterfaces() or Node sockets: dotted IPv4, RFC 5952 IPv6 (lower case,
 * longest zero run compressed), IPv4-mapped IPv6 as ::ffff:a.b.c.d as Node and ss print it.
 */

/**
 * Memos for the spellings: a host talks with few addresses, but every packet, eBPF event and
 * /proc row spells one again — formatting was a hot spot per connection, and each connection
 * kept its own copies of the same few strings (six per connection). Bounded: emptied when full.
 */
const MEMO_MAX = 4096;

function remember<K, V>(memo: Map<K, V>, key: K, value: V): V {
  if (memo.size >= MEMO_MAX) memo.clear();
  memo.set(key, value);
  return value;
}

const v4Text = new Map<number, string>();
const v6Text = new Map<string, string>();

export function formatIPv4(b: Uint8Array, off: number): string {
  const n = ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
  return v4Text.get(n) ?? remember(v4Text, n, [b[off], b[off + 1], b[off + 2], b[off + 3]].join('.'));
}

export function formatIPv6(b: Uint8Array, off: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((b[off + 2 * i]! << 8) | b[off + 2 * i + 1]!);
  // The eight words as eight UTF-16 units: a short key, cheaper than the formatting.
  const key = String.fromCharCode(words[0]!, words[1]!, words[2]!, words[3]!, words[4]!, words[5]!, words[6]!, words[7]!);
  return v6Text.get(key) ?? remember(v6Text, key, spellIPv6(words, b, off));
}

function spellIPv6(words: readonly number[], b: Uint8Array, off: number): string {
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${formatIPv4(b, off + 12)}`;
  }
  // Longest run of at least two zero words; the first one wins a tie (RFC 5952 4.2.3).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** Parses IPv6 text (any valid spelling, zone id dropped) into 16 bytes. */
export function parseIPv6(text: string): Uint8Array {
  const addr = text.replace(/%.*$/, '');
  if (!isIPv6(addr)) throw new Error(`not an IPv6 address: ${text}`);
  const out = new Uint8Array(16);
  let tail = addr;
  let v4: number[] | undefined;
  const lastColon = tail.lastIndexOf(':');
  if (tail.indexOf('.', lastColon) >= 0) {
    v4 = tail.slice(lastColon + 1).split('.').map(Number);
    tail = `${tail.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = tail.split('::');
  const hw = head ? head.split(':') : [];
  const tw = rest === undefined ? [] : rest ? rest.split(':') : [];
  const words = [...hw, ...Array<string>(8 - hw.length - tw.length).fill('0'), ...tw].map((w) => parseInt(w, 16));
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  if (v4) out.set(v4, 12);
  return out;
}

/** An address in its canonical text: dotted IPv4, RFC 5952 IPv6; IPv4-mapped IPv6 stays IPv6
 * (::ffff:a.b.c.d), as Node and ss print it. Throws for text that is not an address. */
export function addressText(text: string): string {
  return canonical.get(text) ?? remember(canonical, text, spell(text));
}

/** Input → its canonical text; an input already canonical maps to itself, so that every key
 * built from it shares that one string. */
const canonical = new Map<string, string>();

function spell(text: string): string {
  if (isIPv4(text)) {
    const t = text.split('.').map(Number).join('.');
    return t === text ? text : t;
  }
  const t = formatIPv6(parseIPv6(text), 0);
  return t === text ? text : t;
}

/**
 * The address a connection's traffic carries: as addressText(), but IPv4-mapped IPv6 folded to
 * IPv4 — a dual-stack socket talking IPv4 sends IPv4 packets, so capture sees family 4.
 */
export function trafficAddress(text: string): Readonly<{ family: Family; addr: string }> {
  return traffic.get(text) ?? remember(traffic, text, Object.freeze(trafficOf(text)));
}

const traffic = new Map<string, Readonly<{ family: Family; addr: string }>>();

function trafficOf(text: string): { family: Family; addr: string } {
  const bare = text.replace(/%.*$/, '');
  if (isIPv4(bare)) return { family: 4, addr: addressText(bare) };
  if (!isIPv6(bare)) throw new Error(`not an IP address: ${JSON.stringify(text)}`);
  const bytes = parseIPv6(bare);
  if (bytes.subarray(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return { family: 4, addr: formatIPv4(bytes, 12) };
  return { family: 6, addr: formatIPv6(bytes, 0) };
}

/** node:net's isIP() (4, 6, or 0 for text that is not an address), memoised: the tracer's
 * lines check both addresses of every event. */
export function textFamily(text: string): 0 | 4 | 6 {
  return families.get(text) ?? remember(families, text, isIP(text) as 0 | 4 | 6);
}

const families = new Map<string, 0 | 4 | 6>();
