import { afterAll, describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
import { ConnectionTracker } from '../../../src/profiler/tracker.js';
import { KERNEL_SHORT_NOTE, RESTARTED_NOTE } from '../../../src/profiler/records.js';
import { Registry } from '../../../src/registry/registry.js';
import { Scope } from '../../../src/profiler/scope.js';
import type { ConnEvent } from '../../../src/capture/events.js';
import type { ConnKey } from '../../../src/connection.js';
import type { BeginOutcome, CounterEngine, Counts } from '../../../src/counters/engine.js';
import type { ConnectionRecord } from '../../../src/log/record.js';
import type { ResolveStack } from '../../../src/resolve/index.js';
import { sleeper } from '../../support/procs.js';

// The tracker's event logic — order, duplicates, half-close, unknown closes — fed recorded-style
// events. The engine here is a ledger, not netfilter (the counting itself is tested against
// conntrack in the integration tests); what is checked is which connections the tracker
// begins, ends and logs, and why.
const kid = sleeper();
const later = sleeper(); // registered only after its connections opened
afterAll(() => {
  kid.kill('SIGKILL');
  later.kill('SIGKILL');
});

class LedgerEngine implements CounterEngine {
  readonly name = 'nftables' as const;
  begun = new Set<string>();
  ended: string[] = [];
  start = async () => [];
  begin = async (items: ReadonlyArray<{ key: ConnKey }>): Promise<BeginOutcome[]> => items.map((i) => (this.begun.add(id(i.key)), 'from-first-packet'));
  read = async (keys: readonly ConnKey[]) => keys.map(() => counts);
  end = async (keys: readonly ConnKey[]): Promise<Array<Counts | undefined>> => keys.map((k) => (this.ended.push(id(k)), this.begun.delete(id(k)), counts));
  forgotten: string[] = [];
  forget = async (keys: readonly ConnKey[]) => void keys.forEach((k) => (this.forgotten.push(id(k)), this.begun.delete(id(k))));
  discarded: string[] = [];
  discard = async (keys: readonly ConnKey[]) => void keys.forEach((k) => this.discarded.push(id(k)));
  sweep = async () => 0;
  repair = async () => undefined;
  list = async () => [];
  size = () => this.begun.size;
  stop = async () => undefined;
}
const counts: Counts = { bytesIn: 100, packetsIn: 2, bytesOut: 200, packetsOut: 3 };
const id = (k: ConnKey) => `${k.localPort}-${k.remotePort}`;

function setup(owner: (key: ConnKey) => number | undefined, opts: { reused?: boolean; graceMs?: number; maxUnclaimed?: number } = {}) {
  const registry = new Registry();
  const info = registry.verify({ pid: kid.pid! });
  // reused: what was registered under this pid was an earlier process (another start time).
  registry.add('job', opts.reused ? { ...info, startTicks: info.startTicks - 1 } : info);
  const records: ConnectionRecord[] = [];
  const engine = new LedgerEngine();
  const resolver = Object.assign(new EventEmitter(), {
    resolve: async (key: ConnKey) => {
      const pid = owner(key);
      return pid === undefined ? { pid: undefined, source: 'unresolved' as const, reason: 'closed' } : { pid, source: 'ebpf-connect' as const, exact: true };
    },
  });
  const tracker = new ConnectionTracker({
    registry,
    log: { write: (r) => records.push(r) },
    engine,
    resolve: { resolver, lineage: { rootOf: () => undefined } } as unknown as ResolveStack,
    followChildren: true,
    capacity: 100,
    scope: new Scope({ configured: ['eth0'], isLocal: (a) => a === '10.0.0.1', deviceFor: async () => 'eth0', api: { addr: '10.0.0.1', port: 8080 } }),
    graceMs: opts.graceMs ?? 30_000,
    maxUnclaimed: opts.maxUnclaimed ?? 1000,
  });
  return { tracker, records, engine, resolver, registry };
}

const key = (localPort: number): ConnKey => ({ family: 4, localAddr: '10.0.0.1', localPort, remoteAddr: '10.0.0.2', remotePort: 80 });
const ev = (kind: ConnEvent['kind'], localPort: number, sent: boolean, time = Date.now()): ConnEvent => ({ kind, time, iface: 'eth0', key: key(localPort), sent });
const settle = async (t: ConnectionTracker) => {
  await t.drain();
  await new Promise((r) => setTimeout(r, 60));
  await t.drain();
};

describe('connection events to records', () => {
  it('logs a connection once both FINs are seen, not at the first (half-close)', async () => {
    const { tracker, records } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1000, true));
    tracker.onEvent(ev('syn-ack', 1000, false));
    tracker.onEvent(ev('fin', 1000, true));
    await settle(tracker);
    expect(records).toHaveLength(0);
    expect(tracker.table.get(key(1000))?.finSent).toBe(true);
    tracker.onEvent(ev('fin', 1000, false));
    await settle(tracker);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ job: 'job', pid: kid.pid, reason: 'fin', openedBy: 'local', counts, partial: false });
  });

  it('says why a connection seen opening is partial: the kernel made no counter at its handshake, or its counters were reinstalled', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    engine.begin = async (items) => items.map((i) => (engine.begun.add(id(i.key)), 'from-now'));
    tracker.onEvent(ev('syn', 1100, true));
    tracker.onEvent(ev('rst', 1100, false));
    await settle(tracker);
    expect(records[0]).toMatchObject({ partial: true, note: KERNEL_SHORT_NOTE });
    engine.begin = async (items) => items.map((i) => (engine.begun.add(id(i.key)), 'from-first-packet'));
    tracker.onEvent(ev('syn', 1101, true));
    await settle(tracker);
    expect(tracker.countingRestarted([key(1101)])).toBe(1);
    tracker.onEvent(ev('rst', 1101, false));
    await settle(tracker);
    expect(records[1]).toMatchObject({ partial: true, note: RESTARTED_NOTE });
  });

  it('gives no such reason where counting from now is what the engine does (iptables)', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    Object.defineProperty(engine, 'name', { value: 'iptables' });
    engine.begin = async (items) => items.map((i) => (engine.begun.add(id(i.key)), 'from-now'));
    tracker.onEvent(ev('syn', 1102, true));
    tracker.onEvent(ev('rst', 1102, false));
    await settle(tracker);
    expect(records[0]).toMatchObject({ partial: true });
    expect(records[0]!.note).toBeUndefined();
  });

  it('says why a connection is not counted: the threshold, or the engine’s own error', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    engine.begin = async (items) => items.map(() => 'no-room');
    tracker.onEvent(ev('syn', 1103, true));
    tracker.onEvent(ev('rst', 1103, false));
    await settle(tracker);
    expect(records[0]).toMatchObject({ counts: undefined, note: 'not counted: RULES_THRESHOLD (100) reached' });
    engine.begin = async () => {
      throw new Error('nfset.get: No such file or directory');
    };
    tracker.onEvent(ev('syn', 1104, true));
    tracker.onEvent(ev('rst', 1104, false));
    await settle(tracker);
    expect(records[1]).toMatchObject({ counts: undefined, note: 'not counted: the counter engine failed: nfset.get: No such file or directory' });
  });

  it('logs a connection once when its process’s end and a close of everything race', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1105, true));
    await settle(tracker);
    const conn = tracker.table.get(key(1105))!;
    // The whole table's read outlasts the one connection's final read (as 10,000 do one).
    engine.list = async () => (await new Promise((r) => setTimeout(r, 50)), []);
    await Promise.all([tracker.finish([conn], 'process-end'), tracker.finishAll('gc')]);
    expect(records).toHaveLength(1);
  });

  it('ends a connection once when two calls finish it together (its close and its process’s end)', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1106, true));
    await settle(tracker);
    const conn = tracker.table.get(key(1106))!;
    await Promise.all([tracker.finish([conn], 'process-end'), tracker.finish([conn], 'job-end')]);
    expect(engine.ended.filter((k) => k === id(key(1106))), 'its counters read and removed once').toHaveLength(1);
    expect(records).toHaveLength(1);
  });

  it('a job’s end and a collection at the threshold do not wait for each other', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1107, true, Date.now() - 60_000)); // old and quiet: the collection's to reclaim
    await settle(tracker);
    const old = tracker.table.get(key(1107))!;
    engine.size = () => 1000; // at the threshold: the next begin runs a collection first
    tracker.onEvent(ev('syn', 1108, true));
    while (!tracker.table.get(key(1108))) await new Promise((r) => setImmediate(r));
    // The job ends while the young one's begin waits for that collection.
    const ended = tracker.finish([old, tracker.table.get(key(1108))!], 'job-end');
    const done = await Promise.race([ended.then(() => true), new Promise((r) => setTimeout(() => r(false), 3_000))]);
    expect(done, 'the end returned').toBe(true);
    expect(records.map((r) => r.localPort).sort()).toEqual([1107, 1108]);
  });

  it('ends at an RST, and counts duplicates and closes of unknown connections', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1001, false));
    tracker.onEvent(ev('syn', 1001, false)); // retransmitted SYN
    tracker.onEvent(ev('rst', 1001, true));
    tracker.onEvent(ev('rst', 1001, true));
    tracker.onEvent(ev('fin', 1999, true)); // never opened in view
    await settle(tracker);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ reason: 'rst', openedBy: 'remote' });
    expect(engine.ended).toEqual(['1001-80']);
    expect(tracker.stats.duplicateEvents).toBe(2);
    expect(tracker.stats.closesOfUnknown).toBe(1);
  });

  it('ignores connections of processes nobody profiles and reports unresolved ones', async () => {
    const { tracker, records, engine } = setup((k) => (k.localPort === 1002 ? 1 : undefined));
    for (const port of [1002, 1003]) {
      tracker.onEvent(ev('syn', port, true));
      tracker.onEvent(ev('fin', port, true));
      tracker.onEvent(ev('fin', port, false));
    }
    await settle(tracker);
    expect(records).toEqual([]);
    expect(engine.begun.size).toBe(0);
    expect(tracker.stats).toMatchObject({ notProfiled: 1, unresolved: 1, closesOfUnknown: 0 });
    expect(tracker.stats.unresolvedReasons).toEqual({ closed: 1 });
  });

  it('treats a new SYN on a closing tuple as a new connection; the old one, not yet read, is logged uncounted', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1004, true));
    tracker.onEvent(ev('syn', 1004, true)); // a retransmission: the same connection
    tracker.onEvent(ev('fin', 1004, true));
    tracker.onEvent(ev('syn', 1004, true)); // arrives before the first connection was read
    await settle(tracker);
    expect(records).toHaveLength(1);
    expect(tracker.stats.tupleReused).toBe(1);
    // The new SYN restarted the tuple's counters: the old connection's are gone, and what the
    // kernel holds now is the new one's — left in place, not read or removed as the old one's.
    expect(records[0]!.counts).toBeUndefined();
    expect(records[0]!.note).toMatch(/reused its 4-tuple/);
    expect(engine.forgotten).toEqual([id(key(1004))]);
    expect(engine.ended).toEqual([]);
    expect(tracker.table.get(key(1004))).toBeDefined();
    expect(engine.begun.has(id(key(1004)))).toBe(true);
    tracker.onEvent(ev('fin', 1004, true));
    tracker.onEvent(ev('fin', 1004, false));
    await settle(tracker);
    expect(records[1]!.counts).toEqual(counts);
    expect(tracker.stats.tupleReusedBeforeRead).toBe(1);
  });

  it('asks again when the end batch runs: a tuple reused while its read waited is not read', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    const end = engine.end;
    engine.end = async (keys) => (await new Promise((r) => setTimeout(r, 150)), end(keys));
    for (const p of [1007, 1008]) tracker.onEvent(ev('syn', p, true));
    await settle(tracker);
    tracker.onEvent(ev('rst', 1007, true)); // its end batch runs for 150 ms
    await new Promise((r) => setTimeout(r, 60));
    tracker.onEvent(ev('rst', 1008, true)); // queued behind it …
    await new Promise((r) => setTimeout(r, 40));
    tracker.onEvent(ev('syn', 1008, true)); // … when a new connection takes its tuple
    await settle(tracker);
    await new Promise((r) => setTimeout(r, 300));
    const old = records.find((r) => r.localPort === 1008)!;
    expect(old.counts).toBeUndefined();
    expect(old.note).toMatch(/reused its 4-tuple/);
    expect(engine.ended).toEqual([id(key(1007))]);
    expect(engine.forgotten).toEqual([id(key(1008))]);
    expect(tracker.table.get(key(1008))).toBeDefined(); // the new one, counted on
  });

  it('logs an open connection uncounted when its tuple is reused while it waits for its last FIN', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1006, true));
    tracker.onEvent(ev('fin', 1006, false));
    await settle(tracker); // tracked, idle, nothing pending
    tracker.onEvent(ev('syn', 1006, true));
    await settle(tracker);
    expect(records).toHaveLength(1);
    expect(records[0]!.counts).toBeUndefined();
    expect(engine.forgotten).toEqual([id(key(1006))]);
  });

  it('counts a connection on a reused tuple normally when the earlier one was read first', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent(ev('syn', 1005, true));
    tracker.onEvent(ev('syn-ack', 1005, false));
    tracker.onEvent(ev('fin', 1005, false));
    tracker.onEvent(ev('fin', 1005, true));
    await settle(tracker);
    expect(records).toHaveLength(1);
    tracker.onEvent(ev('syn', 1005, true));
    tracker.onEvent(ev('fin', 1005, true));
    tracker.onEvent(ev('fin', 1005, false));
    await settle(tracker);
    expect(records.map((r) => r.counts)).toEqual([counts, counts]);
    expect(engine.forgotten).toEqual([]);
    expect(tracker.stats.tupleReusedBeforeRead).toBe(0);
  });

  it('handles each connection’s events in order even when resolution is slow', async () => {
    const { tracker, records } = setup(() => kid.pid);
    for (let p = 2000; p < 2050; p++) {
      tracker.onEvent(ev('syn', p, true));
      tracker.onEvent(ev('fin', p, false));
      tracker.onEvent(ev('fin', p, true));
    }
    await settle(tracker);
    expect(records).toHaveLength(50);
    expect(records.every((r) => r.reason === 'fin')).toBe(true);
  });

  it('does not give a job the connections of a process that reused its pid', async () => {
    const { tracker, records, engine } = setup(() => kid.pid, { reused: true });
    tracker.onEvent(ev('syn', 3000, true));
    await settle(tracker);
    expect(engine.begun.size).toBe(0);
    expect(tracker.stats).toMatchObject({ pidReused: 1, notProfiled: 1 });
    expect(records).toEqual([]);
  });

  it('waits for counting to be set up when a job ends right after a connection opened', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    const begin = engine.begin;
    engine.begin = async (items) => {
      await new Promise((r) => setTimeout(r, 100));
      return begin(items);
    };
    tracker.onEvent(ev('syn', 3100, true));
    while (tracker.table.size === 0) await new Promise((r) => setTimeout(r, 5));
    await tracker.finish(tracker.table.all(), 'job-end');
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ reason: 'job-end', counts, partial: false });
  });

  it('logs a connection unresolved at its SYN once a late eBPF event names a profiled process', async () => {
    const { tracker, records, resolver } = setup(() => undefined);
    tracker.onEvent(ev('syn', 3200, true));
    tracker.onEvent(ev('fin', 3200, true));
    tracker.onEvent(ev('fin', 3200, false));
    await settle(tracker);
    expect(records).toEqual([]);
    expect(tracker.stats.unresolved).toBe(1);
    resolver.emit('refined', key(3200), { pid: kid.pid, source: 'ebpf-connect', exact: true });
    await settle(tracker);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ reason: 'fin', pid: kid.pid, attribution: 'ebpf-connect-late', partial: false });
    expect(tracker.stats.resolvedLate).toBe(1);
  });
});

