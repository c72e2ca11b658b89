// Many short jobs against one daemon, as a busy scheduler makes them: each job registers one
// live process and is ended at once. Run inside the daemon's namespace:
//   node short-jobs.mjs PORT TOKEN COUNT PID PREFIX
// Prints {"jobs": N, "ms": …} when done. Used by the cluster test and bench/series.mjs.
const [port, token, count, pid, prefix] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}/v1/jobs/`;
const headers = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
const t0 = performance.now();
for (let i = 0; i < Number(count); i++) {
  const job = encodeURIComponent(`${prefix}${i}`);
  const r = await fetch(base + job + '/processes', { method: 'POST', headers, body: JSON.stringify({ pid: Number(pid) }) });
  if (r.status !== 201) throw new Error(`register ${prefix}${i}: ${r.status} ${await r.text()}`);
  const e = await fetch(base + job, { method: 'DELETE', headers });
  if (e.status !== 200) throw new Error(`end ${prefix}${i}: ${e.status} ${await e.text()}`);
  await e.arrayBuffer();
}
console.log(JSON.stringify({ jobs: Number(count), ms: Math.round(performance.now() - t0) }));
