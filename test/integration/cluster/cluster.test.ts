import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Pool, type Logged, type PoolNode } from './pool.js';
import { nsRun, waitForListen } from '../../support/netns.js';
import { CLI } from '../../support/daemon.js';
import { run } from '../../../src/util/exec.js';

// Two worker nodes, each a namespace with its own netprof daemon, jobs of their own and one job
// running on both, scraped by a real Prometheus (Debian's) with the shipped config and rules at
// a 1 s interval. What is checked is what an operator would ask Prometheus: do a job's totals
// add up across nodes, when do its series go, what is left after many short jobs, and what does
// increase() say across a daemon restart and a kill -9.

const GRACE_S = 6; // METRICS_GRACE: short, so that the test can watch series go
const DEPLOY = resolve(__dirname, '../../../deploy/prometheus');
let pool: Pool;
let wn1: PoolNode;
let wn2: PoolNode;
/** Samples per scrape of wn2 before any job: what a node with no jobs costs. */
let idleSamples = 0;
const url = (node: PoolNode, file: string) => `http://${node.site}:8000/${file}`;
const inst = (node: PoolNode) => `${node.addr}:${node.port}`;
const num = (r: { value: [number, string] }[]) => (r.length ? Number(r[0]!.value[1]) : undefined);

function logSums(records: Logged[]): Map<string, { in: number; out: number }> {
  const m = new Map<string, { in: number; out: number }>();
  for (const r of records) {
    const t = m.get(r.job) ?? { in: 0, out: 0 };
    t.in += r.bytes_in ?? 0;
    t.out += r.bytes_out ?? 0;
    m.set(r.job, t);
  }
  return m;
}

beforeAll(async () => {
  pool = await Pool.create(2, { METRICS_GRACE: String(GRACE_S) });
  [wn1, wn2] = pool.nodes as [PoolNode, PoolNode];
  pool.file('a1', 1_000_000);
  pool.file('a2', 300_000);
  pool.file('b', 700_000);
  pool.file('s1', 400_000);
  pool.file('s2', 900_000);
  await pool.startPrometheus();
  // Both targets up: the shipped relabelling gave each its node label.
  await pool.until('both targets up', async () => {
    const r = await pool.query('up{job="netprof"} == 1');
    return r.length === 2 ? r : undefined;
  });
  idleSamples = num(await pool.query(`scrape_samples_scraped{instance="${inst(wn2)}"}`))!;
}, 90_000);

afterAll(async () => {
  await pool?.destroy();
});

