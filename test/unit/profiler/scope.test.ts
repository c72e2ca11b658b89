import { describe, expect, it } from 'vitest';
import { Scope } from '../../../src/profiler/scope.js';
import { parseRouteGet } from '../../../src/resolve/routes.js';
import { UnclaimedConnections, type Unclaimed } from '../../../src/profiler/unclaimed.js';
import type { ConnKey } from '../../../src/connection.js';

const local = new Set(['10.1.0.1', '192.168.5.1', 'fd00:1::1']);
const isLocal = (a: string) => local.has(a) || a.startsWith('127.');
const key = (localAddr: string, localPort: number, remoteAddr: string, remotePort: number): ConnKey => ({ family: localAddr.includes(':') ? 6 : 4, localAddr, localPort, remoteAddr, remotePort });
const routes: Record<string, string> = { '10.1.0.2': 'veth0', '192.168.5.7': 'veth1', 'fd00:1::2': 'veth0' };
const deviceFor = async (k: ConnKey) => routes[k.remoteAddr];

describe('scope: which connections are a job\'s', () => {
  it('places a connection found without a packet by its route; loopback and own addresses cross lo', async () => {
    const s = new Scope({ configured: ['veth0', 'lo'], isLocal, deviceFor });
    expect(await s.ofFound(key('10.1.0.1', 40000, '10.1.0.2', 80))).toEqual({ iface: 'veth0' });
    expect(await s.ofFound(key('fd00:1::1', 40000, 'fd00:1::2', 80))).toEqual({ iface: 'veth0' });
    expect(await s.ofFound(key('192.168.5.1', 40000, '192.168.5.7', 80))).toEqual({ iface: undefined, why: 'not-configured', device: 'veth1' });
    expect(await s.ofFound(key('127.0.0.1', 40000, '127.0.0.1', 8001))).toEqual({ iface: 'lo' });
    // To the host's own address on another interface: routed through lo.
    expect(await s.ofFound(key('10.1.0.1', 40000, '192.168.5.1', 22))).toEqual({ iface: 'lo' });
    expect(await s.ofFound(key('10.1.0.1', 40000, '10.9.9.9', 80))).toEqual({ iface: undefined, why: 'no-route' });
  });

  it('never counts loopback unless lo is configured; INTERFACE = any takes every route', async () => {
    expect(await new Scope({ configured: ['veth0'], isLocal, deviceFor }).ofFound(key('127.0.0.1', 40000, '127.0.0.1', 8001))).toMatchObject({ iface: undefined, why: 'not-configured' });
    expect(await new Scope({ configured: ['any'], isLocal, deviceFor }).ofFound(key('192.168.5.1', 40000, '192.168.5.7', 80))).toEqual({ iface: 'any' });
  });

  it('excludes the daemon\'s own API from either end, on its address or on any address', async () => {
    const s = new Scope({ configured: ['any'], isLocal, deviceFor, api: { addr: '127.0.0.1', port: 8080 } });
    expect(s.isOwnApi(key('127.0.0.1', 8080, '127.0.0.1', 5555))).toBe(true); // the server side
    expect(s.isOwnApi(key('127.0.0.1', 5555, '127.0.0.1', 8080))).toBe(true); // the client side
    expect(s.isOwnApi(key('10.1.0.1', 5555, '10.1.0.2', 8080))).toBe(false); // a remote web server on 8080
    expect(s.isOwnApi(key('10.1.0.1', 8080, '10.1.0.2', 5555))).toBe(false); // not the API's address
    expect(s.ofCaptured(key('127.0.0.1', 5555, '127.0.0.1', 8080), 'lo')).toEqual({ iface: undefined, why: 'own-api' });
    const wide = new Scope({ configured: ['any'], isLocal, deviceFor, api: { addr: '::', port: 8080 } });
    expect(wide.isOwnApi(key('10.1.0.1', 8080, '10.1.0.2', 5555))).toBe(true);
    expect(wide.isOwnApi(key('10.1.0.1', 5555, '192.168.5.1', 8080))).toBe(true);
    expect(wide.isOwnApi(key('10.1.0.1', 5555, '10.1.0.2', 8080))).toBe(false);
  });

  it('reads the device from ip -j route get output (recorded)', () => {
    expect(parseRouteGet('[{"dst":"10.1.0.2","dev":"veth0","prefsrc":"10.1.0.1","flags":[],"uid":0,"cache":[]}]\n')).toBe('veth0');
    expect(parseRouteGet('[{"type":"local","dst":"10.1.0.1","dev":"lo","prefsrc":"10.1.0.1","flags":[],"uid":0,"cache":["local"]}]')).toBe('lo');
    expect(parseRouteGet('[]')).toBeUndefined();
    expect(parseRouteGet('RTNETLINK answers: Network is unreachable')).toBeUndefined();
  });
});

describe('the grace list', () => {
  const u = (port: number, time: number, pid = 7): Unclaimed => ({ id: `c${port}`, key: key('10.1.0.1', port, '10.1.0.2', 80), iface: 'veth0', time, openedBy: 'local', generation: 0, pid, finSent: false, finReceived: false, rst: false });

  it('keeps counters for the grace, then gives them up, and remembers the connection a while longer', () => {
    const g = new UnclaimedConnections({ graceMs: 1000, rememberMs: 5000, maxHeld: 10 });
    g.add(u(1, 0), 0);
    g.add(u(2, 800), 800);
    expect(g.expire(900)).toEqual({ released: [], forgotten: [] });
    const r = g.expire(1500);
    expect(r.released.map((x) => x.id)).toEqual(['c1']);
    expect(g.isHeld('c1')).toBe(false);
    expect(g.get('c1')).toBeDefined(); // its FIN is still recognised
    expect(g.claim('c1')).toBeUndefined(); // but its counters are gone: not claimable
    expect(g.claim('c2')?.id).toBe('c2');
    expect(g.expire(6000).forgotten).toEqual(['c1']);
    expect(g.has('c1')).toBe(false);
  });

  it('beyond its room gives up the oldest first and reports the grace it could keep', () => {
    const g = new UnclaimedConnections({ graceMs: 30_000, rememberMs: 30_000, maxHeld: 2 });
    expect(g.add(u(1, 0), 0)).toEqual([]);
    g.add(u(2, 1000), 1000);
    expect(g.add(u(3, 4000), 4000).map((x) => x.id)).toEqual(['c1']);
    expect(g.stats(4000)).toMatchObject({ held: 2, releasedEarly: 1, shortestGraceMs: 4000 });
    expect(g.stats(200_000).shortestGraceMs).toBeUndefined(); // no shortening lately
  });
});
