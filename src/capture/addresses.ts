import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';

/**
 * Address text in one canonical form, so that a key built from packet bytes equals a key built
 * from `ss`, os.networkInterfaces() or Node sockets: dotted IPv4, RFC 5952 IPv6 (lower case,
 * longest zero run compressed), IPv4-mapped IPv6 as ::ffff:a.b.c.d as Node and ss print it.
 */

export function formatIPv4(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

export function formatIPv6(b: Uint8Array, off: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((b[off + 2 * i]! << 8) | b[off + 2 * i + 1]!);
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

/** The canonical spelling of an address, or an error for text that is not one. */
export function normalizeAddress(text: string): string {
  if (isIPv4(text)) return text;
  return formatIPv6(parseIPv6(text), 0);
}

/**
 * The host's own addresses — how capture tells "sent" from "received" (the original compared
 * MAC addresses, which is wrong on loopback and on any interface sharing a MAC). The daemon's
 * caller refreshes it when interfaces change; it must describe the network namespace whose
 * traffic is captured, which is the daemon's own.
 */
export class LocalAddresses {
  private set = new Set<string>();

  constructor(addresses: Iterable<string> = []) {
    this.replace(addresses);
  }

  /** Every address of this host's interfaces, as os.networkInterfaces() sees them now. */
  static fromSystem(): LocalAddresses {
    const la = new LocalAddresses();
    la.refreshFromSystem();
    return la;
  }

  refreshFromSystem(): void {
    const found: string[] = [];
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) found.push(a.address);
    }
    this.replace(found);
  }

  replace(addresses: Iterable<string>): void {
    const next = new Set<string>();
    for (const a of addresses) next.add(normalizeAddress(a));
    this.set = next;
  }

  /** Takes canonical text (as decode produces). All of 127/8 is local on Linux, not just .1. */
  has(addr: string): boolean {
    return this.set.has(addr) || addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.');
  }

  list(): string[] {
    return [...this.set];
  }
}
