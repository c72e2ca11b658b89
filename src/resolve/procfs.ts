import { readFile, readdir, readlink } from 'node:fs/promises';
import { endianness } from 'node:os';
import type { Family } from '../connection.js';
import { canonicalAddr } from './addr.js';

/**
 * What /proc tells about sockets and processes. Everything takes a procRoot so unit tests run
 * on recorded fixtures; the daemon uses /proc.
 */

/** TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h). */
export const TCP_STATE = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
} as const;

export interface TcpRow {
  /** Family of the traffic: a v4-mapped row of tcp6 is family 4. */
  family: Family;
  localAddr: string;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  state: number;
  uid: number;
  /** 0 when no file refers to the socket (TIME_WAIT, not yet accepted, orphaned). */
  inode: number;
}

const littleEndian = endianness() === 'LE';

/** The kernel prints each 32-bit word of an address in host byte order, as hex. */
function hexWordBytes(word: string): number[] {
  const v = parseInt(word, 16);
  const be = [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
  return littleEndian ? be.reverse() : be;
}

export function decodeHexAddr(hex: string): string {
  if (hex.length === 8) return hexWordBytes(hex).join('.');
  if (hex.length !== 32) throw new Error(`bad /proc/net address ${JSON.stringify(hex)}`);
  const bytes: number[] = [];
  for (let i = 0; i < 32; i += 8) bytes.push(...hexWordBytes(hex.slice(i, i + 8)));
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return words.join(':');
}

/** Hex address → canonical address: a namespace's rows share few addresses, and the periodic
 * collection reads every row (10,000 connections: 10,000 rows). Bounded: emptied when full. */
const addresses = new Map<string, Readonly<{ family: Family; addr: string }>>();
const HEX_ADDR = /^([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32})$/;

function endpoint(text: string): { family: Family; addr: string; port: number } {
  const colon = text.indexOf(':');
  const hex = text.slice(0, colon);
  const portHex = text.slice(colon + 1);
  let a = addresses.get(hex);
  if (!a && colon > 0 && HEX_ADDR.test(hex)) {
    if (addresses.size >= 4096) addresses.clear();
    addresses.set(hex, (a = canonicalAddr(decodeHexAddr(hex))));
  }
  // Number('0x…') is NaN for anything but hex digits.
  const port = portHex.length === 4 ? Number(`0x${portHex}`) : NaN;
  if (!a || Number.isNaN(port)) throw new Error(`bad /proc/net endpoint ${JSON.stringify(text)}`);
  return { family: a.family, addr: a.addr, port };
}

/** Start and end of the first `n` whitespace-separated fields of a line, in `at` (2 per field);
 * how many were found. No regex and no substrings: most rows are skipped by state, and of the
 * rest five fields of seventeen are read. */
function fieldBounds(line: string, at: Int32Array, n: number): number {
  let found = 0;
  let i = 0;
  const len = line.length;
  while (found < n) {
    while (i < len && (line.charCodeAt(i) === 32 || line.charCodeAt(i) === 9)) i++;
    if (i >= len) break;
    at[2 * found] = i;
    while (i < len && line.charCodeAt(i) !== 32 && line.charCodeAt(i) !== 9) i++;
    at[2 * found + 1] = i;
    found++;
  }
  return found;
}

/** Parses the text of /proc/net/tcp or /proc/net/tcp6. Malformed lines throw: the format is the
 * kernel's. `states` keeps only rows in those states, skipped before their addresses are decoded:
 * under churn most rows are TIME_WAIT (a minute's worth of closed connections). */
export function parseTcpTable(text: string, states?: ReadonlySet<number>): TcpRow[] {
  const rows: TcpRow[] = [];
  const at = new Int32Array(20);
  const field = (line: string, i: number) => line.slice(at[2 * i]!, at[2 * i + 1]!);
  // Line by line without splitting the whole text (10,000 rows are 1.5 MB); the header skipped.
  for (let start = text.indexOf('\n') + 1, end: number; start > 0 && start < text.length; start = end + 1) {
    end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, end);
    if (fieldBounds(line, at, 10) < 10) continue;
    const state = parseInt(field(line, 3), 16);
    if (states && !states.has(state)) continue;
    const local = endpoint(field(line, 1));
    const remote = endpoint(field(line, 2));
    rows.push({
      family: local.family,
      localAddr: local.addr,
      localPort: local.port,
      remoteAddr: remote.addr,
      remotePort: remote.port,
      state,
      uid: Number(field(line, 7)),
      inode: Number(field(line, 9)),
    });
  }
  return rows;
}

