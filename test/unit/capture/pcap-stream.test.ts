import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MAX_RECORD, PcapFormatError, PcapStreamReader, type PcapRecord } from '../../../src/capture/pcap-stream.js';
import { ethernet, ip, pcapStream, SYN } from './frames.js';

const fixture = (name: string) => readFileSync(new URL(`../../fixtures/capture/${name}`, import.meta.url));

function readAll(chunks: Buffer[]): { recs: PcapRecord[]; linkType: number | undefined } {
  const r = new PcapStreamReader();
  const recs: PcapRecord[] = [];
  for (const c of chunks) r.push(c, (rec) => recs.push({ ...rec, data: Buffer.from(rec.data) }));
  return { recs, linkType: r.globalHeader?.linkType };
}

const frame = (i: number) => ethernet(ip({ src: '10.0.0.1', dst: '10.0.0.2', sport: 1000 + i, dport: 80, flags: SYN }));
const recs = [0, 1, 2].map((i) => ({ sec: 1_700_000_000 + i, frac: 123_456 + i, data: frame(i) }));

describe('pcap stream', () => {
  it.each([
    ['eth.pcap', 1, 10],
    ['eth-nano.pcap', 1, 10],
    ['lo.pcap', 1, 4],
    ['any-sll.pcap', 113, 14],
    ['any-sll2.pcap', 276, 14],
  ])('reads tcpdump fixture %s (link type %i, %i records)', (name, linkType, count) => {
    const { recs: got, linkType: lt } = readAll([fixture(name)]);
    expect(lt).toBe(linkType);
    expect(got).toHaveLength(count);
    for (const r of got) expect(r.data.length).toBeLessThanOrEqual(128);
  });

  it('gives microsecond and nanosecond fixtures the same times', () => {
    const us = readAll([fixture('eth.pcap')]).recs.map((r) => r.timeMs);
    const ns = readAll([fixture('eth-nano.pcap')]).recs.map((r) => r.timeMs);
    expect(us[0]).toBeGreaterThan(1.6e12);
    us.forEach((t, i) => expect(Math.abs(t - ns[i]!)).toBeLessThan(0.05));
  });

  it.each([
    [true, false],
    [false, false],
    [true, true],
    [false, true],
  ])('reads hand-made streams (little-endian %s, nanosecond %s)', (le, nano) => {
    const stream = pcapStream(1, recs.map((r) => ({ ...r, frac: nano ? r.frac * 1000 + 7 : r.frac })), { le, nano });
    const { recs: got, linkType } = readAll([stream]);
    expect(linkType).toBe(1);
    expect(got.map((r) => r.data)).toEqual(recs.map((r) => r.data));
    expect(got[0]!.timeMs).toBeCloseTo(1_700_000_000_123.456, 2);
    expect(got[2]!.timeMs).toBeCloseTo(1_700_000_002_123.458, 2);
  });

  it('gives the same records however the stream is split (every split point, and byte by byte)', () => {
    const flat = (chunks: Buffer[]) => readAll(chunks).recs.map((r) => `${r.timeMs}/${r.origLen}/${r.data.toString('hex')}`);
    for (const stream of [pcapStream(1, recs), fixture('any-sll2.pcap')]) {
      const whole = flat([stream]);
      expect(whole.length).toBeGreaterThan(2);
      for (let cut = 0; cut <= stream.length; cut++) {
        const got = flat([stream.subarray(0, cut), stream.subarray(cut)]);
        if (got.join() !== whole.join()) expect({ cut, got }).toEqual({ cut, got: whole });
      }
      for (let cut = 0; cut + 30 <= stream.length; cut += 7) {
        // Three pieces: the middle one may sit entirely inside a record header.
        expect(flat([stream.subarray(0, cut), stream.subarray(cut, cut + 9), stream.subarray(cut + 9)])).toEqual(whole);
      }
      expect(flat([...stream].map((b) => Buffer.from([b])))).toEqual(whole);
    }
  });

  it('rejects a stream that is not pcap, and resets', () => {
    const r = new PcapStreamReader();
    expect(() => r.push(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), () => {})).toThrow(PcapFormatError);
    // pcapng is a different format (tcpdump writes it only when asked to).
    const pcapng = Buffer.concat([Buffer.from('0a0d0d0a1c0000004d3c2b1a01000000', 'hex'), Buffer.alloc(12)]);
    expect(() => r.push(pcapng, () => {})).toThrow(/not a pcap stream: magic 0x0a0d0d0a/);
    const got: PcapRecord[] = [];
    r.push(pcapStream(1, recs), (rec) => got.push(rec));
    expect(got).toHaveLength(3);
  });

  it('rejects an absurd record length without allocating it, then reads a fresh stream', () => {
    const stream = pcapStream(1, recs);
    stream.writeUInt32LE(0xfffffff0, 24 + 8); // first record claims ~4 GiB
    const r = new PcapStreamReader();
    expect(() => r.push(stream, () => {})).toThrow(/record of 4294967280 captured bytes/);
    expect(r.globalHeader).toBeUndefined();
    const got: PcapRecord[] = [];
    r.push(pcapStream(1, recs), (rec) => got.push(rec));
    expect(got).toHaveLength(3);
  });

  it('accepts a record of exactly the limit, and rejects one byte more', () => {
    const big = { sec: 1, frac: 0, data: Buffer.alloc(MAX_RECORD) };
    expect(readAll([pcapStream(1, [big])]).recs).toHaveLength(1);
    const over = pcapStream(1, [{ ...big, data: Buffer.alloc(MAX_RECORD + 1) }]);
    expect(() => readAll([over])).toThrow(PcapFormatError);
  });

  it('rejects an out-of-range timestamp fraction and an unknown version', () => {
    expect(() => readAll([pcapStream(1, [{ sec: 1, frac: 1_000_000, data: frame(0) }])])).toThrow(/fraction/);
    const v3 = pcapStream(1, []);
    v3.writeUInt16LE(3, 4);
    expect(() => readAll([v3])).toThrow(/version 3/);
  });

  it('masks the FCS bits out of the link type', () => {
    const s = pcapStream(1, []);
    s.writeUInt32LE(0x14000001, 20);
    expect(readAll([s]).linkType).toBe(1);
  });
});
