import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeFrame, LinkType } from '../../../src/capture/decode.js';
import { PcapStreamReader } from '../../../src/capture/pcap-stream.js';
import { ACK, bsdLoop, ethernet, FIN, ip, ipv4, ipv6, sll, sll2, SYN, type Seg } from './frames.js';

const v4: Seg = { src: '10.0.0.1', dst: '192.168.1.20', sport: 40000, dport: 443, flags: SYN };
const v6: Seg = { src: 'fd00:9::1', dst: '2001:db8::20', sport: 40001, dport: 8080, flags: SYN | ACK };
const expected = (s: Seg) => ({
  ok: true,
  segment: { family: s.src.includes(':') ? 6 : 4, src: s.src, dst: s.dst, srcPort: s.sport, dstPort: s.dport, flags: s.flags },
});

describe('decodeFrame', () => {
  for (const seg of [v4, v6]) {
    const p = ip(seg);
    const six = seg === v6;
    it.each([
      ['Ethernet', LinkType.ETHERNET, ethernet(p)],
      ['Ethernet + 802.1Q', LinkType.ETHERNET, ethernet(p, [0x8100])],
      ['Ethernet + QinQ', LinkType.ETHERNET, ethernet(p, [0x88a8, 0x8100])],
      ['Linux SLL', LinkType.LINUX_SLL, sll(p)],
      ['Linux SLL2', LinkType.LINUX_SLL2, sll2(p)],
      ['BSD NULL, little-endian host', LinkType.NULL, bsdLoop(p, six ? 30 : 2, true)],
      ['BSD NULL, big-endian host', LinkType.NULL, bsdLoop(p, six ? 24 : 2, false)],
      ['BSD LOOP', LinkType.LOOP, bsdLoop(p, six ? 28 : 2, false)],
      ['raw (101)', LinkType.RAW, p],
      ['raw (DLT 12)', LinkType.RAW_DLT12, p],
      ['raw (DLT 14)', LinkType.RAW_DLT14, p],
      [six ? 'IPv6 (229)' : 'IPv4 (228)', six ? LinkType.IPV6 : LinkType.IPV4, p],
    ])(`IPv${six ? 6 : 4} in %s`, (_name, lt, frame) => {
      expect(decodeFrame(lt, frame)).toEqual(expected(seg));
    });
  }

  it('follows the IPv4 header length past options', () => {
    expect(decodeFrame(LinkType.RAW, ipv4(v4, { ihlWords: 15 }))).toEqual(expected(v4));
  });

  it.each([
    ['a non-first fragment', LinkType.RAW, ipv4(v4, { fragOffset: 185 }), 'ip-fragment'],
    ['UDP', LinkType.RAW, ipv4(v4, { proto: 17 }), 'not-tcp'],
    ['ICMPv6', LinkType.RAW, ipv6(v6, { next: 58 }), 'not-tcp'],
    ['an IPv6 extension header', LinkType.RAW, ipv6(v6, { next: 0 }), 'ipv6-extension-header'],
    ['ARP', LinkType.ETHERNET, Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x06]), Buffer.alloc(28)]), 'not-ip'],
    ['a runt Ethernet frame', LinkType.ETHERNET, Buffer.alloc(10), 'truncated-link-header'],
    ['a cut VLAN tag', LinkType.ETHERNET, Buffer.concat([Buffer.alloc(12), Buffer.from([0x81, 0x00, 0])]), 'truncated-link-header'],
    ['IHL below 5', LinkType.RAW, Buffer.from([0x44, ...Buffer.alloc(40)]), 'bad-ip-header'],
    ['IPv4 claimed, version 6', LinkType.IPV4, ip(v6), 'bad-ip-header'],
    ['an IPv4 header cut short', LinkType.RAW, ip(v4).subarray(0, 19), 'truncated-ip-header'],
    ['IPv4 options cut short', LinkType.RAW, ipv4(v4, { ihlWords: 15 }).subarray(0, 50), 'truncated-ip-header'],
    ['a TCP header cut before the flags', LinkType.RAW, ip(v4).subarray(0, 33), 'truncated-tcp-header'],
    ['an IPv6 TCP header cut short', LinkType.RAW, ip(v6).subarray(0, 50), 'truncated-tcp-header'],
    ['version 5', LinkType.RAW, Buffer.from([0x50, 0]), 'not-ip'],
    ['an empty frame', LinkType.RAW, Buffer.alloc(0), 'truncated-ip-header'],
    ['a BSD loopback frame of another family', LinkType.NULL, bsdLoop(ip(v4), 7, true), 'not-ip'],
    ['an unknown link type', 147, ip(v4), 'unsupported-link-type'],
  ])('skips %s', (_name, lt, frame, reason) => {
    expect(decodeFrame(lt, frame)).toEqual({ ok: false, reason });
  });

  it('reads a TCP header that ends exactly at the flags byte (snap length reached)', () => {
    expect(decodeFrame(LinkType.RAW, ip({ ...v4, flags: FIN }).subarray(0, 34))).toEqual(expected({ ...v4, flags: FIN }));
  });

  it('never throws on garbage: random bytes, corrupted real frames, every truncation', () => {
    const types = Object.values(LinkType);
    const frames: Buffer[] = [];
    for (let i = 0; i < 3_000; i++) frames.push(randomBytes(i % 140));
    const valid = [ethernet(ip(v6), [0x8100]), ethernet(ipv4(v4, { ihlWords: 7 })), sll(ip(v4)), sll2(ip(v6))];
    for (const good of valid) {
      for (let i = 0; i < 500; i++) {
        const f = Buffer.from(good);
        for (let k = 0; k < 3; k++) f[(i * 7 + k * 13) % f.length] = randomBytes(1)[0]!;
        frames.push(f.subarray(0, i % (f.length + 1)), f);
      }
    }
    const threw: string[] = [];
    let decoded = 0;
    for (const f of frames) {
      for (const lt of types) {
        try {
          if (decodeFrame(lt, f).ok) decoded++;
        } catch (e) {
          threw.push(`${lt} ${f.toString('hex')}: ${(e as Error).message}`);
        }
      }
    }
    expect(threw).toEqual([]);
    expect(decoded).toBeGreaterThan(1000); // the corrupted frames did reach the TCP layer
  });

  it('decodes every frame of the tcpdump fixtures', () => {
    for (const name of ['eth.pcap', 'eth-nano.pcap', 'lo.pcap', 'any-sll.pcap', 'any-sll2.pcap']) {
      const r = new PcapStreamReader();
      r.push(readFileSync(new URL(`../../fixtures/capture/${name}`, import.meta.url)), (rec, h) => {
        expect(decodeFrame(h.linkType, rec.data).ok, name).toBe(true);
      });
    }
  });
});
