import type { ConnKey } from '../connection.js';
import { trafficAddress } from '../address.js';

/** One spelling per endpoint, whatever produced it (bpftrace's ntop, /proc hex, the capture's
 * packet bytes); IPv4-mapped IPv6 folded to IPv4, as the capture sees such traffic. */
export const canonicalAddr = trafficAddress;

/** The key string used by every map in resolve/: canonical addresses, local end first. */
export function tupleId(localAddr: string, localPort: number, remoteAddr: string, remotePort: number): string {
  const l = canonicalAddr(localAddr);
  const r = canonicalAddr(remoteAddr);
  return [l.family, l.addr, localPort, r.addr, remotePort].join('|'); // flat: see keyString
}

export function keyId(k: ConnKey): string {
  return tupleId(k.localAddr, k.localPort, k.remoteAddr, k.remotePort);
}

/** Wildcard addresses a listener may be bound to that accept connections for `addr`. */
export function isWildcard(addr: string): boolean {
  return addr === '0.0.0.0' || addr === '::';
}
