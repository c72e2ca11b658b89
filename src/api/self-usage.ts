import { readFileSync, readdirSync } from 'node:fs';

/**
 * The daemon's own CPU time and memory, for the operators' dashboard: the Node process, and
 * apart from it its helpers (nft, tcpdump, bpftrace — long-lived children, which do most of the
 * work under load). From /proc, so no default-metrics flood of nodejs_* series.
 */

/** USER_HZ: 100 on every architecture Linux runs Debian on (the kernel exports ticks in it). */
const TICKS_PER_SECOND = 100;

export interface Usage {
  cpuSeconds: number;
  rssBytes: number;
}

export interface SelfUsage {
  daemon: Usage;
  helpers: Usage;
}

/** utime, stime, cutime, cstime in seconds; undefined when the process is gone. */
function cpuOf(pid: number | 'self'): { own: number; reaped: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields after the command: state is [0], utime is field 14 of the whole line, i.e. [11].
    const n = (i: number) => Number(f[i]) / TICKS_PER_SECOND;
    return { own: n(11) + n(12), reaped: n(13) + n(14) };
  } catch {
    return undefined;
  }
}

function rssOf(pid: number | 'self'): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function childrenOf(pid: number | 'self'): number[] {
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try {
        const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
        if (text) out.push(...text.split(' ').map(Number));
      } catch {
        /* the thread ended */
      }
    }
  } catch {
    /* gone */
  }
  return out;
}

/**
 * Helpers' CPU: the live children's (with what their own reaped children used) plus what the
 * daemon's reaped children used. Kept monotonic: a child that exits moves its time from "live"
 * to "reaped" only once reaped, so a scrape in between could see less; the maximum seen is kept.
 */
export class SelfUsageReader {
  private maxHelpersCpu = 0;

  read(): SelfUsage {
    const self = cpuOf('self') ?? { own: 0, reaped: 0 };
    let helpersCpu = self.reaped;
    let helpersRss = 0;
    for (const pid of childrenOf('self')) {
      const c = cpuOf(pid);
      if (c) helpersCpu += c.own + c.reaped;
      helpersRss += rssOf(pid);
    }
    this.maxHelpersCpu = Math.max(this.maxHelpersCpu, helpersCpu);
    return {
      daemon: { cpuSeconds: self.own, rssBytes: rssOf('self') },
      helpers: { cpuSeconds: this.maxHelpersCpu, rssBytes: helpersRss },
    };
  }
}