/**
 * The TCP sockets of one network namespace. /proc/net is the reader's namespace; /proc/PID/net
 * is PID's — so the daemon passes 'self', and a test in the host namespace passes a pid that
 * lives inside the namespace under test.
 */
export async function readTcpTables(netPid: number | 'self', procRoot = '/proc', states?: ReadonlySet<number>): Promise<TcpRow[]> {
  const out: TcpRow[] = [];
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = await readFile(`${procRoot}/${netPid}/net/${file}`, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && file === 'tcp6') continue; // IPv6 disabled
      throw e;
    }
    for (const row of parseTcpTable(text, states)) out.push(row); // not push(...rows): 100k+ arguments overflow the stack
  }
  return out;
}

export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  /** Field 22: start time in clock ticks since boot; with the pid, a process's identity. */
  startTicks: number;
}

/** Parses /proc/PID/stat. comm may hold spaces and parentheses, so fields count from the last ')'. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`bad /proc stat line ${JSON.stringify(text.slice(0, 80))}`);
  const rest = text.slice(close + 2).trim().split(' ');
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const pid = Number(text.slice(0, open).trim());
  const ppid = Number(rest[1]);
  const startTicks = Number(rest[19]);
  if (!Number.isInteger(pid) || !Number.isInteger(ppid) || !Number.isInteger(startTicks) || rest.length < 20) {
    throw new Error(`bad /proc stat line ${JSON.stringify(text.slice(0, 80))}`);
  }
  return { pid, comm: text.slice(open + 1, close), state: rest[0]!, ppid, startTicks };
}

/** The stat of a live process, or undefined if it is gone (or a zombie: it holds no sockets). */
export async function readStat(pid: number, procRoot = '/proc'): Promise<ProcStat | undefined> {
  try {
    const st = parseStat(await readFile(`${procRoot}/${pid}/stat`, 'utf8'));
    return st.state === 'Z' || st.state === 'X' ? undefined : st;
  } catch {
    return undefined;
  }
}

export async function listPids(procRoot = '/proc'): Promise<number[]> {
  const names = await readdir(procRoot);
  return names.filter((n) => /^\d+$/.test(n)).map(Number);
}

/**
 * Children of the given processes. /proc/PID/task/TID/children is used when the kernel has it
 * (CONFIG_PROC_CHILDREN); otherwise — as on this machine — one pass over every /proc/PID/stat.
 */
export async function childrenOf(parents: ReadonlySet<number>, procRoot = '/proc'): Promise<ProcStat[]> {
  const viaChildren = await childrenFiles(parents, procRoot);
  if (viaChildren) return viaChildren;
  const out: ProcStat[] = [];
  for (const pid of await listPids(procRoot)) {
    const st = await readStat(pid, procRoot);
    if (st && parents.has(st.ppid)) out.push(st);
  }
  return out;
}

/**
 * Every live descendant of the roots that /proc can still show (by PPid — a process whose parent
 * already exited was reparented and is not found here; fork events cover those). One pass over
 * /proc when /proc/PID/task/TID/children is not available; with maxAgeMs, a pass started at most
 * that long ago (or still running) serves instead — the caller must then have the fork events
 * of that window (a live tracer), since a child forked since is not in it.
 */
export async function descendantsOf(roots: ReadonlySet<number>, procRoot = '/proc', maxAgeMs = 0): Promise<ProcStat[]> {
  const out: ProcStat[] = [];
  const viaChildren = await childrenFiles(roots, procRoot);
  if (viaChildren) {
    let level = viaChildren;
    while (level.length) {
      out.push(...level);
      level = (await childrenFiles(new Set(level.map((s) => s.pid)), procRoot)) ?? [];
    }
    return out;
  }
  const byParent = await processTable(procRoot, maxAgeMs);
  const queue = [...roots];
  const seen = new Set(roots);
  while (queue.length) {
    for (const st of byParent.get(queue.shift()!) ?? []) {
      if (seen.has(st.pid)) continue;
      seen.add(st.pid);
      out.push(st);
      queue.push(st.pid);
    }
  }
  return out;
}

/** The last pass over /proc (processes by parent), shared by callers that accept its age. */
let lastPass: { procRoot: string; at: number; table: Promise<Map<number, ProcStat[]>> } | undefined;

/** Every process's stat, by parent pid. On a node with 10,000 processes a pass reads 10,000
 * files (~100 ms): registrations that come together share one (see descendantsOf). */
