import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { parseStat } from '../resolve/procfs.js';

/** What /proc says about a live process: enough to tell it apart from a later one with the same
 * pid (uid and start time), and its parent. */
export interface ProcessInfo {
  pid: number;
  ppid: number;
  uid: number;
  /** Start time in epoch seconds, as psutil's create_time(): boot time + starttime / CLK_TCK. */
  startTime: number;
  /** The raw starttime in clock ticks since boot: exact, for comparing two readings. */
  startTicks: number;
}

let ticksPerSecond: number | undefined;
let bootSeconds: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    ticksPerSecond = Number.isInteger(n) && n > 0 ? n : 100; // 100 on every Linux we know of
  }
  return ticksPerSecond;
}

function bootTime(): number {
  if (bootSeconds === undefined) {
    const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
    if (!m) throw new Error('/proc/stat has no btime line');
    bootSeconds = Number(m[1]);
  }
  return bootSeconds;
}

/** The live process with this pid, or undefined if there is none (or it is a zombie). */
export function readProcess(pid: number): ProcessInfo | undefined {
  try {
    const { state, ppid, startTicks } = parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    if (state === 'Z' || state === 'X') return undefined; // exited, waiting to be reaped
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const uidLine = /^Uid:\s+(\d+)/m.exec(status);
    return {
      pid,
      ppid,
      uid: Number(uidLine?.[1] ?? NaN),
      startTicks,
      startTime: bootTime() + startTicks / clockTicks(),
    };
  } catch {
    return undefined;
  }
}

interface PasswdEntry {
  name: string;
  uid: number;
}

function passwdLookup(key: string): PasswdEntry | undefined {
  // /etc/passwd first; getent covers NSS sources (LDAP, sssd) a cluster node often uses.
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , uid] = line.split(':');
      if (name && uid && (name === key || uid === key)) return { name, uid: Number(uid) };
    }
  } catch {
    /* fall through to getent */
  }
  const r = spawnSync('getent', ['passwd', key], { encoding: 'utf8', timeout: 2000 });
  const [name, , uid] = (r.stdout ?? '').split('\n')[0]!.split(':');
  return name && uid ? { name, uid: Number(uid) } : undefined;
}

/** The user name for a uid, or the uid as text when it has none (as psutil does). */
export function userName(uid: number): string {
  return passwdLookup(String(uid))?.name ?? String(uid);
}

/** The uid an owner names: a user name or a numeric uid. */
export function ownerUid(owner: string): number | undefined {
  if (/^\d+$/.test(owner)) return Number(owner);
  return passwdLookup(owner)?.uid;
}
