// Sections of `npm run bench` for issue 14: a burst of connections opened at once, held and
// closed (burst), and the API with 10,000 registered processes and 10,000 live connections
// (api_load). Both run in a private namespace pair of their own (bench/lib/ns.mjs), drive the
// daemon build run.mjs chose, and call its API over a Unix socket with node:http.
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createPair, exited, nsSpawn, sleep, spawnReady, stopChild, waitLine } from './lib/ns.mjs';
import { LogWatcher, ROOT, startDaemon } from './lib/daemon.mjs';
import { cpuWindow, createTime, memMb, percentile } from './lib/proc.mjs';
import { isMainThreadProfile } from './lib/cpuprofile.mjs';

const SINK = join(ROOT, 'bench/sink.mjs');
const HOLDER = join(ROOT, 'bench/holder.mjs');
/** Sockets per holder and per sink: the open-file limit here is 20,000 (hard). */
const PER_PROCESS = 12_500;
const round3 = (x) => Math.round(x * 1000) / 1000;
const stat = (xs) => ({ n: xs.length, p50: round3(percentile(xs, 50)), p99: round3(percentile(xs, 99)), max: round3(Math.max(...xs)) });

/** Sinks in the remote namespace and holders in the node one, PER_PROCESS connections each;
 * the holders are registered under `job`, then wait for `go`. */
async function heldGroups(pair, daemon, n, job, conc) {
  const groups = [];
  for (let g = 0; g * PER_PROCESS < n; g++) {
    const port = 5101 + g;
    const count = Math.min(PER_PROCESS, n - g * PER_PROCESS);
    const sink = await spawnReady(pair.remote.ns, process.execPath, [SINK, String(port), 'hold'], /^listening/, 10_000, 'sink');
    const holder = nsSpawn(pair.node.ns, process.execPath, [HOLDER, pair.remote.v4, String(port), String(count), String(conc)]);
    holder.stderr.on('data', () => {});
    await waitLine(holder, /^waiting/, 10_000, 'holder');
    const r = await daemon.call('POST', `/v1/jobs/${job}/processes`, JSON.stringify({ pid: holder.pid, owner: 'root', birthdate: createTime(holder.pid) }));
    if (r.status !== 201) throw new Error(`register holder ${holder.pid}: ${r.status} ${r.body}`);
    groups.push({ port, count, sink, holder });
  }
  return groups;
}

/** Calls GET /v1/health back to back (at most one every `everyMs`) until stop(). */
function healthPoller(daemon, everyMs = 100) {
  const ms = [];
  let failures = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t = performance.now();
      try {
        const r = await daemon.call('GET', '/v1/health', undefined, 60_000);
        ms.push(r.ms);
        if (r.status !== 200) failures += 1;
      } catch {
        failures += 1;
        ms.push(performance.now() - t);
      }
      const wait = everyMs - (performance.now() - t);
      if (wait > 0) await sleep(wait);
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    return { ...stat(ms), not_ok: failures };
  };
}

/**
 * 50,000 connections opened at once (holders with CONC connects in flight each), held, then
 * all closed at once (the holders exit). Measures: all tracked and counted (from the first
 * connect), every connection logged, counted and byte-exact against conntrack, and the health
 * call's latency throughout.
 */
