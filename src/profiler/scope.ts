import type { ConnKey } from '../connection.js';
import { trafficAddress } from '../address.js';

/** What the scope needs to know of the host (the daemon's own namespace). */
export interface ScopeParts {
  /** INTERFACE as configured; `any` puts every interface in scope. */
  configured: readonly string[];
  /** Whether an address is this host's own. */
  isLocal: (addr: string) => boolean;
  /** The kernel's routing answer: the interface this connection's packets leave by. */
  deviceFor: (key: ConnKey) => Promise<string | undefined>;
  /** The daemon's own TCP API listener (undefined with LISTEN = none). */
  api?: { addr: string; port: number };
  /** A job's link (container veth, VM tap) in scope under this name: every connection on it
   * crosses it, however it was found. */
  link?: string;
}

export type ScopeAnswer = { iface: string } | { iface: undefined; why: 'own-api' | 'not-configured' | 'no-route'; device?: string };

/**
 * The one rule for which connections are a job's: those that cross a configured interface
 * (every interface with INTERFACE = any), never the daemon's own API. A captured SYN names its
 * interface; a connection found any other way (late registration from /proc, a capture gap, a
 * crashed run's counters) is placed by the kernel's route for its remote address, and a
 * connection to this host's own addresses crosses `lo`. Decides the log file too: a record goes
 * to the log of the interface its connection crosses.
 */
export class Scope {
  private readonly any: boolean;
  /** The API's address in canonical form; undefined when it listens on every address. */
  private readonly apiAddr: string | undefined;

  constructor(private readonly parts: ScopeParts) {
    this.any = parts.configured.includes('any');
    const a = parts.api?.addr;
    this.apiAddr = a === undefined || a === '0.0.0.0' || a === '::' ? undefined : canonical(a);
  }

  /** Either end is the daemon's API listener: the scheduler (or a job step) talking to us. */
  isOwnApi(key: ConnKey): boolean {
    const api = this.parts.api;
    if (!api) return false;
    const matches = (addr: string, port: number, local: boolean): boolean =>
      port === api.port && local && (this.apiAddr === undefined || canonical(addr) === this.apiAddr);
    return matches(key.localAddr, key.localPort, true) || matches(key.remoteAddr, key.remotePort, this.parts.isLocal(key.remoteAddr));
  }

  /** The scope of a job's link logged under `iface`: the same own-API rule, everything else on it in scope. */
  forLink(iface: string): Scope {
    return new Scope({ ...this.parts, configured: [iface], link: iface });
  }

  /** For a connection seen on the wire: its capture interface is configured by construction. */
  ofCaptured(key: ConnKey, capturedOn: string): ScopeAnswer {
    if (this.isOwnApi(key)) return { iface: undefined, why: 'own-api' };
    return { iface: capturedOn };
  }

  /** For a connection found without a packet: where the kernel routes it. */
  async ofFound(key: ConnKey): Promise<ScopeAnswer> {
    if (this.isOwnApi(key)) return { iface: undefined, why: 'own-api' };
    if (this.parts.link !== undefined) return { iface: this.parts.link };
    if (this.any) return { iface: 'any' };
    const device = this.parts.isLocal(key.remoteAddr) ? 'lo' : await this.parts.deviceFor(key);
    if (device === undefined) return { iface: undefined, why: 'no-route' };
    if (!this.parts.configured.includes(device)) return { iface: undefined, why: 'not-configured', device };
    return { iface: device };
  }
}

/** An address's one spelling (IPv4-mapped folded); text that is no address stays as it is. */
function canonical(addr: string): string {
  try {
    return trafficAddress(addr).addr;
  } catch {
    return addr;
  }
}
