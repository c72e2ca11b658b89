import { describe, expect, it } from 'vitest';
import { Counting } from '../../../src/profiler/counting.js';
import { emptyStats } from '../../../src/profiler/tracker-stats.js';
import type { ConnKey } from '../../../src/connection.js';
import type { CounterEngine, Counts } from '../../../src/counters/engine.js';
import type { TrackedConnection } from '../../../src/profiler/connections.js';

// The end batch against an engine that, like nf_tables, refuses a whole transaction that
// deletes one element twice. The engine is a ledger: what is checked is what the batch asks.
describe('an end batch', () => {
  it('reads and removes a key asked twice in one batch once, and gives both askers its counts', async () => {
    const counts: Counts = { bytesIn: 10, packetsIn: 1, bytesOut: 20, packetsOut: 2 };
    const calls: string[][] = [];
    const engine = {
      name: 'nftables',
      size: () => 0,
      end: async (keys: readonly ConnKey[]) => {
        const ids = keys.map((k) => `${k.localPort}`);
        calls.push(ids);
        if (new Set(ids).size < ids.length) throw new Error('No such file or directory');
        return keys.map(() => counts);
      },
    } as unknown as CounterEngine;
    const counting = new Counting(engine, emptyStats(), { capacity: 100, thresholdGc: async () => false });
    const key: ConnKey = { family: 4, localAddr: '10.0.0.1', localPort: 1000, remoteAddr: '10.0.0.2', remotePort: 80 };
    const conn = { key, counting: 'from-first-packet' } as TrackedConnection;
    const [a, b] = await Promise.all([counting.end([conn], () => false), counting.end([conn], () => false)]);
    expect(calls).toEqual([['1000']]);
    expect(a.finals).toEqual([counts]);
    expect(b.finals).toEqual([counts]);
  });
});