export async function burstBench({ n, quick, work, log, exactness, startOracle, cpuProf, summarize }) {
  const pair = await createPair('burst');
  const res = { connections: n };
  let daemon;
  let groups = [];
  let watcher;
  try {
    await startOracle(pair.node.ns);
    if (cpuProf) mkdirSync(cpuProf, { recursive: true });
    daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0', ENGINE: 'nftables', RULES_THRESHOLD: String(n + 10_000), GC_INTERVAL: '60' }, { parent: work, socket: true, cpuProf });
    res.elements = daemon.elementPath();
    groups = await heldGroups(pair, daemon, n, 'burst', 1024);
    watcher = new LogWatcher(daemon.logFile);
    const health = healthPoller(daemon);
    const cpu = cpuWindow(daemon.pid);
    const t0 = performance.now();
    for (const g of groups) g.holder.stdin.write('go\n');
    const held = await Promise.all(groups.map((g) => waitLine(g.holder, /^held (\d+) failed (\d+) ms (\d+)/, 300_000, 'holder')));
    res.opened = held.reduce((a, m) => a + Number(m[1]), 0);
    res.open_failed = held.reduce((a, m) => a + Number(m[2]), 0);
    res.open_s = round3((performance.now() - t0) / 1000);
    log(`  ${res.opened} open after ${res.open_s} s (${res.open_failed} failed)`);
    // Twice the 60 s target: enough to show a miss and how far it is, short enough for the run.
    const budget = 120_000;
    let st;
    for (;;) {
      st = JSON.parse((await daemon.call('GET', '/v1/stats')).body);
      if (st.connections_tracked >= n && st.counters_installed >= n) break;
      if (performance.now() - t0 > budget) break;
      await sleep(250);
    }
    res.tracked = st.connections_tracked;
    res.counted = st.counters_installed;
    res.all_tracked_s = st.connections_tracked >= n && st.counters_installed >= n ? round3((performance.now() - t0) / 1000) : NaN;
    log(`  tracked ${res.tracked}, counted ${res.counted}, after ${round3((performance.now() - t0) / 1000)} s`);
    res.hwm_mb_held = Math.round(memMb(daemon.pid).hwm);
    await sleep(2000);
    // Close them all at once: each holder exits, the kernel sends every FIN.
    const pids = new Set(groups.map((g) => g.holder.pid));
    const ports = new Set(groups.map((g) => g.port));
    const tc = performance.now();
    for (const g of groups) g.holder.stdin.end();
    await Promise.all(groups.map((g) => exited(g.holder)));
    const mine = () => watcher.records.filter(({ r }) => ports.has(r.remote_port));
    let last = -1;
    let since = performance.now();
    while (mine().length < n && performance.now() - since < 20_000) {
      await sleep(250);
      watcher.poll();
      const m = mine().length;
      if (m !== last) {
        last = m;
        since = performance.now();
      }
    }
    const recs = mine().map((x) => x.r);
    res.all_logged_after_close_s = round3((Math.max(...mine().map((x) => x.seen)) - (performance.timeOrigin + tc)) / 1000);
    res.health_ms = await health();
    res.daemon_cpu = cpu();
    res.hwm_mb = Math.round(memMb(daemon.pid).hwm);
    res.logged_fraction = recs.length / n;
    res.pid_fraction = recs.filter((r) => pids.has(r.pid)).length / n;
    res.counted_fraction = recs.filter((r) => r.counted).length / n;
    res.partial = recs.filter((r) => r.partial).length;
    const byReason = {};
    for (const r of recs) byReason[r.end_reason] = (byReason[r.end_reason] ?? 0) + 1;
    res.records_by_reason = byReason;
    res.oracle = await exactness(pair.node.ns, recs, n);
    res.exact_fraction = res.oracle.exact_fraction;
    const s2 = JSON.parse((await daemon.call('GET', '/v1/stats')).body);
    res.daemon_stats = { capture: s2.capture, resolver: s2.resolver, ebpf: s2.ebpf, engine_batches: s2.engine_batches, log: s2.log, connections: s2.connections };
    if (cpuProf) {
      await daemon.shutdown();
      const f = readdirSync(cpuProf).filter(isMainThreadProfile).sort().at(-1);
      if (f) res.profile = summarize(join(cpuProf, f), ROOT, 25);
    }
    return res;
  } finally {
    watcher?.close();
    await daemon?.kill();
    for (const g of groups) {
      await stopChild(g.holder, 1000);
      await stopChild(g.sink, 1000);
    }
    await pair.destroy();
  }
}

/** Until `ip netns exec` has entered the namespace and exec'd the program (pid kept). */
async function execed(pid, comm) {
  for (let i = 0; i < 500; i++) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) return;
    } catch {
      return; // gone: the registration will say so
    }
    await sleep(2);
  }
}

/**
 * The API at PROCS registered processes (PROCS − 1 idle `sleep`s, each its own job, and one
 * holder) and CONNS live connections (the holder's): each call SAMPLES times in turn over the
 * Unix socket. `api_load.p99_ms_max` is the worst call's p99.
 */
