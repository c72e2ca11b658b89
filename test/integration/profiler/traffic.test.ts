import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from './harness.js';
import { nsRun, waitForListen } from '../../support/netns.js';

// End to end through the original path API: real programs (curl, nc, python3 -m http.server)
// in a node namespace where the daemon runs, against a remote namespace; every logged count is
// compared with conntrack's for the same connection.
let w: World;
beforeAll(async () => {
  w = await World.create('e2e');
  w.file('blob', 400_000);
  w.file('small', 1_000);
  await w.serveHttp(8000);
});
afterAll(async () => w?.destroy());

describe('a job profiled end to end', () => {
  it("logs a job's downloads, made by its child processes, over IPv4 and IPv6, with conntrack's counts", async () => {
    const { pid, done } = await w.registeredShell('dl.0', `curl -s -o /dev/null http://${w.remote.v4}:8000/blob && curl -s -o /dev/null -g http://[${w.remote.v6}]:8000/blob`);
    expect(await done).toBe(0);
    const recs = await w.waitForRecords(2, (r) => r.job === 'dl.0');
    expect(recs).toHaveLength(2);
    expect(recs.map((r) => r.family).sort()).toEqual(['ipv4', 'ipv6']);
    for (const r of recs) {
      expect(r).toMatchObject({ end_reason: 'fin', opened_by: 'local', interface: 'veth0', remote_port: 8000, partial: false, attribution: 'ebpf-connect' });
      expect(r.pid).not.toBe(pid); // curl, the shell's child, with its own pid
      expect(r.bytes_in).toBeGreaterThan(400_000);
    }
    expect(new Set(recs.map((r) => r.pid)).size).toBe(2);
    await w.expectOracleMatch(recs);
  });

  it("logs a registered server's incoming connections under the server's pid", async () => {
    const server = w.spawn(w.node.ns, 'python3', ['-m', 'http.server', '8100', '--bind', '::', '--directory', w.servedDir]);
    await waitForListen(w.node.ns, 8100);
    await w.register('srv.0', server.pid!);
    for (const addr of [w.node.v4, `[${w.node.v6}]`]) {
      const r = await nsRun(w.remote.ns, 'curl', ['-s', '-g', '-o', '/dev/null', '-w', '%{http_code}', `http://${addr}:8100/blob`]);
      expect(r.stdout).toBe('200');
    }
    const recs = await w.waitForRecords(2, (r) => r.job === 'srv.0');
    expect(recs).toHaveLength(2);
    for (const r of recs) {
      expect(r).toMatchObject({ pid: server.pid, opened_by: 'remote', local_port: 8100, end_reason: 'fin' });
      expect(r.bytes_out).toBeGreaterThan(400_000);
    }
    await w.expectOracleMatch(recs);
  });

  it('keeps counting after a half-close: the data sent after the first FIN is in the record', async () => {
    // The remote reads until the client's FIN, then sends 300 kB, then closes.
    w.spawn(w.remote.ns, 'python3', ['-c', `
import socket
s = socket.create_server(('0.0.0.0', 8200))
c, _ = s.accept()
while c.recv(65536): pass
c.sendall(b'x' * 300000)
c.close()`]);
    await waitForListen(w.remote.ns, 8200);
    // nc -N shuts its sending side after stdin's end, then keeps reading until the server closes.
    const { done } = await w.registeredShell('half.0', `head -c 5000 /dev/zero | nc -N ${w.remote.v4} 8200 > /dev/null`);
    expect(await done).toBe(0);
    const [r] = await w.waitForRecords(1, (x) => x.job === 'half.0');
    expect(r).toBeDefined();
    expect(r!.bytes_out).toBeGreaterThan(5000);
    expect(r!.bytes_in).toBeGreaterThan(300_000);
    await w.expectOracleMatch([r!]);
  });

  it('logs all of 300 short connections that send at once, each with its own pid, with exact counts', async () => {
    const { done } = await w.registeredShell('churn.0', `i=0; while [ $i -lt 300 ]; do curl -s -o /dev/null http://${w.remote.v4}:8000/small || exit 1; i=$((i+1)); done`);
    expect(await done).toBe(0);
    const recs = await w.waitForRecords(300, (r) => r.job === 'churn.0', 30_000);
    expect(recs).toHaveLength(300);
    // Distinct connections; not distinct ports: the kernel hands a client port back as soon as
    // the server has closed first, and 300 connections to one server reuse some (9 in one run).
    expect(new Set(recs.map((r) => `${r.local_port} ${r.start}`)).size).toBe(300);
    expect(new Set(recs.map((r) => r.pid)).size).toBe(300);
    expect(recs.filter((r) => r.end_reason !== 'fin' || r.partial || !r.counted)).toEqual([]);
    // Conntrack keeps one entry per tuple: a new SYN replaces a closed one's. So on a reused
    // port only the latest connection can be compared with it.
    const latest = new Map<number, (typeof recs)[number]>();
    for (const r of recs) if (!latest.has(r.local_port) || latest.get(r.local_port)!.start! < r.start!) latest.set(r.local_port, r);
    await w.expectOracleMatch([...latest.values()]);
  });

  it('follows an address added after start: a connection from it is still seen as local', async () => {
    const added = w.node.v4.replace(/\.1$/, '.11');
    expect((await nsRun(w.node.ns, 'ip', ['addr', 'add', `${added}/24`, 'dev', 'veth0'])).code).toBe(0);
    await new Promise((r) => setTimeout(r, 6_000)); // the daemon rereads its addresses every 5 s
    const { done } = await w.registeredShell('newaddr.0', `curl -s -o /dev/null --interface ${added} http://${w.remote.v4}:8000/small`);
    expect(await done).toBe(0);
    const [r] = await w.waitForRecords(1, (x) => x.job === 'newaddr.0');
    expect(r).toMatchObject({ local_addr: added, opened_by: 'local', remote_port: 8000, end_reason: 'fin' });
    await w.expectOracleMatch([r!]);
  });

  it('never logs connections of processes nobody registered', async () => {
    const before = w.records().length;
    for (let i = 0; i < 5; i++) {
      const r = await w.run('curl', ['-s', '-o', '/dev/null', `http://${w.remote.v4}:8000/small`]);
      expect(r.code).toBe(0);
    }
    // Give the daemon time to have logged them, had it wanted to.
    await new Promise((r) => setTimeout(r, 500));
    const after = w.records();
    expect(after.length).toBe(before);
    expect(new Set(after.map((r) => r.job))).toEqual(new Set(['dl.0', 'srv.0', 'half.0', 'churn.0', 'newaddr.0']));
    const stats = JSON.parse((await w.daemon.curl('/v1/stats')).body);
    expect(stats.connections.notProfiled).toBeGreaterThanOrEqual(5);
  });
});
