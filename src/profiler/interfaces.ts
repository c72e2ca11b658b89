import { networkInterfaces } from 'node:os';
import type { ConnKey } from '../connection.js';
import type { LocalAddresses } from '../capture/index.js';

/**
 * Which configured interface a connection belongs to when no packet told us (late registration,
 * recovered counters): loopback when both ends are this host, else the interface holding the
 * local address, else the first configured one. Decides the log file.
 */
export function interfaceChooser(configured: readonly string[], local: LocalAddresses): (key: ConnKey) => string {
  const first = configured[0]!;
  if (configured.includes('any')) return () => 'any';
  return (key) => {
    if (local.has(key.remoteAddr) && configured.includes('lo')) return 'lo';
    const byIface = networkInterfaces();
    for (const name of configured) {
      if (byIface[name]?.some((a) => a.address.replace(/%.*$/, '') === key.localAddr)) return name;
    }
    return first;
  };
}
