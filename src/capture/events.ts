import type { ConnKey } from '../connection.js';
import type { LocalAddresses } from './addresses.js';
import type { TcpSegment } from './decode.js';

export type ConnEventKind = 'syn' | 'syn-ack' | 'fin' | 'rst';

/** One socket's view of a segment that opens or closes a connection. */
export interface ConnEvent {
  kind: ConnEventKind;
  /** Capture time, epoch milliseconds, from the pcap record (not from when we read it). */
  time: number;
  /** The interface whose tcpdump saw it, as configured (e.g. 'eth0', 'lo', 'any'). */
  iface: string;
  /** Local and remote from this host's point of view. */
  key: ConnKey;
  /** This host sent the segment. For 'syn', sent means the connection was opened locally. */
  sent: boolean;
}

export type EventSkip = 'no-connection-flags' | 'not-local';

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;

/** RST wins over everything (it ends the connection whatever else is set), then SYN, then FIN. */
export function eventKind(flags: number): ConnEventKind | undefined {
  if (flags & RST) return 'rst';
  if (flags & SYN) return flags & ACK ? 'syn-ack' : 'syn';
  if (flags & FIN) return 'fin';
  return undefined;
}

/**
 * Turns a segment into the events of the local sockets it concerns: one when one end is this
 * host, two when both are (loopback or a connection to our own address: the sender's socket
 * sent it, the receiver's socket received it), none when neither is — forwarded or bridged
 * traffic that merely crosses the interface belongs to no local process, so it is skipped
 * (and counted by the caller).
 */
export function segmentEvents(
  seg: TcpSegment,
  time: number,
  iface: string,
  local: LocalAddresses,
): ConnEvent[] | EventSkip {
  const kind = eventKind(seg.flags);
  if (!kind) return 'no-connection-flags';
  const out: ConnEvent[] = [];
  if (local.has(seg.src)) {
    const key = { family: seg.family, localAddr: seg.src, localPort: seg.srcPort, remoteAddr: seg.dst, remotePort: seg.dstPort };
    out.push({ kind, time, iface, key, sent: true });
  }
  if (local.has(seg.dst)) {
    const key = { family: seg.family, localAddr: seg.dst, localPort: seg.dstPort, remoteAddr: seg.src, remotePort: seg.srcPort };
    out.push({ kind, time, iface, key, sent: false });
  }
  return out.length ? out : 'not-local';
}

/**
 * On a job's own link (a container's veth, a VM's tap, seen from the host's side) the direction
 * says which end is the job's, whatever its addresses: a frame the host receives from the link
 * was sent by the job. So there is exactly one event per segment, its local end the job's.
 */
export function linkSegmentEvents(seg: TcpSegment, time: number, iface: string, fromJob: boolean): ConnEvent[] | EventSkip {
  const kind = eventKind(seg.flags);
  if (!kind) return 'no-connection-flags';
  const key = fromJob
    ? { family: seg.family, localAddr: seg.src, localPort: seg.srcPort, remoteAddr: seg.dst, remotePort: seg.dstPort }
    : { family: seg.family, localAddr: seg.dst, localPort: seg.dstPort, remoteAddr: seg.src, remotePort: seg.srcPort };
  return [{ kind, time, iface, key, sent: fromJob }];
}
