import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World, type LoggedConnection } from '../profiler/harness.js';
import { Podman, podmanUnavailable, type Container } from '../../support/podman.js';
import { createTime } from '../../support/procs.js';

// Real containers (podman, runc, netavark's podman0 with masquerade and DNAT) in the node
// namespace, their init pids registered from the host as a scheduler would: every connection
// logged once, under the right job and pid, within 104 B of conntrack.

const unavailable = await podmanUnavailable();
if (unavailable) console.warn(`container tests skipped: ${unavailable}`);

describe.skipIf(unavailable !== undefined)(`jobs in podman containers${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let world: World;
  let pod: Podman;

  beforeAll(async () => {
    // podman0 exists once a first container ran; INTERFACE names it, so it must exist first.
    world = await World.create('pod', { INTERFACE: 'veth0,lo,podman0' }, async (pair) => {
      pod = await Podman.create(pair.node.ns);
      // Removed here if it fails: World.create then deletes the namespace podman works in.
      await pod.startContainer({ name: 'warm', cmd: ['sleep', '600'] }).catch(async (e: Error) => {
        await pod.destroy();
        throw e;
      });
    });
    world.file('one-mib', 1 << 20);
    await world.serveHttp(8000);
  }, 120_000);

  afterAll(async () => {
    await pod?.destroy();
    await world?.destroy();
  });

  const ofJob = (job: string) => (r: LoggedConnection) => r.job === job;
  /** A container whose command waits for /tmp/go, so that it acts only once registered. */
  const gated = (script: string) => ['sh', '-c', `while [ ! -e /tmp/go ]; do sleep 0.05; done; ${script}`];
  async function register(job: string, c: Container): Promise<void> {
    const r = await world.daemon.curl(`/startprofile/jobid=${job},pid=${c.pid},owner=root,birthdate=${createTime(c.pid)}`);
    expect(r, `register container ${c.name}`).toEqual({ status: 200, body: '0' });
  }

  it('counts a container’s downloads out through podman0, masqueraded, with its own address', { timeout: 90_000 }, async () => {
    const c = await pod.startContainer({ name: 'fetch', cmd: gated(`wget -q -O /dev/null http://${world.remote.v4}:8000/one-mib; wget -q -O /dev/null http://[${world.remote.v6}]:8000/one-mib; sleep 600`) });
    await register('pod.out', c);
    await pod.exec('fetch', ['touch', '/tmp/go']);
    const recs = await world.waitForRecords(2, ofJob('pod.out'), 30_000);
    expect(recs).toHaveLength(2);
    const v4 = recs.find((r) => r.family === 'ipv4')!;
    expect(v4).toMatchObject({ local_addr: c.ipv4, remote_addr: world.remote.v4, interface: 'podman0', translated_addr: world.node.v4, counted: true, partial: false });
    if (c.ipv6) expect(recs.find((r) => r.family === 'ipv6')).toMatchObject({ local_addr: c.ipv6, remote_addr: world.remote.v6 });
    for (const r of recs) {
      expect(r.pid, 'wget: a child of the container’s init').not.toBe(c.pid);
      expect(r.bytes_in).toBeGreaterThan(1 << 20);
    }
    await world.expectOracleMatch(recs, { within: 104 });
  });

  it('counts a server behind a published port, and two containers of two jobs talking to each other', { timeout: 90_000 }, async () => {
    const make = 'mkdir -p /www && dd if=/dev/zero of=/www/f bs=1024 count=1024 2>/dev/null && exec httpd -f -p 80 -h /www';
    const srv = await pod.startContainer({ name: 'srv', publish: ['8080:80'], cmd: gated(make) });
    await register('pod.srv', srv);
    await pod.exec('srv', ['touch', '/tmp/go']);
    // Serving yet? Asked over the container's loopback, which crosses no link: not counted.
    for (let i = 0; i < 100 && (await pod.exec('srv', ['wget', '-q', '-O', '/dev/null', 'http://127.0.0.1/f'])).code !== 0; i++) await new Promise((r) => setTimeout(r, 50));
    const cli = await pod.startContainer({ name: 'cli', cmd: gated(`wget -q -O /dev/null http://${srv.ipv4}/f; sleep 600`) });
    await register('pod.cli', cli);
    await pod.exec('cli', ['touch', '/tmp/go']);
    // From the remote, through the node's published port.
    const got = await world.run('ip', ['netns', 'exec', world.remote.ns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://${world.node.v4}:8080/f`]);
    expect(got.stdout, got.stderr).toBe(`200 ${1 << 20}`);

    const mine = await world.waitForRecords(1, ofJob('pod.cli'), 30_000);
    const served = await world.waitForRecords(2, ofJob('pod.srv'), 30_000);
    expect(mine).toHaveLength(1);
    expect(served).toHaveLength(2);
    expect(mine[0]).toMatchObject({ local_addr: cli.ipv4, remote_addr: srv.ipv4, remote_port: 80, opened_by: 'local', interface: 'podman0' });
    const fromCli = served.find((r) => r.remote_addr === cli.ipv4)!;
    const fromRemote = served.find((r) => r.remote_addr === world.remote.v4)!;
    expect(fromCli).toMatchObject({ local_addr: srv.ipv4, local_port: 80, remote_port: mine[0]!.local_port, opened_by: 'remote' });
    expect(fromRemote).toMatchObject({ local_addr: srv.ipv4, local_port: 80, translated_addr: world.node.v4, translated_port: 8080, opened_by: 'remote' });
    for (const r of served) expect(r.pid, 'httpd, the container’s init after exec').toBe(srv.pid);
    // The bridged pair has no conntrack entry in the node: its two ends agree instead.
    expect(Math.abs(mine[0]!.bytes_in - fromCli.bytes_out)).toBeLessThanOrEqual(104);
    expect(mine[0]!.bytes_in).toBeGreaterThan(1 << 20);
    await world.expectOracleMatch([fromRemote], { within: 104 });
  });
});
