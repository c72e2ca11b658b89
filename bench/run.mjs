#!/usr/bin/env node
// netprof's benchmark (issue 6): `npm run bench` (full, < 20 min on 2 cores) or
// `npm run bench -- --quick` (< 5 min). Runs as root; builds private network namespaces with
// names unique to the run and deletes them at the end (also on failure and Ctrl-C). Imports
// nothing from src/: it drives the built daemon (dist/cli.js) and real programs (iperf3, Node
// clients and servers in bench/, conntrack) as separate processes.
//
// The daemon measured is a private build of the git commit named in the report (git archive HEAD
// → node_modules/.cache/netprof-bench/<run>/, compiled with the repository's tsc), so other
// people's rebuilds of dist/ during the run change nothing; --dist runs ./dist/cli.js instead
// (e.g. to measure uncommitted changes to src/).
//
// Options: --quick, --only=churn,paced,throughput,grace (sections), --reps=N, --commit=REV (measure
// that commit's daemon rather than HEAD's), --profile (run the
// churn, paced and 10k-open daemons under node --cpu-prof and summarise), --no-write (do not touch
// BENCHMARKS.md / bench/results.json).
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAll, createPair, exited, nsRun, nsRunOk, nsSpawn, run, sleep, spawnReady, stopChild, waitForListen, waitLine, RUN_ID } from './lib/ns.mjs';
import { LogWatcher, ROOT, startDaemon, useCli } from './lib/daemon.mjs';
import { cpuWindow, median, memMb, percentile } from './lib/proc.mjs';
import { graceBench } from './grace.mjs';
import { apiLoadBench, burstBench } from './sections.mjs';
import { summarize } from './lib/cpuprofile.mjs';
import { writeReport } from './lib/report.mjs';

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const opt = (name, dflt) => argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt;
const QUICK = flag('quick');
const ONLY = opt('only', 'churn,paced,throughput,grace,burst,api,peers,elements').split(',');
const PROFILE = flag('profile');
/** The commit whose daemon is measured (--commit=REV, e.g. a branch's start, for a before/after). */
const COMMIT = opt('commit', 'HEAD');
const P = {
  reps: Number(opt('reps', QUICK ? 1 : 5)),
  iperfSeconds: Number(opt('iperf-seconds', QUICK ? 2 : 3)),
  ns: QUICK ? [0, 1000, 10000] : [0, 1000, 10000],
  churnTotal: Number(opt('churn', 10000)),
  churnConcurrency: 32,
  pacedRate: 1000,
  pacedSeconds: QUICK ? 5 : 10,
  idleSeconds: QUICK ? 5 : 20,
  iptablesShutdownTimeoutS: QUICK ? 15 : 60,
  burstConnections: Number(opt('burst', 50_000)),
  apiProcs: Number(opt('api-procs', 10_000)),
  apiConns: Number(opt('api-conns', 10_000)),
  apiSamples: QUICK ? 100 : 200,
  peerReps: QUICK ? 1 : 3,
};
const IPERF_MODES = { l1k: ['-l', '1k'], P8: ['-P', '8'] };
const SINK = join(ROOT, 'bench/sink.mjs');
const HOLDER = join(ROOT, 'bench/holder.mjs');
const CHURN = join(ROOT, 'bench/churn.mjs');
const WORK = mkdtempSync(join(tmpdir(), `netprof-bench-${RUN_ID}-`));
const PROFDIR = join(WORK, 'profiles');

