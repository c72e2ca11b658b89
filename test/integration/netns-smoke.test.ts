import { afterAll, describe, expect, it } from 'vitest';
import { createPair, nsRun, nsSpawn, waitForListen, exited, type Pair } from '../support/netns.js';

describe('test namespaces', () => {
  let pair: Pair | undefined;
  afterAll(async () => pair?.destroy());

  it('joins node and remote by veth over IPv4 and IPv6', async () => {
    pair = await createPair('smoke');
    for (const addr of [pair.remote.v4, pair.remote.v6]) {
      const server = nsSpawn(pair.remote.ns, 'nc', ['-l', '-N', addr, '5000']);
      let received = '';
      server.stdout!.on('data', (d: Buffer) => (received += d.toString()));
      await waitForListen(pair.remote.ns, 5000);
      const client = await nsRun(pair.node.ns, 'sh', ['-c', `echo hello | nc -N ${addr} 5000`]);
      await exited(server);
      expect(client.code).toBe(0);
      expect(received).toBe('hello\n');
    }
  });
});
