// The grace list under load (issue 12): how large it gets under 2,000 unprofiled connections a
// second with the default LATE_GRACE, what it costs next to LATE_GRACE = 0 (same load, same
// run), and what happens when it fills (a small SET_SIZE): the grace is shortened and reported,
// and a profiled process's connections are still all counted.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPair, nsRun, nsSpawn, sleep, spawnReady, stopChild, waitLine } from './lib/ns.mjs';
import { LogWatcher, ROOT, startDaemon } from './lib/daemon.mjs';
import { cpuWindow, memMb } from './lib/proc.mjs';

const SINK = join(ROOT, 'bench/sink.mjs');
const CHURN = join(ROOT, 'bench/churn.mjs');

const slabKb = () => Number(/^Slab:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? NaN);

/** Unprofiled churn at `rate` for `seconds` against a daemon with `config`; optionally a
 * registered churn of `profiled` connections at the same time. */
export async function flood({ tag, config, rate, seconds, profiled = 0, work, log }) {
  const pair = await createPair(tag);
  const res = { config, rate, seconds };
  let daemon, sink, noisy, job, watcher;
  try {
    sink = await spawnReady(pair.remote.ns, process.execPath, [SINK, '5002', 'rr', '1024', '1024'], /^listening/, 10_000, 'sink');
    daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0', ...config }, { parent: work });
    watcher = new LogWatcher(daemon.logFile);
    const total = rate * seconds;
    noisy = nsSpawn(pair.node.ns, process.execPath, [CHURN, pair.remote.v4, '5002', String(total), '64', '1024', String(rate), join(work, `${tag}-noise.json`)]);
    noisy.stderr.on('data', () => {});
    await waitLine(noisy, /^waiting/, 10_000, 'unprofiled churn');
    if (profiled) {
      job = nsSpawn(pair.node.ns, process.execPath, [CHURN, pair.remote.v4, '5002', String(profiled), '4', '1024', String(Math.ceil(profiled / seconds)), join(work, `${tag}-job.json`)]);
      job.stderr.on('data', () => {});
      await waitLine(job, /^waiting/, 10_000, 'profiled churn');
      await daemon.register('profiled', job.pid);
    }
    const slab0 = slabKb();
    const cpu = cpuWindow(daemon.pid);
    noisy.stdin.write('go\n');
    job?.stdin.write('go\n');
    const jobDone = job ? waitLine(job, /^done/, (seconds + 120) * 1000, 'profiled churn') : undefined;
    const samples = [];
    const done = waitLine(noisy, /^done (\d+) errors (\d+) ms (\d+)/, (seconds + 120) * 1000, 'unprofiled churn');
    let finished = false;
    void done.then(() => (finished = true), () => (finished = true));
    while (!finished) {
      await sleep(1000);
      const s = await daemon.stats();
      samples.push(s.unclaimed.held);
    }
    const d = await done;
    res.client_conn_per_s = Math.round((Number(d[1]) / Number(d[3])) * 1000);
    res.slab_growth_mb = Math.round((slabKb() - slab0) / 1024);
    const c = cpu();
    res.daemon_cpu_core = c.core;
    res.daemon_cpu_parts = c.parts;
    res.held_max = Math.max(...samples);
    res.held_median = samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)];
    res.rss_mb = Math.round(memMb(daemon.pid).hwm);
    const list = await nsRun(pair.node.ns, 'nft', ['-j', 'list', 'set', 'inet', 'netprof', 'flows4'], { timeout: 120_000 });
    res.set_elements_at_end = list.code === 0 ? (JSON.parse(list.stdout).nftables.find((x) => x.set)?.set.elem ?? []).length : `nft failed: ${list.stderr.trim()}`;
    const health = JSON.parse((await daemon.curl('/v1/health')).body);
    res.health = { status: health.status, late_grace: health.late_grace, problems: health.problems };
    if (job) {
      await jobDone;
      const deadline = performance.now() + 30_000;
      const mine = () => watcher.records.filter(({ r }) => r.pid === job.pid);
      while (mine().length < profiled && performance.now() < deadline) {
        await sleep(200);
        watcher.poll();
      }
      const recs = mine().map((x) => x.r);
      const seen = new Map();
      for (const r of recs) seen.set(`${r.local_port} ${r.start}`, (seen.get(`${r.local_port} ${r.start}`) ?? 0) + 1);
      res.profiled_duplicates = [...seen.values()].filter((n) => n > 1).length;
      res.profiled_sample = recs.slice(0, 3);
      const notes = {};
      for (const r of recs) if (!r.counted || r.partial) notes[r.note ?? (r.partial ? 'partial' : '?')] = (notes[r.note ?? (r.partial ? 'partial' : '?')] ?? 0) + 1;
      res.profiled = { connections: profiled, logged: recs.length, counted: recs.filter((r) => r.counted && !r.partial).length, not_in_full: notes };
    }
    log(`  ${tag}: ${res.client_conn_per_s} unprofiled conn/s; grace list ≤ ${res.held_max} (median ${res.held_median}), ${res.set_elements_at_end} flows4 elements at the end; daemon ${res.daemon_cpu_core} core, RSS ${res.rss_mb} MB; health ${res.health.status} ${JSON.stringify(res.health.late_grace)}${res.profiled ? `; profiled ${JSON.stringify(res.profiled)}` : ''}`);
    return res;
  } finally {
    watcher?.close();
    await daemon?.kill();
    for (const c of [noisy, job]) c?.stdin.end();
    await stopChild(noisy, 1000);
    await stopChild(job, 1000);
    await stopChild(sink, 1000);
    await pair.destroy();
  }
}

export async function graceBench({ quick, work, log }) {
  // Longer than LATE_GRACE, so that the grace list's expiries are in the figures.
  const seconds = quick ? 35 : 60;
  log(`grace: 2,000 unprofiled conn/s for ${seconds} s, LATE_GRACE 30 (default) next to 0`);
  const on = await flood({ tag: 'g30', config: {}, rate: 2000, seconds, work, log });
  const off = await flood({ tag: 'g0', config: { LATE_GRACE: '0' }, rate: 2000, seconds, work, log });
  log('grace: filled (SET_SIZE 16384, RULES_THRESHOLD 1000), with a profiled process churning meanwhile');
  const full = await flood({ tag: 'gf', config: { SET_SIZE: '16384', RULES_THRESHOLD: '1000' }, rate: 2000, seconds: 20, profiled: 400, work, log });
  return {
    default_grace: on,
    grace_off: off,
    cpu_core_cost: Math.round((on.daemon_cpu_core - off.daemon_cpu_core) * 1000) / 1000,
    filled: full,
  };
}
