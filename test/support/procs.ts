import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/**
 * psutil's create_time() for a pid, computed independently of netprof's own code (Python's
 * os.sysconf and /proc, as psutil does it): boot time + starttime ticks / CLK_TCK.
 */
export function createTime(pid: number): number {
  const py = `import os
stat = open('/proc/${pid}/stat').read().rsplit(')', 1)[1].split()
btime = next(int(l.split()[1]) for l in open('/proc/stat') if l.startswith('btime'))
print(repr(btime + int(stat[19]) / os.sysconf('SC_CLK_TCK')))`;
  const r = spawnSync('python3', ['-c', py], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`create_time(${pid}): ${r.stderr}`);
  return Number(r.stdout.trim());
}

/** A process that lives until killed, as root or as another uid. */
export function sleeper(uid?: number): ChildProcess {
  return spawn('sleep', ['600'], { stdio: 'ignore', ...(uid === undefined ? {} : { uid, gid: uid }) });
}

/** The pid of a process that has already exited and been reaped. */
export async function deadPid(): Promise<number> {
  const child = spawn('true', [], { stdio: 'ignore' });
  const pid = child.pid!;
  await new Promise((r) => child.once('exit', r));
  return pid;
}