describe('scope and late registration', () => {
  const apiKey = (remotePort: number): ConnKey => ({ family: 4, localAddr: '10.0.0.1', localPort: 8080, remoteAddr: '10.0.0.2', remotePort });
  const lateRegister = async (t: ConnectionTracker, registry: Registry) => {
    registry.add('late-job', registry.verify({ pid: later.pid! }));
    return t.claimConnectionsOf([later.pid!], { late: true });
  };

  it('never tracks a connection to or from the daemon\'s own API', async () => {
    const { tracker, records, engine } = setup(() => kid.pid);
    tracker.onEvent({ kind: 'syn', time: Date.now(), iface: 'eth0', key: apiKey(5555), sent: false });
    await settle(tracker);
    expect(engine.begun.size).toBe(0);
    expect(tracker.stats.ownApi).toBe(1);
    expect(records).toEqual([]);
  });

  it('claims a connection that opened and closed before its process was registered, counted, flagged late', async () => {
    const { tracker, records, engine, registry } = setup(() => later.pid);
    tracker.onEvent(ev('syn', 4000, true));
    tracker.onEvent(ev('fin', 4000, false));
    tracker.onEvent(ev('fin', 4000, true));
    tracker.onEvent(ev('syn', 4001, true)); // still open at the registration
    await settle(tracker);
    expect(records).toEqual([]);
    expect(engine.discarded).toEqual([]); // closed, but within the grace: its counters stay
    expect(await lateRegister(tracker, registry)).toBe(2);
    await settle(tracker);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ job: 'late-job', pid: later.pid, reason: 'fin', counts, partial: false, late: true });
    expect(tracker.table.get(key(4001))).toMatchObject({ job: 'late-job', late: true });
    expect(tracker.stats).toMatchObject({ lateClaimed: 2, lateClosed: 1 });
  });

  it('gives up unclaimed counters after the grace: a registration then counts from now (partial)', async () => {
    const { tracker, records, engine, registry } = setup(() => later.pid, { graceMs: 50 });
    tracker.onEvent(ev('syn', 4100, true));
    tracker.onEvent(ev('fin', 4100, false));
    tracker.onEvent(ev('fin', 4100, true));
    await settle(tracker);
    await new Promise((r) => setTimeout(r, 80));
    await tracker.gc('periodic');
    await settle(tracker);
    expect(engine.discarded).toEqual([id(key(4100))]);
    expect(await lateRegister(tracker, registry)).toBe(0);
    expect(records).toEqual([]);
  });

  it('with LATE_GRACE = 0 gives up a closed unclaimed connection\'s counters at once', async () => {
    const { tracker, engine } = setup(() => later.pid, { graceMs: 0 });
    tracker.onEvent(ev('syn', 4200, true));
    tracker.onEvent(ev('rst', 4200, false));
    await settle(tracker);
    expect(engine.discarded).toEqual([id(key(4200))]);
  });

  it('a discard still queued when a new connection takes the tuple is not made: the counters are the new one\'s', async () => {
    const { tracker, engine } = setup(() => later.pid, { graceMs: 0 });
    tracker.onEvent(ev('syn', 4500, true));
    tracker.onEvent(ev('rst', 4500, false));
    await tracker.drain(); // given up: its discard waits for its batch (50 ms)
    tracker.onEvent(ev('syn', 4500, true));
    await settle(tracker);
    await new Promise((r) => setTimeout(r, 60));
    expect(engine.discarded).toEqual([]);
  });

  it('bounds the grace list: beyond its room the oldest counters go early, and that is reported', async () => {
    const { tracker, engine } = setup(() => later.pid, { maxUnclaimed: 3 });
    for (let p = 4300; p < 4305; p++) {
      tracker.onEvent(ev('syn', p, true, Date.now() - 1000));
      await settle(tracker);
    }
    expect(engine.discarded).toEqual([id(key(4300)), id(key(4301))]);
    const st = tracker.unclaimed.stats();
    expect(st).toMatchObject({ held: 3, releasedEarly: 2 });
    expect(st.shortestGraceMs).toBeGreaterThanOrEqual(1000);
    expect(st.shortestGraceMs).toBeLessThan(30_000);
  });

  it('a new connection on an unclaimed tuple keeps its counters: the old one\'s are not discarded over it', async () => {
    const { tracker, engine, registry, records } = setup(() => later.pid, { graceMs: 0 });
    tracker.onEvent(ev('syn', 4400, true));
    tracker.onEvent(ev('fin', 4400, true));
    tracker.onEvent(ev('syn', 4400, true)); // reuse before the old one was handled
    await settle(tracker);
    expect(engine.discarded).toEqual([]);
    await lateRegister(tracker, registry);
    await settle(tracker);
    expect(tracker.table.get(key(4400))).toBeDefined(); // the new one, still open
    expect(records).toEqual([]);
  });
});
