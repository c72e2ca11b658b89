import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Lineage } from '../../../src/resolve/lineage.js';

let root = '';
async function proc(pid: number, ppid: number, start = 100) {
  await mkdir(join(root, String(pid)), { recursive: true });
  await writeFile(join(root, String(pid), 'stat'), `${pid} (p) S ${ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ${start} 0 0\n`);
}
const gone = (pid: number) => rm(join(root, String(pid)), { recursive: true, force: true });
/** 100 → 110 → 111 in /proc, and a lineage that reads it. */
async function threeGenerations(): Promise<Lineage> {
  await proc(100, 1);
  await proc(110, 100);
  await proc(111, 110);
  return new Lineage({ procRoot: root });
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'np-lineage-'));
});
afterEach(async () => rm(root, { recursive: true, force: true }));

describe('lineage', () => {
  it('learns short-lived descendants from fork events, keeps them after their parent exits', async () => {
    await proc(100, 1);
    const l = new Lineage({ procRoot: root });
    expect(await l.addRoot(100)).toBe(true);
    l.onFork({ kind: 'fork', ns: 10n, parent: 100, child: 101 });
    l.onFork({ kind: 'fork', ns: 11n, parent: 101, child: 102 });
    l.onFork({ kind: 'fork', ns: 12n, parent: 555, child: 556 }); // not ours
    l.onExit({ kind: 'exit', ns: 13n, pid: 101, startTicks: 7 });
    expect([...l.live()].sort()).toEqual([100, 102]);
    expect(l.rootOf(102)).toBe(100);
    expect(l.lookup(101)).toMatchObject({ parent: 100, root: 100, exitNs: 13n });
    expect(l.descendsFrom(102, 100)).toBe(true);
  });

  it('copes with events read out of order across CPUs', async () => {
    await proc(100, 1);
    const l = new Lineage({ procRoot: root });
    await l.addRoot(100);
    // grandchild's fork read before the child's
    l.onFork({ kind: 'fork', ns: 21n, parent: 201, child: 202 });
    // child's exit read before its fork
    l.onExit({ kind: 'exit', ns: 22n, pid: 201, startTicks: 9 });
    l.onFork({ kind: 'fork', ns: 20n, parent: 100, child: 201 });
    expect(l.rootOf(202)).toBe(100);
    expect(l.isTracked(202)).toBe(true);
    expect(l.isTracked(201)).toBe(false);
  });

  it('treats a reused pid as a new process', async () => {
    await proc(100, 1);
    const l = new Lineage({ procRoot: root });
    await l.addRoot(100);
    l.onFork({ kind: 'fork', ns: 30n, parent: 100, child: 300 });
    // An exit of an older holder of pid 300, read late: ignored.
    l.onExit({ kind: 'exit', ns: 5n, pid: 300, startTicks: 1 });
    expect(l.isTracked(300)).toBe(true);
    await proc(300, 100, 150);
    await l.refresh();
    expect(l.lookup(300)?.startTicks).toBe(150);
    // It exits (no event) and an unrelated process gets the pid: /proc start time differs.
    await gone(300);
    await proc(300, 1, 999);
    await l.refresh();
    expect(l.isTracked(300)).toBe(false);
    // An exit event naming a different start time is another incarnation's.
    l.onFork({ kind: 'fork', ns: 40n, parent: 100, child: 301 });
    await proc(301, 100, 160);
    await l.refresh();
    l.onExit({ kind: 'exit', ns: 41n, pid: 301, startTicks: 42 });
    expect(l.isTracked(301)).toBe(true);
    l.onExit({ kind: 'exit', ns: 42n, pid: 301, startTicks: 160 });
    expect(l.isTracked(301)).toBe(false);
  });

  it('completes from /proc what happened before registration, and adopts just-forked children', async () => {
    const l = await threeGenerations();
    l.onFork({ kind: 'fork', ns: 50n, parent: 100, child: 120 }); // forked and gone before registration
    expect(await l.addRoot(100)).toBe(true);
    expect([...l.live()].sort()).toEqual([100, 110, 111, 120]);
    expect(await l.addRoot(4242)).toBe(false);
    l.removeRoot(100);
    expect(l.live().size).toBe(0);
  });

  it('a descendant registered as a root heads its own family, now and for its later children; ended, its family is its ancestor root\'s again', async () => {
    const l = await threeGenerations();
    await l.addRoot(100);
    l.onFork({ kind: 'fork', ns: 60n, parent: 100, child: 120 });
    expect(l.membersOf(100).sort()).toEqual([100, 110, 111, 120]);
    expect(await l.addRoot(110)).toBe(true);
    l.onFork({ kind: 'fork', ns: 61n, parent: 110, child: 112 });
    l.onFork({ kind: 'fork', ns: 62n, parent: 111, child: 113 });
    expect([110, 111, 112, 113].map((p) => l.rootOf(p))).toEqual([110, 110, 110, 110]);
    expect(l.membersOf(100).sort()).toEqual([100, 120]);
    expect(l.membersOf(110).sort()).toEqual([110, 111, 112, 113]);
    l.removeRoot(110);
    expect([110, 111, 112, 113].map((p) => l.rootOf(p))).toEqual([100, 100, 100, 100]);
    expect(l.membersOf(100).sort()).toEqual([100, 110, 111, 112, 113, 120]);
    l.removeRoot(100);
    expect(l.live().size).toBe(0);
    expect(l.membersOf(100)).toEqual([]);
  });

  it('the same families whichever root is registered first, also when a root\'s own fork event comes late', async () => {
    const l = await threeGenerations();
    await l.addRoot(110);
    await l.addRoot(100);
    expect(l.membersOf(110).sort()).toEqual([110, 111]);
    expect(l.membersOf(100)).toEqual([100]);
    // 110's fork, read after its registration: still its own root.
    l.onFork({ kind: 'fork', ns: 5n, parent: 100, child: 110 });
    expect(l.rootOf(110)).toBe(110);
    l.removeRoot(100);
    expect(l.membersOf(110).sort()).toEqual([110, 111]);
    expect(l.rootOf(100)).toBeUndefined();
  });

  it('with live fork events, registrations close together share one pass over /proc and miss no child', async () => {
    await proc(100, 1);
    await proc(200, 1);
    await proc(201, 200);
    const l = new Lineage({ procRoot: root });
    l.followForkEvents(() => true);
    expect(await l.addRoot(100)).toBe(true);
    // A process and its child appear after that pass: the next registration, within a second,
    // uses the same pass, which does not have them …
    await proc(300, 1);
    await proc(301, 300);
    l.onFork({ kind: 'fork', ns: 40n, parent: 300, child: 301 });
    expect(await l.addRoot(200)).toBe(true);
    expect(l.rootOf(201)).toBe(200); // in the pass
    expect(await l.addRoot(300)).toBe(true);
    // … and the child comes from its fork event.
    expect(l.rootOf(301)).toBe(300);
    // (The pass was shared: a child with no fork event, forked since, is not in it.)
    await proc(500, 1);
    await proc(501, 500);
    await l.addRoot(500);
    expect(l.rootOf(501)).toBeUndefined();
    // Without fork events every registration reads /proc afresh.
    const fresh = new Lineage({ procRoot: root });
    await proc(400, 1);
    await fresh.addRoot(100);
    await proc(401, 400);
    await fresh.addRoot(400);
    expect(fresh.rootOf(401)).toBe(400);
  });
});
