// A job process that opens and closes short connections:
// `node churn.mjs HOST PORT TOTAL CONCURRENCY REQ RATE OUT`
// Waits for a line on stdin (so the benchmark can register it first), then makes TOTAL
// connections, at most CONCURRENCY at a time, at RATE per second (0: as fast as it can). Each
// sends REQ bytes, reads the answer until the server closes, and closes. Writes one row per
// connection to OUT (JSON): local port, open and close times (epoch ms, sub-ms), bytes read.
import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const [host, port, total, conc, req, rate, out] = process.argv.slice(2);
const TOTAL = Number(total);
const RATE = Number(rate);
const request = Buffer.alloc(Number(req), 0x62);
const now = () => performance.timeOrigin + performance.now();
const rows = [];
const FIRST_PORT = Number(process.env.CHURN_FIRST_PORT ?? 0);
let nextPort = 0;
let errors = 0;

function one() {
  return new Promise((resolve) => {
    const row = { open: now(), port: 0, close: 0, rx: 0 };
    // CHURN_FIRST_PORT: each connection from its own local port (FIRST, FIRST+1, …), so no
    // 4-tuple is reused within the run (the kernel's choice reuses ports freed by the server's
    // close at once).
    const localPort = FIRST_PORT ? FIRST_PORT + nextPort++ : undefined;
    const s = connect({ host, port: Number(port), noDelay: true, ...(localPort ? { localPort } : {}) });
    s.on('connect', () => {
      row.port = s.localPort;
      s.write(request);
    });
    s.on('data', (d) => (row.rx += d.length));
    s.on('end', () => s.end());
    s.on('error', () => (errors += 1));
    s.on('close', () => {
      row.close = now();
      rows.push(row);
      resolve();
    });
  });
}

const rl = createInterface({ input: process.stdin });
let started = false;
rl.on('line', async () => {
  if (started) return;
  started = true;
  const t0 = now();
  let next = 0;
  const worker = async () => {
    while (next < TOTAL) {
      const i = next++;
      if (RATE > 0) {
        const due = t0 + (i * 1000) / RATE;
        const wait = due - now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      }
      await one();
    }
  };
  await Promise.all(Array.from({ length: Number(conc) }, worker));
  const t1 = now();
  writeFileSync(out, JSON.stringify({ start: t0, end: t1, errors, rows }));
  console.log(`done ${rows.length} errors ${errors} ms ${Math.round(t1 - t0)}`);
});
// Stays alive (a live registered process) until the benchmark closes stdin.
rl.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
console.log('waiting');
