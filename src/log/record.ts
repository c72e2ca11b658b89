import type { Counts } from '../counters/engine.js';
import type { Family } from '../connection.js';

/** Why a connection's record was written. */
export type EndReason = 'fin' | 'rst' | 'process-end' | 'job-end' | 'shutdown' | 'recovered' | 'gc';

/** One connection's record: the product's output. */
export interface ConnectionRecord {
  job: string;
  pid: number;
  owner: string;
  iface: string;
  family: Family;
  localAddr: string;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  openedBy: 'local' | 'remote' | 'unknown';
  /** Epoch ms of the first packet seen, if seen. */
  start?: number;
  /** Epoch ms when the record was made. */
  end: number;
  reason: EndReason;
  /** undefined: the connection could not be counted (no room, or the counter was lost). */
  counts?: Counts;
  /** The counts miss the connection's beginning (it was open before counting began) or part of it. */
  partial: boolean;
  /** It opened before its process was registered (late registration). */
  late?: boolean;
  /** Counted on a job's own link (a container's veth, a VM's tap: the host-side device). */
  link?: string;
  /** A VM guest's connection: its pid is the VM's process, the guest's own are not visible. */
  guest?: boolean;
  /** The job's end beyond NAT: the address and port the remote end saw. */
  translated?: { addr: string; port: number };
  /** Which source tied the connection to its pid. */
  attribution: string;
  /** Why it was not counted, or other notes. */
  note?: string;
}

/** `2014-04-26 16:17:28,909` in local time, as Python's logging asctime. */
export function asctime(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())},${p(d.getMilliseconds(), 3)}`;
}

/**
 * The original's format, two lines per connection: IN (remote → local, bytes received), then
 * OUT (local → remote, bytes sent), exact integers. An uncounted connection shows `-` as bytes.
 */
export function toTsv(r: ConnectionRecord): string {
  const head = `${asctime(r.end)} \t ${r.job}\t${r.pid}`;
  const bytesIn = r.counts ? String(r.counts.bytesIn) : '-';
  const bytesOut = r.counts ? String(r.counts.bytesOut) : '-';
  return (
    `${head}\t${r.remoteAddr}\t${r.remotePort}\t${r.localAddr}\t${r.localPort}\tIN\t${bytesIn}\n` +
    `${head}\t${r.localAddr}\t${r.localPort}\t${r.remoteAddr}\t${r.remotePort}\tOUT\t${bytesOut}\n`
  );
}

/** One JSON object per line with everything the TSV lines leave out. */
export function toJsonl(r: ConnectionRecord): string {
  const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());
  return (
    JSON.stringify({
      time: iso(r.end),
      job: r.job,
      pid: r.pid,
      owner: r.owner,
      interface: r.iface,
      family: r.family === 6 ? 'ipv6' : 'ipv4',
      local_addr: r.localAddr,
      local_port: r.localPort,
      remote_addr: r.remoteAddr,
      remote_port: r.remotePort,
      opened_by: r.openedBy,
      start: iso(r.start),
      end: iso(r.end),
      end_reason: r.reason,
      counted: r.counts !== undefined,
      bytes_in: r.counts?.bytesIn ?? null,
      packets_in: r.counts?.packetsIn ?? null,
      bytes_out: r.counts?.bytesOut ?? null,
      packets_out: r.counts?.packetsOut ?? null,
      partial: r.partial,
      ...(r.late ? { late: true } : {}),
      ...(r.link ? { link: r.link } : {}),
      ...(r.guest ? { guest: true } : {}),
      ...(r.translated ? { translated_addr: r.translated.addr, translated_port: r.translated.port } : {}),
      attribution: r.attribution,
      ...(r.note ? { note: r.note } : {}),
    }) + '\n'
  );
}
