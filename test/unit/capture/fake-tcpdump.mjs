// Stands in for tcpdump in supervisor unit tests: `node fake-tcpdump.mjs MODE STATEFILE tcpdump
// ARGS…` (Capture's wrap is [node, this file, MODE, STATEFILE]). STATEFILE counts runs.
// Writes pcap (or garbage) to stdout like `tcpdump -w -`.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';

const [mode, state] = process.argv.slice(2, 4);
const args = process.argv.slice(5);
const run = (existsSync(state) ? Number(readFileSync(state, 'utf8')) : 0) + 1;
writeFileSync(state, String(run));
writeFileSync(`${state}.args`, JSON.stringify(process.argv.slice(4)));
const iface = args[args.indexOf('-i') + 1];
const fixture = readFileSync(new URL('../../fixtures/capture/eth.pcap', import.meta.url));
let sent = 0;
process.on('SIGTERM', () => {
  process.stderr.write(`\n${sent} packets captured\n${sent} packets received by filter\n3 packets dropped by kernel\n`);
  process.exit(0);
});
process.on('SIGUSR1', () => {
  process.stderr.write(`tcpdump: ${sent} packets captured, ${sent} packets received by filter, 2 packets dropped by kernel\n`);
});
const listening = () => process.stderr.write(`tcpdump: listening on ${iface}, link-type EN10MB (Ethernet), snapshot length 128 bytes\n`);
setInterval(() => {}, 1000);

if (mode === 'fixture') {
  listening();
  process.stdout.write(fixture);
  sent = 10;
} else if (mode === 'garbage-then-fixture') {
  // The first run writes garbage after a good header and a record; a restarted one behaves.
  listening();
  if (run === 1) process.stdout.write(Buffer.concat([fixture.subarray(0, 24 + 16 + 74), Buffer.alloc(16, 0xff)]));
  else process.stdout.write(fixture);
} else if (mode === 'silent') {
  // Never says it listens.
} else if (mode === 'fail') {
  process.stderr.write(`tcpdump: ${iface}: No such device exists\n`);
  process.exit(1);
}
