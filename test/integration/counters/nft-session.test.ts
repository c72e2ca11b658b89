import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftSession } from '../../../src/counters/nft-session.js';
import { run } from '../../../src/util/exec.js';
import { createNamespace, destroyNamespace, nsRun } from '../../support/netns.js';

/** The nft processes in the namespace (pgrep would see the whole machine's). */
async function nftsIn(ns: string): Promise<string[]> {
  const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
  const comms = await Promise.all(pids.map((p) => readFile(`/proc/${p}/comm`, 'utf8').catch(() => '')));
  return pids.filter((_, i) => comms[i]!.trim() === 'nft');
}

/** The long-lived `nft -j -i` against the real nft, in a namespace of its own. */
describe('nft session', () => {
  let ns = '';
  let session: NftSession;

  beforeAll(async () => {
    ns = await createNamespace('nftsess');
    session = new NftSession({ netns: ns, recycleBytes: 64 * 1024 });
  });

  afterAll(async () => {
    session?.close();
    if (ns) await destroyNamespace(ns);
  });

  it('runs commands and JSON batches, and gives each its own output and errors', async () => {
    expect(await session.run('add table inet t')).toEqual({ code: 0, stdout: '', stderr: '' });
    expect((await session.run('add set inet t s { type ipv4_addr . inet_service; flags dynamic; counter; }')).code).toBe(0);
    const batch = { nftables: [{ add: { element: { family: 'inet', table: 't', name: 's', elem: [{ concat: ['10.0.0.1', 80] }, { concat: ['10.0.0.2', 443] }] } } }] };
    expect(await session.run(JSON.stringify(batch))).toEqual({ code: 0, stdout: '', stderr: '' });

    const missing = await session.run('list set inet t nosuch');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^Error: No such file or directory/);
    expect(missing.stderr).not.toContain('netprof_sync');
    expect(missing.stdout).toBe('');

    const listed = await session.run('list set inet t s');
    expect(listed.code).toBe(0);
    expect(listed.stderr).toBe('');
    const elems = JSON.parse(listed.stdout).nftables[1].set.elem.map((e: { elem: { val: { concat: unknown[] } } }) => e.elem.val.concat);
    expect(elems).toEqual(expect.arrayContaining([['10.0.0.1', 80], ['10.0.0.2', 443]]));
    // What the session did is what a separate nft sees.
    expect((await nsRun(ns, 'nft', ['list', 'set', 'inet', 't', 's'])).stdout).toContain('10.0.0.2 . 443');
  });

  it('refuses a command of more than one line without running any of it', async () => {
    await expect(session.run('add table inet u\ndelete table inet t')).rejects.toThrow(/one line/);
    expect((await nsRun(ns, 'nft', ['list', 'table', 'inet', 't'])).code).toBe(0);
    expect((await nsRun(ns, 'nft', ['list', 'table', 'inet', 'u'])).code).not.toBe(0);
  });

  it('answers commands queued at once in order, each with its own answer', async () => {
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => session.run(i % 2 ? `list set inet t nosuch${i}` : 'list set inet t s')));
    answers.forEach((a, i) => {
      if (i % 2) expect(a.stderr).toContain(`nosuch${i}`);
      else expect(JSON.parse(a.stdout).nftables[1].set.name).toBe('s');
    });
  });

  it('starts a new session when nft dies or has read enough, and loses no command', async () => {
    const before = session.started;
    const pids = await nftsIn(ns);
    expect(pids).toHaveLength(1);
    process.kill(Number(pids[0]), 'SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
    expect((await session.run('list set inet t s')).code).toBe(0);
    expect(session.started).toBe(before + 1);
    // 64 KiB of input (recycleBytes) ends the session after the command that passes it.
    const line = `add element inet t s { ${Array.from({ length: 2000 }, (_, i) => `10.1.${i >> 8}.${i & 255} . 9`).join(', ')} }`;
    for (let i = 0; i < 3; i++) expect((await session.run(line)).code).toBe(0);
    expect(JSON.parse((await session.run('list set inet t s')).stdout).nftables[1].set.elem).toHaveLength(2002);
    expect(session.started).toBe(before + 2);
    expect(await nftsIn(ns)).toHaveLength(1);
  });

  it('replaces a session after its number of commands, whose cost grows with its history', async () => {
    const short = new NftSession({ netns: ns, recycleCommands: 5 });
    try {
      for (let i = 0; i < 12; i++) expect((await short.run('list set inet t s')).code).toBe(0);
      expect(short.started).toBe(3);
    } finally {
      short.close();
    }
  });
});
