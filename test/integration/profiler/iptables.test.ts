import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from './harness.js';
import { oracleCounts, oracleFlows } from '../../support/oracle.js';
import { exited, nsRun, waitForListen } from '../../support/netns.js';

// ENGINE = iptables end to end: the original's mechanism, counting from when its rule pair is
// installed (after the connection is attributed, typically 30–50 ms after the SYN here), so
// records are partial and miss what came before — the README's stated loss, bounded here at
// 150 ms of a transfer the server paces at 3.2 MB/s (a receiver's rate limit would not do: the
// kernel's receive buffer takes the data at wire speed whatever the reader does).
const RATE = 3_200_000;
const EARLY_LOSS_BOUND = 0.15 * RATE;
const PACED_SERVER = `
import socket, sys, time
s = socket.create_server(('::', int(sys.argv[1])), family=socket.AF_INET6, dualstack_ipv6=True)
for _ in range(2):
    c, _ = s.accept()
    for i in range(100):
        c.sendall(b'x' * 32000)
        time.sleep(0.01)
    c.close()
`;
let w: World;
beforeAll(async () => {
  w = await World.create('ipt', { ENGINE: 'iptables' });
  w.spawn(w.remote.ns, 'python3', ['-c', PACED_SERVER, '8300']);
  await waitForListen(w.remote.ns, 8300);
});
afterAll(async () => w?.destroy());

describe('ENGINE = iptables', () => {
  it('logs paced downloads over IPv4 and IPv6 as partial, missing no more than the stated early bytes', async () => {
    const { done } = await w.registeredShell('ipt.0', `nc -d ${w.remote.v4} 8300 > /dev/null && nc -d ${w.remote.v6} 8300 > /dev/null`);
    expect(await done).toBe(0);
    const recs = await w.waitForRecords(2, (r) => r.job === 'ipt.0');
    expect(recs).toHaveLength(2);
    const flows = await oracleFlows(w.node.ns);
    for (const r of recs) {
      expect(r).toMatchObject({ end_reason: 'fin', partial: true, counted: true });
      const o = oracleCounts(flows, { family: r.family === 'ipv6' ? 6 : 4, localAddr: r.local_addr, localPort: r.local_port, remoteAddr: r.remote_addr, remotePort: r.remote_port })!;
      expect(r.bytes_in).toBeLessThanOrEqual(o.bytesIn);
      expect(r.bytes_out).toBeLessThanOrEqual(o.bytesOut);
      console.log(`iptables loss ${r.family}: in ${o.bytesIn - r.bytes_in} B of ${o.bytesIn}, out ${o.bytesOut - r.bytes_out} B of ${o.bytesOut}`);
      expect(o.bytesIn - r.bytes_in).toBeLessThanOrEqual(EARLY_LOSS_BOUND);
      expect(o.bytesOut - r.bytes_out).toBeLessThanOrEqual(EARLY_LOSS_BOUND);
    }
  });

  it('puts its chains back within 5 s after iptables -F, and flags the open connection partial', async () => {
    w.spawn(w.remote.ns, 'nc', ['-l', w.remote.v4, '8400']);
    await waitForListen(w.remote.ns, 8400);
    // nc reads the shell's stdin, which stays open: the connection stays open.
    await w.registeredShell('flush.0', `nc ${w.remote.v4} 8400`);
    // Wait until the daemon counts the connection, then flush everything behind its back.
    for (let i = 0; i < 100 && !(await nsRun(w.node.ns, 'iptables', ['-S'])).stdout.includes('job=flush.0'); i++) await new Promise((r) => setTimeout(r, 50));
    expect((await nsRun(w.node.ns, 'iptables', ['-F'])).code).toBe(0);
    const t0 = Date.now();
    let restored = false;
    while (!restored && Date.now() - t0 < 5000) {
      restored = (await nsRun(w.node.ns, 'iptables', ['-S', 'INPUT'])).stdout.includes('-j NETPROF_IN');
      if (!restored) await new Promise((r) => setTimeout(r, 100));
    }
    expect(restored).toBe(true);
    expect((await nsRun(w.node.ns, 'iptables', ['-S'])).stdout).toContain('job=flush.0');
    for (let i = 0; i < 50 && !/counters removed behind our back/.test(w.daemon.stderr()); i++) await new Promise((r) => setTimeout(r, 100));
    expect(w.daemon.stderr()).toMatch(/counters removed behind our back/);
    expect(await w.daemon.curl('/endjobprofile/jobid=flush.0')).toEqual({ status: 200, body: '0' });
    const [r] = await w.waitForRecords(1, (x) => x.job === 'flush.0');
    expect(r).toMatchObject({ end_reason: 'job-end', counted: true, partial: true });
  });

  it('removes its chains and rules at shutdown, leaving INPUT and OUTPUT as they were', async () => {
    const before = await nsRun(w.node.ns, 'iptables', ['-S']);
    expect(before.stdout).toMatch(/NETPROF/);
    expect(await w.daemon.curl('/shutdown')).toEqual({ status: 200, body: '0' });
    expect(await exited(w.daemon.child)).toBe(0);
    for (const tool of ['iptables', 'ip6tables']) {
      const after = await nsRun(w.node.ns, tool, ['-S']);
      expect(after.stdout).not.toMatch(/NETPROF|netprof/);
    }
  });
});
