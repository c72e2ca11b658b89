// Jobs in containers (issue 13), side by side in one run: what a counted link costs.
//   node bench/links.mjs [--quick]     (after `npm run setup`; root; writes bench/links-results.json)
// A bridge in the node namespace with masquerade, like docker0; "containers" are namespaces on
// it. Measured: registration latency of a container (its link found, table and capture started),
// the daemon's memory per counted link, iperf3 throughput from a container counted vs not, and
// the daemon's CPU per connection for short connections from a counted container next to the
// same load from a registered host process.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPair, destroyNamespace, nsRun, nsRunOk, nsSpawn, runOk, sleep, spawnReady, stopChild, waitLine } from './lib/ns.mjs';
import { ROOT, startDaemon } from './lib/daemon.mjs';
import { cpuWindow, median } from './lib/proc.mjs';

const quick = process.argv.includes('--quick');
const CONTAINERS = quick ? 5 : 10;
const IPERF_RUNS = quick ? 2 : 3;
const SHORT = quick ? 500 : 2000;
const SINK = join(ROOT, 'bench/sink.mjs');
const CHURN = join(ROOT, 'bench/churn.mjs');
const work = mkdtempSync(join(tmpdir(), 'netprof-links-'));
const out = { quick, containers: CONTAINERS };

