import { describe, expect, it } from 'vitest';
import { PumpedChild } from '../../../src/util/pumped-child.js';

/** A real child (node) writing lines to its stdout pipe; the reader is the real worker thread. */
function run(script: string): { child: PumpedChild; lines: string[]; handovers: () => number; exited: Promise<void> } {
  const child = new PumpedChild(process.execPath, ['-e', script]);
  const lines: string[] = [];
  let emits = 0;
  child.on('stdout', (batch: string[]) => {
    emits++;
    lines.push(...batch);
  });
  const exited = new Promise<void>((resolve, reject) => {
    child.once('exit', () => resolve());
    child.once('error', reject);
  });
  return { child, lines, handovers: () => emits, exited };
}

describe('a child read by a worker thread', () => {
  it('delivers every line, in order, while the event loop is busy for long stretches', async () => {
    const { lines, exited } = run('for (let i = 0; i < 50000; i++) process.stdout.write(`line ${i}\\n`);');
    // The main thread busy 300 ms at a time: the child must not wait for it (its pipe holds 64 KB).
    const started = Date.now();
    while (Date.now() - started < 1500) {
      const t = Date.now();
      while (Date.now() - t < 300);
      await new Promise((r) => setImmediate(r));
    }
    await exited;
    expect(lines).toHaveLength(50000);
    expect(lines.every((l, i) => l === `line ${i}`)).toBe(true);
  });

  it('hands a steady trickle over in batches, not a message per write', async () => {
    // ~4 writes a millisecond for a second, each its own write(2), as tcpdump -U writes packets.
    const { lines, handovers, exited } = run(
      'let i = 0; const t0 = Date.now(); const tick = () => { for (let k = 0; k < 4; k++) process.stdout.write(`w ${i++}\\n`); if (Date.now() - t0 < 1000) setTimeout(tick, 1); }; tick();',
    );
    await exited;
    expect(lines.length).toBeGreaterThan(500);
    expect(lines.every((l, i) => l === `w ${i}`)).toBe(true);
    // One hand-over per 5 ms at most (~200 in the second), where one per write would be hundreds more.
    expect(handovers()).toBeLessThan(Math.min(400, lines.length / 2));
  });
});
