import type { CounterEngine } from './engine.js';
import { IptablesEngine } from './iptables.js';
import { pendTimeoutFor } from './nft-ruleset.js';
import { NftablesEngine } from './nftables.js';

export type { BeginOutcome, CounterEngine, CounterOwner, Counts, Installed } from './engine.js';
export { IptablesEngine, type IptablesOptions } from './iptables.js';
export { NftablesEngine, type NftablesOptions } from './nftables.js';
export { pendTimeoutFor } from './nft-ruleset.js';

export type EngineKind = 'nftables' | 'iptables';

export interface EngineConfig {
  /** RULES_THRESHOLD. */
  capacity: number;
  /** Interfaces to count on (nftables; iptables counts every interface). */
  interfaces?: readonly string[];
  /** Kernel size of the flows sets (nftables): counted connections and the grace list's. */
  setSize?: number;
  /** ELEMENTS (nftables): netlink, nft, or auto. */
  elements?: 'auto' | 'netlink' | 'nft';
  /** LATE_GRACE (s): a late claim must still find a failed datapath add remembered (nftables). */
  lateGrace?: number;
}

/** The profiler's one entry point: ENGINE from the configuration → an engine. */
export function createCounterEngine(kind: EngineKind, config: EngineConfig): CounterEngine {
  switch (kind) {
    case 'nftables':
      return new NftablesEngine({
        capacity: config.capacity,
        interfaces: config.interfaces,
        setSize: config.setSize,
        elements: config.elements,
        pendTimeout: pendTimeoutFor(config.lateGrace),
      });
    case 'iptables':
      return new IptablesEngine({ capacity: config.capacity });
    default:
      throw new Error(`unknown counter engine ${JSON.stringify(kind)} (nftables or iptables)`);
  }
}