const results = { meta: {}, params: P, startup_ms: [], goals: {} };
const log = (...a) => console.log(`[${((performance.now() - T0) / 1000).toFixed(0).padStart(4)} s]`, ...a);
const T0 = performance.now();

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, async () => {
    if (stopping) return;
    stopping = true;
    console.error(`\n${sig}: cleaning up namespaces and processes`);
    await cleanupAll();
    rmSync(WORK, { recursive: true, force: true });
    rmSync(SNAP, { recursive: true, force: true });
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------------
async function machine() {
  const first = async (file, args) => {
    const r = await run(file, args);
    return (r.stdout || r.stderr).trim().split('\n')[0];
  };
  const git = (await run('git', ['-C', ROOT, 'rev-parse', '--short=12', COMMIT])).stdout.trim();
  const dirty = (await run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'])).stdout.trim() ? ' (src has uncommitted changes)' : '';
  return {
    date: new Date().toISOString(),
    git_commit: git + dirty,
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`,
    cores: cpus().length,
    ram_gb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: (await first('uname', ['-sr'])),
    node: process.version,
    nft: await first('nft', ['--version']),
    iptables: await first('iptables', ['--version']),
    iperf3: await first('iperf3', ['--version']),
    tcpdump: await first('tcpdump', ['--version']),
    bpftrace: await first('bpftrace', ['--version']),
    loadavg_at_start: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
  };
}

async function iperfServer(pair) {
  const c = nsSpawn(pair.remote.ns, 'iperf3', ['-s', '-p', '5201']);
  c.stdout.resume();
  c.stderr.resume();
  await waitForListen(pair.remote.ns, 5201);
  return c;
}

/** One iperf3 run from the node namespace; with a daemon, the client is registered first. */
async function iperf(pair, mode, daemon, tag) {
  // -A 0,1: client on CPU 0, server on CPU 1. Left to the scheduler, the two sometimes share a
  // core and sometimes not, and 1 KiB writes then measure 450 or 1,400 Mbit/s at random.
  const args = ['-c', pair.remote.v4, '-p', '5201', '-t', String(P.iperfSeconds), '-J', '-A', '0,1', ...IPERF_MODES[mode]];
  const c = nsSpawn(pair.node.ns, 'sh', ['-c', 'read go; exec iperf3 "$@"', 'sh', ...args]);
  let out = '';
  c.stdout.on('data', (d) => (out += d));
  c.stderr.resume();
  if (daemon) await daemon.register(tag, c.pid);
  c.stdin.end('go\n');
  await exited(c);
  if (daemon) await daemon.curl(`/endjobprofile/jobid=${tag}`);
  try {
    const j = JSON.parse(out);
    if (j.error) throw new Error(j.error);
    return j.end.sum_received.bits_per_second;
  } catch (e) {
    log(`iperf3 ${mode} failed: ${e.message}`);
    return NaN;
  }
}

async function waitCounted(daemon, n, timeoutMs) {
  const t = performance.now();
  let s;
  for (;;) {
    s = await daemon.stats();
    if (s.connections_tracked >= n && s.counters_installed >= n) return { ms: performance.now() - t, stats: s };
    if (performance.now() - t > timeoutMs) return { ms: NaN, stats: s, timedOut: true };
    await sleep(250);
  }
}

const round3 = (x) => Math.round(x * 1000) / 1000;

// ---------------------------------------------------------------------------------------------
// Throughput with N counted idle connections, against the same path with no daemon (a second
// pair of namespaces, measured alternately: B A B A …).
async function throughput(baseline) {
  const out = { cases: {}, setup: {} };
  results.throughput = out;
  for (const engine of ['nftables', 'iptables']) {
    for (const n of P.ns) {
      const id = `${engine}/${n}`;
      log(`throughput ${id}: setting up`);
      const pair = await createPair(`tp${engine[0]}${n}`);
      const setup = { engine, n };
      out.setup[id] = setup;
      let daemon;
      let holder;
      const servers = [];
      try {
        servers.push(await spawnReady(pair.remote.ns, process.execPath, [SINK, '5001', 'hold'], /^listening/, 10_000, 'sink'));
        servers.push(await iperfServer(pair));
        const cpuProf = PROFILE && n === 10000 ? join(PROFDIR, `10k-${engine}`) : undefined;
        if (cpuProf) mkdirSync(cpuProf, { recursive: true });
        daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0', ENGINE: engine, RULES_THRESHOLD: String(Math.max(1000, n + 1000)) }, { cpuProf, parent: WORK });
        results.startup_ms.push(Math.round(daemon.startupMs));
        holder = nsSpawn(pair.node.ns, process.execPath, [HOLDER, pair.remote.v4, '5001', String(n)]);
        holder.stderr.on('data', (d) => process.stderr.write(`holder: ${d}`));
        await waitLine(holder, /^waiting/, 10_000, 'holder');
        await daemon.register('hold', holder.pid);
        const cpu = cpuWindow(daemon.pid);
        holder.stdin.write('go\n');
        if (n > 0) {
          const held = await waitLine(holder, /^held (\d+) failed (\d+) ms (\d+)/, 300_000, 'holder connections');
          setup.opened = Number(held[1]);
          setup.open_ms = Number(held[3]);
          const budget = QUICK ? 120_000 : 300_000;
          const w = await waitCounted(daemon, n, budget);
          setup.counted_ms = Math.round(w.ms + setup.open_ms);
          setup.counted = w.stats.counters_installed;
          setup.tracked = w.stats.connections_tracked;
          setup.timed_out = !!w.timedOut;
          setup.daemon_cpu_to_count = cpu();
          log(`  ${setup.opened} open in ${setup.open_ms} ms; ${setup.counted} counted after ${setup.counted_ms} ms${w.timedOut ? ' (TIMED OUT)' : ''}`);
        }
        if (engine === 'nftables' && n === 10000) {
          // What one engine read costs now (read-only, our table in this namespace): JSON as the
          // engine lists, and nft's plain text for comparison.
          const time = async (args) => {
            const t = performance.now();
            const r = await nsRun(pair.node.ns, 'nft', args);
            return { ms: Math.round(performance.now() - t), bytes: r.stdout.length };
          };
          setup.nft_list_set_json = await time(['-j', 'list', 'set', 'inet', 'netprof', 'flows4']);
          setup.nft_list_set_text = await time(['list', 'set', 'inet', 'netprof', 'flows4']);
          log(`  nft -j list set flows4: ${setup.nft_list_set_json.ms} ms, ${setup.nft_list_set_json.bytes} B; text: ${setup.nft_list_set_text.ms} ms`);
        }
        const mem = memMb(daemon.pid);
        setup.rss_mb = Math.round(mem.rss);
        setup.hwm_mb = Math.round(mem.hwm);
        if (n === 10000) {
          // Idle with 10,000 open: the periodic GC lists the whole set every GC_INTERVAL.
          const w = cpuWindow(daemon.pid);
          await sleep(P.idleSeconds * 1000);
          setup.idle_with_open = w();
          log(`  idle with ${n} open: ${setup.idle_with_open.core} core`);
        }
        for (const mode of Object.keys(IPERF_MODES)) out.cases[`${id}/${mode}`] = { base: [], daemon: [] };
        for (let rep = 0; rep < P.reps; rep++) {
          for (const mode of Object.keys(IPERF_MODES)) {
            const c = out.cases[`${id}/${mode}`];
            // B A on even reps, A B on odd ones, so neither side always goes first.
            const order = rep % 2 === 0 ? ['base', 'daemon'] : ['daemon', 'base'];
            for (const side of order) {
              const bps = side === 'base' ? await iperf(baseline, mode) : await iperf(pair, mode, daemon, `iperf-${rep}-${mode}`);
              c[side].push(Math.round(bps / 1e6));
            }
          }
        }
        for (const mode of Object.keys(IPERF_MODES)) {
          const c = out.cases[`${id}/${mode}`];
          c.base_mbps = median(c.base);
          c.daemon_mbps = median(c.daemon);
          c.ratio = round3(c.daemon_mbps / c.base_mbps);
          log(`  ${mode}: ${c.daemon_mbps} vs ${c.base_mbps} Mbit/s, ratio ${c.ratio}  (daemon ${c.daemon.join(' ')} | base ${c.base.join(' ')})`);
        }
        const hwm = memMb(daemon.pid);
        setup.hwm_mb = Math.round(hwm.hwm);
        log(`  peak RSS ${setup.hwm_mb} MB (${setup.rss_mb} MB once counted)`);
        // Shutdown with n open connections, all logged?
        const watcher = new LogWatcher(daemon.logFile);
        const sd = await daemon.shutdown(engine === 'iptables' ? P.iptablesShutdownTimeoutS * 1000 : 60_000);
        watcher.close();
        const byReason = {};
        for (const { r } of watcher.records) byReason[r.end_reason] = (byReason[r.end_reason] ?? 0) + 1;
        setup.shutdown_s = typeof sd.code === 'string' ? `> ${P.iptablesShutdownTimeoutS} (killed)` : round3(sd.ms / 1000);
        setup.shutdown_exit = sd.code;
        setup.shutdown_logged = byReason.shutdown ?? 0;
        setup.records_by_reason = byReason;
        log(`  shutdown with ${n} open: ${setup.shutdown_s} s, exit ${sd.code}, ${setup.shutdown_logged} logged at shutdown`);
        if (cpuProf) setup.profile = profileSummary(cpuProf);
      } catch (e) {
        setup.error = e.message.slice(0, 500);
        log(`  FAILED: ${e.message.slice(0, 300)}`);
        if (daemon) setup.daemon_stderr_tail = daemon.stderr().slice(-1500);
      } finally {
        await daemon?.kill();
        await stopChild(holder, 1000);
        for (const s of servers) await stopChild(s, 1000);
        await pair.destroy();
      }
    }
  }
  results.throughput_ratio = {};
  for (const engine of ['nftables', 'iptables']) {
    results.throughput_ratio[engine] = {};
    for (const n of P.ns) {
      const rs = Object.keys(IPERF_MODES).map((m) => out.cases[`${engine}/${n}/${m}`]?.ratio ?? NaN);
      // The headline is the worse of the two cases.
      results.throughput_ratio[engine][n] = Math.min(...rs);
    }
  }
}

/** The main thread's profile (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile, thread 0), and
 * how busy each worker thread was (the tracer reads bpftrace in one). */
function profileSummary(dir) {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort();
  if (!files.length) return { error: 'no profile written' };
  const thread = (f) => Number(f.split('.').at(-3));
  const main = files.filter((f) => thread(f) === 0).at(-1) ?? files.at(-1);
  const workers = files.filter((f) => f !== main).map((f) => ({ thread: thread(f), busy_ms: summarize(join(dir, f), ROOT, 0).busy_ms }));
  return { ...summarize(join(dir, main), ROOT, 25), workers };
}

// ---------------------------------------------------------------------------------------------
// Churn: one registered process making short connections, request 1 KB, answer 10 KB.
async function churnRun({ tag, engine, rate, total, withDaemon = true, oracle = false, idle = 0, cpuProf, elements, peer }) {
  const pair = await createPair(tag);
  const res = { engine, rate: rate || 'max', total };
  let daemon;
  let client;
  let sink;
  let watcher;
  let hogs;
  try {
    sink = await spawnReady(pair.remote.ns, process.execPath, [SINK, '5002', 'rr', '1024', '10240'], /^listening/, 10_000, 'sink');
    if (peer === 'nethogs') {
      // Debian's nethogs in trace mode on the node's interface, cumulative bytes per process,
      // one refresh a second (its default): the same load profiled by the best-known peer.
      hogs = nsSpawn(pair.node.ns, 'nethogs', ['-t', '-v', '2', '-d', '1', 'veth0']);
      hogs.out = '';
      hogs.stdout.on('data', (d) => (hogs.out += d));
      hogs.stderr.on('data', (d) => (hogs.err = (hogs.err ?? '') + d));
      const t = performance.now();
      while (!hogs.out.includes('Refreshing') && performance.now() - t < 15_000) await sleep(100);
      if (!hogs.out.includes('Refreshing')) throw new Error(`nethogs did not start: ${hogs.err ?? ''}`);
    }
    if (oracle) await startOracle(pair.node.ns);
    if (withDaemon) {
      if (cpuProf) mkdirSync(cpuProf, { recursive: true });
      // The churn measures the pipeline, not RULES_THRESHOLD: with the default 1,000, the
      // connections waiting for their record fill it under load and the rest go uncounted.
      daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0', ENGINE: engine, RULES_THRESHOLD: '20000', ...(elements ? { ELEMENTS: elements } : {}) }, { cpuProf, parent: WORK });
      res.elements = daemon.elementPath();
      results.startup_ms.push(Math.round(daemon.startupMs));
      res.startup_ms = Math.round(daemon.startupMs);
      if (idle) {
        await sleep(1000);
        const w = cpuWindow(daemon.pid);
        await sleep(idle * 1000);
        res.idle = w();
        log(`  idle daemon: ${res.idle.core} core over ${res.idle.wall_s} s`);
      }
      watcher = new LogWatcher(daemon.logFile);
    }
    const rowsFile = join(WORK, `${tag}.json`);
    client = nsSpawn(pair.node.ns, process.execPath, [CHURN, pair.remote.v4, '5002', String(total), String(P.churnConcurrency), '1024', String(rate), rowsFile]);
    client.stderr.on('data', (d) => process.stderr.write(`churn: ${d}`));
    await waitLine(client, /^waiting/, 10_000, 'churn client');
    if (daemon) await daemon.register('churn', client.pid);
    const cpu = daemon ? cpuWindow(daemon.pid) : hogs ? cpuWindow(hogs.pid) : undefined;
    client.stdin.write('go\n');
    const done = await waitLine(client, /^done (\d+) errors (\d+) ms (\d+)/, 600_000, 'churn');
    const data = JSON.parse(readFileSync(rowsFile, 'utf8'));
    res.client_ms = Number(done[3]);
    res.errors = Number(done[2]);
    res.conn_per_s = Math.round((data.rows.length / res.client_ms) * 1000);
    if (hogs) {
      // Two more refreshes, so that the last connections' bytes are in its totals.
      await sleep(2500);
      const c = cpu();
      res.connections = data.rows.length;
      res.peer_cpu = c;
      res.cpu_s_per_10k = round3((c.cpu_s / data.rows.length) * 10000);
      res.cpu_core = round3(c.cpu_s / (res.client_ms / 1000));
      Object.assign(res, nethogsShare(hogs.out, client.pid, await conntrackBytes(pair.node.ns, 5002)));
    }
    if (!daemon) return res;
    // Wait until every connection is logged (or nothing new for 15 s).
    const ports = new Set(data.rows.map((r) => r.port));
    const mine = () => watcher.records.filter(({ r }) => r.remote_port === 5002 && ports.has(r.local_port)).length;
    let last = -1;
    let since = performance.now();
    while (mine() < data.rows.length && performance.now() - since < 15_000) {
      await sleep(200);
      watcher.poll();
      const m = mine();
      if (m !== last) {
        last = m;
        since = performance.now();
      }
    }
    const c = cpu();
    res.all_logged_after_ms = Math.round(Math.max(...watcher.records.map((x) => x.seen)) - data.start);
    res.daemon_cpu = c;
    res.cpu_s_per_10k = round3((c.cpu_s / data.rows.length) * 10000);
    res.cpu_core = round3(c.cpu_s / (res.all_logged_after_ms / 1000));
    const stats = await daemon.stats();
    res.daemon_stats = { connections: stats.connections, engine_batches: stats.engine_batches, resolver: stats.resolver, capture: stats.capture, log: stats.log, counters_installed: stats.counters_installed };
    res.hwm_mb = Math.round(memMb(daemon.pid).hwm);
    // Match records to the client's connections by port and time: the kernel hands a port back
    // as soon as the server has closed first, and reuses about a fifth of them within a second.
    const byPort = new Map();
    for (const x of watcher.records) if (x.r.remote_port === 5002) (byPort.get(x.r.local_port) ?? byPort.set(x.r.local_port, []).get(x.r.local_port)).push(x);
    const take = (row) => {
      const xs = byPort.get(row.port) ?? [];
      let best = -1;
      xs.forEach((x, i) => {
        if (best < 0 || Math.abs(Date.parse(x.r.start) - row.open) < Math.abs(Date.parse(xs[best].r.start) - row.open)) best = i;
      });
      return best < 0 ? undefined : xs.splice(best, 1)[0];
    };
    let logged = 0;
    let rightPid = 0;
    let counted = 0;
    const lat = [];
    const latEnd = [];
    const matched = [];
    for (const row of data.rows) {
      const x = take(row);
      if (!x) continue;
      logged += 1;
      if (x.r.pid === client.pid) rightPid += 1;
      if (x.r.counted) counted += 1;
      lat.push(x.seen - row.close);
      latEnd.push(Date.parse(x.r.end) - row.close);
      matched.push(x.r);
    }
    const n = data.rows.length;
    res.connections = n;
    res.logged_fraction = logged / total;
    res.pid_fraction = rightPid / total;
    res.counted_fraction = counted / total;
    res.close_to_log_ms = { p50: round3(percentile(lat, 50)), p90: round3(percentile(lat, 90)), p99: round3(percentile(lat, 99)), max: round3(Math.max(...lat)) };
    res.close_to_record_end_ms = { p50: round3(percentile(latEnd, 50)), p99: round3(percentile(latEnd, 99)) };
    if (oracle) res.oracle = await exactness(pair.node.ns, matched, total);
    if (process.env.BENCH_DUMP) {
      const unc = matched.filter((r) => !r.counted).map((r) => ({ port: r.local_port, start: r.start, note: r.note ?? r.notes, msFromFirst: Date.parse(r.start) - data.start }));
      writeFileSync(process.env.BENCH_DUMP, JSON.stringify({ stats: await daemon.stats().catch((e) => e.message), uncounted: unc, all: matched.map((r) => [r.local_port, Date.parse(r.start), Date.parse(r.end), r.counted ? 1 : 0]), rows: data.rows, dataStart: data.start, sample: matched.find((r) => !r.counted), stderr: daemon.stderr().slice(-500_000) }, null, 1));
    }
    const s = await daemon.shutdown();
    res.shutdown_s = round3(s.ms / 1000);
    if (cpuProf) res.profile = profileSummary(cpuProf);
    return res;
  } finally {
    watcher?.close();
    await daemon?.kill();
    await stopChild(hogs, 1000);
    if (client) client.stdin.end();
    await stopChild(client, 1000);
    await stopChild(sink, 1000);
    await pair.destroy();
  }
}

/** nethogs -t -v 2 prints, every refresh, `program/pid/uid<TAB>sent<TAB>received` (cumulative
 * bytes) for each process it is tracking, and a line per connection it could not tie to a
 * process (pid 0), which it drops again. Its share = the most bytes it ever put on the right
 * process (the churn client) / the load's bytes as conntrack counted them; nethogs has no
 * per-connection view, so bytes stand in for connections. */
function nethogsShare(text, pid, totalBytes) {
  let right = 0;
  let unknownLines = 0;
  const programs = new Map();
  for (const line of text.split('\n')) {
    const m = /^(.*)\/(\d+)\/(\d+)\t([\d.]+)\t([\d.]+)\s*$/.exec(line);
    if (!m) continue;
    const bytes = Number(m[4]) + Number(m[5]);
    if (Number(m[2]) === pid) right = Math.max(right, bytes);
    if (Number(m[2]) === 0) unknownLines += 1;
    else programs.set(`${m[1].slice(-40)}/${m[2]}`, Math.max(programs.get(`${m[1].slice(-40)}/${m[2]}`) ?? 0, bytes));
  }
  return { nethogs_right_bytes: right, load_bytes_conntrack: totalBytes, nethogs_share: totalBytes ? right / totalBytes : NaN, nethogs_unknown_lines: unknownLines, nethogs_programs: Object.fromEntries(programs) };
}

/** Bytes of every TCP flow to `port` in conntrack (both directions), IPv4. */
async function conntrackBytes(ns, port) {
  const text = await nsRunOk(ns, 'conntrack', ['-L', '-o', 'extended', '-p', 'tcp', '-f', 'ipv4', '--dport', String(port)], { timeout: 60_000 });
  let total = 0;
  for (const line of text.split('\n')) for (const m of line.matchAll(/bytes=(\d+)/g)) total += Number(m[1]);
  return total;
}

/** Conntrack as an independent count (test/support/oracle.ts's method): nf_conntrack_acct=1
 * and a tiny table whose rules use ct, in the node namespace. */
async function startOracle(ns) {
  await nsRunOk(ns, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_acct=1']);
  const text = `table inet oracle {
  chain out { type filter hook output priority 0; ct state new counter; }
  chain in { type filter hook input priority 0; ct state new counter; }
}
`;
  const f = join(WORK, `oracle-${ns}.nft`);
  writeFileSync(f, text);
  await nsRunOk(ns, 'nft', ['-f', f]);
}

/** Byte-exact = each direction within 2 packets of header bytes (IPv4 20 + TCP 32 with
 * timestamps = 52 per packet) of conntrack's count: the last ACK or two may follow the record. */
async function exactness(ns, records, total) {
  const text = await nsRunOk(ns, 'conntrack', ['-L', '-o', 'extended', '-p', 'tcp', '-f', 'ipv4'], { timeout: 60_000 });
  const flows = new Map();
  for (const line of text.split('\n')) {
    const kv = [...line.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1], m[2]]);
    const get = (k, i) => kv.filter(([x]) => x === k)[i]?.[1];
    if (get('bytes', 1) === undefined) continue;
    flows.set(`${get('src', 0)}|${get('sport', 0)}|${get('dst', 0)}|${get('dport', 0)}`, {
      out: Number(get('bytes', 0)),
      outP: Number(get('packets', 0)),
      in: Number(get('bytes', 1)),
      inP: Number(get('packets', 1)),
    });
  }
  const SLACK = 2 * 52;
  let exact = 0;
  let zero = 0;
  let missing = 0;
  const diffs = { in: {}, out: {} };
  const samples = [];
  for (const rec of records) {
    const f = flows.get(`${rec.local_addr}|${rec.local_port}|${rec.remote_addr}|${rec.remote_port}`);
    if (!f) {
      missing += 1;
      continue;
    }
    if (!rec.counted) continue;
    const dIn = f.in - rec.bytes_in;
    const dOut = f.out - rec.bytes_out;
    diffs.in[dIn] = (diffs.in[dIn] ?? 0) + 1;
    diffs.out[dOut] = (diffs.out[dOut] ?? 0) + 1;
    if (Math.abs(dIn) <= SLACK && Math.abs(dOut) <= SLACK) exact += 1;
    else if (samples.length < 3) samples.push({ record: { bytes_in: rec.bytes_in, bytes_out: rec.bytes_out, packets_in: rec.packets_in, packets_out: rec.packets_out, partial: rec.partial, start: rec.start, end: rec.end }, conntrack: f });
    if (dIn === 0 && dOut === 0) zero += 1;
  }
  const top = (m) => Object.entries(m).sort((a, b) => b[1] - a[1]).slice(0, 5).map(([d, c]) => `${d}:${c}`).join(' ');
  return { exact_fraction: exact / total, identical_fraction: zero / total, not_in_conntrack: missing, diff_in_bytes_top: top(diffs.in), diff_out_bytes_top: top(diffs.out), inexact_samples: samples };
}

const SNAP = join(ROOT, 'node_modules/.cache/netprof-bench', RUN_ID);

/** git archive HEAD (src, tsconfig.json, package.json) → SNAP, compiled there. */
async function snapshotBuild() {
  mkdirSync(SNAP, { recursive: true });
  const tar = join(WORK, 'head.tar');
  const r = await run('git', ['-C', ROOT, 'archive', '-o', tar, COMMIT, 'src', 'native/nfset', 'tsconfig.json', 'package.json']);
  if (r.code !== 0) throw new Error(`git archive: ${r.stderr}`);
  await run('tar', ['-xf', tar, '-C', SNAP]).then((x) => {
    if (x.code !== 0) throw new Error(`tar: ${x.stderr}`);
  });
  const tsc = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(SNAP, 'tsconfig.json')]);
  if (tsc.code !== 0) throw new Error(`tsc of HEAD's src failed:\n${tsc.stdout.slice(0, 2000)}`);
  // The netlink addon of the same commit, built there as scripts/setup.sh builds it (against
  // this Node's headers). Without it ELEMENTS = auto would quietly measure the nft path.
  const nodedir = join(process.execPath, '../..');
  const gyp = await run(process.execPath, [join(ROOT, 'node_modules/node-gyp/bin/node-gyp.js'), 'rebuild', '--loglevel=warn', `--nodedir=${nodedir}`], { cwd: join(SNAP, 'native/nfset') });
  if (gyp.code !== 0) throw new Error(`node-gyp of HEAD's native/nfset failed:\n${gyp.stderr.slice(0, 2000)}`);
  return join(SNAP, 'dist/cli.js');
}

// ---------------------------------------------------------------------------------------------
async function main() {
  if (process.getuid() !== 0) throw new Error('the benchmark runs as root (network namespaces, netfilter)');
  const nofile = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
  if (Number(nofile) < 11_000) throw new Error(`open-file limit ${nofile}: the holder and the sink keep 10,000 sockets each; raise it (ulimit -n 20000) first`);
  results.meta = await machine();
  results.meta.nofile_limit = Number(nofile);
  if (flag('dist')) {
    results.meta.daemon_build = 'dist/ of the working tree';
  } else {
    log(`building a private snapshot of ${COMMIT}`);
    useCli(await snapshotBuild());
    results.meta.daemon_build = `snapshot of ${results.meta.git_commit.split(' ')[0]}`;
    results.meta.git_commit = results.meta.git_commit.split(' ')[0];
  }
  results.meta.mode = QUICK ? 'quick' : 'full';
  log(`netprof bench (${results.meta.mode}) run ${RUN_ID} on ${results.meta.cpu}, ${results.meta.kernel}, load ${results.meta.loadavg_at_start}`);

  if (ONLY.includes('churn')) {
    log('churn: client and server alone (no daemon), the ceiling');
    results.churn_no_daemon = await churnRun({ tag: 'c0', engine: '-', rate: 0, total: P.churnTotal, withDaemon: false });
    log(`  ${results.churn_no_daemon.conn_per_s} conn/s`);
    log(`churn: nftables, ${P.churnTotal} connections as fast as the client can, conntrack oracle`);
    const c = await churnRun({ tag: 'cn', engine: 'nftables', rate: 0, total: P.churnTotal, oracle: true, cpuProf: PROFILE ? join(PROFDIR, 'churn-nftables') : undefined });
    results.churn_runs = { nftables: c };
    results.churn = { conn_per_s: c.conn_per_s, logged_fraction: c.logged_fraction, pid_fraction: c.pid_fraction, counted_fraction: c.counted_fraction, exact_fraction: c.oracle?.exact_fraction ?? NaN, elements: c.elements };
    log(`  ${c.conn_per_s} conn/s (client), all logged after ${c.all_logged_after_ms} ms; logged ${c.logged_fraction}, counted ${c.counted_fraction}, pid ${c.pid_fraction}, exact ${c.oracle?.exact_fraction}; close→log p50 ${c.close_to_log_ms?.p50} p99 ${c.close_to_log_ms?.p99} ms; ${c.cpu_s_per_10k} CPU s / 10k`);
    if (!QUICK) {
      log(`churn: iptables, ${P.churnTotal} connections`);
      const ci = await churnRun({ tag: 'ci', engine: 'iptables', rate: 0, total: P.churnTotal, oracle: true });
      results.churn_runs.iptables = ci;
      log(`  ${ci.conn_per_s} conn/s, logged ${ci.logged_fraction}, pid ${ci.pid_fraction}, exact ${ci.oracle?.exact_fraction}; p99 ${ci.close_to_log_ms?.p99} ms; ${ci.cpu_s_per_10k} CPU s / 10k`);
    }
  }

  if (ONLY.includes('paced')) {
    log(`paced: idle ${P.idleSeconds} s, then ${P.pacedRate} conn/s for ${P.pacedSeconds} s (nftables)`);
    const p = await churnRun({ tag: 'cp', engine: 'nftables', rate: P.pacedRate, total: P.pacedRate * P.pacedSeconds, idle: P.idleSeconds, cpuProf: PROFILE ? join(PROFDIR, 'paced') : undefined });
    results.paced = p;
    results.close_to_log_ms = p.close_to_log_ms;
    results.daemon = { ...(results.daemon ?? {}), cpu_core_at_1000cps: p.cpu_core, idle_cpu_core: p.idle?.core, cpu_s_per_10k_at_1000cps: p.cpu_s_per_10k };
    log(`  reached ${p.conn_per_s} conn/s; ${p.cpu_core} core (${Object.entries(p.daemon_cpu?.parts ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')} CPU s); close→log p50 ${p.close_to_log_ms?.p50} p99 ${p.close_to_log_ms?.p99} ms; logged ${p.logged_fraction}`);
  }

  if (ONLY.includes('throughput')) {
    const baseline = await createPair('base');
    const srv = await iperfServer(baseline);
    try {
      await throughput(baseline);
    } finally {
      await stopChild(srv, 1000);
      await baseline.destroy();
    }
    const s = results.throughput.setup;
    results.daemon = { ...(results.daemon ?? {}), rss_mb_10k_open: s['nftables/10000']?.hwm_mb, rss_mb_10k_open_iptables: s['iptables/10000']?.hwm_mb, idle_cpu_core_10k_open: s['nftables/10000']?.idle_with_open?.core };
    results.shutdown_s_10k_open = s['nftables/10000']?.shutdown_s;
    results.shutdown_s_10k_open_iptables = s['iptables/10000']?.shutdown_s;
  }
  if (ONLY.includes('grace')) results.grace = await graceBench({ quick: QUICK, work: WORK, log });

  if (ONLY.includes('elements')) {
    // The two element paths of the nftables engine (ELEMENTS), the same loads, alternating.
    log('elements: netlink and nft paths, churn and paced 1,000 conn/s each');
    const runs = { netlink: {}, nft: {} };
    for (const [i, path] of ['netlink', 'nft', 'nft', 'netlink'].entries()) {
      const kind = i < 2 ? 'churn' : 'paced';
      const x = kind === 'churn'
        ? await churnRun({ tag: `e${path[0]}c`, engine: 'nftables', rate: 0, total: P.churnTotal, oracle: true, elements: path })
        : await churnRun({ tag: `e${path[0]}p`, engine: 'nftables', rate: P.pacedRate, total: P.pacedRate * P.pacedSeconds, elements: path });
      runs[path][kind] = x;
      log(`  ${path} ${kind} (took ${x.elements}): ${x.conn_per_s} conn/s, logged ${x.logged_fraction}, exact ${x.oracle?.exact_fraction ?? '—'}, close→log p50 ${x.close_to_log_ms?.p50} p99 ${x.close_to_log_ms?.p99} ms, ${x.cpu_core} core, ${x.cpu_s_per_10k} CPU s / 10k`);
    }
    const sum = (x) => ({ took: x.elements, conn_per_s: x.conn_per_s, logged_fraction: x.logged_fraction, counted_fraction: x.counted_fraction, exact_fraction: x.oracle?.exact_fraction, close_to_log_p50_ms: x.close_to_log_ms?.p50, close_to_log_p99_ms: x.close_to_log_ms?.p99, cpu_core: x.cpu_core, cpu_s_per_10k: x.cpu_s_per_10k, hwm_mb: x.hwm_mb });
    results.elements_paths = { netlink: { churn: sum(runs.netlink.churn), paced: sum(runs.netlink.paced) }, nft: { churn: sum(runs.nft.churn), paced: sum(runs.nft.paced) } };
    results.elements_runs = runs;
  }

  if (ONLY.includes('burst')) {
    log(`burst: ${P.burstConnections} connections opened at once, held, closed at once (health polled throughout)`);
    const b = await burstBench({ n: P.burstConnections, quick: QUICK, work: WORK, log, exactness, startOracle, cpuProf: PROFILE ? join(PROFDIR, 'burst') : undefined, summarize });
    results.burst_run = b;
    results.burst = { all_tracked_s: b.all_tracked_s, logged_fraction: b.logged_fraction, counted_fraction: b.counted_fraction, pid_fraction: b.pid_fraction, exact_fraction: b.exact_fraction, health_p99_ms: b.health_ms.p99, health_max_ms: b.health_ms.max, all_logged_after_close_s: b.all_logged_after_close_s, hwm_mb: b.hwm_mb };
    log(`  all tracked after ${b.all_tracked_s} s; logged ${b.logged_fraction}, counted ${b.counted_fraction}, pid ${b.pid_fraction}, exact ${b.exact_fraction}; health p50 ${b.health_ms.p50} p99 ${b.health_ms.p99} max ${b.health_ms.max} ms; logged ${b.all_logged_after_close_s} s after the close`);
  }

  if (ONLY.includes('api')) {
    log(`api: ${P.apiProcs} registered processes, ${P.apiConns} live connections, ${P.apiSamples} calls each`);
    const a = await apiLoadBench({ procs: P.apiProcs, conns: P.apiConns, samples: P.apiSamples, work: WORK, log, cpuProf: PROFILE ? join(PROFDIR, 'api') : undefined, summarize });
    results.api_load_run = a;
    results.api_load = { p99_ms_max: a.p99_ms_max, worst_call: a.worst_call, register_ms_p99: a.register_ms.p99 };
    log(`  worst p99 ${a.p99_ms_max} ms (${a.worst_call})`);
  }

  if (ONLY.includes('peers')) {
    // nethogs (no daemon) and our daemon on the same paced load, alternating N D D N N D.
    log(`peers: nethogs -t and netprof on the same paced load (${P.pacedRate} conn/s for ${P.pacedSeconds} s), ${P.peerReps} runs each`);
    const runs = { nethogs: [], netprof: [] };
    for (let i = 0; i < P.peerReps; i++) {
      for (const who of i % 2 === 0 ? ['nethogs', 'netprof'] : ['netprof', 'nethogs']) {
        const opts = { tag: `p${who[4]}${i}`, engine: 'nftables', rate: P.pacedRate, total: P.pacedRate * P.pacedSeconds };
        const x = who === 'nethogs' ? await churnRun({ ...opts, withDaemon: false, peer: 'nethogs', oracle: true }) : await churnRun(opts);
        runs[who].push(x);
        if (who === 'nethogs') log(`  nethogs: ${x.peer_cpu.cpu_s} CPU s (${x.cpu_core} core), bytes on the right process ${(x.nethogs_share * 100).toFixed(1)} %`);
        else log(`  netprof: ${x.daemon_cpu.cpu_s} CPU s (${x.cpu_core} core), connections on the right pid ${(x.pid_fraction * 100).toFixed(2)} %, counted ${(x.counted_fraction * 100).toFixed(2)} %`);
      }
    }
    const ours = median(runs.netprof.map((x) => x.daemon_cpu.cpu_s));
    const theirs = median(runs.nethogs.map((x) => x.peer_cpu.cpu_s));
    results.peers = {
      cpu_ratio_vs_nethogs: round3(ours / theirs),
      netprof_cpu_s: ours,
      nethogs_cpu_s: theirs,
      netprof_cpu_core: median(runs.netprof.map((x) => x.cpu_core)),
      nethogs_cpu_core: median(runs.nethogs.map((x) => x.cpu_core)),
      netprof_right_pid_fraction: median(runs.netprof.map((x) => x.pid_fraction)),
      netprof_counted_fraction: median(runs.netprof.map((x) => x.counted_fraction)),
      nethogs_right_process_bytes_fraction: median(runs.nethogs.map((x) => x.nethogs_share)),
    };
    results.peers_runs = runs;
    log(`  CPU ratio netprof / nethogs ${results.peers.cpu_ratio_vs_nethogs} (${ours} / ${theirs} CPU s)`);
  }
  if (results.churn_runs?.nftables) results.daemon = { ...(results.daemon ?? {}), cpu_s_per_10k_conn: results.churn_runs.nftables.cpu_s_per_10k };
  results.startup_s = { median: round3(median(results.startup_ms) / 1000), all_ms: results.startup_ms };
  results.meta.loadavg_at_end = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  results.meta.duration_s = Math.round((performance.now() - T0) / 1000);
  evaluateGoals();
}

function evaluateGoals() {
  const g = results.goals;
  const tr = results.throughput_ratio;
  const nftSetup = results.throughput?.setup?.['nftables/10000'];
  const add = (name, value, ok, goal) => (g[name] = { value, goal, pass: value === undefined || Number.isNaN(value) ? null : ok });
  if (tr) add('nftables throughput ratio at N = 10,000', tr.nftables?.[10000], tr.nftables?.[10000] >= 0.95, '≥ 0.95');
  if (nftSetup) add('nftables: 10,000 connections counted', nftSetup.counted, nftSetup.counted >= 10000, '10,000');
  if (results.churn) {
    const ceiling = results.churn_no_daemon?.conn_per_s;
    const ratio = ceiling ? round3(results.churn.conn_per_s / ceiling) : NaN;
    results.churn.ratio_to_no_daemon = ratio;
    add('churn: conn/s ÷ the no-daemon ceiling (same run)', ratio, ratio >= 0.9 && results.churn.logged_fraction === 1, '≥ 0.9 with 100 % logged');
    add('churn: fraction logged', results.churn.logged_fraction, results.churn.logged_fraction === 1, '100 %');
    add('churn: fraction resolved to the right pid', results.churn.pid_fraction, results.churn.pid_fraction === 1, '100 %');
    add('churn: fraction counted', results.churn.counted_fraction, results.churn.counted_fraction === 1, '100 %');
    add('churn: fraction byte-exact (≤ 104 B of conntrack)', results.churn.exact_fraction, results.churn.exact_fraction === 1, '100 %');
  }
  if (results.close_to_log_ms) add('close → log p99 at 1,000 conn/s (ms)', results.close_to_log_ms.p99, results.close_to_log_ms.p99 <= 50, '≤ 50 ms');
  if (results.daemon?.cpu_core_at_1000cps !== undefined) add('daemon with all its children at 1,000 conn/s (cores)', results.daemon.cpu_core_at_1000cps, results.daemon.cpu_core_at_1000cps <= 0.25, '≤ 0.25');
  if (results.daemon?.rss_mb_10k_open !== undefined) add('daemon peak RSS with 10,000 open (MB)', results.daemon.rss_mb_10k_open, results.daemon.rss_mb_10k_open <= 120, '≤ 120 MB');
  if (results.shutdown_s_10k_open !== undefined) {
    const all = nftSetup?.shutdown_logged >= 10000;
    add('shutdown with 10,000 open, all logged (s)', results.shutdown_s_10k_open, results.shutdown_s_10k_open <= 1 && all, `≤ 1 s${all ? '' : ' (NOT all logged)'}`);
  }
  const b = results.burst;
  if (b) {
    const name = `burst of ${P.burstConnections}: all tracked and counted after (s)`;
    if (Number.isNaN(b.all_tracked_s) || b.all_tracked_s === null) g[name] = { value: `> 120 (${results.burst_run.tracked} tracked)`, goal: '≤ 60 s', pass: false };
    else add(name, b.all_tracked_s, b.all_tracked_s <= 60, '≤ 60 s');
    add('burst: fraction logged', b.logged_fraction, b.logged_fraction === 1, '100 %');
    add('burst: fraction byte-exact (≤ 104 B of conntrack)', b.exact_fraction, b.exact_fraction === 1, '100 %');
    add('burst: /v1/health p99 throughout (ms)', b.health_p99_ms, b.health_p99_ms <= 50, '≤ 50 ms');
  }
  const a = results.api_load;
  if (a) add(`API at ${P.apiProcs} processes, ${P.apiConns} connections: worst endpoint p99 (ms)`, a.p99_ms_max, a.p99_ms_max <= 50, `≤ 50 ms (worst: ${a.worst_call})`);
  const pe = results.peers;
  if (pe) add('CPU ÷ nethogs\' at the same paced load', pe.cpu_ratio_vs_nethogs, pe.cpu_ratio_vs_nethogs <= 1, '≤ 1');
}

let failed;
try {
  await main();
} catch (e) {
  failed = e;
  console.error(`bench failed: ${e.stack ?? e}`);
} finally {
  await cleanupAll();
  rmSync(WORK, { recursive: true, force: true });
  rmSync(SNAP, { recursive: true, force: true });
}
if (!failed || results.goals) {
  console.log('\nGoals:');
  for (const [name, r] of Object.entries(results.goals ?? {})) console.log(`  ${r.pass === null ? 'n/a ' : r.pass ? 'PASS' : 'FAIL'}  ${name}: ${typeof r.value === 'number' ? (Math.abs(r.value) < 1 ? r.value.toFixed(4) : round3(r.value)) : r.value} (goal ${r.goal})`);
  writeFileSync(join(tmpdir(), 'netprof-bench-last.json'), `${JSON.stringify(results, null, 2)}\n`);
  if (!flag('no-write')) {
    writeFileSync(join(ROOT, 'bench/results.json'), `${JSON.stringify(results, null, 2)}\n`);
    writeReport(join(ROOT, 'BENCHMARKS.md'), results);
    console.log('\nwrote bench/results.json and BENCHMARKS.md');
  }
}
process.exit(failed ? 1 : 0);
