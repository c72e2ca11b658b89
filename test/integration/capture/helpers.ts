import { expect } from 'vitest';
import { LocalAddresses } from '../../../src/capture/addresses.js';
import { Capture, type CaptureGap, type CaptureOptions } from '../../../src/capture/capture.js';
import type { ConnEvent } from '../../../src/capture/events.js';
import type { Host } from '../../support/netns.js';

export interface Recorder {
  capture: Capture;
  events: ConnEvent[];
  gaps: CaptureGap[];
  warnings: string[];
}

/** A Capture whose tcpdumps run inside the node namespace, recording everything it reports. */
export function captureIn(node: Host, interfaces: string, extra: Partial<CaptureOptions> = {}): Recorder {
  const capture = new Capture({
    interfaces,
    local: new LocalAddresses([node.v4, node.v6]),
    wrap: ['ip', 'netns', 'exec', node.ns],
    ...extra,
  });
  const rec: Recorder = { capture, events: [], gaps: [], warnings: [] };
  capture.on('event', (e) => rec.events.push(e));
  capture.on('gap', (g) => rec.gaps.push(g));
  capture.on('warning', (w) => rec.warnings.push(w));
  return rec;
}

export async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** "kind sent|recv local:port>remote:port@iface" — one line per event, easy to compare. */
export const brief = (e: ConnEvent): string =>
  `${e.kind} ${e.sent ? 'sent' : 'recv'} ${fmt(e.key.localAddr, e.key.localPort)}>${fmt(e.key.remoteAddr, e.key.remotePort)}@${e.iface}`;

const fmt = (a: string, p: number) => (a.includes(':') ? `[${a}]:${p}` : `${a}:${p}`);

/** The events of one connection, by the local port it used. */
export function eventsOnPort(events: ConnEvent[], port: number): string[] {
  return events.filter((e) => e.key.localPort === port || e.key.remotePort === port).map(brief);
}

export function expectSameMembers(got: string[], want: string[]): void {
  expect([...got].sort()).toEqual([...want].sort());
}
