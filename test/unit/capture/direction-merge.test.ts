import { describe, expect, it, vi } from 'vitest';
import { DirectionMerge, MERGE_HOLD_MS } from '../../../src/capture/direction-merge.js';
import type { ConnEvent } from '../../../src/capture/events.js';

const ev = (kind: ConnEvent['kind'], time: number): ConnEvent => ({ kind, time, iface: 'br0', sent: kind !== 'syn', key: { family: 4, localAddr: '10.0.0.2', localPort: 80, remoteAddr: '10.0.0.9', remotePort: 5000 } });

describe('a link’s two capture directions, merged', () => {
  it('hands on events in capture order even when the pipes delivered them the other way round', () => {
    vi.useFakeTimers();
    try {
      const got: string[] = [];
      const m = new DirectionMerge((e) => got.push(`${e.kind}@${e.time}`));
      m.push(ev('fin', 120)); // the job's FIN, read first from the "in" capture
      m.push(ev('syn', 100)); // the remote's SYN, read late from the "out" capture
      expect(got).toEqual([]);
      vi.advanceTimersByTime(MERGE_HOLD_MS + 1);
      expect(got).toEqual(['syn@100', 'fin@120']);
      m.push(ev('rst', 200));
      m.flush(true);
      expect(got).toEqual(['syn@100', 'fin@120', 'rst@200']);
    } finally {
      vi.useRealTimers();
    }
  });
});
