import type { ConnectionView, JobSummary, JobTallies, ProcessTally, ProcessView, Traffic } from './control.js';
import type { Counts } from '../counters/engine.js';
import { isAliveRecently, type Job, type ProfiledProcess } from '../registry/registry.js';
import type { ConnectionTable, TrackedConnection } from './connections.js';

/** What the API shows of jobs, processes and connections: open connections' live counts plus
 * the totals of those already logged. A job's view can hold 10,000 connections and GET
 * /v1/jobs 10,000 jobs: each view is one object literal (no spreads of intermediate ones), and
 * timestamps, fixed for a connection's or job's life, are formatted once. */

export const ZERO: Traffic = { bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0 };

export function jobSummary(j: Job, table: Pick<ConnectionTable, 'ofPid'>, closed: (Traffic & { connections: number }) | undefined): JobSummary {
  let open = 0;
  let bytesIn = closed?.bytes_in ?? 0;
  let bytesOut = closed?.bytes_out ?? 0;
  let packetsIn = closed?.packets_in ?? 0;
  let packetsOut = closed?.packets_out ?? 0;
  for (const p of j.processes.values()) {
    for (const c of table.ofPid(p.pid)) {
      open += 1;
      const n = c.counts;
      if (!n) continue;
      bytesIn += n.bytesIn;
      bytesOut += n.bytesOut;
      packetsIn += n.packetsIn;
      packetsOut += n.packetsOut;
    }
  }
  return {
    job: j.id,
    registered_at: isoOnce(j, j.registeredAt),
    processes: j.processes.size,
    open_connections: open,
    closed_connections: closed?.connections ?? 0,
    bytes_in: bytesIn,
    bytes_out: bytesOut,
    packets_in: packetsIn,
    packets_out: packetsOut,
  };
}

/** A job's tallies: like jobSummary, per process, without a view of each connection. */
export function jobTallies(j: Job, table: Pick<ConnectionTable, 'ofPid'>, closed: (Traffic & { connections: number }) | undefined): JobTallies {
  // Literals, not spreads of ZERO: this runs for every job of every scrape.
  const t: JobTallies = { job: j.id, bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0, open_connections: 0, closed_connections: closed?.connections ?? 0, processes: [] };
  for (const p of j.processes.values()) {
    const pt: ProcessTally = { pid: p.pid, bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0, open_connections: 0 };
    for (const c of table.ofPid(p.pid)) {
      pt.open_connections += 1;
      addCounts(pt, c.counts);
    }
    t.open_connections += pt.open_connections;
    addTraffic(t, pt);
    t.processes.push(pt);
  }
  if (closed) addTraffic(t, closed);
  return t;
}

export function processView(p: ProfiledProcess, table: Pick<ConnectionTable, 'ofPid'>): ProcessView {
  const conns = table.ofPid(p.pid).map((c) => connectionView(c));
  const totals: Traffic = { ...ZERO };
  for (const c of conns) addTraffic(totals, c);
  return {
    pid: p.pid,
    owner: p.user,
    uid: p.uid,
    birthdate: p.startTime,
    parent: p.parent ?? null,
    alive: isAliveRecently(p),
    connections: conns,
    bytes_in: totals.bytes_in,
    bytes_out: totals.bytes_out,
    packets_in: totals.packets_in,
    packets_out: totals.packets_out,
  };
}

export function connectionView(c: TrackedConnection): ConnectionView {
  const n = c.counts;
  return {
    interface: c.iface,
    local_addr: c.key.localAddr,
    local_port: c.key.localPort,
    remote_addr: c.key.remoteAddr,
    remote_port: c.key.remotePort,
    opened_by: c.openedBy,
    since: c.start ? isoOnce(c, c.start) : null,
    state: c.closing ? 'closing' : c.finSent || c.finReceived ? 'half-closed' : 'open',
    counted: c.counting !== 'no-room',
    partial: c.counting === 'from-now',
    late: c.late === true,
    attribution: c.attribution,
    bytes_in: n ? n.bytesIn : 0,
    bytes_out: n ? n.bytesOut : 0,
    packets_in: n ? n.packetsIn : 0,
    packets_out: n ? n.packetsOut : 0,
  };
}

/** An object's one timestamp (a connection's start, a job's registration) as ISO text, made
 * once: toISOString is most of a connection view's cost. */
const iso = new WeakMap<object, { ms: number; text: string }>();
function isoOnce(owner: object, ms: number): string {
  const hit = iso.get(owner);
  if (hit?.ms === ms) return hit.text;
  const text = new Date(ms).toISOString();
  iso.set(owner, { ms, text });
  return text;
}

export function addCounts(t: Traffic, c: Counts | undefined): void {
  if (!c) return;
  t.bytes_in += c.bytesIn;
  t.bytes_out += c.bytesOut;
  t.packets_in += c.packetsIn;
  t.packets_out += c.packetsOut;
}

export function addTraffic(t: Traffic, c: Traffic): void {
  t.bytes_in += c.bytes_in;
  t.bytes_out += c.bytes_out;
  t.packets_in += c.packets_in;
  t.packets_out += c.packets_out;
}
