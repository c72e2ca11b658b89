import type { Family } from '../connection.js';
import { formatIPv4, formatIPv6 } from './addresses.js';

/**
 * Frame → TCP header facts, for the link types tcpdump can hand us. Never throws: a frame that
 * cannot be read is a reason, counted by the caller and skipped.
 */

export interface TcpSegment {
  family: Family;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  /** The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10 …). */
  flags: number;
}

export type DecodeFailure =
  | 'unsupported-link-type'
  | 'truncated-link-header'
  | 'not-ip'
  | 'bad-ip-header'
  | 'truncated-ip-header'
  | 'ip-fragment'
  | 'not-tcp'
  | 'ipv6-extension-header'
  | 'truncated-tcp-header';

export type DecodeResult = { ok: true; segment: TcpSegment } | { ok: false; reason: DecodeFailure };

/** pcap LINKTYPE_* values (not the platform DLT_* ones, except where they coincide). */
export const LinkType = {
  NULL: 0,
  ETHERNET: 1,
  RAW_DLT12: 12,
  RAW_DLT14: 14,
  RAW: 101,
  LOOP: 108,
  LINUX_SLL: 113,
  IPV4: 228,
  IPV6: 229,
  LINUX_SLL2: 276,
} as const;

const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;
const VLAN_TAGS = new Set([0x8100, 0x88a8, 0x9100]);
/** Address family numbers a BSD NULL/LOOP header may carry for IPv6 (Linux, BSDs, macOS). */
const AF_INET6 = new Set([10, 24, 28, 30]);
const IPPROTO_TCP = 6;
/** IPv6 next-header values that are extension headers (RFC 8200, 7045). */
const IPV6_EXTENSIONS = new Set([0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254]);

const fail = (reason: DecodeFailure): DecodeResult => ({ ok: false, reason });

export function decodeFrame(linkType: number, f: Buffer): DecodeResult {
  switch (linkType) {
    case LinkType.ETHERNET:
      if (f.length < 14) return fail('truncated-link-header');
      return ethertype(f, 12);
    case LinkType.LINUX_SLL:
      if (f.length < 16) return fail('truncated-link-header');
      return ethertype(f, 14);
    case LinkType.LINUX_SLL2:
      if (f.length < 20) return fail('truncated-link-header');
      return dispatch(f.readUInt16BE(0), f, 20);
    case LinkType.NULL:
    case LinkType.LOOP: {
      if (f.length < 4) return fail('truncated-link-header');
      // NULL is in the capturing host's byte order, LOOP in network order: accept either.
      let af = f.readUInt32BE(0);
      if (af > 0xffff) af = f.readUInt32LE(0);
      if (af === 2) return ipv4(f, 4);
      if (AF_INET6.has(af)) return ipv6(f, 4);
      return fail('not-ip');
    }
    case LinkType.RAW:
    case LinkType.RAW_DLT12:
    case LinkType.RAW_DLT14: {
      if (f.length < 1) return fail('truncated-ip-header');
      const v = f[0]! >> 4;
      return v === 4 ? ipv4(f, 0) : v === 6 ? ipv6(f, 0) : fail('not-ip');
    }
    case LinkType.IPV4:
      return ipv4(f, 0);
    case LinkType.IPV6:
      return ipv6(f, 0);
    default:
      return fail('unsupported-link-type');
  }
}

/** Reads an EtherType at `at`, skipping any 802.1Q / 802.1ad tags that follow it. */
function ethertype(f: Buffer, at: number): DecodeResult {
  let type = f.readUInt16BE(at);
  let off = at + 2;
  while (VLAN_TAGS.has(type)) {
    if (f.length < off + 4) return fail('truncated-link-header');
    type = f.readUInt16BE(off + 2);
    off += 4;
  }
  return dispatch(type, f, off);
}

function dispatch(type: number, f: Buffer, off: number): DecodeResult {
  if (type === ETH_IPV4) return ipv4(f, off);
  if (type === ETH_IPV6) return ipv6(f, off);
  return fail('not-ip');
}

function ipv4(f: Buffer, off: number): DecodeResult {
  if (f.length < off + 20) return fail('truncated-ip-header');
  const vihl = f[off]!;
  const ihl = (vihl & 0x0f) * 4;
  if (vihl >> 4 !== 4 || ihl < 20) return fail('bad-ip-header');
  // A non-first fragment starts with payload, not a TCP header.
  if ((f.readUInt16BE(off + 6) & 0x1fff) !== 0) return fail('ip-fragment');
  if (f[off + 9] !== IPPROTO_TCP) return fail('not-tcp');
  if (f.length < off + ihl) return fail('truncated-ip-header');
  return tcp(f, off + ihl, 4, formatIPv4(f, off + 12), formatIPv4(f, off + 16));
}

function ipv6(f: Buffer, off: number): DecodeResult {
  if (f.length < off + 40) return fail('truncated-ip-header');
  if (f[off]! >> 4 !== 6) return fail('bad-ip-header');
  const next = f[off + 6]!;
  // Only TCP straight after the fixed header, as the kernel filter does.
  if (next !== IPPROTO_TCP) return fail(IPV6_EXTENSIONS.has(next) ? 'ipv6-extension-header' : 'not-tcp');
  return tcp(f, off + 40, 6, formatIPv6(f, off + 8), formatIPv6(f, off + 24));
}

function tcp(f: Buffer, off: number, family: Family, src: string, dst: string): DecodeResult {
  if (f.length < off + 14) return fail('truncated-tcp-header');
  return {
    ok: true,
    segment: { family, src, dst, srcPort: f.readUInt16BE(off), dstPort: f.readUInt16BE(off + 2), flags: f[off + 13]! },
  };
}
