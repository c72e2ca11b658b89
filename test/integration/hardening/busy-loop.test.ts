import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, expect, it } from 'vitest';
import { Tracer } from '../../../src/resolve/tracer.js';
import { captureIn, type Recorder } from '../capture/helpers.js';
import { createPair, exited, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';

/**
 * Issue 14's burst: connections opened at once while the daemon's loop is busy (a big socket
 * table, a large counter batch) must all be seen. tcpdump and bpftrace block on a full stdout
 * pipe, and the kernel then drops packets and events: read on the main loop, this test saw 6,589
 * of the 20,000 SYNs (26,822 packets "dropped by kernel") and 2,830 of the connect events
 * (103,006 events lost). Two holders open 10,000 connections each while the loop here is blocked
 * for 1.5 s out of every 1.6 s; every SYN and every connect event must arrive.
 */

const BENCH = join(__dirname, '..', '..', '..', 'bench');
const PER_HOLDER = 10_000;
const PORTS = [5201, 5202];
let pair: Pair | undefined;
let rec: Recorder | undefined;
const children: ChildProcess[] = [];
const tracer = new Tracer();

afterAll(async () => {
  await tracer.stop();
  await rec?.capture.stop();
  for (const c of children) c.kill('SIGKILL');
  await Promise.all(children.map((c) => exited(c)));
  await pair?.destroy();
});

function lineMatching(child: ChildProcess, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      if (re.test(l)) {
        rl.close();
        resolve(l);
      }
    });
    child.once('exit', () => reject(new Error(`exited before printing ${re}`)));
  });
}

it('a 20,000-connection burst with the loop busy: every SYN captured, every connect event read', async () => {
  pair = await createPair('busy');
  rec = captureIn(pair.node, 'veth0');
  await rec.capture.start();
  expect((await tracer.start()).state).toBe('live');
  let connects = 0;
  tracer.on('event', (ev) => {
    if (ev.kind === 'connect' && PORTS.includes(ev.remotePort)) connects += 1;
  });
  const holders: ChildProcess[] = [];
  for (const port of PORTS) {
    const sink = nsSpawn(pair.remote.ns, process.execPath, [join(BENCH, 'sink.mjs'), String(port), 'hold']);
    children.push(sink);
    await waitForListen(pair.remote.ns, port);
    const holder = nsSpawn(pair.node.ns, process.execPath, [join(BENCH, 'holder.mjs'), pair.remote.v4, String(port), String(PER_HOLDER), '1024'], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(holder);
    await lineMatching(holder, /^waiting/);
    holders.push(holder);
  }
  const block = () => {
    for (const until = Date.now() + 1_500; Date.now() < until; ) {
      /* the daemon's loop, busy */
    }
  };
  const held = holders.map((h) => lineMatching(h, /^held \d+ failed 0/));
  for (const h of holders) h.stdin!.write('go\n');
  const busy = setInterval(block, 1_600);
  setImmediate(block);
  await Promise.all(held);
  clearInterval(busy);
  const opened = () => new Set(rec!.events.filter((e) => e.kind === 'syn' && e.sent && PORTS.includes(e.key.remotePort)).map((e) => `${e.key.localPort}>${e.key.remotePort}`)).size;
  for (let i = 0; i < 100 && (connects < PORTS.length * PER_HOLDER || opened() < PORTS.length * PER_HOLDER); i++) await new Promise((r) => setTimeout(r, 100));
  await rec.capture.stop(); // tcpdump reports its kernel drops as it exits
  const dropped = rec.capture.stats()[0]!.kernelDropped;
  expect({ synsCaptured: opened(), dropped, connects, lost: tracer.stats().lost }).toEqual({ synsCaptured: PORTS.length * PER_HOLDER, dropped: 0, connects: PORTS.length * PER_HOLDER, lost: 0 });
}, 120_000);
