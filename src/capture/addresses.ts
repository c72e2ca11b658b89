import { addressText } from '../address.js';
import { networkInterfaces } from 'node:os';

export { formatIPv4, formatIPv6, parseIPv6 } from '../address.js';

/** The canonical spelling of an address, or an error for text that is not one. */
export function normalizeAddress(text: string): string {
  return addressText(text);
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
