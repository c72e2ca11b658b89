import { addressText } from '../address.js';
import { isIPv4, isIPv6 } from 'node:net';
import type { ConnKey, Family } from '../connection.js';
import type { CounterOwner } from './engine.js';

/**
 * Directed 4-tuples (the packets of one direction of one connection) and the owner tag stored
 * beside them in the kernel. Shared by both engines.
 */

export interface Tuple {
  family: Family;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
}

/** local → remote: what the host sends on this connection. */
export function outTuple(k: ConnKey): Tuple {
  return { family: k.family, saddr: k.localAddr, sport: k.localPort, daddr: k.remoteAddr, dport: k.remotePort };
}

/** remote → local: what the host receives. */
export function inTuple(k: ConnKey): Tuple {
  return { family: k.family, saddr: k.remoteAddr, sport: k.remotePort, daddr: k.localAddr, dport: k.localPort };
}

/** The ConnKey whose OUT direction is this tuple. */
export function keyOf(t: Tuple): ConnKey {
  return { family: t.family, localAddr: t.saddr, localPort: t.sport, remoteAddr: t.daddr, remotePort: t.dport };
}

/** The same connection seen from its other end (on loopback both ends are ours). */
export function mirrorKey(k: ConnKey): ConnKey {
  return { family: k.family, localAddr: k.remoteAddr, localPort: k.remotePort, remoteAddr: k.localAddr, remotePort: k.localPort };
}

/** One spelling per address, so that what the kernel prints matches what capture reported
 * (`fd00:0::1` and `FD00::1` are the same address); the family must match the text. */
export function canonicalAddr(family: Family, addr: string): string {
  // A read of a job's 10,000 connections checks 20,000 addresses, nearly all the same few.
  const memo = family === 4 ? canonical4 : canonical6;
  const hit = memo.get(addr);
  if (hit !== undefined) return hit;
  if (family === 4 ? !isIPv4(addr) : !isIPv6(addr) || addr.includes('%')) throw new Error(`not an IPv${family} address: ${JSON.stringify(addr)}`);
  const text = addressText(addr);
  if (memo.size >= CANONICAL_MEMO) memo.clear();
  memo.set(addr, text);
  return text;
}

const CANONICAL_MEMO = 4096;
const canonical4 = new Map<string, string>();
const canonical6 = new Map<string, string>();

export function checkPort(p: number): number {
  if (!Number.isInteger(p) || p < 0 || p > 65535) throw new Error(`not a TCP port: ${p}`);
  return p;
}

/** The key itself when it is already canonical (as capture's are): the engine then holds no
 * copy of it per connection. */
export function canonicalKey(k: ConnKey): ConnKey {
  if (k.family !== 4 && k.family !== 6) throw new Error(`unknown address family ${String(k.family)}`);
  const localAddr = canonicalAddr(k.family, k.localAddr);
  const remoteAddr = canonicalAddr(k.family, k.remoteAddr);
  checkPort(k.localPort);
  checkPort(k.remotePort);
  if (localAddr === k.localAddr && remoteAddr === k.remoteAddr) return k;
  return { family: k.family, localAddr, localPort: k.localPort, remoteAddr, remotePort: k.remotePort };
}

/** Map key for a tuple; addresses must already be canonical. Flat (see keyString). */
export function tupleId(t: Tuple): string {
  return [t.family, t.saddr, t.sport, t.daddr, t.dport].join('|');
}

/** Map key for a canonical ConnKey (same as its OUT tuple's id). */
export function connId(k: ConnKey): string {
  return `${k.family}|${k.localAddr}|${k.localPort}|${k.remoteAddr}|${k.remotePort}`;
}

/** tupleId of its IN tuple, without making the tuple. */
export function inId(k: ConnKey): string {
  return `${k.family}|${k.remoteAddr}|${k.remotePort}|${k.localAddr}|${k.localPort}`;
}

const COMMENT_MAX = 128; // nftables' element comment limit; iptables allows 255

/** `pid=<pid> job=<job>`: the job id last, so it may contain anything but control characters. */
export function ownerTag(owner: CounterOwner): string {
  if (!Number.isInteger(owner.pid) || owner.pid <= 0) throw new Error(`bad pid ${owner.pid}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(owner.job)) throw new Error('job id contains a control character');
  const tag = `pid=${owner.pid} job=${owner.job}`;
  if (Buffer.byteLength(tag) > COMMENT_MAX) throw new Error(`owner tag longer than ${COMMENT_MAX} bytes: job id too long`);
  return tag;
}

export function parseOwnerTag(tag: string): CounterOwner | undefined {
  const m = /^pid=(\d+) job=(.*)$/s.exec(tag);
  return m ? { pid: Number(m[1]), job: m[2]! } : undefined;
}
