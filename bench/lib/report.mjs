// Writes the measured part of BENCHMARKS.md between <!-- bench:begin --> and <!-- bench:end -->,
// keeping whatever is written around it (the analysis) as it is.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const BEGIN = '<!-- bench:begin (written by `npm run bench`; edit outside these markers) -->';
const END = '<!-- bench:end -->';

const f = (x, d = 3) => (x === undefined || x === null || (typeof x === 'number' && Number.isNaN(x)) ? '—' : typeof x === 'number' ? String(Math.round(x * 10 ** d) / 10 ** d) : String(x));
const pct = (x) => (typeof x === 'number' && !Number.isNaN(x) ? `${(x * 100).toFixed(2)} %` : '—');

export function render(r) {
  const m = r.meta;
  const out = [];
  out.push(`Run of ${m.date} (${m.mode}, ${m.duration_s} s), commit \`${m.git_commit}\` (${m.daemon_build}).`, '');
  out.push('| machine | |', '|---|---|');
  out.push(`| CPU | ${m.cpu} |`, `| RAM | ${m.ram_gb} GB |`, `| kernel | ${m.kernel} |`, `| Node | ${m.node} |`);
  out.push(`| nft | ${m.nft} |`, `| iptables | ${m.iptables} |`, `| iperf3 | ${m.iperf3} |`, `| tcpdump | ${m.tcpdump} |`, `| bpftrace | ${m.bpftrace} |`);
  out.push(`| load average (1, 5, 15 min) | ${m.loadavg_at_start} at start, ${m.loadavg_at_end} at end |`, '');
  out.push('### Goals', '', '| goal | measured | target | |', '|---|---|---|---|');
  for (const [name, g] of Object.entries(r.goals ?? {})) out.push(`| ${name} | ${typeof g.value === 'number' && g.value <= 1 && /fraction/.test(name) ? pct(g.value) : f(g.value)} | ${g.goal} | ${g.pass === null ? 'n/a' : g.pass ? 'pass' : '**fail**'} |`);
  out.push('');

  const tp = r.throughput;
  if (tp) {
    out.push('### 1. Datapath cost: iperf3 throughput with N counted idle connections', '');
    out.push(`Medians of ${r.params.reps} runs of ${r.params.iperfSeconds} s each, alternating with the same path in a second namespace pair without a daemon. \`l1k\`: one flow, 1 KiB writes; \`P8\`: 8 flows, default writes. Ratio = daemon / no daemon; the headline \`throughput_ratio\` is the worse of the two.`, '');
    out.push('| engine | N | l1k Mbit/s (daemon / none) | ratio | P8 Mbit/s (daemon / none) | ratio | N counted after | peak RSS | shutdown |', '|---|---|---|---|---|---|---|---|---|');
    for (const engine of ['nftables', 'iptables']) {
      for (const n of r.params.ns) {
        const id = `${engine}/${n}`;
        const a = tp.cases[`${id}/l1k`] ?? {};
        const b = tp.cases[`${id}/P8`] ?? {};
        const s = tp.setup[id] ?? {};
        out.push(`| ${engine} | ${n} | ${f(a.daemon_mbps, 0)} / ${f(a.base_mbps, 0)} | ${f(a.ratio)} | ${f(b.daemon_mbps, 0)} / ${f(b.base_mbps, 0)} | ${f(b.ratio)} | ${n ? `${f(s.counted_ms / 1000, 1)} s` : '—'} | ${f(s.hwm_mb, 0)} MB | ${typeof s.shutdown_s === 'number' ? `${f(s.shutdown_s, 2)} s` : f(s.shutdown_s)}${s.error ? ` (error: ${s.error.slice(0, 80)})` : ''} |`);
      }
    }
    out.push('');
    const s = tp.setup['nftables/10000'];
    if (s?.nft_list_set_json) out.push(`One engine read at N = 10,000 (nftables): \`nft -j list set … flows4\` ${s.nft_list_set_json.ms} ms for ${Math.round(s.nft_list_set_json.bytes / 1024)} KiB of JSON; plain \`nft list set\` ${s.nft_list_set_text.ms} ms.`, '');
  }

  const c = r.churn_runs;
  if (c || r.paced) {
    out.push('### 2–4. Churn, close-to-log latency, the daemon\'s cost', '');
    out.push('One registered process (bench/churn.mjs, 32 connections in flight) makes short connections to a Node server in the remote namespace: 1 KiB request, 10 KiB answer, server closes. Byte-exact: both directions within 2 packets of header bytes (104 B) of conntrack\'s count (nf_conntrack_acct=1). CPU: the daemon\'s utime+stime, its reaped children (every nft / iptables-restore run) and its live children (tcpdump, bpftrace); eBPF programs run in the traced tasks and are not in it.', '');
    out.push('| run | conn/s (client) | all logged after | logged | right pid | byte-exact | close→log p50 / p99 | CPU s per 10k | CPU cores | peak RSS |', '|---|---|---|---|---|---|---|---|---|---|');
    if (r.churn_no_daemon) out.push(`| no daemon (ceiling) | ${r.churn_no_daemon.conn_per_s} | — | — | — | — | — | — | — | — |`);
    const row = (name, x) => out.push(`| ${name} | ${x.conn_per_s} | ${f(x.all_logged_after_ms / 1000, 1)} s | ${pct(x.logged_fraction)} | ${pct(x.pid_fraction)} | ${pct(x.oracle?.exact_fraction)} | ${f(x.close_to_log_ms?.p50, 0)} / ${f(x.close_to_log_ms?.p99, 0)} ms | ${f(x.cpu_s_per_10k, 1)} | ${f(x.cpu_core, 2)} | ${f(x.hwm_mb, 0)} MB |`);
    for (const [engine, x] of Object.entries(c ?? {})) row(`${engine}, ${x.total} as fast as possible`, x);
    if (r.paced) row(`nftables, paced ${r.params.pacedRate}/s for ${r.params.pacedSeconds} s`, r.paced);
    out.push('');
    if (r.churn?.ratio_to_no_daemon !== undefined) out.push(`Churn ÷ the no-daemon ceiling, same run: ${f(r.churn.ratio_to_no_daemon)} (element path: ${r.churn.elements ?? '—'}).`, '');
    const nc = c?.nftables;
    if (nc?.daemon_cpu) out.push(`CPU of the nftables churn run by part (s): ${Object.entries(nc.daemon_cpu.parts).map(([k, v]) => `${k} ${f(v, 2)}`).join(', ')}.`, '');
    if (r.paced?.daemon_cpu) out.push(`CPU of the paced run by part (s): ${Object.entries(r.paced.daemon_cpu.parts).map(([k, v]) => `${k} ${f(v, 2)}`).join(', ')}.`, '');
    if (nc?.oracle) out.push(`Conntrack vs record, nftables churn (conntrack − record, bytes: count): in ${nc.oracle.diff_in_bytes_top}; out ${nc.oracle.diff_out_bytes_top}.`, '');
    const d = r.daemon ?? {};
    out.push(`Idle daemon, nothing open: ${f(d.idle_cpu_core)} core; with 10,000 open (nftables): ${f(d.idle_cpu_core_10k_open)} core.`, '');
  }
  const g = r.grace;
  if (g) {
    out.push('### 6. Late-registration grace under unprofiled load', '');
    out.push(`bench/churn.mjs makes short connections nobody registered at 2,000 per second for ${g.default_grace.seconds} s; every one stays in the grace list (its datapath counters kept) for LATE_GRACE. Side by side with LATE_GRACE = 0 in the same run, then with a small SET_SIZE that the load fills while a registered process makes ${g.filled.profiled?.connections ?? '?'} connections.`, '');
    out.push('| run | unprofiled conn/s | grace list max / median | flows4 elements at end | daemon CPU cores | peak RSS | host Slab growth | /v1/health |', '|---|---|---|---|---|---|---|---|');
    const row = (name, x) => out.push(`| ${name} | ${x.client_conn_per_s} | ${x.held_max} / ${x.held_median} | ${x.set_elements_at_end} | ${f(x.daemon_cpu_core, 2)} | ${x.rss_mb} MB | ${x.slab_growth_mb} MB | ${x.health.status}; grace shortened to ${x.health.late_grace.shortened_to_s ?? '—'} s |`);
    row('LATE_GRACE 30 (default)', g.default_grace);
    row('LATE_GRACE 0', g.grace_off);
    row('SET_SIZE 16384, RULES_THRESHOLD 1000', g.filled);
    out.push('', `Cost of the grace at this load: ${f(g.cpu_core_cost, 2)} core. Filled: the profiled process's connections logged ${g.filled.profiled?.logged}/${g.filled.profiled?.connections}, counted in full ${g.filled.profiled?.counted}.`, '');
  }
  const ep = r.elements_paths;
  if (ep) {
    out.push('### 7. The two element paths (ELEMENTS = netlink, nft)', '');
    out.push('The same churn (as fast as possible, conntrack oracle) and paced 1,000 conn/s loads, run netlink, nft, nft, netlink in one run. "took": the path the daemon reported taking.', '');
    out.push('| path | load | took | conn/s | logged | counted | byte-exact | close→log p50 / p99 | CPU s per 10k | CPU cores | peak RSS |', '|---|---|---|---|---|---|---|---|---|---|---|');
    for (const path of ['netlink', 'nft']) {
      for (const kind of ['churn', 'paced']) {
        const x = ep[path]?.[kind];
        if (x) out.push(`| ${path} | ${kind} | ${x.took ?? '—'} | ${x.conn_per_s} | ${pct(x.logged_fraction)} | ${pct(x.counted_fraction)} | ${pct(x.exact_fraction)} | ${f(x.close_to_log_p50_ms, 0)} / ${f(x.close_to_log_p99_ms, 0)} ms | ${f(x.cpu_s_per_10k, 1)} | ${f(x.cpu_core, 2)} | ${f(x.hwm_mb, 0)} MB |`);
      }
    }
    out.push('');
  }
  const b = r.burst_run;
  if (b) {
    out.push(`### 8. A burst: ${b.connections} connections opened at once, held, closed at once`, '');
    out.push(`${Math.ceil(b.connections / 12500)} holders (bench/holder.mjs, 1,024 connects in flight each) registered in one job open ${b.connections} connections to sinks in the remote namespace, hold them 2 s after the daemon counts them all (or after 120 s), then exit (the kernel closes every socket). \`GET /v1/health\` is called over the Unix socket back to back (at most every 100 ms) from the first connect to the last record. Conntrack in the node namespace is the oracle.`, '');
    out.push('| opened in | all tracked and counted after | logged | right pid | counted | byte-exact | all logged after the close | health p50 / p99 / max | peak RSS |', '|---|---|---|---|---|---|---|---|---|');
    out.push(`| ${f(b.open_s, 1)} s | ${b.all_tracked_s == null || Number.isNaN(b.all_tracked_s) ? `not within 120 s (tracked ${b.tracked}, counted ${b.counted})` : `${f(b.all_tracked_s, 1)} s`} | ${pct(b.logged_fraction)} | ${pct(b.pid_fraction)} | ${pct(b.counted_fraction)} | ${pct(b.exact_fraction)} | ${f(b.all_logged_after_close_s, 1)} s | ${f(b.health_ms?.p50, 1)} / ${f(b.health_ms?.p99, 1)} / ${f(b.health_ms?.max, 0)} ms (${b.health_ms?.n} calls) | ${f(b.hwm_mb, 0)} MB |`, '');
    if (b.oracle) out.push(`Conntrack vs record (conntrack − record, bytes: count): in ${b.oracle.diff_in_bytes_top}; out ${b.oracle.diff_out_bytes_top}; not in conntrack ${b.oracle.not_in_conntrack}. Daemon CPU over the burst: ${f(b.daemon_cpu?.cpu_s, 1)} s.`, '');
  }
  const a = r.api_load_run;
  if (a) {
    out.push(`### 9. The API at ${a.procs} registered processes and ${a.conns} live connections`, '');
    out.push(`${a.procs - 1} idle \`sleep\`s, each its own job, and one holder of ${a.conns} connections, registered with \`POST /v1/jobs/{job}/processes\` 8 at a time (${f(a.register_all_s, 1)} s for all; each p50 ${f(a.register_ms?.p50, 1)} ms, p99 ${f(a.register_ms?.p99, 1)} ms). Then each call ${a.samples} times in turn over the Unix socket; the first call of each is in its own column (part of the p99 too).`, '');
    out.push('| call | p50 | p99 | max | first call |', '|---|---|---|---|---|');
    for (const [name, x] of Object.entries(a.calls ?? {})) out.push(`| \`${name}\`${x.errors ? ` (${x.errors} answered ${x.status})` : ''} | ${f(x.p50, 1)} ms | ${f(x.p99, 1)} ms | ${f(x.max, 1)} ms | ${x.first === undefined ? '—' : `${f(x.first, 1)} ms`} |`);
    out.push('', `Worst p99 (\`api_load.p99_ms_max\`): ${f(a.p99_ms_max, 1)} ms, ${a.worst_call}. Peak RSS ${f(a.hwm_mb, 0)} MB.`, '');
  }
  const pe = r.peers;
  if (pe) {
    out.push('### 10. Next to nethogs', '');
    out.push(`The paced load of section 2–4 (${r.params.pacedRate} conn/s for ${r.params.pacedSeconds} s), profiled by Debian's nethogs (\`nethogs -t -v 2 -d 1 veth0\`, no daemon) and by netprof, ${r.params.peerReps} runs each, alternating; medians. CPU: nethogs' utime+stime from the first connection to 2.5 s after the last; netprof's with all its children until every connection is logged. Right process: netprof, connections logged with the client's pid; nethogs, which has no per-connection view, the bytes it put on the client's pid over the bytes conntrack counted for the load.`, '');
    out.push('| | CPU s for the load | cores | put on the right process |', '|---|---|---|---|');
    out.push(`| netprof | ${f(pe.netprof_cpu_s, 2)} | ${f(pe.netprof_cpu_core, 3)} | ${pct(pe.netprof_right_pid_fraction)} of connections (counted ${pct(pe.netprof_counted_fraction)}) |`);
    out.push(`| nethogs 0.8.7 | ${f(pe.nethogs_cpu_s, 2)} | ${f(pe.nethogs_cpu_core, 3)} | ${pct(pe.nethogs_right_process_bytes_fraction)} of bytes |`, '');
    out.push(`CPU ratio netprof ÷ nethogs (\`peers.cpu_ratio_vs_nethogs\`): ${f(pe.cpu_ratio_vs_nethogs)}.`, '');
  }
  out.push('### 5. Start-up and shutdown', '');
  out.push(`Start-up (spawn → "netprof daemon ready", includes bpftrace attaching): median ${f(r.startup_s?.median, 2)} s over ${r.startup_ms?.length ?? 0} starts (${(r.startup_ms ?? []).join(', ')} ms).`);
  out.push(`Shutdown with 10,000 open connections (/shutdown → exit, every connection logged): nftables ${f(r.shutdown_s_10k_open, 2)} s, iptables ${f(r.shutdown_s_10k_open_iptables, 2)} s.`, '');
  return out.join('\n');
}

export function writeReport(file, results) {
  const body = `${BEGIN}\n${render(results)}\n${END}`;
  let text;
  if (existsSync(file)) {
    const old = readFileSync(file, 'utf8');
    const a = old.indexOf(BEGIN);
    const b = old.indexOf(END);
    text = a >= 0 && b > a ? old.slice(0, a) + body + old.slice(b + END.length) : `${old.trimEnd()}\n\n${body}\n`;
  } else {
    text = `# netprof benchmarks\n\n\`npm run bench\` (full, under 20 min) or \`npm run bench -- --quick\` (under 5 min), as root.\n\n${body}\n`;
  }
  writeFileSync(file, text);
}
