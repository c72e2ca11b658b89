// A job process that keeps N idle TCP connections open: `node holder.mjs HOST PORT N [CONC]`.
// Waits for a line on stdin (so the benchmark can register it first), opens the connections
// (CONC at a time, default 256), prints `held N`, and keeps them until stdin closes or SIGTERM
// (then exits: the kernel closes them all at once).
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

const [host, port, n, conc = '256'] = process.argv.slice(2);
const N = Number(n);
const sockets = [];
let failed = 0;

function one() {
  return new Promise((resolve) => {
    const s = connect({ host, port: Number(port) });
    s.on('connect', () => {
      sockets.push(s);
      resolve();
    });
    s.on('error', (e) => {
      failed += 1;
      if (failed < 5) console.error(`connect: ${e.message}`);
      resolve();
    });
  });
}

const rl = createInterface({ input: process.stdin });
let started = false;
rl.on('line', async () => {
  if (started) return;
  started = true;
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < N) {
      next += 1;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(Number(conc), N) }, worker));
  console.log(`held ${sockets.length} failed ${failed} ms ${Math.round(performance.now() - t0)}`);
});
rl.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
console.log('waiting');
