// How many /metrics series short jobs leave behind: N jobs (default 10,000) registered and ended
// at once through the API of one daemon in a private namespace, as a busy scheduler makes them;
// series counted on /metrics before, right after the last job, and once METRICS_GRACE has
// passed. `node bench/series.mjs [JOBS] [GRACE_S]` (root; run by hand, not part of npm test).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAll, createPair, nsRun, nsSpawn, sleep } from './lib/ns.mjs';
import { startDaemon } from './lib/daemon.mjs';

const JOBS = Number(process.argv[2] ?? 10_000);
const GRACE = Number(process.argv[3] ?? 60);
const driver = new URL('../test/integration/cluster/short-jobs.mjs', import.meta.url).pathname;

const pair = await createPair('series');
try {
  const d = await startDaemon(pair.node.ns, { INTERFACE: 'lo', METRICS_GRACE: String(GRACE) }, { parent: mkdtempSync(join(tmpdir(), 'netprof-series-')) });
  const series = async () => {
    const r = await nsRun(pair.node.ns, 'curl', ['-s', `http://127.0.0.1:${d.port}/metrics`]);
    const lines = r.stdout.split('\n').filter((l) => l && !l.startsWith('#'));
    return { all: lines.length, job: lines.filter((l) => l.includes('job_id="')).length, bytes: r.stdout.length };
  };
  const sleeper = nsSpawn(pair.node.ns, 'sleep', ['3600']);
  const idle = await series();
  const t0 = performance.now();
  const r = await nsRun(pair.node.ns, process.execPath, [driver, String(d.port), 'no-token-set', String(JOBS), String(sleeper.pid), 'short-'], { timeout: 3_600_000 });
  if (r.code !== 0) throw new Error(r.stderr);
  const ranS = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const peak = await series();
  const scrapeMs = performance.now() - t1;
  await sleep(GRACE * 1000 + 2000);
  const after = await series();
  const out = { jobs: JOBS, grace_s: GRACE, seconds: +ranS.toFixed(1), jobs_per_s: +(JOBS / ranS).toFixed(0), idle, peak, peak_scrape_ms: +scrapeMs.toFixed(0), after_grace: after };
  console.log(JSON.stringify(out, null, 2));
  writeFileSync(new URL('./series-results.json', import.meta.url), JSON.stringify(out, null, 2) + '\n');
  sleeper.kill('SIGKILL');
  await d.kill();
} finally {
  await pair.destroy();
  await cleanupAll();
}
