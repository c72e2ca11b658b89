import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Claims, type ClaimingTracker } from '../../../src/profiler/claims.js';
import { keyString } from '../../../src/connection.js';
import type { NewConnection, TrackedConnection } from '../../../src/profiler/connections.js';

// Claiming from /proc: this process's own loopback connection, read from its real fd and TCP
// tables. The tracker around it is a ledger: what is checked is which sockets Claims hands to
// track(), while capture (here: the ledger's clock) goes on during its waits.
let server: Server;
const sockets: Socket[] = [];
beforeAll(async () => {
  server = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const c = connect((server.address() as { port: number }).port, '127.0.0.1');
  sockets.push(c);
  await new Promise((r) => c.once('connect', r));
  while (sockets.length < 2) await new Promise((r) => setTimeout(r, 5));
});
afterAll(() => {
  for (const s of sockets) s.destroy();
  server.close();
});

describe('claiming a process’s open connections from /proc', () => {
  it('leaves to capture a socket that capture finished while an earlier one was being set up', async () => {
    const tracked: string[] = [];
    const finishedAt = new Map<string, number>();
    const proc = { pid: process.pid, job: 'j', uid: 0, user: 'root', startTime: 0, startTicks: 0, registeredAt: 0 };
    const t = {
      table: { has: () => false },
      chains: { has: () => false, settle: async () => undefined },
      unclaimed: { heldWhere: () => [], get: () => undefined },
      stats: { lateFound: 0, ownApi: 0, outOfScope: {} },
      scope: { ofFound: async () => ({ iface: 'lo' }) },
      profiledProcess: (pid: number) => (pid === process.pid ? proc : undefined),
      netPid: () => 'self',
      finishedSince: (id: string, since: number) => (finishedAt.get(id) ?? -Infinity) >= since,
      track(c: NewConnection): TrackedConnection {
        const id = keyString(c.key);
        tracked.push(id);
        // While this one's counting is set up, capture sees the other end's FINs and logs it.
        const other = keyString({ ...c.key, localPort: c.key.remotePort, remotePort: c.key.localPort });
        finishedAt.set(other, Date.now());
        return { begun: new Promise((r) => setTimeout(() => r('from-now'), 10)) } as unknown as TrackedConnection;
      },
      scheduleClose: async () => undefined,
    } as unknown as ClaimingTracker;
    await new Claims(t).ofProcesses([process.pid], { late: true });
    const port = (server.address() as { port: number }).port;
    const mine = tracked.filter((id) => [id.split('|')[1], id.split('|')[3]].includes(String(port)));
    expect(mine, 'one end claimed; the other was logged by capture meanwhile').toHaveLength(1);
  });
});
