import { describe, expect, it } from 'vitest';
import { decodeKey, encodeKeys, keyLen } from '../../../src/counters/netlink-store.js';
import { canonicalAddr, type Tuple } from '../../../src/counters/tuple.js';

/** The key bytes of our concatenated set type, as the kernel stores them: each field in whole
 * 32-bit registers, ports big-endian and padded. */
describe('netlink set keys', () => {
  it('lays out an IPv4 4-tuple in 16 bytes', () => {
    const t: Tuple = { family: 4, saddr: '10.0.0.1', sport: 1000, daddr: '192.0.2.255', dport: 80 };
    expect(encodeKeys(4, [{ tuple: t }]).toString('hex')).toBe('0a000001' + '03e80000' + 'c00002ff' + '00500000');
    expect(keyLen(4)).toBe(16);
  });

  it('round-trips IPv6, canonical text included (compressed, mapped IPv4)', () => {
    const tuples: Tuple[] = [
      { family: 6, saddr: 'fd00:1::1', sport: 65535, daddr: '2001:db8::ff00:42:8329', dport: 0 },
      { family: 6, saddr: '::ffff:10.1.2.3', sport: 1, daddr: '::1', dport: 443 },
      { family: 6, saddr: '1:2:3:4:5:6:7:8', sport: 22, daddr: '::', dport: 8080 },
    ];
    const buf = encodeKeys(6, tuples.map((tuple) => ({ tuple })));
    expect(buf.length).toBe(3 * keyLen(6));
    expect(buf.subarray(16, 20).toString('hex')).toBe('ffff0000');
    tuples.forEach((t, i) => {
      const back = decodeKey(6, buf, i * 40);
      expect(back).toEqual(t);
      expect(back.saddr).toBe(canonicalAddr(6, t.saddr));
    });
  });

  it('refuses IPv4 text that is not a dotted quad', () => {
    for (const bad of ['10.0.0', '10.0.0.1.2', '10.0.0.256', '10..0.1', '10.0.0.1 ', 'a.b.c.d', '1000.0.0.1', '']) {
      expect(() => encodeKeys(4, [{ tuple: { family: 4, saddr: bad, sport: 1, daddr: '10.0.0.1', dport: 2 } }])).toThrow(/not an IPv4 address/);
    }
    const t: Tuple = { family: 4, saddr: '0.0.0.0', sport: 1, daddr: '255.255.255.255', dport: 2 };
    expect(decodeKey(4, encodeKeys(4, [{ tuple: t }]), 0)).toEqual(t);
  });

  it('refuses a tuple of the other family', () => {
    expect(() => encodeKeys(4, [{ tuple: { family: 6, saddr: '::1', sport: 1, daddr: '::1', dport: 2 } }])).toThrow(/IPv6 tuple in an IPv4 set/);
  });
});
