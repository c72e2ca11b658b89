// What our rules cost per packet, no daemon: the rules as installed (pend) and as before the
// failed-add retry (nopend, bench/burst-elements.mjs --rule nopend), each in a namespace pair of its
// own (a "node" with our table, a "remote" behind a veth), measured alternately in short runs so
// that the machine's other load falls on both alike; medians of the paired differences.
//
//   npx tsc -p tsconfig.json && node bench/datapath-cost.mjs [--reps 60] [--packets 30000] [--syns 1000] [--bulk 5]
//  - raw: bench/raw-tcp.c sends crafted TCP packets through the output hook (to an address that
//    drops them), ns per packet: `ack counted` (its 4-tuple has its flows element), `ack uncounted`
//    (none: a lookup in flows, and with pend one in pend4 too), `ack other interface` (none, out of
//    an interface that is not configured: no pend lookup), `syn` (the SYN rule's deletes and
//    add, each SYN from a port of its own, --syns per run in an emptied set; re-creating one
//    tuple's element instead soon drains the per-CPU reserve and times the allocator's failure).
//  - bulk: iperf3's throughput (3 s) on a connection that has its elements, --bulk runs each.
// --control 1: both pairs get the nopend rules, to see how far two pairs differ by themselves.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cleanupAll, createPair, nsRunOk, nsSpawn } from './lib/ns.mjs';

const args = process.argv.slice(2);
const opt = { reps: 60, packets: 30_000, syns: 1000, bulk: 5, control: 0 };
for (let i = 0; i < args.length; i++) opt[args[i].replace(/^--/, '')] = Number(args[++i]);
const root = join(fileURLToPath(import.meta.url), '..', '..');
const { tableText } = await import(pathToFileURL(join(root, 'dist/counters/nft-ruleset.js')).href);
const burst = readFileSync(join(root, 'bench/burst-elements.mjs'), 'utf8');
const withoutPend = new Function(`${burst.slice(burst.indexOf('function withoutPend'))}; return withoutPend;`)();

const tmp = mkdtempSync(join(tmpdir(), 'dpcost-'));
const rawTcp = join(tmp, 'raw-tcp');
const cc = spawnSync('cc', ['-O2', '-o', rawTcp, join(root, 'bench/raw-tcp.c')], { encoding: 'utf8' });
if (cc.status !== 0) throw new Error(`cc bench/raw-tcp.c: ${cc.stderr}`);
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => cleanupAll().finally(() => process.exit(130)));
try {
  await measure();
} finally {
  await cleanupAll();
  rmSync(tmp, { recursive: true, force: true });
}

async function measure() {
  const variants = ['nopend', 'pend'];
  const setups = {};
  for (const v of variants) {
    const pair = await createPair(`dpc-${v}`);
    const node = pair.node.ns;
    const text = tableText({ table: 'T', interfaces: ['veth0'], flowsSize: 65536, ownersSize: 1024, priority: 500 });
    const f = join(tmp, `${v}.nft`);
    writeFileSync(f, v === 'pend' && !opt.control ? text : withoutPend(text));
    await nsRunOk(node, 'nft', ['-f', f]);
    // Raw packets go to an address nobody has: a static neighbour sends them to the remote's
    // veth, which drops frames that are not for its MAC address.
    const sink = pair.remote.v4.replace(/\.\d+$/, '.99');
    await nsRunOk(node, 'ip', ['neigh', 'add', sink, 'lladdr', '02:00:00:00:00:99', 'dev', 'veth0']);
    // An interface the table is not configured for: a veth pair within the node, whose far end
    // drops frames not for its address, as the remote's does.
    await nsRunOk(node, 'ip', ['link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
    await nsRunOk(node, 'ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'd0']);
    for (const d of ['d0', 'd1']) await nsRunOk(node, 'ip', ['link', 'set', d, 'up']);
    await nsRunOk(node, 'ip', ['neigh', 'add', '192.0.2.99', 'lladdr', '02:00:00:00:00:99', 'dev', 'd0']);
    const counted = async () => nsRunOk(node, 'nft', ['add', 'element', 'inet', 'T', 'flows4', `{ ${pair.node.v4} . 40000 . ${sink} . 80 }`]);
    await counted();
    nsSpawn(pair.remote.ns, 'iperf3', ['-s', '-B', pair.remote.v4], { stdio: 'ignore' });
    const raw = async (sport, flags, n, ...more) => Number(await nsRunOk(node, rawTcp, [pair.node.v4, sink, String(sport), '80', flags, String(n), ...more]));
    setups[v] = {
      'raw ack counted': () => raw(40000, 'ack', opt.packets),
      'raw ack uncounted': () => raw(40001, 'ack', opt.packets),
      'raw ack other interface': async () => Number(await nsRunOk(node, rawTcp, ['192.0.2.1', '192.0.2.99', '40002', '80', 'ack', String(opt.packets)])),
      'raw syn': async () => {
        const ns = await raw(41000, 'syn', opt.syns, 'vary');
        await nsRunOk(node, 'nft', ['flush', 'set', 'inet', 'T', 'flows4']);
        await counted();
        return ns;
      },
      bulk: async () => JSON.parse(await nsRunOk(node, 'iperf3', ['-c', pair.remote.v4, '-t', '3', '-J'])).end.sum_sent.bits_per_second / 1e9,
    };
  }
  await new Promise((r) => setTimeout(r, 500));

  const RAW = ['raw ack counted', 'raw ack uncounted', 'raw ack other interface', 'raw syn'];
  const results = new Map();
  const one = async (rep, name, v) => {
    const load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
    const value = await setups[v][name]();
    console.log(JSON.stringify({ rep, case: name, variant: v, load, value }));
    const k = `${name}\t${v}`;
    if (!results.has(k)) results.set(k, []);
    results.get(k).push({ rep, load, value });
  };
  for (let rep = 0; rep < opt.reps; rep++) {
    // ABBA: what drifts during a pair falls on both sides.
    const order = rep % 2 ? ['pend', 'nopend'] : ['nopend', 'pend'];
    for (const name of RAW) for (const v of order) await one(rep, name, v);
    if (rep < opt.bulk) for (const v of order) await one(rep, 'bulk', v);
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const [A, B] = opt.control ? ['nopend', 'nopend again'] : variants;
  console.log(`\n| case | ${A} (median) | ${B} (median) | ${B} − ${A} (median of paired runs) | load avg (1 min) |\n|---|---|---|---|---|`);
  for (const name of [...RAW, 'bulk']) {
    const [a, b] = variants.map((v) => results.get(`${name}\t${v}`));
    if (!a) continue;
    const unit = name === 'bulk' ? ' Gbit/s' : ' ns/packet';
    const fix = (x) => x.toFixed(name === 'bulk' ? 2 : 0);
    const diffs = a.map((r, i) => b[i].value - r.value);
    const loads = [...a, ...b].map((r) => r.load);
    console.log(`| ${name} | ${fix(med(a.map((r) => r.value)))}${unit} | ${fix(med(b.map((r) => r.value)))}${unit} | ${fix(med(diffs))}${unit} (${a.length} pairs) | ${Math.min(...loads)}–${Math.max(...loads)} |`);
  }
}
