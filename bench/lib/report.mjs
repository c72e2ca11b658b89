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
