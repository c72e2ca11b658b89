import { describe, expect, it } from 'vitest';
import type { ElementStore } from '../../../src/counters/element-store.js';
import { settledDump } from '../../../src/counters/nft-flows.js';
import type { SetElement } from '../../../src/counters/nft-ruleset.js';

// What the kernel's dumps look like beside a changing set (measured, docs/counters.md): an
// element skipped, another repeated. The store here replays such dumps; the kernel side is
// tested in netlink-async.test.ts.
const el = (port: number): SetElement => ({ tuple: { family: 4, saddr: '10.0.0.1', sport: port, daddr: '10.0.0.2', dport: 80 } });
const replay = (dumps: Array<SetElement[] | undefined>) => {
  let calls = 0;
  const store = { dump: async () => dumps[Math.min(calls++, dumps.length - 1)] } as unknown as ElementStore;
  return { store, calls: () => calls };
};
const ports = (got: SetElement[] | undefined) => got!.map((e) => e.tuple.sport).sort((a, b) => a - b);

describe('a set dumped until two dumps agree', () => {
  it('past a dump that skipped one element and repeated another', async () => {
    const r = replay([[el(1), el(1), el(3)], [el(1), el(2), el(3)], [el(3), el(2), el(1)]]);
    expect(ports(await settledDump(r.store, 'owners4', 4))).toEqual([1, 2, 3]);
    expect(r.calls()).toBe(3);
  });

  it('never agreeing: every element any of five dumps held', async () => {
    const r = replay([[el(1)], [el(2)], [el(3)], [el(4)], [el(5)], [el(6)]]);
    expect(ports(await settledDump(r.store, 'owners4', 4))).toEqual([1, 2, 3, 4, 5]);
    expect(r.calls()).toBe(5);
  });

  it('no set: undefined', async () => {
    expect(await settledDump(replay([undefined]).store, 'owners4', 4)).toBeUndefined();
  });
});
