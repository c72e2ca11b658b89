import type { Family } from '../connection.js';
import { textFamily } from '../address.js';
import { canonicalAddr } from './addr.js';

/** The events the tracer reports; see program.ts for the line format. */

export interface SocketEvent {
  kind: 'connect' | 'accept';
  /** CLOCK_MONOTONIC nanoseconds when the kernel saw it. */
  ns: bigint;
  pid: number;
  family: Family;
  localAddr: string;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  netns: number;
  /** connect only: the state the socket left SYN_SENT for (1 ESTABLISHED, 7 CLOSE = refused/abandoned). */
  newState?: number;
}

export interface ForkEvent {
  kind: 'fork';
  ns: bigint;
  parent: number;
  child: number;
}

export interface ExitEvent {
  kind: 'exit';
  ns: bigint;
  pid: number;
  startTicks: number;
}

export type TraceEvent = SocketEvent | ForkEvent | ExitEvent;

const UINT = /^\d{1,20}$/;

/** As UINT.test(text), then Number(text): six fields per event, in the daemon's main loop. */
function uint(text: string | undefined, max: number): number | undefined {
  if (text === undefined || text.length === 0 || text.length > 20) return undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  const n = Number(text);
  return n <= max ? n : undefined;
}

const U32 = 0xffff_ffff;

/** Parses one line of the program's output; undefined when the line is not exactly an event. */
export function parseEventLine(line: string): TraceEvent | undefined {
  const f = line.split(' ');
  const ns = f[1] !== undefined && UINT.test(f[1]) ? BigInt(f[1]) : undefined;
  if (ns === undefined) return undefined;
  switch (f[0]) {
    case 'C':
    case 'A': {
      if (f.length !== (f[0] === 'C' ? 10 : 9)) return undefined;
      const pid = uint(f[2], U32);
      const fam = f[3] === '4' ? 4 : f[3] === '6' ? 6 : undefined;
      const lport = uint(f[5], 65535);
      const rport = uint(f[7], 65535);
      const netns = uint(f[8], U32);
      if (pid === undefined || fam === undefined || lport === undefined || rport === undefined || netns === undefined) return undefined;
      if (textFamily(f[4]!) !== fam || textFamily(f[6]!) !== fam) return undefined;
      const l = canonicalAddr(f[4]!);
      const r = canonicalAddr(f[6]!);
      const ev: SocketEvent = {
        kind: f[0] === 'C' ? 'connect' : 'accept',
        ns,
        pid,
        family: l.family,
        localAddr: l.addr,
        localPort: lport,
        remoteAddr: r.addr,
        remotePort: rport,
        netns,
      };
      if (f[0] === 'C') {
        const st = uint(f[9], 12);
        if (st === undefined) return undefined;
        ev.newState = st;
      }
      return ev;
    }
    case 'F': {
      const parent = uint(f[2], U32);
      const child = uint(f[3], U32);
      if (f.length !== 4 || parent === undefined || child === undefined) return undefined;
      return { kind: 'fork', ns, parent, child };
    }
    case 'X': {
      const pid = uint(f[2], U32);
      const startTicks = uint(f[3], Number.MAX_SAFE_INTEGER);
      if (f.length !== 4 || pid === undefined || startTicks === undefined) return undefined;
      return { kind: 'exit', ns, pid, startTicks };
    }
    default:
      return undefined;
  }
}
