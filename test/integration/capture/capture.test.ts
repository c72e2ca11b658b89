import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPair, exited, nsRun, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { brief, captureIn, eventsOnPort, expectSameMembers, until, type Recorder } from './helpers.js';

/**
 * Real tcpdump, real connections: a node namespace (where the daemon's capture runs) joined to a
 * remote one by veth. Source ports are fixed (nc -p) so every connection's key is known.
 */
let pair: Pair;
let rec: Recorder | undefined;

beforeAll(async () => {
  pair = await createPair('cap');
});
afterAll(async () => {
  await rec?.capture.stop();
  await pair?.destroy();
});

/** One connection: a server that closes after the client's line, a client with a fixed port. */
async function connect(server: { ns: string; addr: string }, client: { ns: string }, port: number, srcPort: number) {
  const srv = nsSpawn(server.ns, 'nc', ['-l', '-N', server.addr, String(port)]);
  await waitForListen(server.ns, port);
  const r = await nsRun(client.ns, 'sh', ['-c', `echo hi | nc -N -p ${srcPort} ${server.addr} ${port}`]);
  await exited(srv);
  expect(r.code).toBe(0);
}

describe('capture on veth0 and lo at once', () => {
  beforeAll(async () => {
    rec = captureIn(pair.node, 'veth0,lo');
    await rec.capture.start();
    expect(rec.capture.stats().map((s) => [s.iface, s.listening, s.linkType])).toEqual([
      ['veth0', true, undefined],
      ['lo', true, undefined],
    ]);
  });

  it('sees an outgoing IPv4 connection: syn sent, syn-ack received, fin both ways', async () => {
    await connect({ ns: pair.remote.ns, addr: pair.remote.v4 }, pair.node, 5000, 41000);
    const n = pair.node.v4;
    const r = pair.remote.v4;
    await until('4 events', () => eventsOnPort(rec!.events, 41000).length >= 4);
    expectSameMembers(eventsOnPort(rec!.events, 41000), [
      `syn sent ${n}:41000>${r}:5000@veth0`,
      `syn-ack recv ${n}:41000>${r}:5000@veth0`,
      `fin sent ${n}:41000>${r}:5000@veth0`,
      `fin recv ${n}:41000>${r}:5000@veth0`,
    ]);
    expect(eventsOnPort(rec!.events, 41000).slice(0, 2)).toEqual([
      `syn sent ${n}:41000>${r}:5000@veth0`,
      `syn-ack recv ${n}:41000>${r}:5000@veth0`,
    ]);
  });

  it('sees an incoming connection: syn received, syn-ack sent', async () => {
    await connect({ ns: pair.node.ns, addr: pair.node.v4 }, pair.remote, 5001, 41001);
    const n = pair.node.v4;
    const r = pair.remote.v4;
    await until('4 events', () => eventsOnPort(rec!.events, 41001).length >= 4);
    expectSameMembers(eventsOnPort(rec!.events, 41001), [
      `syn recv ${n}:5001>${r}:41001@veth0`,
      `syn-ack sent ${n}:5001>${r}:41001@veth0`,
      `fin sent ${n}:5001>${r}:41001@veth0`,
      `fin recv ${n}:5001>${r}:41001@veth0`,
    ]);
  });

  it('sees an IPv6 connection', async () => {
    await connect({ ns: pair.remote.ns, addr: pair.remote.v6 }, pair.node, 5002, 41002);
    const n = `[${pair.node.v6}]`;
    const r = `[${pair.remote.v6}]`;
    await until('4 events', () => eventsOnPort(rec!.events, 41002).length >= 4);
    expectSameMembers(eventsOnPort(rec!.events, 41002), [
      `syn sent ${n}:41002>${r}:5002@veth0`,
      `syn-ack recv ${n}:41002>${r}:5002@veth0`,
      `fin sent ${n}:41002>${r}:5002@veth0`,
      `fin recv ${n}:41002>${r}:5002@veth0`,
    ]);
    expect(rec!.events.find((e) => e.key.localPort === 41002)!.key.family).toBe(6);
  });

  it('sees a refused connection: syn sent, rst received', async () => {
    const r = await nsRun(pair.node.ns, 'nc', ['-z', '-p', '41003', pair.remote.v4, '5999']);
    expect(r.code).not.toBe(0);
    await until('2 events', () => eventsOnPort(rec!.events, 41003).length >= 2);
    expect(eventsOnPort(rec!.events, 41003)).toEqual([
      `syn sent ${pair.node.v4}:41003>${pair.remote.v4}:5999@veth0`,
      `rst recv ${pair.node.v4}:41003>${pair.remote.v4}:5999@veth0`,
    ]);
  });

  it('gives both local sockets an event for each loopback segment, on lo', async () => {
    await connect({ ns: pair.node.ns, addr: '127.0.0.1' }, pair.node, 5003, 41004);
    await until('8 events', () => eventsOnPort(rec!.events, 41004).length >= 8);
    const c = '127.0.0.1:41004';
    const s = '127.0.0.1:5003';
    expect(eventsOnPort(rec!.events, 41004).slice(0, 4)).toEqual([
      `syn sent ${c}>${s}@lo`,
      `syn recv ${s}>${c}@lo`,
      `syn-ack sent ${s}>${c}@lo`,
      `syn-ack recv ${c}>${s}@lo`,
    ]);
    expectSameMembers(eventsOnPort(rec!.events, 41004).slice(4), [
      `fin sent ${c}>${s}@lo`,
      `fin recv ${s}>${c}@lo`,
      `fin sent ${s}>${c}@lo`,
      `fin recv ${c}>${s}@lo`,
    ]);
  });

  it('treats a connection to the host own address as loopback (both ends local)', async () => {
    await connect({ ns: pair.node.ns, addr: pair.node.v6 }, pair.node, 5004, 41005);
    await until('8 events', () => eventsOnPort(rec!.events, 41005).length >= 8);
    const evs = rec!.events.filter((e) => e.key.localPort === 41005 || e.key.remotePort === 41005);
    expect(new Set(evs.map((e) => e.iface))).toEqual(new Set(['lo']));
    expect(evs.filter((e) => e.sent)).toHaveLength(4);
  });

  it('counts frames and events, and stops cleanly with tcpdump counters', async () => {
    const before = rec!.capture.stats();
    const veth = before.find((s) => s.iface === 'veth0')!;
    expect(veth.linkType).toBe(1);
    expect(veth.frames).toBe(14); // 4 + 4 + 4 + 2 segments on the wire
    expect(veth.events).toBe(14);
    expect(before.find((s) => s.iface === 'lo')!.events).toBe(16);
    const pids = before.map((s) => s.pid);
    await rec!.capture.stop();
    const after = rec!.capture.stats();
    expect(after.every((s) => !s.listening && s.pid === undefined && s.kernelDropped === 0)).toBe(true);
    expect(after.map((s) => s.reportedCaptured)).toEqual([14, 8]); // tcpdump's own count at SIGTERM
    for (const pid of pids) expect(() => process.kill(pid!, 0)).toThrow();
    expect(rec!.warnings).toEqual([]);
    rec = undefined;
  });
});

