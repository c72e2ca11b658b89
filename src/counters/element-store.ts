import type { Family } from '../connection.js';
import type { ElementSpec, SetElement } from './nft-ruleset.js';
import type { Tuple } from './tuple.js';

/**
 * How the nftables engine changes and reads the elements of its sets. Two implementations:
 * NetlinkStore (nf_tables messages from our own socket, through libnftnl) and NftStore (the nft
 * program's JSON in a long-lived session, the fallback). The engine's logic is the same over
 * both; only the cost differs (docs/counters.md).
 */

export interface StoreOp {
  op: 'add' | 'delete';
  set: string;
  /** All of one family (the set's). `delete` of an element that is not there refuses the
   * whole transaction, as `nft delete element` does. */
  elems: readonly ElementSpec[];
}

export interface ElementStore {
  readonly kind: 'netlink' | 'nft';
  /** All ops in one kernel transaction. False if the kernel refused it (then nothing changed,
   * and lastError says why). */
  apply(ops: readonly StoreOp[]): Promise<boolean>;
  readonly lastError: string;
  /** The elements with these keys, in order; undefined for a key not in the set. Throws if the
   * set itself is missing. */
  get(set: string, family: Family, tuples: readonly Tuple[]): Promise<Array<SetElement | undefined>>;
  /** Every element of the set; undefined if there is no such set (or table). */
  dump(set: string, family: Family): Promise<SetElement[] | undefined>;
  /** Rules in one of our chains (the engine's check for a flushed ruleset); undefined if the
   * table or chain is gone. Throws when it could not tell. */
  ruleCount(chain: string): Promise<number | undefined>;
  close(): Promise<void>;
}

/** Groups ops by kind and set, in the order given. */
export class ElementChanges {
  readonly ops: StoreOp[] = [];

  add(set: string, elems: readonly ElementSpec[]): this {
    if (elems.length) this.ops.push({ op: 'add', set, elems });
    return this;
  }

  delete(set: string, elems: readonly ElementSpec[]): this {
    if (elems.length) this.ops.push({ op: 'delete', set, elems });
    return this;
  }

  get empty(): boolean {
    return this.ops.length === 0;
  }
}
