import { formatIPv4, formatIPv6, parseIPv6 } from '../address.js';
import type { Family } from '../connection.js';
import type { ElementStore, StoreOp } from './element-store.js';
import { isNfsetError, loadNfset, type NfsetAddon, type NfsetDumped, type NfsetHandle, type NfsetOp } from './nfset-addon.js';
import type { ElementSpec, SetElement, TableFamily } from './nft-ruleset.js';
import type { Tuple } from './tuple.js';

/**
 * The elements through our own netfilter netlink socket (native/nfset): batched changes in one
 * transaction, reads by key (many keys per message), dumps only when a whole set is wanted.
 * Big reads and changes run on libuv's thread pool (a job's 20,000 keys take ~100 ms, a batch of
 * 1,000 connections' changes ~15 ms: the event loop must go on meanwhile); small ones are
 * synchronous, cheaper than a trip to the pool (docs/counters.md). Calls are queued here, one at a time on the socket, whoever makes them.
 */
/** linux/netfilter.h */
const NFPROTO_INET = 1;
const NFPROTO_NETDEV = 5;
/** Keyed reads and changes of at least this many keys go to the thread pool (measured:
 * docs/counters.md). */
export const ASYNC_MIN_KEYS = 64;

export class NetlinkStore implements ElementStore {
  readonly kind = 'netlink' as const;
  lastError = '';
  private readonly addon: NfsetAddon;
  private handle: NfsetHandle | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  /** netns: a name under /run/netns (ip netns), for tests; the socket is created inside it. */
  constructor(table: string, netns?: string, addonPath?: string, family: TableFamily = 'inet') {
    this.addon = loadNfset(addonPath);
    this.handle = this.addon.open(netns === undefined ? null : `/run/netns/${netns}`, table, family === 'inet' ? NFPROTO_INET : NFPROTO_NETDEV);
  }

  apply(ops: readonly StoreOp[]): Promise<boolean> {
    return this.exclusive(() => this.applyNow(ops));
  }

  private async applyNow(ops: readonly StoreOp[]): Promise<boolean> {
    const msgs: NfsetOp[] = ops
      .filter((o) => o.elems.length)
      .map((o) => {
        const family = o.elems[0]!.tuple.family;
        const comments = o.elems.some((e) => e.comment !== undefined) ? o.elems.map((e) => e.comment ?? null) : null;
        return [o.op === 'add' ? 0 : 2, o.set, keyLen(family), encodeKeys(family, o.elems), comments];
      });
    if (!msgs.length) return true;
    try {
      const keys = ops.reduce((n, o) => n + o.elems.length, 0);
      if (keys >= ASYNC_MIN_KEYS) await this.addon.applyAsync(this.open(), msgs);
      else this.addon.apply(this.open(), msgs);
      return true;
    } catch (e) {
      if (!isNfsetError(e)) throw e;
      this.lastError = e.message;
      return false;
    }
  }

  get(set: string, family: Family, tuples: readonly Tuple[]): Promise<Array<SetElement | undefined>> {
    if (!tuples.length) return Promise.resolve([]);
    return this.exclusive(async () => {
      const keys = encodeKeys(family, tuples.map((tuple) => ({ tuple })));
      const h = this.open();
      const [found, counters, comments] = tuples.length >= ASYNC_MIN_KEYS ? await this.addon.getAsync(h, set, keyLen(family), keys) : this.addon.get(h, set, keyLen(family), keys);
      return tuples.map((tuple, i) => (found[i] ? element(tuple, counters, comments, i) : undefined));
    });
  }

  dump(set: string, family: Family): Promise<SetElement[] | undefined> {
    return this.exclusive(() => this.dumpNow(set, family));
  }

  private async dumpNow(set: string, family: Family): Promise<SetElement[] | undefined> {
    let r: NfsetDumped;
    try {
      r = await this.addon.dumpAsync(this.open(), set);
    } catch (e) {
      if (isNfsetError(e) && e.code === 'ENOENT') return undefined;
      throw e;
    }
    const [keys, klen, counters, comments] = r;
    if (keys.length && klen !== keyLen(family)) throw new Error(`set ${set}: keys of ${klen} bytes, not IPv${family} 4-tuples`);
    const out: SetElement[] = [];
    for (let i = 0; i * klen < keys.length; i++) out.push(element(decodeKey(family, keys, i * klen), counters, comments, i));
    return out;
  }

  ruleCount(chain: string): Promise<number | undefined> {
    return this.exclusive(async () => {
      try {
        return this.addon.rules(this.open(), chain);
      } catch (e) {
        if (isNfsetError(e) && e.code === 'ENOENT') return undefined;
        throw e;
      }
    });
  }

  /** After the calls already queued. */
  close(): Promise<void> {
    return this.exclusive(async () => {
      if (this.handle) this.addon.close(this.handle);
      this.handle = undefined;
    });
  }

  /** Runs fn once every call queued before it has settled: the socket serves one at a time. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.tail.then(fn, fn);
    this.tail = r.catch(() => undefined);
    return r;
  }

  private open(): NfsetHandle {
    if (!this.handle) throw new Error('netlink element store is closed');
    return this.handle;
  }
}

function element(tuple: Tuple, counters: Float64Array, comments: Array<string | undefined>, i: number): SetElement {
  const e: SetElement = { tuple, counter: { packets: counters[2 * i]!, bytes: counters[2 * i + 1]! } };
  const c = comments[i];
  if (c !== undefined) e.comment = c;
  return e;
}

/** A concatenation's fields each take a whole number of 32-bit registers: addr . port(+2) . addr . port(+2). */
export const keyLen = (f: Family): number => (f === 4 ? 16 : 40);

export function encodeKeys(family: Family, elems: readonly ElementSpec[]): Buffer {
  const n = keyLen(family);
  const buf = Buffer.alloc(n * elems.length);
  elems.forEach(({ tuple: t }, i) => {
    if (t.family !== family) throw new Error(`IPv${t.family} tuple in an IPv${family} set`);
    const off = i * n;
    const a = n / 2; // second address
    if (family === 4) {
      writeIPv4(buf, off, t.saddr);
      writeIPv4(buf, off + a, t.daddr);
    } else {
      buf.set(parseIPv6(t.saddr), off);
      buf.set(parseIPv6(t.daddr), off + a);
    }
    buf.writeUInt16BE(t.sport, off + a - 4);
    buf.writeUInt16BE(t.dport, off + n - 4);
  });
  return buf;
}

/** Dotted-quad text into 4 bytes, read by hand: split and map made a 20,000-key read spend
 * 15 ms of the event loop just encoding. */
function writeIPv4(buf: Buffer, off: number, s: string): void {
  let octet = 0;
  let digits = 0;
  let field = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || octet > 255 || field > 3) throw new Error(`not an IPv4 address: ${s}`);
      buf[off + field++] = octet;
      octet = digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      octet = octet * 10 + c - 48;
      digits++;
    } else throw new Error(`not an IPv4 address: ${s}`);
  }
  if (field !== 4) throw new Error(`not an IPv4 address: ${s}`);
}

export function decodeKey(family: Family, buf: Buffer, off: number): Tuple {
  const a = keyLen(family) / 2;
  const addr = family === 4 ? formatIPv4 : formatIPv6;
  return { family, saddr: addr(buf, off), sport: buf.readUInt16BE(off + a - 4), daddr: addr(buf, off + a), dport: buf.readUInt16BE(off + 2 * a - 4) };
}
