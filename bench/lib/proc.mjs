// /proc readings: a process's psutil create_time(), and CPU / memory of the daemon's tree.
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const BTIME = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))[1]);

function statFields(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const close = text.lastIndexOf(')');
  // fields[0] is field 3 (state) of proc(5)
  return { comm: text.slice(text.indexOf('(') + 1, close), f: text.slice(close + 2).split(' ') };
}

/** psutil's create_time(): boot time + start ticks / CLK_TCK (what the daemon checks birthdate against). */
export function createTime(pid) {
  return BTIME + Number(statFields(pid).f[19]) / CLK_TCK;
}

/** Children of pid, from every /proc/N/stat's ppid. */
function childrenOf(pid) {
  const out = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const { f } = statFields(d);
      if (Number(f[1]) === pid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * CPU seconds of a process and everything under it: its own utime+stime, its reaped children's
 * cutime+cstime (every short-lived nft / iptables-restore / ip run: Node waits for them), and
 * each live descendant's utime+stime+cutime+cstime (tcpdump, bpftrace), by name. Kernel work done
 * on behalf of the daemon in other contexts (eBPF programs run in the traced task, softirq
 * packet filtering) is not in here.
 */
export function treeCpu(pid) {
  const parts = {};
  let total = 0;
  const visit = (p, top) => {
    let s;
    try {
      s = statFields(p);
    } catch {
      return;
    }
    const [ut, st, cut, cst] = [11, 12, 13, 14].map((i) => Number(s.f[i]) / CLK_TCK);
    if (top) {
      parts.self = ut + st;
      parts.reaped_children = cut + cst;
    } else {
      parts[s.comm] = (parts[s.comm] ?? 0) + ut + st + cut + cst;
    }
    total += ut + st + cut + cst;
    for (const c of childrenOf(p)) visit(c, false);
  };
  visit(pid, true);
  return { total, parts };
}

/** VmHWM / VmRSS of one process, in MB. */
export function memMb(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { hwm: kb('VmHWM') / 1024, rss: kb('VmRSS') / 1024 };
}

export function median(xs) {
  const a = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (!a.length) return NaN;
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

export function percentile(xs, p) {
  const a = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (!a.length) return NaN;
  const i = Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1));
  return a[i];
}

/** CPU used by a process and its children from now until the returned function is called. */
export function cpuWindow(pid) {
  const round3 = (x) => Math.round(x * 1000) / 1000;
  const a = treeCpu(pid);
  const t = performance.now();
  return () => {
    const b = treeCpu(pid);
    const wall = (performance.now() - t) / 1000;
    const parts = {};
    for (const k of new Set([...Object.keys(a.parts), ...Object.keys(b.parts)])) parts[k] = round3((b.parts[k] ?? 0) - (a.parts[k] ?? 0));
    return { cpu_s: round3(b.total - a.total), wall_s: round3(wall), core: round3((b.total - a.total) / wall), parts };
  };
}
