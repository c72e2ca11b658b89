import { describe, expect, it } from 'vitest';
import { formatIPv6, LocalAddresses, normalizeAddress, parseIPv6 } from '../../../src/capture/addresses.js';

describe('address text', () => {
  it.each([
    ['fd00:9::1', 'fd00:9::1'],
    ['FD00:0009:0000:0000:0000:0000:0000:0001', 'fd00:9::1'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero word is not compressed
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run wins
    ['::ffff:10.1.2.3', '::ffff:10.1.2.3'],
    ['::ffff:a01:203', '::ffff:10.1.2.3'],
    ['fe80::1%eth0', 'fe80::1'],
    ['10.0.0.1', '10.0.0.1'],
  ])('%s is spelled %s', (input, canonical) => {
    expect(normalizeAddress(input)).toBe(canonical);
  });

  it('round-trips bytes', () => {
    const b = parseIPv6('2001:db8:1:2:3:4:5:6');
    expect(formatIPv6(b, 0)).toBe('2001:db8:1:2:3:4:5:6');
  });

  it('rejects what is not an address', () => {
    expect(() => normalizeAddress('eth0')).toThrow(/not an IPv6 address/);
  });
});

describe('LocalAddresses', () => {
  it('knows configured addresses in any spelling, and all of loopback', () => {
    const la = new LocalAddresses(['10.0.0.1', 'FD00::0001']);
    expect(la.has('10.0.0.1')).toBe(true);
    expect(la.has('fd00::1')).toBe(true);
    expect(la.has('127.0.0.5')).toBe(true);
    expect(la.has('::1')).toBe(true);
    expect(la.has('10.0.0.2')).toBe(false);
    la.replace(['10.0.0.2']);
    expect(la.has('10.0.0.1')).toBe(false);
    expect(la.has('10.0.0.2')).toBe(true);
  });

  it('reads the system interfaces', () => {
    expect(LocalAddresses.fromSystem().list()).toContain('127.0.0.1');
  });
});