export async function apiLoadBench({ procs, conns, samples, work, log, cpuProf, summarize }) {
  const pair = await createPair('api');
  const res = { procs, conns, samples };
  let daemon;
  let groups = [];
  const sleepers = [];
  try {
    if (cpuProf) mkdirSync(cpuProf, { recursive: true });
    daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0', ENGINE: 'nftables', RULES_THRESHOLD: String(Math.max(1000, conns + 1000)), GC_INTERVAL: '60' }, { parent: work, socket: true, cpuProf });
    res.elements = daemon.elementPath();
    groups = await heldGroups(pair, daemon, conns, 'holder', 256);
    const reg = (job, pid) => daemon.call('POST', `/v1/jobs/${job}/processes`, JSON.stringify({ pid, owner: 'root', birthdate: createTime(pid) }));
    // The sleepers, registered 8 at a time (a scheduler's registrations come in parallel too).
    const t0 = performance.now();
    const regMs = [];
    let next = groups.length;
    const worker = async () => {
      while (next < procs) {
        const i = next++;
        // In the daemon's namespace, as a batch job's processes are: one in another namespace
        // is a container to the daemon, which then looks for its link.
        const s = nsSpawn(pair.node.ns, 'sleep', ['3600'], { stdio: 'ignore' });
        sleepers.push(s);
        await execed(s.pid, 'sleep');
        const r = await reg(`job${i % 1000}.${i}`, s.pid);
        if (r.status !== 201) throw new Error(`register ${s.pid}: ${r.status} ${r.body}`);
        regMs.push(r.ms);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    res.register_all_s = round3((performance.now() - t0) / 1000);
    res.register_ms = stat(regMs);
    log(`  registered ${procs} processes in ${res.register_all_s} s (each p50 ${res.register_ms.p50} p99 ${res.register_ms.p99} ms, 8 in flight)`);
    const t1 = performance.now();
    for (const g of groups) g.holder.stdin.write('go\n');
    await Promise.all(groups.map((g) => waitLine(g.holder, /^held (\d+)/, 300_000, 'holder')));
    let st;
    for (let i = 0; i < 600; i++) {
      st = JSON.parse((await daemon.call('GET', '/v1/stats')).body);
      if (st.connections_tracked >= conns && st.counters_installed >= conns) break;
      await sleep(500);
    }
    res.tracked = st.connections_tracked;
    res.counted = st.counters_installed;
    log(`  ${conns} connections open, ${res.tracked} tracked, ${res.counted} counted after ${round3((performance.now() - t1) / 1000)} s`);
    const rows = {};
    const measure = async (name, fn, n = samples) => {
      const ms = [];
      const bad = [];
      for (let i = 0; i < n; i++) {
        const r = await fn(i);
        ms.push(r.ms);
        if (r.status >= 300) bad.push(r.status);
      }
      rows[name] = { ...stat(ms), first: round3(ms[0]), ...(bad.length ? { errors: bad.length, status: bad[0] } : {}) };
      log(`  ${name}: p50 ${rows[name].p50} p99 ${rows[name].p99} max ${rows[name].max} ms (first call ${rows[name].first} ms)`);
    };
    await measure('GET /v1/health', () => daemon.call('GET', '/v1/health'));
    await measure('GET /v1/stats', () => daemon.call('GET', '/v1/stats'));
    await measure(`GET /v1/jobs (${procs - groups.length + 1} jobs)`, () => daemon.call('GET', '/v1/jobs'));
    await measure('GET /v1/jobs/job7.7 (one idle process)', () => daemon.call('GET', '/v1/jobs/job7.7'));
    await measure('POST a process, then DELETE its job', async () => {
      const s = nsSpawn(pair.node.ns, 'sleep', ['60'], { stdio: 'ignore' });
      sleepers.push(s);
      await execed(s.pid, 'sleep');
      const a = await reg('bench-x', s.pid);
      const b = await daemon.call('DELETE', '/v1/jobs/bench-x');
      s.kill('SIGKILL');
      return { ms: a.ms + b.ms, status: Math.max(a.status === 201 ? 200 : a.status, b.status) };
    });
    await measure(`GET /v1/jobs/holder (${conns} open connections)`, () => daemon.call('GET', '/v1/jobs/holder'));
    // Issue 14: what else waits while a big job's view is polled (each of its reads, every 0.5 s,
    // was ~100 ms of the event loop through the synchronous addon). Health at random moments.
    let polling = true;
    const poller = (async () => {
      while (polling) await daemon.call('GET', '/v1/jobs/holder');
    })();
    await measure(`GET /v1/health while /v1/jobs/holder is polled`, async () => {
      await sleep(Math.random() * 20);
      return daemon.call('GET', '/v1/health');
    });
    polling = false;
    await poller;
    // As many samples as the others: of 30 (what this once took, as Prometheus asks only every
    // 15 s or so) the p99 is the maximum, i.e. the first scrape's warm-up (its own column).
    await measure('GET /metrics', () => daemon.call('GET', '/metrics'));
    res.calls = rows;
    const worst = Object.entries(rows).sort((a, b) => b[1].p99 - a[1].p99)[0];
    res.p99_ms_max = worst[1].p99;
    res.worst_call = worst[0];
    res.hwm_mb = Math.round(memMb(daemon.pid).hwm);
    if (cpuProf) {
      // The profile is written at exit: an orderly shutdown, then its summary.
      await daemon.shutdown();
      const f = readdirSync(cpuProf).filter(isMainThreadProfile).sort().at(-1);
      if (f) res.profile = summarize(join(cpuProf, f), ROOT, 25);
    }
    return res;
  } finally {
    await daemon?.kill();
    for (const s of sleepers) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
    await Promise.all(sleepers.map((s) => exited(s)));
    for (const g of groups) {
      await stopChild(g.holder, 1000);
      await stopChild(g.sink, 1000);
    }
    await pair.destroy();
  }
}
