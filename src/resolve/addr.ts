import { isIPv4, isIPv6 } from 'node:net';
import type { ConnKey, Family } from '../connection.js';

/**
 * One spelling per endpoint, whatever produced it (bpftrace's ntop, /proc hex, the capture's
 * packet bytes): dotted IPv4, WHATWG/RFC 5952 IPv6, and IPv4-mapped IPv6 folded to IPv4 —
 * a dual-stack socket talking IPv4 sends IPv4 packets, so the capture sees family 4.
 */
export function canonicalAddr(addr: string): { family: Family; addr: string } {
  const bare = addr.replace(/%.*$/, '');
  if (isIPv4(bare)) return { family: 4, addr: bare };
  if (!isIPv6(bare)) throw new Error(`not an IP address: ${JSON.stringify(addr)}`);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped) return { family: 4, addr: mapped[1]! };
  const host = new URL(`http://[${bare}]/`).hostname.slice(1, -1);
  const hexMapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (hexMapped) {
    const hi = parseInt(hexMapped[1]!, 16);
    const lo = parseInt(hexMapped[2]!, 16);
    return { family: 4, addr: `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}` };
  }
  return { family: 6, addr: host };
}

/** The key string used by every map in resolve/: canonical addresses, local end first. */
export function tupleId(localAddr: string, localPort: number, remoteAddr: string, remotePort: number): string {
  const l = canonicalAddr(localAddr);
  const r = canonicalAddr(remoteAddr);
  return `${l.family}|${l.addr}|${localPort}|${r.addr}|${remotePort}`;
}

export function keyId(k: ConnKey): string {
  return tupleId(k.localAddr, k.localPort, k.remoteAddr, k.remotePort);
}

/** Wildcard addresses a listener may be bound to that accept connections for `addr`. */
export function isWildcard(addr: string): boolean {
  return addr === '0.0.0.0' || addr === '::';
}
