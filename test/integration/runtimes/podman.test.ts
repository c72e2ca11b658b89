import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPair, nsRun, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { Podman, podmanUnavailable } from '../../support/podman.js';

// test/support/podman.ts itself: a private podman world in a test namespace ("node"), joined by
// veth to a "remote" namespace. A container downloads over HTTP from the remote (routed and
// masqueraded through podman0), and a port published on the node serves the remote.

const unavailable = await podmanUnavailable();
if (unavailable) console.warn(`podman tests skipped: ${unavailable}`);
const SIZE = 300_000;
const hadVarLibContainers = existsSync('/var/lib/containers');

describe.skipIf(unavailable !== undefined)(`podman test world${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let pair: Pair;
  let world: Podman | undefined;
  let server: { log: () => string };
  const www = mkdtempSync(join(tmpdir(), 'netprof-podman-www-'));
  const times: Record<string, number> = {};

  beforeAll(async () => {
    pair = await createPair('pod');
    writeFileSync(join(www, 'data.bin'), Buffer.alloc(SIZE, 7));
    let log = '';
    for (const [addr, port] of [[pair.remote.v4, 8000], [pair.remote.v6, 8001]] as const) {
      const child = nsSpawn(pair.remote.ns, 'python3', ['-m', 'http.server', '--bind', addr, String(port)], { cwd: www });
      child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      await waitForListen(pair.remote.ns, port);
    }
    server = { log: () => log };
    let t = Date.now();
    world = await Podman.create(pair.node.ns);
    times.create = Date.now() - t;
  });

  afterAll(async () => {
    await world?.destroy(); // when a test failed before its own destroy()
    await pair?.destroy();
    rmSync(www, { recursive: true, force: true });
    console.log(`podman world times (ms): ${JSON.stringify(times)}`);
  });

  it('a container downloads from another namespace through podman0, masqueraded to the node address', async () => {
    const t = Date.now();
    const c = await world!.startContainer({ name: 'fetch', cmd: ['sleep', '600'] });
    times.start = Date.now() - t;
    expect(c.pid).toBeGreaterThan(1);
    expect(c.ipv4).toMatch(/^172\.31\.\d+\.\d+$/);
    // The pid is a host pid: its network namespace is not the node's, its veth peer is on podman0.
    const [own, node] = await Promise.all([nsRun(pair.node.ns, 'readlink', [`/proc/${c.pid}/ns/net`]), nsRun(pair.node.ns, 'readlink', ['/proc/self/ns/net'])]);
    expect(own.stdout.trim()).toMatch(/^net:\[\d+\]$/);
    expect(own.stdout.trim()).not.toBe(node.stdout.trim());
    const links = await nsRun(pair.node.ns, 'ip', ['-o', 'link', 'show', 'master', world!.bridge]);
    expect(links.stdout).toMatch(/veth/);

    const r = await world!.exec('fetch', ['sh', '-c', `wget -q -O /tmp/f http://${pair.remote.v4}:8000/data.bin && wc -c < /tmp/f`]);
    expect(r.code, r.stderr).toBe(0);
    expect(Number(r.stdout.trim())).toBe(SIZE);
    expect(server.log()).toContain(`${pair.node.v4} - - `); // masqueraded: the remote saw the node
    // ip_forward was turned on in the test namespace only.
    const fwd = await nsRun(pair.node.ns, 'sysctl', ['-n', 'net.ipv4.ip_forward']);
    expect(fwd.stdout.trim()).toBe('1');
  });

  it('IPv6 too, when the network has it', async () => {
    const c = await world!.inspect('fetch');
    console.log(`podman network IPv6: ${world!.ipv6 ? `yes, container has ${c.ipv6}` : 'no'}`);
    expect(world!.ipv6).toBe(true);
    expect(c.ipv6).toMatch(/^fd31:/);
    const r = await world!.exec('fetch', ['sh', '-c', `wget -q -O /tmp/f6 http://[${pair.remote.v6}]:8001/data.bin && wc -c < /tmp/f6`]);
    expect(r.code, r.stderr).toBe(0);
    expect(Number(r.stdout.trim())).toBe(SIZE);
    expect(server.log()).toContain(`${pair.node.v6} - - `);
  });

  it('a published port serves a request from the remote namespace', async () => {
    const c = await world!.startContainer({
      name: 'serve',
      publish: ['8080:80'],
      cmd: ['sh', '-c', 'echo hello-from-container > /www/index.html && exec httpd -f -p 80 -h /www'],
    });
    expect(c.pid).toBeGreaterThan(1);
    await waitForListen(pair.node.ns, 8080).catch(() => undefined); // netavark DNATs; nothing may listen
    let body = '';
    for (let i = 0; i < 50 && !body.includes('hello'); i++) {
      const r = await nsRun(pair.remote.ns, 'curl', ['-s', '--max-time', '2', `http://${pair.node.v4}:8080/index.html`]);
      body = r.stdout;
      if (!body.includes('hello')) await new Promise((res) => setTimeout(res, 100));
    }
    expect(body.trim()).toBe('hello-from-container');
  });

  it('remove() and destroy() leave nothing behind', async () => {
    const sandbox = (await world!.runOk(['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', 'serve'])).trim();
    expect(existsSync(sandbox)).toBe(true);
    await world!.remove('serve');
    expect(existsSync(sandbox)).toBe(false);
    const dir = world!.dir;
    const t = Date.now();
    await world!.destroy();
    times.destroy = Date.now() - t;
    expect(existsSync(dir)).toBe(false);
    if (!hadVarLibContainers) expect(existsSync('/var/lib/containers')).toBe(false);
    const links = await nsRun(pair.node.ns, 'ip', ['-o', 'link', 'show', 'master', world!.bridge]);
    expect(links.stdout).not.toMatch(/veth/);
    world = undefined;
  });
});
