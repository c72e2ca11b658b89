import { readdir, readlink } from 'node:fs/promises';
import { keyString, type ConnKey } from '../connection.js';
import { readTcpTables, TCP_STATE, type TcpRow } from './procfs.js';

export interface OwnedSocket {
  key: ConnKey;
  pid: number;
  state: number;
}

/** States in which a socket still belongs to a live connection worth counting. */
const OPEN_STATES = new Set<number>([
  TCP_STATE.ESTABLISHED,
  TCP_STATE.SYN_SENT,
  TCP_STATE.SYN_RECV,
  TCP_STATE.FIN_WAIT1,
  TCP_STATE.FIN_WAIT2,
  TCP_STATE.CLOSE_WAIT,
  TCP_STATE.LAST_ACK,
  TCP_STATE.CLOSING,
]);

/**
 * The open TCP connections held by these processes now, from their fd tables and the
 * namespace's socket tables: what late registration and a capture gap need. Reads only the
 * given processes' fds, never all of /proc; and the socket tables (every connection of the
 * namespace: 20,000 rows at 10,000 connections) only when one of them holds a socket, so that
 * registering a process without sockets costs its own fds, not the node's connections.
 */
export async function socketsOf(pids: Iterable<number>, netPid: number | 'self' = 'self', procRoot = '/proc'): Promise<OwnedSocket[]> {
  const held: { pid: number; inode: number }[] = [];
  for (const pid of pids) {
    const fds = await readdir(`${procRoot}/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const m = /^socket:\[(\d+)\]$/.exec(await readlink(`${procRoot}/${pid}/fd/${fd}`).catch(() => ''));
      if (m) held.push({ pid, inode: Number(m[1]) });
    }
  }
  if (!held.length) return [];
  const rows = await readTcpTables(netPid, procRoot, OPEN_STATES);
  const byInode = new Map<number, TcpRow>();
  for (const r of rows) if (r.inode) byInode.set(r.inode, r);
  const out: OwnedSocket[] = [];
  const seen = new Set<string>();
  for (const { pid, inode } of held) {
    const row = byInode.get(inode);
    if (!row) continue;
    const id = `${pid}|${row.inode}`;
    if (seen.has(id)) continue; // dup()ed fds
    seen.add(id);
    const key: ConnKey = { family: row.family, localAddr: row.localAddr, localPort: row.localPort, remoteAddr: row.remoteAddr, remotePort: row.remotePort };
    out.push({ key, pid, state: row.state });
  }
  return out;
}

/** Connection ids ("local|port|remote|port") of every socket that is still open in the namespace. */
export async function openConnectionIds(netPid: number | 'self' = 'self', procRoot = '/proc'): Promise<Set<string>> {
  const rows = await readTcpTables(netPid, procRoot, OPEN_STATES);
  const ids = new Set<string>();
  for (const r of rows) ids.add(keyString(r));
  return ids;
}