function processTable(procRoot: string, maxAgeMs: number): Promise<Map<number, ProcStat[]>> {
  const now = Date.now();
  if (maxAgeMs > 0 && lastPass && lastPass.procRoot === procRoot && now - lastPass.at <= maxAgeMs) return lastPass.table;
  const table = (async () => {
    const byParent = new Map<number, ProcStat[]>();
    const pids = await listPids(procRoot);
    // 32 reads in flight: the thread pool does them in parallel, the loop stays free.
    for (let i = 0; i < pids.length; i += 32) {
      for (const st of await Promise.all(pids.slice(i, i + 32).map((pid) => readStat(pid, procRoot)))) {
        if (!st) continue;
        const list = byParent.get(st.ppid);
        if (list) list.push(st);
        else byParent.set(st.ppid, [st]);
      }
    }
    return byParent;
  })();
  const pass = { procRoot, at: now, table };
  lastPass = pass;
  table.catch(() => {
    if (lastPass === pass) lastPass = undefined;
  });
  return table;
}

async function childrenFiles(parents: ReadonlySet<number>, procRoot: string): Promise<ProcStat[] | undefined> {
  const out: ProcStat[] = [];
  let answered = false;
  for (const parent of parents) {
    let tids: string[];
    try {
      tids = await readdir(`${procRoot}/${parent}/task`);
    } catch {
      continue; // parent gone
    }
    answered = true;
    for (const tid of tids) {
      let text: string;
      try {
        text = await readFile(`${procRoot}/${parent}/task/${tid}/children`, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // not compiled in
        continue;
      }
      for (const c of text.split(/\s+/).filter(Boolean)) {
        const st = await readStat(Number(c), procRoot);
        if (st && st.ppid === parent) out.push(st);
      }
    }
  }
  return answered || !parents.size ? out : undefined;
}

const SOCKET_LINK = /^socket:\[(\d+)\]$/;

/**
 * Socket inode → owning pids, for the processes the caller cares about only (registered ones and
 * their descendants), not all of /proc. Between lookups the index is kept; a hit is checked with
 * one readlink, and a miss rescans the fd tables of the given pids only, one scan at a time
 * (concurrent misses share it). fd numbers are reused at once by short connections, so an fd's
 * link is never trusted from an earlier scan without reading it again.
 */
export class SocketIndex {
  private byInode = new Map<number, { pid: number; fd: string }[]>();
  private scanning: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  private latestPids: ReadonlySet<number> = new Set();
  scans = 0;

  constructor(private readonly procRoot = '/proc') {}

  async owners(inode: number, pids: ReadonlySet<number>): Promise<number[]> {
    const cached = await this.verified(inode, pids);
    if (cached.length) return cached;
    await this.rescan(pids);
    return this.verified(inode, pids);
  }

  private async verified(inode: number, pids: ReadonlySet<number>): Promise<number[]> {
    const out = new Set<number>();
    for (const { pid, fd } of this.byInode.get(inode) ?? []) {
      if (!pids.has(pid)) continue;
      const link = await readlink(`${this.procRoot}/${pid}/fd/${fd}`).catch(() => '');
      if (link === `socket:[${inode}]`) out.add(pid);
    }
    return [...out];
  }

  /** Scans after this call began: a scan already running may have read a pid's fds too early,
   * so callers arriving during one share a single follow-up scan. */
  private rescan(pids: ReadonlySet<number>): Promise<void> {
    this.latestPids = pids;
    if (!this.scanning) {
      this.scanning = this.scan(pids).finally(() => (this.scanning = undefined));
      return this.scanning;
    }
    this.queued ??= this.scanning.then(() => {
      this.queued = undefined;
      return this.rescan(this.latestPids);
    });
    return this.queued;
  }

  private async scan(pids: ReadonlySet<number>): Promise<void> {
    this.scans += 1;
    const next = new Map<number, { pid: number; fd: string }[]>();
    await Promise.all(
      [...pids].map(async (pid) => {
        const fds = await readdir(`${this.procRoot}/${pid}/fd`).catch(() => [] as string[]);
        await Promise.all(
          fds.map(async (fd) => {
            const m = SOCKET_LINK.exec(await readlink(`${this.procRoot}/${pid}/fd/${fd}`).catch(() => ''));
            if (!m) return;
            const inode = Number(m[1]);
            const list = next.get(inode) ?? [];
            list.push({ pid, fd });
            next.set(inode, list);
          }),
        );
      }),
    );
    this.byInode = next;
  }
}
