import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyString } from '../../../src/connection.js';
import { createPair, exited, nsRun, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { captureIn } from './helpers.js';

const CONNECTIONS = 1000;
const PORT = 6000;

/** Remote: accepts, drains, closes when the client has closed. */
const SERVER = `
const net = require('node:net');
for (const host of process.argv.slice(1)) {
  net.createServer((s) => { s.resume(); s.on('end', () => s.end()); s.on('error', () => {}); }).listen(${PORT}, host);
}`;

/** Node: n short connections, 32 at a time, alternating IPv4 and IPv6; prints every socket it used. */
const CLIENT = `
const net = require('node:net');
const [n, v4, v6] = [Number(process.argv[1]), process.argv[2], process.argv[3]];
const used = [];
let next = 0;
function one() {
  if (next >= n) return Promise.resolve();
  const host = next++ % 2 ? v6 : v4;
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port: ${PORT} }, () => {
      used.push([s.localAddress, s.localPort, host, ${PORT}]);
      s.end('x');
    });
    s.resume();
    s.on('error', reject);
    s.on('close', resolve);
  }).then(one);
}
Promise.all(Array.from({ length: 32 }, one)).then(() => process.stdout.write(JSON.stringify(used)));
`;

let pair: Pair;
beforeAll(async () => {
  pair = await createPair('burst');
});
afterAll(async () => pair?.destroy());

describe('a burst of short connections', () => {
  it(`sees each of ${CONNECTIONS} connections open and close, exactly once`, async () => {
    const rec = captureIn(pair.node, pair.node.ifname);
    const server = nsSpawn(pair.remote.ns, process.execPath, ['-e', SERVER, pair.remote.v4, pair.remote.v6]);
    try {
      await rec.capture.start();
      await waitForListen(pair.remote.ns, PORT);
      const t0 = Date.now();
      const client = await nsRun(pair.node.ns, process.execPath, ['-e', CLIENT, String(CONNECTIONS), pair.remote.v4, pair.remote.v6], 60_000);
      expect(client.stderr).toBe('');
      const used = JSON.parse(client.stdout) as [string, number, string, number][];
      expect(used).toHaveLength(CONNECTIONS);
      const wanted = new Map(
        used.map(([la, lp, ra, rp]) => [
          keyString({ family: la.includes(':') ? 6 : 4, localAddr: la, localPort: lp, remoteAddr: ra, remotePort: rp }),
          new Map<string, number>(),
        ]),
      );
      expect(wanted.size).toBe(CONNECTIONS);

      const expectedEvents = CONNECTIONS * 4;
      const deadline = Date.now() + 10_000;
      while (rec.events.length < expectedEvents && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const elapsed = Date.now() - t0;
      await rec.capture.stop();
      const stats = rec.capture.stats()[0]!;

      const stray: string[] = [];
      for (const e of rec.events) {
        const counts = wanted.get(keyString(e.key));
        if (!counts) {
          stray.push(keyString(e.key));
          continue;
        }
        const what = `${e.kind === 'rst' ? 'fin' : e.kind} ${e.sent ? 'sent' : 'recv'}`;
        counts.set(what, (counts.get(what) ?? 0) + 1);
      }
      // Each opening and closing packet seen; a second one is a retransmission (a loaded machine
      // makes some), which must then also be a frame tcpdump captured — never an invented event.
      const KINDS = ['syn sent', 'syn-ack recv', 'fin sent', 'fin recv'];
      const wrong = [...wanted].filter(([, c]) => c.size !== 4 || KINDS.some((k) => !c.get(k)));
      const retransmitted = [...wanted].filter(([, c]) => KINDS.some((k) => (c.get(k) ?? 0) > 1)).length;
      console.log(
        `burst: ${CONNECTIONS} connections, ${rec.events.length} events in ${elapsed} ms; ` +
          `frames ${stats.frames}, tcpdump captured ${stats.reportedCaptured}, kernel drops ${stats.kernelDropped}, skipped ${JSON.stringify(stats.skipped)}, ` +
          `connections with a retransmission ${retransmitted}`,
      );
      expect(rec.events).toHaveLength(stats.frames);
      expect(stray).toEqual([]);
      expect(wrong.map(([k, c]) => `${k} ${JSON.stringify([...c])}`)).toEqual([]);
      expect(stats.kernelDropped).toBe(0);
      expect(stats.reportedCaptured).toBe(stats.frames); // tcpdump's count, from its stderr at exit
    } finally {
      await rec.capture.stop();
      server.kill('SIGTERM');
      await exited(server);
    }
  });
});
