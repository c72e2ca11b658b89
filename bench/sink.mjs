// The remote end: `node sink.mjs PORT hold` accepts and holds connections (for the N idle
// connections the daemon counts); `node sink.mjs PORT rr REQ RESP` reads REQ bytes, answers
// RESP bytes and closes (churn). Listens on :: (IPv4 and IPv6).
import { createServer } from 'node:net';

const [port, mode, req = '1024', resp = '10240'] = process.argv.slice(2);
const reqBytes = Number(req);
const answer = Buffer.alloc(Number(resp), 0x61);
const held = new Set();
const server = createServer({ noDelay: true }, (s) => {
  s.on('error', () => {});
  if (mode === 'hold') {
    held.add(s);
    s.on('close', () => held.delete(s));
    return;
  }
  let got = 0;
  s.on('data', (d) => {
    got += d.length;
    if (got >= reqBytes) s.end(answer);
  });
  s.on('end', () => s.end());
});
server.listen({ port: Number(port), host: '::', backlog: 4096 }, () => console.log('listening'));
process.on('SIGTERM', () => process.exit(0));