describe('capture on any', () => {
  it.each([
    ['LINUX_SLL2 (libpcap default)', undefined, 276],
    ['LINUX_SLL', 'LINUX_SLL', 113],
  ])('decodes cooked headers: %s', async (_name, linkType, expected) => {
    const r = captureIn(pair.node, 'any', linkType ? { linkType } : {});
    try {
      await r.capture.start();
      const port = expected === 276 ? 41010 : 41011;
      await connect({ ns: pair.remote.ns, addr: pair.remote.v4 }, pair.node, 5010, port);
      await until('4 events', () => eventsOnPort(r.events, port).length >= 4);
      expect(r.capture.stats()[0]!.linkType).toBe(expected);
      // The handshake and both FINs, in capture order; a late RST after them (the kernel's
      // answer to a segment that arrived after the close, seen once under load) is no part of it.
      expectSameMembers(eventsOnPort(r.events, port).slice(0, 4), [
        `syn sent ${pair.node.v4}:${port}>${pair.remote.v4}:5010@any`,
        `syn-ack recv ${pair.node.v4}:${port}>${pair.remote.v4}:5010@any`,
        `fin sent ${pair.node.v4}:${port}>${pair.remote.v4}:5010@any`,
        `fin recv ${pair.node.v4}:${port}>${pair.remote.v4}:5010@any`,
      ]);
    } finally {
      await r.capture.stop();
    }
  });
});

describe('capture supervision', () => {
  it('fails start() with tcpdump own message for a missing interface', async () => {
    const r = captureIn(pair.node, 'veth0,nosuch0');
    await expect(r.capture.start()).rejects.toThrow(/capture on nosuch0: .*nosuch0/);
    // The healthy one was stopped again.
    expect(r.capture.stats().every((s) => s.pid === undefined)).toBe(true);
  });

  it('rejects interface names tcpdump would read as options', () => {
    expect(() => captureIn(pair.node, '-w,lo')).toThrow(/bad interface name/);
    expect(() => captureIn(pair.node, ' , ')).toThrow(/no interface/);
    expect(() => captureIn(pair.node, 'lo,lo')).toThrow(/listed twice/);
    expect(() => captureIn(pair.node, 'any,lo')).toThrow(/'any' already covers every interface/);
  });

  it('restarts a killed tcpdump and reports the gap', async () => {
    const r = captureIn(pair.node, 'veth0', { restartDelayMs: { min: 100, max: 1000 } });
    try {
      await r.capture.start();
      const downs: string[] = [];
      r.capture.on('down', (d) => downs.push(d.reason));
      const pid = r.capture.stats()[0]!.pid!;
      const killedAt = Date.now();
      process.kill(pid, 'SIGKILL');
      await until('a gap', () => r.gaps.length > 0);
      const gap = r.gaps[0]!;
      expect(gap.iface).toBe('veth0');
      expect(gap.start).toBeGreaterThanOrEqual(killedAt);
      expect(gap.end).toBeGreaterThanOrEqual(gap.start + 100);
      expect(gap.reason).toMatch(/killed by SIGKILL/);
      expect(downs).toEqual([gap.reason]);
      const s = r.capture.stats()[0]!;
      expect(s.restarts).toBe(1);
      expect(s.listening).toBe(true);
      expect(s.pid).not.toBe(pid);
      // Capture is live again.
      await connect({ ns: pair.remote.ns, addr: pair.remote.v4 }, pair.node, 5020, 41020);
      await until('4 events', () => eventsOnPort(r.events, 41020).length >= 4);
      expect(r.events.map(brief).every((l) => l.includes('41020'))).toBe(true);
    } finally {
      await r.capture.stop();
    }
  });
});
