import { describe, expect, it } from 'vitest';
import { canonicalAddr, keyId } from '../../../src/resolve/addr.js';
import { parseEventLine } from '../../../src/resolve/events.js';

describe('tracer line parser', () => {
  it('parses connect, accept, fork and exit lines as bpftrace prints them', () => {
    expect(parseEventLine('C 646875053516 5829 4 127.0.0.1 47300 127.0.0.1 7777 4026531833 1')).toEqual({
      kind: 'connect', ns: 646875053516n, pid: 5829, family: 4, localAddr: '127.0.0.1', localPort: 47300,
      remoteAddr: '127.0.0.1', remotePort: 7777, netns: 4026531833, newState: 1,
    });
    // A dual-stack socket's IPv4 connection: folded to family 4.
    expect(parseEventLine('A 646875300577 5637 6 ::ffff:127.0.0.1 7777 ::ffff:127.0.0.1 47300 4026531833')).toMatchObject({
      kind: 'accept', family: 4, localAddr: '127.0.0.1', remoteAddr: '127.0.0.1', remotePort: 47300,
    });
    expect(parseEventLine('A 1 2 6 fd00:0:0::1 80 fd00::2 5000 3')).toMatchObject({ family: 6, localAddr: 'fd00::1' });
    expect(parseEventLine('F 1731971680 5438 5467')).toEqual({ kind: 'fork', ns: 1731971680n, parent: 5438, child: 5467 });
    expect(parseEventLine('X 1770383019 5467 63309')).toEqual({ kind: 'exit', ns: 1770383019n, pid: 5467, startTicks: 63309 });
  });

  it('rejects anything not exactly an event', () => {
    for (const bad of [
      '',
      'Attaching 6 probes...',
      '@conn[0xffff]: 12',
      'C 1 2 4 127.0.0.1 47300 127.0.0.1 7777 4026531833', // state missing
      'C 1 2 4 127.0.0.1 70000 127.0.0.1 7777 4026531833 1', // port out of range
      'C 1 2 6 127.0.0.1 1 127.0.0.1 2 3 1', // family does not match the address
      'A 1 -2 4 127.0.0.1 1 127.0.0.1 2 3',
      'F 1 2',
      'X 1 2 3 4',
      'Q 1 2 3',
    ]) {
      expect(parseEventLine(bad), bad).toBeUndefined();
    }
  });
});

describe('address canon', () => {
  it('gives one spelling for every way of writing an address', () => {
    expect(canonicalAddr('FD00:0000::0001')).toEqual({ family: 6, addr: 'fd00::1' });
    expect(canonicalAddr('::ffff:10.0.0.1')).toEqual({ family: 4, addr: '10.0.0.1' });
    expect(canonicalAddr('::ffff:a00:1')).toEqual({ family: 4, addr: '10.0.0.1' });
    expect(keyId({ family: 6, localAddr: '::ffff:10.0.0.1', localPort: 1, remoteAddr: '10.0.0.2', remotePort: 2 })).toBe(
      keyId({ family: 4, localAddr: '10.0.0.1', localPort: 1, remoteAddr: '10.0.0.2', remotePort: 2 }),
    );
    expect(() => canonicalAddr('nope')).toThrow(/not an IP address/);
  });
});
