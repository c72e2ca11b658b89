import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { LocalAddresses } from '../../../src/capture/addresses.js';
import { decodeFrame } from '../../../src/capture/decode.js';
import { eventKind, segmentEvents, type ConnEvent } from '../../../src/capture/events.js';
import { PcapStreamReader } from '../../../src/capture/pcap-stream.js';
import { ACK, FIN, RST, SYN } from './frames.js';

/** Fixture addresses (record.sh): node 10.9.0.1 / fd00:9::1, remote 10.9.0.2 / fd00:9::2. */
const node = new LocalAddresses(['10.9.0.1', 'fd00:9::1']);

function eventsOf(name: string, local: LocalAddresses, iface = 'x'): { events: ConnEvent[]; skipped: string[] } {
  const events: ConnEvent[] = [];
  const skipped: string[] = [];
  new PcapStreamReader().push(readFileSync(new URL(`../../fixtures/capture/${name}`, import.meta.url)), (rec, h) => {
    const d = decodeFrame(h.linkType, rec.data);
    if (!d.ok) return skipped.push(d.reason);
    const evs = segmentEvents(d.segment, rec.timeMs, iface, local);
    if (typeof evs === 'string') skipped.push(evs);
    else events.push(...evs);
  });
  return { events, skipped };
}

const brief = (e: ConnEvent) => `${e.kind} ${e.sent ? 'sent' : 'recv'} ${e.key.localAddr}:${e.key.localPort}>${e.key.remoteAddr}:${e.key.remotePort}`;

describe('connection events', () => {
  it('classifies TCP flags', () => {
    expect(eventKind(SYN)).toBe('syn');
    expect(eventKind(SYN | ACK)).toBe('syn-ack');
    expect(eventKind(FIN | ACK)).toBe('fin');
    expect(eventKind(RST | ACK)).toBe('rst');
    expect(eventKind(RST | FIN)).toBe('rst');
    expect(eventKind(ACK)).toBeUndefined();
  });

  it.each(['eth.pcap', 'eth-nano.pcap', 'any-sll.pcap', 'any-sll2.pcap'])(
    'sees outgoing IPv4 and IPv6 connections and a refused one from the host side (%s)',
    (name) => {
      const { events } = eventsOf(name, node, 'veth0');
      const remote = events.filter((e) => !e.key.localAddr.startsWith('127.'));
      const lines = remote.map(brief).map((l) => l.replace(/:\d{5}>/, ':P>'));
      expect(lines).toEqual([
        'syn sent 10.9.0.1:P>10.9.0.2:5000',
        'syn-ack recv 10.9.0.1:P>10.9.0.2:5000',
        'fin recv 10.9.0.1:P>10.9.0.2:5000',
        'fin sent 10.9.0.1:P>10.9.0.2:5000',
        'syn sent fd00:9::1:P>fd00:9::2:5000',
        'syn-ack recv fd00:9::1:P>fd00:9::2:5000',
        'fin recv fd00:9::1:P>fd00:9::2:5000',
        'fin sent fd00:9::1:P>fd00:9::2:5000',
        'syn sent 10.9.0.1:P>10.9.0.2:5001',
        'rst recv 10.9.0.1:P>10.9.0.2:5001',
      ]);
      expect(remote.map((e) => e.key.family)).toEqual([4, 4, 4, 4, 6, 6, 6, 6, 4, 4]);
      for (const e of events) {
        expect(e.iface).toBe('veth0');
        expect(e.time).toBeGreaterThan(1.6e12);
      }
      // All of one connection shares one key, whichever direction the packet went.
      expect(new Set(remote.slice(0, 4).map((e) => JSON.stringify(e.key))).size).toBe(1);
    },
  );

  it('sees the same connections from the remote side when the remote is the host', () => {
    const { events } = eventsOf('eth.pcap', new LocalAddresses(['10.9.0.2', 'fd00:9::2']));
    expect(events.slice(0, 2).map(brief).map((l) => l.replace(/:\d{5}$/, ':P'))).toEqual([
      'syn recv 10.9.0.2:5000>10.9.0.1:P',
      'syn-ack sent 10.9.0.2:5000>10.9.0.1:P',
    ]);
  });

  it('gives both local sockets of a loopback segment an event (lo is Ethernet with zero MACs)', () => {
    const { events } = eventsOf('lo.pcap', node, 'lo');
    expect(events).toHaveLength(8);
    const client = events[0]!.key.localPort;
    expect(events.map(brief)).toEqual([
      `syn sent 127.0.0.1:${client}>127.0.0.1:5002`,
      `syn recv 127.0.0.1:5002>127.0.0.1:${client}`,
      `syn-ack sent 127.0.0.1:5002>127.0.0.1:${client}`,
      `syn-ack recv 127.0.0.1:${client}>127.0.0.1:5002`,
      `fin sent 127.0.0.1:${client}>127.0.0.1:5002`,
      `fin recv 127.0.0.1:5002>127.0.0.1:${client}`,
      `fin sent 127.0.0.1:5002>127.0.0.1:${client}`,
      `fin recv 127.0.0.1:${client}>127.0.0.1:5002`,
    ]);
  });

  it('skips traffic between two other hosts (forwarded or bridged)', () => {
    const { events, skipped } = eventsOf('eth.pcap', new LocalAddresses(['10.9.0.99']));
    expect(events).toEqual([]);
    expect(skipped).toEqual(Array(10).fill('not-local'));
  });

  it('skips a segment without SYN, FIN or RST', () => {
    const seg = { family: 4 as const, src: '10.9.0.1', dst: '10.9.0.2', srcPort: 1, dstPort: 2, flags: ACK };
    expect(segmentEvents(seg, 0, 'x', node)).toBe('no-connection-flags');
  });
});
