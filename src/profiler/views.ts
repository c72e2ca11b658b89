import type { ConnectionView, JobSummary, JobTallies, ProcessTally, ProcessView, Traffic } from './control.js';
import type { Counts } from '../counters/engine.js';
import { isAliveRecently, type Job, type ProfiledProcess } from '../registry/registry.js';
import type { ConnectionTable, TrackedConnection } from './connections.js';

/** What the API shows of jobs, processes and connections: open connections' live counts plus
 * the totals of those already logged. */

export const ZERO: Traffic = { bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0 };

export function jobSummary(j: Job, table: Pick<ConnectionTable, 'ofPid'>, closed: (Traffic & { connections: number }) | undefined): JobSummary {
  const totals: Traffic = { ...ZERO };
  let open = 0;
  for (const p of j.processes.values()) {
    for (const c of table.ofPid(p.pid)) {
      open += 1;
      addCounts(totals, c.counts);
    }
  }
  if (closed) addTraffic(totals, closed);
  return {
    job: j.id,
    registered_at: new Date(j.registeredAt).toISOString(),
    processes: j.processes.size,
    open_connections: open,
    closed_connections: closed?.connections ?? 0,
    ...totals,
  };
}

/** A job's tallies: like jobSummary, per process, without a view of each connection. */
export function jobTallies(j: Job, table: Pick<ConnectionTable, 'ofPid'>, closed: (Traffic & { connections: number }) | undefined): JobTallies {
  const t: JobTallies = { job: j.id, ...ZERO, open_connections: 0, closed_connections: closed?.connections ?? 0, processes: [] };
  for (const p of j.processes.values()) {
    const pt: ProcessTally = { pid: p.pid, ...ZERO, open_connections: 0 };
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
    ...totals,
  };
}

export function connectionView(c: TrackedConnection): ConnectionView {
  const t: Traffic = { ...ZERO };
  addCounts(t, c.counts);
  return {
    interface: c.iface,
    local_addr: c.key.localAddr,
    local_port: c.key.localPort,
    remote_addr: c.key.remoteAddr,
    remote_port: c.key.remotePort,
    opened_by: c.openedBy,
    since: c.start ? new Date(c.start).toISOString() : null,
    state: c.closing ? 'closing' : c.finSent || c.finReceived ? 'half-closed' : 'open',
    counted: c.counting !== 'no-room',
    partial: c.counting === 'from-now',
    late: c.late === true,
    attribution: c.attribution,
    ...t,
  };
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
