import { describe, expect, it } from 'vitest';
import { LocalAddresses } from '../../../src/capture/addresses.js';
import { decodeFrame } from '../../../src/capture/decode.js';
import { segmentEvents } from '../../../src/capture/events.js';
import { PcapStreamReader } from '../../../src/capture/pcap-stream.js';
import { ACK, ethernet, FIN, ip, pcapStream, SYN } from './frames.js';

describe('parser throughput', () => {
  it('turns a large pcap stream into events fast enough for connection storms', () => {
    const FRAMES = 200_000;
    const recs = [];
    for (let i = 0; i < FRAMES; i++) {
      const v6 = i % 4 === 3;
      const seg = {
        src: v6 ? 'fd00:9::1' : '10.9.0.1',
        dst: v6 ? '2001:db8::5' : '10.9.0.2',
        sport: 10_000 + (i % 50_000),
        dport: 443,
        flags: i % 3 === 0 ? SYN : i % 3 === 1 ? SYN | ACK : FIN | ACK,
      };
      recs.push({ sec: 1_700_000_000 + Math.floor(i / 1000), frac: i % 1_000_000, data: ethernet(ip(seg)) });
    }
    const stream = pcapStream(1, recs);
    const local = new LocalAddresses(['10.9.0.1', 'fd00:9::1']);
    const reader = new PcapStreamReader();
    let events = 0;
    const t0 = process.hrtime.bigint();
    for (let off = 0; off < stream.length; off += 65_536) {
      // tcpdump's pipe delivers up to 64 KiB per read
      reader.push(stream.subarray(off, off + 65_536), (rec, h) => {
        const d = decodeFrame(h.linkType, rec.data);
        if (!d.ok) return;
        const evs = segmentEvents(d.segment, rec.timeMs, 'eth0', local);
        if (typeof evs !== 'string') events += evs.length;
      });
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`parser: ${FRAMES} frames (${(stream.length / 1e6).toFixed(1)} MB) in ${(seconds * 1000).toFixed(0)} ms = ${Math.round(FRAMES / seconds)} events/s`);
    expect(events).toBe(FRAMES);
    expect(FRAMES / seconds).toBeGreaterThan(50_000); // loose: shared 2-core machine
  });
});