const pair = await createPair('links');
const stands = [];
let daemon;
try {
  const n = pair.node.ns;
  await runOk('ip', ['-n', n, 'link', 'add', 'br0', 'type', 'bridge']);
  await runOk('ip', ['-n', n, 'addr', 'add', '10.77.0.1/24', 'dev', 'br0']);
  await runOk('ip', ['-n', n, 'link', 'set', 'br0', 'up']);
  await nsRunOk(n, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  writeFileSync(join(work, 'nat.nft'), 'table ip bench_nat {\n chain post { type nat hook postrouting priority 100; policy accept;\n  ip saddr 10.77.0.0/24 oifname "veth0" masquerade\n }\n}\n');
  await nsRunOk(n, 'nft', ['-f', join(work, 'nat.nft')]);
  for (let i = 0; i < CONTAINERS + 1; i++) {
    const ns = `${pair.node.ns}-c${i}`.slice(0, 60);
    await runOk('ip', ['netns', 'add', ns]);
    stands.push(ns);
    const port = `vb${i}`;
    await runOk('ip', ['link', 'add', port, 'netns', n, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await runOk('ip', ['-n', n, 'link', 'set', port, 'master', 'br0', 'up']);
    await runOk('ip', ['-n', ns, 'addr', 'add', `10.77.0.${i + 2}/24`, 'dev', 'eth0']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', '10.77.0.1']);
  }
  daemon = await startDaemon(n, { INTERFACE: 'veth0,br0' }, { parent: work });
  const sleeper = (ns) => nsSpawn(ns, 'sleep', ['600']);

  // Registration of a container: link discovery, its table and two tcpdumps started.
  const before = treeRss(daemon.pid);
  const regMs = [];
  const sleepers = [];
  for (let i = 0; i < CONTAINERS; i++) {
    const s = sleeper(stands[i]);
    sleepers.push(s);
    const t = performance.now();
    await daemon.register(`reg.${i}`, s.pid);
    regMs.push(performance.now() - t);
  }
  await sleep(500);
  const after = treeRss(daemon.pid);
  out.register_ms_median = round(median(regMs));
  out.register_ms_max = round(Math.max(...regMs));
  out.rss_mb_per_link = round((after - before) / CONTAINERS);
  out.rss_mb_daemon_tree = { before: round(before), after: round(after) };
  for (let i = 0; i < CONTAINERS; i++) await daemon.curl(`/endjobprofile/jobid=reg.${i}`);
  for (const s of sleepers) s.kill('SIGKILL');

  // Throughput from a container through the bridge and NAT: counted (registered) vs not.
  const iperfd = nsSpawn(pair.remote.ns, 'iperf3', ['-s']);
  await sleep(500);
  const c = stands[CONTAINERS];
  const iperf = async () => {
    const r = await nsRun(c, 'iperf3', ['-c', pair.remote.v4, '-t', quick ? '3' : '5', '-J']);
    return JSON.parse(r.stdout).end.sum_received.bits_per_second / 1e6;
  };
  const counted = [];
  const plain = [];
  for (let i = 0; i < IPERF_RUNS; i++) {
    plain.push(await iperf());
    const holder = nsSpawn(c, 'sh', ['-c', 'read go; exec iperf3 -c ' + pair.remote.v4 + ' -t ' + (quick ? '3' : '5') + ' -J']);
    let text = '';
    holder.stdout.on('data', (d) => (text += d));
    await daemon.register(`iperf.${i}`, holder.pid);
    holder.stdin.write('go\n');
    await new Promise((r) => holder.once('exit', r));
    counted.push(JSON.parse(text).end.sum_received.bits_per_second / 1e6);
    await daemon.curl(`/endjobprofile/jobid=iperf.${i}`);
  }
  out.iperf_mbps = { not_counted: round(median(plain)), counted: round(median(counted)), ratio: round(median(counted) / median(plain), 3) };
  iperfd.kill('SIGKILL');

  // CPU per short connection: a counted container next to a registered host process.
  const sink = await spawnReady(pair.remote.ns, process.execPath, [SINK, '5002', 'rr', '64', '64'], /^listening/, 10_000, 'sink');
  const perConn = {};
  for (const [where, ns] of [['host', n], ['container', c]]) {
    const job = nsSpawn(ns, process.execPath, [CHURN, pair.remote.v4, '5002', String(SHORT), '4', '64', '200', join(work, `${where}.json`)]);
    job.stderr.on('data', () => {});
    await waitLine(job, /^waiting/, 10_000, 'churn');
    await daemon.register(`short.${where}`, job.pid);
    const cpu = cpuWindow(daemon.pid);
    job.stdin.write('go\n');
    await waitLine(job, /^done/, 300_000, 'churn');
    await sleep(1500);
    const used = cpu();
    const logged = (await daemon.stats()).profiler.recordsLogged;
    perConn[where] = { cpu_s: used.cpu_s, core: used.core, parts: used.parts, records_logged_so_far: logged };
    await daemon.curl(`/endjobprofile/jobid=short.${where}`);
  }
  const cpuOf = (x) => x.cpu_s;
  out.short_connections = SHORT;
  out.cpu_us_per_connection = { host: round((cpuOf(perConn.host) / SHORT) * 1e6), container: round((cpuOf(perConn.container) / SHORT) * 1e6) };
  out.cpu_parts = { host: perConn.host.parts, container: perConn.container.parts };
  out.cpu_ratio_container_vs_host = round(cpuOf(perConn.container) / cpuOf(perConn.host), 2);
  await stopChild(sink);
} finally {
  await daemon?.kill();
  for (const s of stands) await destroyNamespace(s);
  await pair.destroy();
  rmSync(work, { recursive: true, force: true });
}
writeFileSync(join(ROOT, 'bench/links-results.json'), `${JSON.stringify(out, null, 2)}\n`);
console.log(JSON.stringify(out, null, 2));

/** VmRSS of a process and its descendants, MB (one pass over /proc: no children files here). */
function treeRss(pid) {
  const kids = new Map();
  const rss = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      kids.set(ppid, [...(kids.get(ppid) ?? []), Number(d)]);
      rss.set(Number(d), Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${d}/status`, 'utf8'))?.[1] ?? 0));
    } catch {
      /* gone meanwhile */
    }
  }
  let kb = 0;
  const visit = (p) => {
    kb += rss.get(p) ?? 0;
    for (const c of kids.get(p) ?? []) visit(c);
  };
  visit(pid);
  return kb / 1024;
}

function round(x, d = 1) {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}