describe('a pool of two nodes in a real Prometheus', () => {
  it("sum by (job_id) equals the per-job sums of the nodes' logs; the job on both nodes adds up; rules and dashboard queries answer", async () => {
    const t0 = performance.now();
    const nodes = await pool.query('netprof_up');
    expect(nodes.map((s) => s.metric.node).sort()).toEqual([wn1.addr, wn2.addr]);

    const jobs = await Promise.all([
      pool.job(wn1, 'A', `curl -sS -o /dev/null ${url(wn1, 'a1')}; curl -sS -o /dev/null ${url(wn1, 'a2')}`),
      pool.job(wn2, 'B', `curl -sS -o /dev/null ${url(wn2, 'b')}`),
      pool.job(wn1, 'S', `curl -sS -o /dev/null ${url(wn1, 's1')}`),
      pool.job(wn2, 'S', `curl -sS -o /dev/null ${url(wn2, 's2')}`),
    ]);
    await Promise.all(jobs.map((j) => j.done));
    // Every connection logged (the jobs are still running: their shells wait).
    const want = { A: 2, B: 1, S: 2 };
    const logs = await pool.until('records', async () => {
      const recs = [...pool.records(wn1), ...pool.records(wn2)];
      const n = (job: string) => recs.filter((r) => r.job === job).length;
      return n('A') === want.A && n('B') === want.B && n('S') === want.S ? recs : undefined;
    });
    for (const r of logs) expect(r.counted, JSON.stringify(r)).toBe(true);
    const expected = logSums(logs);
    expect(expected.get('A')!.in).toBeGreaterThan(1_300_000);
    expect(expected.get('S')!.in).toBeGreaterThan(1_300_000);
    expect(logSums(pool.records(wn1)).get('S')!.in).toBeGreaterThan(400_000); // both nodes' parts
    expect(logSums(pool.records(wn2)).get('S')!.in).toBeGreaterThan(900_000);

    // Prometheus' answer, once a scrape after the last record is in (no transfer runs, so one
    // scrape later it must be exact).
    const byJob = async (expr: string) => {
      const r = await pool.query(expr);
      return new Map(r.map((s) => [`${s.metric.job_id}/${s.metric.direction}`, Number(s.value[1])]));
    };
    const matches = (got: Map<string, number>) => [...expected].every(([job, t]) => got.get(`${job}/in`) === t.in && got.get(`${job}/out`) === t.out);
    const raw = await pool.until('sum by (job_id) to match the logs', async () => {
      const got = await byJob('sum by (job_id, direction) (netprof_job_bytes_total)');
      return matches(got) ? got : undefined;
    }).catch(async (e: Error) => {
      console.log('prometheus:', await byJob('sum by (job_id, direction) (netprof_job_bytes_total)'), 'logs:', expected);
      throw e;
    });
    for (const [job, t] of expected) expect([raw.get(`${job}/in`), raw.get(`${job}/out`)]).toEqual([t.in, t.out]);
    // The recording rule (evaluated every second) says the same, and counts S on both nodes.
    const rule = await pool.until('job_id:netprof_job_bytes:sum', async () => {
      const got = await byJob('job_id:netprof_job_bytes:sum');
      return matches(got) ? got : undefined;
    });
    expect(rule.get('S/in')).toBe(expected.get('S')!.in);
    expect(num(await pool.query('job_id:netprof_job_nodes:count{job_id="S"}'))).toBe(2);
    expect(num(await pool.query('job_id:netprof_job_nodes:count{job_id="A"}'))).toBe(1);
    console.log(`sum by (job_id, direction) (netprof_job_bytes_total):`, Object.fromEntries(raw));
    const shown = await nsRun(pool.site, 'curl', ['-s', '-G', 'http://127.0.0.1:9090/api/v1/query', '--data-urlencode', 'query=sum by (job_id) (netprof_job_bytes_total{direction="in"})']);
    console.log(`README example: ${shown.stdout}`);

    // The placement report over both nodes' logs says the same, and S's host was seen from both.
    const rep = await run(process.execPath, [CLI, 'report', '--nodes', '--json', `wn1=${wn1.logDir}`, `wn2=${wn2.logDir}`]);
    expect(rep.code, rep.stderr).toBe(0);
    const pr = JSON.parse(rep.stdout) as { jobs: { job: string; bytes_in: number; bytes_out: number; nodes: unknown[] }[]; matrix: { job: string; remote_host: string; nodes: number }[] };
    for (const j of pr.jobs) expect([j.bytes_in, j.bytes_out]).toEqual([raw.get(`${j.job}/in`), raw.get(`${j.job}/out`)]);
    expect(pr.jobs.find((j) => j.job === 'S')!.nodes).toHaveLength(2);
    expect(pr.matrix.filter((m) => m.job === 'S').map((m) => [m.remote_host, m.nodes])).toEqual([[wn2.site, 1], [wn1.site, 1]]);

    // Every metric the rules, alerts and dashboard use exists on a real daemon.
    const deployText = ['netprof-rules.yml', 'netprof-alerts.yml', 'netprof-dashboard.json'].map((f) => readFileSync(join(DEPLOY, f), 'utf8')).join('\n');
    const used = new Set([...deployText.matchAll(/(?<![:\w])(netprof_[a-z_]+)(?![:\w])/g)].map((m) => m[1]!));
    const present = new Set((await pool.query('count by (__name__) ({__name__=~"netprof_.+"})')).map((s) => s.metric.__name__!));
    expect([...used].filter((n) => !present.has(n))).toEqual([]);
    // The dashboard's queries, as Grafana would send them, parse and answer; top jobs has ours.
    const dash = JSON.parse(readFileSync(join(DEPLOY, 'netprof-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
    for (const p of dash.panels) {
      for (const t of p.targets) {
        const expr = t.expr.replaceAll('$__range', '1m').replaceAll('$__rate_interval', '4s').replaceAll('$node', '.*');
        const r = await pool.query(expr);
        if (p.title.startsWith('Top jobs by bytes')) {
          expect(Object.fromEntries(r.map((s) => [s.metric.job_id, Number(s.value[1])]))).toEqual(Object.fromEntries([...expected].map(([job, t]) => [job, t.in + t.out])));
        }
        if (p.title === 'Daemon memory (RSS)') expect(r.length).toBe(4); // daemon and helpers, per node
      }
    }
    // Node label from the address; never an address of a connection in a label.
    const labels = await pool.query('{__name__=~"netprof_.+", job_id!=""}');
    expect(labels.some((s) => Object.values(s.metric).some((v) => v.includes(wn1.site) || v.includes(':8000')))).toBe(false);
    console.log(`totals across nodes checked in ${(performance.now() - t0).toFixed(0)} ms`);
  }, 60_000);

  it('an ended job\'s series go METRICS_GRACE after its end (staleness); 300 short jobs leave no series behind', async () => {
    const samples = async (node: PoolNode) => num(await pool.query(`scrape_samples_scraped{instance="${inst(node)}"}`))!;
    const jobSeries = async () => (await pool.query('{__name__=~"netprof_(job|process)_.+", job_id!=""}')).length;
    expect(await jobSeries()).toBeGreaterThan(0);
    for (const job of ['A', 'S']) await pool.endJob(wn1, job);
    const endedAt = Date.now();
    for (const job of ['B', 'S']) await pool.endJob(wn2, job);

    // Short jobs on wn2 while A's grace runs out on wn1.
    const baseline = idleSamples;
    const sleeper = pool.spawn(wn2.ns, 'sleep', ['600']);
    const driver = nsRun(wn2.ns, process.execPath, [join(__dirname, 'short-jobs.mjs'), String(wn2.port), pool.token, '300', String(sleeper.pid), 'short-'], 60_000);

    // A's series are there through the grace period, then go at the next scrape.
    let seenAt = 0;
    const goneAt = await pool.until('A\'s series to go', async () => {
      const r = await pool.query('netprof_job_bytes_total{job_id="A"}');
      if (r.length) seenAt = Date.now();
      return r.length === 0 ? Date.now() : undefined;
    }, 30_000);
    const delay = (goneAt - endedAt) / 1000;
    console.log(`job A: last seen ${((seenAt - endedAt) / 1000).toFixed(2)} s after its end, gone ${delay.toFixed(2)} s after (METRICS_GRACE ${GRACE_S} s, scrape 1 s)`);
    expect((seenAt - endedAt) / 1000).toBeGreaterThan(GRACE_S - 1);
    expect(delay).toBeGreaterThanOrEqual(GRACE_S - 0.5);
    expect(delay).toBeLessThan(GRACE_S + 3);

    const d = await driver;
    expect(d.code, d.stderr).toBe(0);
    const ran = JSON.parse(d.stdout) as { jobs: number; ms: number };
    // While they are in their grace period, each ended job shows on /metrics…
    const peak = await pool.until('the short jobs scraped', async () => {
      const s = await samples(wn2);
      return s >= baseline + 9 * 100 ? s : undefined; // 9 series per ended job
    });
    // …and once it is over, none is left: the target is back to its baseline.
    // (The last jobs ended up to a scrape later than the others: wait for every job's series,
    // not only for the sample count to be near its baseline, which one job's 9 fit within.)
    const after = await pool.until('the short jobs\' series to go', async () => {
      const s = await samples(wn2);
      return s <= baseline + 10 && (await jobSeries()) === 0 ? s : undefined;
    }, 30_000);
    expect(await jobSeries()).toBe(0);
    const promMetrics = (await nsRun(pool.site, 'curl', ['-s', `http://127.0.0.1:9090/metrics`])).stdout;
    const head = /^prometheus_tsdb_head_series (\d+)$/m.exec(promMetrics)?.[1];
    console.log(`300 short jobs in ${ran.ms} ms: wn2 scrape ${baseline} samples before, ${peak} at the peak, ${after} after the grace; Prometheus head ${head} series (stale ones stay until compaction)`);
    sleeper.kill('SIGKILL');
  }, 90_000);

  it('increase() across an orderly restart and a kill -9 with harvest: never negative, no byte counted twice', async () => {
    const started = Date.now() / 1000;
    // One transfer paced by its sender at 500 kB/s for 16 s, across two restarts of wn1's daemon.
    pool.spawn(pool.site, 'python3', [join(__dirname, 'paced-server.py'), '8001', '16']);
    await waitForListen(pool.site, 8001);
    // A long download, and on a line from the test a short one: a connection that closes
    // under the second daemon, so that its last scrape shows more than the crashed run's
    // harvested counters hold.
    const L = await pool.job(wn1, 'L', `nc ${wn1.site} 8001 </dev/null >/dev/null & read more; curl -sS -o /dev/null ${url(wn1, 'a1')}; wait`);
    const waitBytes = async (min: number) => pool.until(`L over ${min} B`, async () => {
      const v = num(await pool.query(`netprof_job_bytes_total{job_id="L",direction="in",instance="${inst(wn1)}"}`));
      return v !== undefined && v > min ? v : undefined;
    });
    await waitBytes(800_000);
    await pool.stopDaemon(wn1, 'shutdown'); // logs L's connection (shutdown), removes its counters
    await pool.startDaemon(wn1);
    await pool.register(wn1, 'L', L.pid); // the scheduler registers the job again
    L.sh.stdin!.write('more\n');
    await pool.until('the short download logged', async () => (pool.records(wn1).some((r) => r.job === 'L' && r.end_reason === 'fin' && r.bytes_in < 1_100_000) ? true : undefined));
    await waitBytes(1_500_000); // scraped with the short download in
    await pool.stopDaemon(wn1, 'kill'); // its counters stay in the kernel…
    await pool.startDaemon(wn1); // …and are harvested into the log as "recovered"
    await pool.register(wn1, 'L', L.pid);
    await L.done;
    const recs = await pool.until('L\'s records', async () => {
      const r = pool.records(wn1).filter((x) => x.job === 'L');
      return r.length === 4 ? r : undefined;
    }).catch((e: Error) => {
      console.log('L records', pool.records(wn1).filter((x) => x.job === 'L'));
      throw e;
    });
    expect(recs.map((r) => r.end_reason).sort()).toEqual(['fin', 'fin', 'recovered', 'shutdown']);
    const logged = recs.reduce((a, r) => a + r.bytes_in, 0);
    // The log holds three disjoint parts of one connection (each daemon counted from when it
    // took it over), and not the whole file: the gaps between daemons went uncounted.
    expect(logged).toBeLessThan(16 * 500_000 * 1.1 + 1_000_000);
    const sel = `netprof_job_bytes_total{job_id="L",direction="in",instance="${inst(wn1)}"}`;
    // Prometheus: wait for a scrape after the last record, then look at the whole life of L.
    const last = recs[recs.length - 1]!;
    expect(last.end_reason).toBe('fin');
    const finAt = Date.parse(last.end) / 1000;
    await pool.until('a scrape after the last record', async () => ((num(await pool.query(`timestamp(${sel})`)) ?? 0) > finAt + 0.5 ? true : undefined));
    const now = Date.now() / 1000;
    const window = `${Math.ceil(now - started) + 5}s`;
    const resets = num(await pool.query(`resets(${sel}[${window}])`));
    const increase = num(await pool.query(`increase(${sel}[${window}])`))!;
    const rates = await pool.queryRange(`rate(${sel}[3s])`, started, now, 1);
    const seconds = now - started;
    // The transfer's rate, measured (--limit-rate paces it only roughly): a scrape's worth of bytes.
    const perSecond = Math.max(500_000 * 1.05, logged / seconds);
    const raw = await pool.query(`${sel}[${window}]`) as unknown as { values: [number, string][] }[];
    const ups = await pool.query(`up{instance="${inst(wn1)}"}[${window}]`) as unknown as { values: [number, string][] }[];
    console.log('L samples', raw[0]?.values.map(([t, v]) => `${(t - started).toFixed(1)}:${v}`).join(' '), 'up', ups[0]?.values.map(([t, v]) => `${(t - started).toFixed(1)}:${v}`).join(' '));
    console.log(`L: ${logged} B in the log (${recs.map((r) => `${r.end_reason} ${r.bytes_in}`).join(', ')}); increase() over ${window}: ${increase.toFixed(0)}, ${resets} resets, over ${seconds.toFixed(1)} s`);
    expect(resets).toBeGreaterThanOrEqual(1); // the restarts are visible to Prometheus as resets
    for (const s of rates) for (const [, v] of s.values) expect(Number(v)).toBeGreaterThanOrEqual(0);
    // Nothing counted twice: at most the log's total plus one scrape's worth of extrapolation
    // (counting the shutdown or recovered part again would add ≥ 2 s of transfer).
    expect(increase).toBeLessThanOrEqual(logged + 1.2 * perSecond);
    // And not nothing: at least the largest daemon's part. Prometheus does undercount across
    // restarts — bytes before a series' first scrape, a killed daemon's bytes after its last
    // scrape (in the log as "recovered"), and a reset it cannot see when the new daemon's
    // count has passed the old one's by its first scrape — so this bound is loose on purpose.
    const largest = Math.max(...recs.map((r) => r.bytes_in));
    expect(increase).toBeGreaterThan(largest - 2 * perSecond);
    // The daemon now shows only what it counted itself (from its registration on).
    expect(num(await pool.query(sel))).toBe(last.bytes_in);
    await pool.endJob(wn1, 'L');
  }, 90_000);
});
