/** Builders for hand-made frames and pcap streams (unit tests of the capture parser/decoder). */
import { parseIPv6 } from '../../../src/capture/addresses.js';

export interface Seg {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  flags: number;
}

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const ACK = 0x10;

function tcpHeader(s: Seg): Buffer {
  const t = Buffer.alloc(20);
  t.writeUInt16BE(s.sport, 0);
  t.writeUInt16BE(s.dport, 2);
  t[12] = 5 << 4;
  t[13] = s.flags;
  return t;
}

export function ipv4(s: Seg, opts: { ihlWords?: number; fragOffset?: number; proto?: number } = {}): Buffer {
  const ihl = (opts.ihlWords ?? 5) * 4;
  const h = Buffer.alloc(ihl);
  h[0] = 0x40 | (ihl / 4);
  h.writeUInt16BE(ihl + 20, 2);
  h.writeUInt16BE(opts.fragOffset ?? 0, 6);
  h[8] = 64;
  h[9] = opts.proto ?? 6;
  Buffer.from(s.src.split('.').map(Number)).copy(h, 12);
  Buffer.from(s.dst.split('.').map(Number)).copy(h, 16);
  return Buffer.concat([h, tcpHeader(s)]);
}

export function ipv6(s: Seg, opts: { next?: number } = {}): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(20, 4);
  h[6] = opts.next ?? 6;
  h[7] = 64;
  h.set(parseIPv6(s.src), 8);
  h.set(parseIPv6(s.dst), 24);
  return Buffer.concat([h, tcpHeader(s)]);
}

export const ip = (s: Seg): Buffer => (s.src.includes(':') ? ipv6(s) : ipv4(s));
const etype = (p: Buffer): number => (p[0]! >> 4 === 6 ? 0x86dd : 0x0800);

export function ethernet(p: Buffer, vlanTags: number[] = []): Buffer {
  const macs = Buffer.from('020000000001020000000002', 'hex');
  const tags = vlanTags.map((tpid, i) => {
    const t = Buffer.alloc(4);
    t.writeUInt16BE(tpid, 0);
    t.writeUInt16BE(100 + i, 2);
    return t;
  });
  const type = Buffer.alloc(2);
  type.writeUInt16BE(etype(p));
  return Buffer.concat([macs, ...tags, type, p]);
}

export function sll(p: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt16BE(4, 0); // sent by us
  h.writeUInt16BE(1, 2);
  h.writeUInt16BE(6, 4);
  h.writeUInt16BE(etype(p), 14);
  return Buffer.concat([h, p]);
}

export function sll2(p: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(etype(p), 0);
  h.writeUInt32BE(2, 4);
  h.writeUInt16BE(1, 8);
  h[10] = 0;
  h[11] = 6;
  return Buffer.concat([h, p]);
}

/** BSD loopback: NULL writes the family in the capturing host's order, LOOP in network order. */
export function bsdLoop(p: Buffer, af: number, littleEndian: boolean): Buffer {
  const h = Buffer.alloc(4);
  if (littleEndian) h.writeUInt32LE(af);
  else h.writeUInt32BE(af);
  return Buffer.concat([h, p]);
}

export interface Rec {
  sec: number;
  frac: number;
  data: Buffer;
  origLen?: number;
}

export function pcapStream(linkType: number, recs: Rec[], o: { le?: boolean; nano?: boolean; snaplen?: number } = {}): Buffer {
  const le = o.le ?? true;
  const w32 = (b: Buffer, v: number, off: number) => (le ? b.writeUInt32LE(v, off) : b.writeUInt32BE(v, off));
  const w16 = (b: Buffer, v: number, off: number) => (le ? b.writeUInt16LE(v, off) : b.writeUInt16BE(v, off));
  const g = Buffer.alloc(24);
  w32(g, o.nano ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  w16(g, 2, 4);
  w16(g, 4, 6);
  w32(g, o.snaplen ?? 128, 16);
  w32(g, linkType, 20);
  const parts: Buffer[] = [g];
  for (const r of recs) {
    const h = Buffer.alloc(16);
    w32(h, r.sec, 0);
    w32(h, r.frac, 4);
    w32(h, r.data.length, 8);
    w32(h, r.origLen ?? r.data.length, 12);
    parts.push(h, r.data);
  }
  return Buffer.concat(parts);
}
