import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { World, type LoggedConnection } from '../profiler/harness.js';
import { KERNEL_SHORT_NOTE } from '../../../src/profiler/records.js';
import { destroyNamespace, exited, waitForListen } from '../../support/netns.js';
import { BRIDGE, linkTables, nodeBridge, standIn, type StandIn } from './bridge.js';

/**
 * Jobs in their own network namespace on a bridge of the node, registered by their host pid —
 * the reproduction (0 connections logged before links were counted), with each record
 * checked against conntrack in the node namespace.
 */
describe('jobs in their own network namespace, on a bridge', () => {
  let world: World;
  let a: StandIn;
  let b: StandIn;

  beforeAll(async () => {
    world = await World.create('virt', { INTERFACE: `veth0,lo,${BRIDGE}`, GC_INTERVAL: '1' }, nodeBridge);
    a = await standIn(world, 2);
    b = await standIn(world, 3);
    world.file('one-mib', 1 << 20);
    await world.serveHttp(8000);
  }, 60_000);

  afterAll(async () => {
    await world?.destroy();
    for (const s of [a, b]) if (s) await destroyNamespace(s.ns);
  });

  const ofJob = (job: string) => (r: LoggedConnection) => r.job === job;
  const registered = new Set<string>();

  // The tests after a failed one expect no link table of its jobs and a running daemon: one
  // failure must not read as seven.
  afterEach(async ({ task }) => {
    if (task.result?.state !== 'fail') return;
    if (world.daemon.child.exitCode !== null || world.daemon.child.signalCode !== null) await world.restartDaemon({});
    for (const id of registered) await world.daemon.curl(`/endjobprofile/jobid=${id}`);
    registered.clear();
  });

  /** A shell in the stand-in, registered before its script runs. */
  async function job(s: StandIn, id: string, script: string): Promise<{ pid: number; done: Promise<number | null> }> {
    const sh = world.spawn(s.ns, 'sh', ['-c', `read go; ${script}`]);
    await world.register(id, sh.pid!);
    registered.add(id);
    sh.stdin!.write('go\n');
    return { pid: sh.pid!, done: exited(sh) };
  }

  it('counts downloads out through the bridge, masqueraded (IPv4) and routed (IPv6), with the job’s own address', async () => {
    const j = await job(a, 'out.1', `curl -s -o /dev/null http://${world.remote.v4}:8000/one-mib && curl -s -o /dev/null -g 'http://[${world.remote.v6}]:8000/one-mib'`);
    expect(await j.done).toBe(0);
    const recs = await world.waitForRecords(2, ofJob('out.1'));
    expect(recs).toHaveLength(2);
    const v4 = recs.find((r) => r.family === 'ipv4')!;
    const v6 = recs.find((r) => r.family === 'ipv6')!;
    expect(v4).toMatchObject({ local_addr: a.v4, remote_addr: world.remote.v4, remote_port: 8000, interface: BRIDGE, link: a.port, opened_by: 'local', counted: true, partial: false });
    expect(v6).toMatchObject({ local_addr: a.v6, remote_addr: world.remote.v6, remote_port: 8000, interface: BRIDGE, link: a.port, counted: true });
    // The remote saw the node's address: masquerade's translation is in the record.
    expect(v4).toMatchObject({ translated_addr: world.node.v4 });
    expect(v6).not.toHaveProperty('translated_addr');
    for (const r of recs) {
      expect(r.pid, 'curl, a child of the registered shell').not.toBe(j.pid);
      expect(r.bytes_in).toBeGreaterThan(1 << 20);
    }
    await world.expectOracleMatch(recs, { within: 104 });
    // Logged once: in the bridge's log only.
    expect(world.records().filter((r) => r.local_port === v4.local_port && r.remote_port === 8000)).toHaveLength(1);
  }, 60_000);

  it('counts a server behind a published (DNAT) port, with the address the client used', async () => {
    const server = await job(a, 'srv.1', `exec python3 -m http.server 80 --bind 0.0.0.0 --directory ${world.servedDir}`);
    await waitForListen(a.ns, 80);
    for (let i = 0; i < 3; i++) {
      const r = await world.run('ip', ['netns', 'exec', world.remote.ns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${world.node.v4}:8080/one-mib`]);
      expect(r.stdout).toBe('200');
    }
    const recs = await world.waitForRecords(3, ofJob('srv.1'));
    expect(recs).toHaveLength(3);
    for (const r of recs) {
      expect(r.counted, JSON.stringify(r)).toBe(true);
      expect(r).toMatchObject({ pid: server.pid, local_addr: a.v4, local_port: 80, remote_addr: world.remote.v4, opened_by: 'remote', translated_addr: world.node.v4, translated_port: 8080, link: a.port });
      expect(r.bytes_out).toBeGreaterThan(1 << 20);
    }
    await world.expectOracleMatch(recs, { within: 104 });
    await world.daemon.curl('/endjobprofile/jobid=srv.1');
  }, 60_000);

  it('counts a connection between two jobs’ namespaces on the same bridge once for each job, and one to the host', async () => {
    const server = await job(b, 'peer.b', `exec python3 -m http.server 80 --bind :: --directory ${world.servedDir}`);
    await waitForListen(b.ns, 80);
    // The host's own server on the bridge's address: no job's, so only the client's side is logged.
    world.spawn(world.node.ns, 'python3', ['-m', 'http.server', '8001', '--bind', '10.77.0.1', '--directory', world.servedDir]);
    await waitForListen(world.node.ns, 8001);
    try {
      // The exact comparison needs connections the kernel counted from their handshake. One
      // whose counter the kernel could not make then (the per-CPU reserve, drained by whatever
      // else the machine does: docs/counters.md) is logged partial with that note, as it must
      // be; then once more. A partial record for any other reason fails.
      for (let attempt = 1; ; attempt++) {
        const id = `peer.a${attempt}`;
        const client = await job(a, id, `curl -s -o /dev/null http://${b.v4}/one-mib && curl -s -o /dev/null http://10.77.0.1:8001/one-mib`);
        expect(await client.done).toBe(0);
        const mine = await world.waitForRecords(2, ofJob(id));
        expect(mine).toHaveLength(2);
        const toB = mine.find((r) => r.remote_addr === b.v4)!;
        const toHost = mine.find((r) => r.remote_addr === '10.77.0.1')!;
        expect(toB).toMatchObject({ local_addr: a.v4, link: a.port, opened_by: 'local' });
        const [theirs] = await world.waitForRecords(1, (r) => r.job === 'peer.b' && r.remote_port === toB.local_port);
        expect(theirs, 'the server’s side of the same connection').toMatchObject({ pid: server.pid, local_addr: b.v4, local_port: 80, remote_addr: a.v4, link: b.port, opened_by: 'remote' });
        await world.daemon.curl(`/endjobprofile/jobid=${id}`);
        const both = JSON.stringify({ toB, theirs, toHost });
        if (attempt < 2 && [toB, theirs, toHost].some((r) => r!.partial && r!.note === KERNEL_SHORT_NOTE)) {
          console.warn(`attempt ${attempt}: a partial record, trying again: ${both}`);
          continue;
        }
        for (const r of [toB, theirs!, toHost]) expect(r, both).toMatchObject({ counted: true, partial: false });
        // The same bytes, seen from both ends (bridged: no conntrack entry in the node to compare with).
        expect(Math.abs(toB.bytes_in - theirs!.bytes_out), both).toBeLessThanOrEqual(104);
        expect(Math.abs(toB.bytes_out - theirs!.bytes_in), both).toBeLessThanOrEqual(104);
        expect(toB.bytes_in).toBeGreaterThan(1 << 20);
        expect(toHost).toMatchObject({ remote_port: 8001 });
        await world.expectOracleMatch([toHost], { within: 104 });
        break;
      }
    } finally {
      await world.daemon.curl('/endjobprofile/jobid=peer.b');
    }
  }, 90_000);

  it('removes a link’s counters when its last job ends', async () => {
    const j = await job(b, 'gone.1', 'sleep 30');
    const before = await linkTables(world.node.ns);
    expect(before.length).toBeGreaterThan(0);
    const r = await world.daemon.curl('/endjobprofile/jobid=gone.1');
    expect(r.status).toBe(200);
    await world.daemon.curl('/endjobprofile/jobid=out.1');
    expect(await linkTables(world.node.ns)).toEqual([]);
    void j;
  }, 30_000);

  /** The stand-in's link as /v1/stats lists it among those counted on; undefined when it is not
   * (a close begins by unlisting it). */
  async function countedLink(s: StandIn): Promise<{ link: string; counters_installed: number } | undefined> {
    const stats = JSON.parse((await world.daemon.curl('/v1/stats')).body) as { links: { counting: Array<{ link: string; counters_installed: number }> } };
    return stats.links.counting.find((l) => l.link === s.port);
  }

  it('counts a job registered on a link while the link’s counters are being removed', async () => {
    // The link's table is named by the link: a registration while the old one is being removed
    // must get a new one made after that removal (CI once saw the removal delete the new job's
    // table: its connections not counted). Rounds 1–2: the collector removes it (the last
    // process died); round 3: the last job's end does.
    for (let round = 1; round <= 3; round++) {
      const old = await job(a, `swap.${round}`, 'exec sleep 30');
      const next = world.spawn(a.ns, 'sh', ['-c', `read go; curl -s -o /dev/null http://${world.remote.v4}:8000/one-mib`]);
      if (round < 3) {
        process.kill(old.pid, 'SIGKILL');
        const deadline = Date.now() + 10_000;
        while ((await countedLink(a)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        await world.register(`next.${round}`, next.pid!);
      } else {
        const [ended] = await Promise.all([world.daemon.curl(`/endjobprofile/jobid=swap.${round}`), world.register(`next.${round}`, next.pid!)]);
        expect(ended.status).toBe(200);
      }
      registered.add(`next.${round}`);
      next.stdin!.write('go\n');
      expect(await exited(next)).toBe(0);
      const [rec] = await world.waitForRecords(1, ofJob(`next.${round}`));
      expect(rec, `round ${round}`).toMatchObject({ link: a.port, counted: true, partial: false });
      if (round === 3) process.kill(old.pid, 'SIGKILL');
      await world.daemon.curl(`/endjobprofile/jobid=swap.${round}`);
      await world.daemon.curl(`/endjobprofile/jobid=next.${round}`);
      expect(await linkTables(world.node.ns)).toEqual([]);
    }
  }, 60_000);

  it('lets a hypervisor hand a VM’s tap to a registered process, and refuses what it cannot count', async () => {
    const tap = `tp${process.pid % 10000}`;
    await world.run('ip', ['tuntap', 'add', tap, 'mode', 'tap']);
    await world.run('ip', ['link', 'set', tap, 'master', BRIDGE, 'up']);
    await world.run('ip', ['tuntap', 'add', 'tpx', 'mode', 'tap']); // on no configured bridge
    const vm = await job(b, 'vm.1', 'sleep 30');
    const give = (pid: number, body: string) => world.daemon.curl(`/v1/jobs/vm.1/processes/${pid}/links`, 'POST', body);
    expect((await give(vm.pid, '{"interface":"nosuch0"}')).status).toBe(404);
    expect((await give(vm.pid, '{"interface":"a b"}')).status).toBe(400);
    expect((await give(vm.pid, '{"interface":"tpx"}')).status).toBe(409);
    expect((await give(1, `{"interface":"${tap}"}`)).status).toBe(404);
    const r = await give(vm.pid, `{"interface":"${tap}"}`);
    expect(r.status, r.body).toBe(201);
    expect(JSON.parse(r.body)).toMatchObject({ link: tap, bridge: BRIDGE, logged_as: BRIDGE });
    expect((await linkTables(world.node.ns)).length).toBeGreaterThan(0);
    await world.daemon.curl('/endjobprofile/jobid=vm.1');
    expect(await linkTables(world.node.ns)).toEqual([]);
    await world.run('ip', ['link', 'del', tap]);
    await world.run('ip', ['link', 'del', 'tpx']);
  }, 30_000);

  /** A slow download by a registered job, open until it is killed. */
  async function slowDownload(s: StandIn, id: string): Promise<void> {
    await job(s, id, `curl -s -o /dev/null --limit-rate 20k http://${world.remote.v4}:8000/one-mib`);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const r = await world.daemon.curl(`/v1/jobs/${id}`);
      // Tracked, and its owner written to the kernel (what a restart harvests).
      const installed = (await countedLink(s))?.counters_installed ?? 0;
      if (r.status === 200 && (JSON.parse(r.body) as { open_connections: number }).open_connections === 1 && installed >= 1) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`${id}: its download is not tracked`);
  }

  it('logs what a killed daemon counted on a link as recovered, and removes the link’s table', async () => {
    await slowDownload(a, 'kill.1');
    world.daemon.child.kill('SIGKILL');
    await exited(world.daemon.child);
    expect((await linkTables(world.node.ns)).length, 'left behind by kill -9').toBe(1);
    await world.restartDaemon({});
    const [rec] = await world.waitForRecords(1, (r) => r.end_reason === 'recovered' && r.local_addr === a.v4);
    expect(rec).toMatchObject({ job: 'kill.1', remote_addr: world.remote.v4, remote_port: 8000, counted: true, partial: true });
    expect(rec!.bytes_in).toBeGreaterThan(0);
    expect(await linkTables(world.node.ns)).toEqual([]);
  }, 60_000);

  it('an orderly shutdown logs a link’s open connections and removes its table', async () => {
    await slowDownload(b, 'stop.1');
    const oldLog = world.daemon.logDir;
    await world.restartDaemon({}); // /shutdown, then a new daemon
    const rec = readdirSync(oldLog)
      .flatMap((f) => readFileSync(join(oldLog, f), 'utf8').split('\n').filter(Boolean))
      .map((l) => JSON.parse(l) as LoggedConnection)
      .find((r) => r.job === 'stop.1');
    expect(rec).toMatchObject({ end_reason: 'shutdown', local_addr: b.v4, counted: true, link: b.port });
    expect(await linkTables(world.node.ns)).toEqual([]);
  }, 60_000);

  it('writes the records of a container that vanished while counted, from its link’s last counters', async () => {
    const c = await standIn(world, 4);
    // Its namespace is this test's own to delete (below): also when the download never starts.
    await slowDownload(c, 'vanish.1').catch(async (e: unknown) => {
      await destroyNamespace(c.ns);
      throw e;
    });
    // The link goes first (as when a runtime tears the network down), so no FIN or RST of its
    // processes' deaths crosses it: only the collector learns that they are gone.
    await world.run('ip', ['link', 'del', c.port]);
    await destroyNamespace(c.ns);
    const [rec] = await world.waitForRecords(1, ofJob('vanish.1'), 15_000);
    expect(rec).toMatchObject({ local_addr: c.v4, remote_addr: world.remote.v4, end_reason: 'gc', counted: true, link: c.port });
    expect(rec!.bytes_in).toBeGreaterThan(10_000);
    const deadline = Date.now() + 5_000;
    while ((await linkTables(world.node.ns)).length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
    expect(await linkTables(world.node.ns)).toEqual([]);
  }, 60_000);
});

describe('INTERFACE = any: a bridge and a container that appear after the daemon started', () => {
  let world: World;
  let c: StandIn | undefined;

  beforeAll(async () => {
    world = await World.create('virt-any', { INTERFACE: 'any' });
    world.file('one-mib', 1 << 20);
    await world.serveHttp(8000);
  }, 60_000);

  afterAll(async () => {
    await world?.destroy();
    if (c) await destroyNamespace(c.ns);
  });

  it('counts the container’s connection, logged under any', async () => {
    await nodeBridge(world);
    c = await standIn(world, 5);
    const sh = world.spawn(c.ns, 'sh', ['-c', `read go; curl -s -o /dev/null http://${world.remote.v4}:8000/one-mib`]);
    await world.register('any.1', sh.pid!);
    sh.stdin!.write('go\n');
    expect(await exited(sh)).toBe(0);
    const recs = await world.waitForRecords(1, (r) => r.job === 'any.1');
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({ interface: 'any', local_addr: c.v4, link: c.port, counted: true, translated_addr: world.node.v4 });
    await world.expectOracleMatch(recs, { within: 104 });
  }, 60_000);
});
