import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * One daemon per network namespace. A second one would take over the same table (harvesting and
 * replacing the first one's live counters) and each would discard what the other counts. The
 * claim is a pid file named after the namespace; a file whose pid is gone or lives elsewhere is
 * stale and taken over.
 */
export function claimNetworkNamespace(dir = '/run/netprof'): { release(): void } | { heldBy: number; path: string } {
  const ns = statSync('/proc/self/ns/net').ino;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const path = join(dir, `netns-${ns}.pid`);
  pruneStale(dir);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx', mode: 0o644 });
      return { release: () => rmSync(path, { force: true }) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const other = Number(readFileSync(path, 'utf8').trim());
    if (other > 0 && other !== process.pid && sameNamespace(other, ns)) return { heldBy: other, path };
    rmSync(path, { force: true });
  }
  throw new Error(`cannot claim ${path}`);
}

/** Claims of daemons that died without releasing them (kill -9) are removed. */
function pruneStale(dir: string): void {
  for (const name of readdirSync(dir)) {
    const m = /^netns-(\d+)\.pid$/.exec(name);
    if (!m) continue;
    const file = join(dir, name);
    try {
      if (Date.now() - statSync(file).mtimeMs < 5_000) continue; // maybe being written right now
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (!(pid > 0 && sameNamespace(pid, Number(m[1])))) rmSync(file, { force: true });
    } catch {
      /* another daemon pruned it first */
    }
  }
}

function sameNamespace(pid: number, ns: number): boolean {
  try {
    return statSync(`/proc/${pid}/ns/net`).ino === ns;
  } catch {
    return false; // gone
  }
}
