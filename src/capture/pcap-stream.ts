/**
 * Streaming reader of the classic pcap file format, as tcpdump -w - writes it: a 24-byte global
 * header, then records of a 16-byte header plus captured bytes. Chunks may split anything
 * anywhere. Pure: no I/O, so it is tested byte by byte.
 */

export interface PcapHeader {
  linkType: number;
  snaplen: number;
  nanosecond: boolean;
  littleEndian: boolean;
  version: string;
}

export interface PcapRecord {
  /** Capture time in epoch milliseconds (fractional: microsecond or better precision). */
  timeMs: number;
  /** Length of the packet on the wire; data may be shorter (snap length). */
  origLen: number;
  data: Buffer;
}

/** The stream is not pcap or is corrupt; the reader has reset and expects a new global header. */
export class PcapFormatError extends Error {
  override name = 'PcapFormatError';
}

const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;
/** libpcap's own ceiling for a captured record (MAXIMUM_SNAPLEN). Anything above is corruption,
 * and must not become an allocation. */
export const MAX_RECORD = 262_144;

const MAGIC_USEC = 0xa1b2c3d4;
const MAGIC_NSEC = 0xa1b23c4d;

export class PcapStreamReader {
  private header: PcapHeader | undefined;
  private pending: Buffer = Buffer.alloc(0);

  get globalHeader(): PcapHeader | undefined {
    return this.header;
  }

  /** Forgets everything: the next bytes must start a new pcap stream (e.g. a restarted tcpdump). */
  reset(): void {
    this.header = undefined;
    this.pending = Buffer.alloc(0);
  }

  /**
   * Feeds bytes and calls onRecord for every complete record, in order. Throws PcapFormatError
   * (after resetting) on a bad magic number or an impossible record length.
   */
  push(chunk: Buffer, onRecord: (r: PcapRecord, h: PcapHeader) => void): void {
    const buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let off = 0;
    try {
      if (!this.header) {
        if (buf.length < GLOBAL_HEADER) {
          this.pending = Buffer.from(buf);
          return;
        }
        this.header = parseGlobalHeader(buf);
        off = GLOBAL_HEADER;
      }
      const h = this.header;
      const u32 = h.littleEndian ? (o: number) => buf.readUInt32LE(o) : (o: number) => buf.readUInt32BE(o);
      const fracToMs = h.nanosecond ? 1e-6 : 1e-3;
      const fracMax = h.nanosecond ? 1e9 : 1e6;
      while (buf.length - off >= RECORD_HEADER) {
        const caplen = u32(off + 8);
        if (caplen > MAX_RECORD) {
          throw new PcapFormatError(`record of ${caplen} captured bytes at stream offset ${off} (limit ${MAX_RECORD})`);
        }
        if (buf.length - off < RECORD_HEADER + caplen) break;
        const frac = u32(off + 4);
        if (frac >= fracMax) throw new PcapFormatError(`timestamp fraction ${frac} out of range`);
        const timeMs = u32(off) * 1000 + frac * fracToMs;
        const origLen = u32(off + 12);
        const start = off + RECORD_HEADER;
        off = start + caplen;
        onRecord({ timeMs, origLen, data: buf.subarray(start, off) }, h);
      }
    } catch (e) {
      this.reset();
      throw e;
    }
    // Copy the tail so the big chunk it came from is not kept alive.
    this.pending = off < buf.length ? Buffer.from(buf.subarray(off)) : Buffer.alloc(0);
  }
}

export function parseGlobalHeader(buf: Buffer): PcapHeader {
  const be = buf.readUInt32BE(0);
  const le = buf.readUInt32LE(0);
  let littleEndian: boolean;
  let nanosecond: boolean;
  if (le === MAGIC_USEC || le === MAGIC_NSEC) {
    littleEndian = true;
    nanosecond = le === MAGIC_NSEC;
  } else if (be === MAGIC_USEC || be === MAGIC_NSEC) {
    littleEndian = false;
    nanosecond = be === MAGIC_NSEC;
  } else {
    throw new PcapFormatError(`not a pcap stream: magic 0x${be.toString(16).padStart(8, '0')}`);
  }
  const u16 = (o: number) => (littleEndian ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (littleEndian ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const major = u16(4);
  if (major !== 2) throw new PcapFormatError(`unsupported pcap version ${major}.${u16(6)}`);
  // The upper 16 bits of the link-type word carry FCS information (pcap-savefile(5)).
  return { linkType: u32(20) & 0xffff, snaplen: u32(16), nanosecond, littleEndian, version: `${major}.${u16(6)}` };
}
