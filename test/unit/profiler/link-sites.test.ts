import { describe, expect, it } from 'vitest';
import { LinkSites, type LinkOpener, type OpenedLink } from '../../../src/profiler/link-sites.js';
import type { ConnectionTracker } from '../../../src/profiler/tracker.js';
import type { CounterEngine } from '../../../src/counters/engine.js';
import type { ProfiledProcess } from '../../../src/registry/registry.js';
import type { JobLink } from '../../../src/resolve/links.js';

// The sites' bookkeeping when a link's last job ends while another registers on it. The link's
// kernel side is a table named by the device (as netprof_l<ifindex> is): here a set of names,
// whose removal takes a while, as nft's does. What is checked is that the link is counted
// afterwards, not how.
const LINK: JobLink = { device: 'vc1', ifindex: 7, master: 'br0', kind: 'container' };

function world() {
  const tables = new Set<string>();
  const order: string[] = [];
  let releaseClose: (() => void) | undefined;
  const alive = new Set<number>();
  const opener: LinkOpener = {
    discover: async () => [LINK],
    named: async () => LINK,
    async open(link): Promise<OpenedLink> {
      order.push('open');
      tables.add(link.device);
      return {
        engine: { size: () => 0 } as unknown as CounterEngine,
        capture: { on: () => undefined, stats: () => [], stop: async () => undefined },
        resolver: {} as OpenedLink['resolver'],
        async close() {
          order.push('close begins');
          await new Promise<void>((r) => (releaseClose = r));
          tables.delete(link.device);
          order.push('close done');
        },
      };
    },
  };
  const tracker = {
    settle: async () => undefined,
    finish: async () => 0,
    finishAll: async () => 0,
    gc: async () => undefined,
    claimConnectionsOf: async () => undefined,
    table: { ofPid: () => [], size: 0 },
  } as unknown as ConnectionTracker;
  const sites = new LinkSites({ opener, configured: ['br0'], newTracker: () => tracker, isAlive: (p) => alive.has(p) });
  const proc = (pid: number): ProfiledProcess => (alive.add(pid), { pid, job: `j${pid}`, uid: 0, user: 'root', startTime: 0, startTicks: 0, registeredAt: 0 });
  const closeReleased = async () => {
    while (!releaseClose) await new Promise((r) => setTimeout(r, 1));
    releaseClose();
  };
  return { sites, tables, order, proc, alive, closeReleased };
}

describe('a job’s link whose last process ends while another registers', () => {
  it('opens the new counters only after the old ones are removed (the collector closing it)', async () => {
    const w = world();
    const first = w.proc(1);
    expect(await w.sites.attach(first, [1])).toEqual([LINK]);
    w.alive.delete(1);
    const collecting = w.sites.collect(); // the link's only process died: its table is removed
    const attaching = w.sites.attach(w.proc(2), [2]);
    await w.closeReleased();
    await Promise.all([collecting, attaching]);
    expect(w.order).toEqual(['open', 'close begins', 'close done', 'open']);
    expect(w.tables.has('vc1'), 'the new job’s link is counted').toBe(true);
    expect(w.sites.describe()).toMatchObject([{ link: 'vc1', pids: [2] }]);
  });

  it('opens the new counters only after the old ones are removed (its last job ended)', async () => {
    const w = world();
    const first = w.proc(1);
    await w.sites.attach(first, [1]);
    const ending = w.sites.ended([first], 'job-end');
    while (!w.order.includes('close begins')) await new Promise((r) => setTimeout(r, 1));
    const attaching = w.sites.attach(w.proc(2), [2]);
    await w.closeReleased();
    await Promise.all([attaching, ending]);
    expect(w.order).toEqual(['open', 'close begins', 'close done', 'open']);
    expect(w.tables.has('vc1'), 'the new job’s link is counted').toBe(true);
    expect(w.sites.describe()).toMatchObject([{ link: 'vc1', pids: [2] }]);
  });
});
