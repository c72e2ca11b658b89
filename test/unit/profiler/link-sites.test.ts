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

const tick = () => new Promise((r) => setTimeout(r, 1));

function world(openMs = 0, finishAllFails = false) {
  const tables = new Set<string>();
  const order: string[] = [];
  const alive = new Set<number>();
  let finishGate: Promise<void> | undefined;
  const found = { link: LINK };
  const opener: LinkOpener = {
    discover: async () => [found.link],
    named: async () => LINK,
    async open(link): Promise<OpenedLink> {
      if (openMs) await new Promise((r) => setTimeout(r, openMs));
      order.push('open');
      tables.add(`${link.device}@${link.ifindex}`);
      return {
        engine: { size: () => 0 } as unknown as CounterEngine,
        capture: { on: () => undefined, stats: () => [], stop: async () => undefined },
        resolver: {} as OpenedLink['resolver'],
        async close() {
          order.push('close begins');
          await new Promise((r) => setTimeout(r, 20));
          tables.delete(`${link.device}@${link.ifindex}`);
          order.push('close done');
        },
      };
    },
  };
  const tracker = {
    settle: async () => undefined,
    finish: () => finishGate ?? Promise.resolve(),
    finishAll: async () => {
      if (finishAllFails) throw new Error('log full');
      return 0;
    },
    gc: async () => undefined,
    claimConnectionsOf: async () => undefined,
    table: { ofPid: () => [], size: 0 },
  } as unknown as ConnectionTracker;
  const sites = new LinkSites({ opener, configured: ['br0'], newTracker: () => tracker, isAlive: (p) => alive.has(p) });
  const proc = (pid: number): ProfiledProcess => (alive.add(pid), { pid, job: `j${pid}`, uid: 0, user: 'root', startTime: 0, startTicks: 0, registeredAt: 0 });
  const closeBegun = async () => {
    while (!order.includes('close begins')) await tick();
  };
  /** The next ended() waits in its tracker's finish until the function returned is called. */
  const holdFinish = (): (() => void) => {
    let release!: () => void;
    finishGate = new Promise<void>((r) => (release = r));
    return release;
  };
  return { sites, tables, order, proc, alive, closeBegun, holdFinish, found };
}

describe('a job’s link whose last process ends while another registers', () => {
  /** The second job's link counted on a table of its own, which the first's close left alone. */
  const expectCountedForTheSecond = (w: ReturnType<typeof world>) => {
    expect(w.tables.has('vc1@7'), 'the new job’s link is counted').toBe(true);
    expect(w.sites.describe()).toMatchObject([{ link: 'vc1', pids: [2] }]);
  };

  // How the first job's link comes to be closed: the collector finds its only process dead, or
  // its last job ends.
  const closers = {
    'the collector closing it': (w: ReturnType<typeof world>, first: ProfiledProcess) => (w.alive.delete(first.pid), w.sites.collect()),
    'its last job ended': (w: ReturnType<typeof world>, first: ProfiledProcess) => w.sites.ended([first], 'job-end'),
  };

  it.each(Object.entries(closers))('opens the new counters only after the old ones are removed (%s)', async (_, close) => {
    const w = world();
    const first = w.proc(1);
    expect(await w.sites.attach(first, [1])).toEqual([LINK]);
    const closing = close(w, first);
    await w.closeBegun();
    await w.sites.attach(w.proc(2), [2]);
    await closing;
    expect(w.order).toEqual(['open', 'close begins', 'close done', 'open']);
    expectCountedForTheSecond(w);
  });

  it('does not join a site whose close began after the registration found it', async () => {
    const w = world();
    const first = w.proc(1);
    await w.sites.attach(first, [1]);
    const release = w.holdFinish();
    const ending = w.sites.ended([first], 'job-end'); // waits in finish, the site still open
    const attaching = w.sites.attach(w.proc(2), [2]); // finds the site…
    release(); // …and the end closes it before the registration joins it
    await Promise.all([attaching, ending]);
    expectCountedForTheSecond(w);
  });

  it('opens nothing once stopped, not even for a registration that waited for a close', async () => {
    const w = world();
    await w.sites.attach(w.proc(1), [1]);
    w.alive.delete(1);
    const collecting = w.sites.collect();
    await w.closeBegun();
    const attaching = w.sites.attach(w.proc(2), [2]);
    await w.sites.stopAll();
    await Promise.all([collecting, attaching]);
    expect(w.tables.size, 'no table left behind at shutdown').toBe(0);
    expect(w.sites.describe()).toEqual([]);
  });

  it('closes at shutdown a site that was still opening', async () => {
    const w = world(20);
    const attaching = w.sites.attach(w.proc(1), [1]);
    await tick();
    await w.sites.stopAll();
    await attaching;
    expect(w.order).toEqual(['open', 'close begins', 'close done']);
    expect(w.tables.size).toBe(0);
  });

  it('removes a link’s counters even when logging its connections failed, and the end goes on', async () => {
    const w = world(0, true);
    const first = w.proc(1);
    await w.sites.attach(first, [1]);
    await w.sites.ended([first], 'job-end');
    expect(w.order).toEqual(['open', 'close begins', 'close done']);
    expect(w.tables.size).toBe(0);
  });

  it('an end of a process whose link the collector is closing returns once its connections are logged', async () => {
    const w = world();
    const first = w.proc(1);
    await w.sites.attach(first, [1]);
    w.alive.delete(1);
    const collecting = w.sites.collect();
    await w.closeBegun();
    await w.sites.ended([first], 'process-end');
    expect(w.order.at(-1)).toBe('close done');
    await collecting;
  });

  it('counts a new interface that took an old one’s name on its own, for the old one’s processes too', async () => {
    const w = world();
    await w.sites.attach(w.proc(1), [1]);
    w.found.link = { ...LINK, ifindex: 8 }; // the container's veth deleted, another made as vc1
    await w.sites.attach(w.proc(2), [2]);
    await new Promise((r) => setTimeout(r, 40));
    expect([...w.tables]).toEqual(['vc1@8']);
    expect(w.sites.describe()).toMatchObject([{ link: 'vc1', pids: [2, 1] }]);
  });
});
