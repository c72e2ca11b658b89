import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CONNECTION_FILTER } from '../../../src/capture/filter.js';
import { LocalAddresses } from '../../../src/capture/addresses.js';
import { Capture, type CaptureGap } from '../../../src/capture/capture.js';
import type { ConnEvent } from '../../../src/capture/events.js';

/** Capture driven by a fake tcpdump (fake-tcpdump.mjs): supervision without root or traffic. */
const FAKE = fileURLToPath(new URL('./fake-tcpdump.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'np-capture-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

function fake(mode: string, extra: Partial<ConstructorParameters<typeof Capture>[0]> = {}) {
  const capture = new Capture({
    interfaces: 'veth0',
    local: new LocalAddresses(['10.9.0.1', 'fd00:9::1']),
    wrap: [process.execPath, FAKE, mode, join(dir, `runs-${++serial}`)],
    restartDelayMs: { min: 50, max: 200 },
    ...extra,
  });
  const events: ConnEvent[] = [];
  const gaps: CaptureGap[] = [];
  const warnings: string[] = [];
  capture.on('event', (e) => events.push(e));
  capture.on('gap', (g) => gaps.push(g));
  capture.on('warning', (w) => warnings.push(w));
  return { capture, events, gaps, warnings };
}

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('capture supervision (fake tcpdump)', () => {
  it('passes tcpdump its arguments as an array, filter last', async () => {
    const f = fake('fixture', { bufferKiB: 4096, linkType: 'EN10MB' });
    await f.capture.start();
    await until(() => f.events.length === 10);
    await f.capture.stop();
    const s = f.capture.stats()[0]!;
    expect(s).toMatchObject({ frames: 10, events: 10, kernelDropped: 3, reportedCaptured: 10, restarts: 0, listening: false });
    expect(JSON.parse(readFileSync(join(dir, `runs-${serial}.args`), 'utf8'))).toEqual([
      'tcpdump', '-i', 'veth0', '-n', '-s', '128', '-U', '--immediate-mode', '-w', '-', '-y', 'EN10MB', '-B', '4096', CONNECTION_FILTER,
    ]);
  });

  it('reads kernel counters on request while tcpdump runs', async () => {
    const f = fake('fixture');
    await f.capture.start();
    await until(() => f.events.length === 10);
    f.capture.requestKernelStats();
    await until(() => f.capture.stats()[0]!.kernelDropped === 2);
    await f.capture.stop();
    // The final report replaces the interim one: counters are cumulative within a run.
    expect(f.capture.stats()[0]!.kernelDropped).toBe(3);
  });

  it('restarts tcpdump after a corrupt stream, keeping what came before, and reports the gap', async () => {
    const f = fake('garbage-then-fixture');
    await f.capture.start();
    await until(() => f.gaps.length === 1 && f.events.length === 11);
    await f.capture.stop();
    expect(f.warnings[0]).toMatch(/veth0: bad pcap stream from tcpdump: record of 4294967295 captured bytes/);
    expect(f.gaps[0]!.reason).toMatch(/bad pcap stream/);
    expect(f.gaps[0]!.end).toBeGreaterThanOrEqual(f.gaps[0]!.start);
    expect(f.capture.stats()[0]!.restarts).toBe(1);
    // The first record of the broken run was delivered before the restart.
    expect(f.events[0]!.time).toBe(f.events[1]!.time);
  });

  it('fails start() when tcpdump never says it listens', async () => {
    const f = fake('silent', { readyTimeoutMs: 300 });
    await expect(f.capture.start()).rejects.toThrow(/capture on veth0: tcpdump did not start listening within 300 ms/);
  });

  it("fails start() with tcpdump's own words", async () => {
    const f = fake('fail');
    await expect(f.capture.start()).rejects.toThrow('capture on veth0: tcpdump exited with status 1: tcpdump: veth0: No such device exists');
  });

  it('fails start() clearly when tcpdump cannot be run', async () => {
    const f = fake('fixture', { wrap: [], tcpdump: '/nonexistent/tcpdump' });
    await expect(f.capture.start()).rejects.toThrow(/cannot run \/nonexistent\/tcpdump: spawn .*ENOENT/);
  });

  it('survives throwing down and gap listeners', async () => {
    const f = fake('garbage-then-fixture');
    f.capture.prependListener('down', () => {
      throw new Error('down bug');
    });
    f.capture.prependListener('gap', () => {
      throw new Error('gap bug');
    });
    await f.capture.start();
    // A throwing listener stops EventEmitter from calling the later ones (our recorder).
    await until(() => f.warnings.includes('veth0: gap listener threw: gap bug') && f.events.length === 11);
    await f.capture.stop();
    expect(f.capture.stats()[0]!.listening).toBe(false);
    expect(f.warnings).toContain('veth0: down listener threw: down bug');
    expect(f.warnings).toContain('veth0: gap listener threw: gap bug');
  });

  it('survives a throwing event listener', async () => {
    const f = fake('fixture');
    f.capture.prependListener('event', () => {
      throw new Error('listener bug');
    });
    await f.capture.start();
    await until(() => f.capture.stats()[0]!.events === 10);
    await f.capture.stop();
    expect(f.warnings).toHaveLength(10);
    expect(f.warnings[0]).toBe('veth0: event listener threw: listener bug');
  });
});
