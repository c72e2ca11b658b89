import { describe, expect, it } from 'vitest';
import { ensureTracefs, Tracer } from '../../../src/resolve/tracer.js';

describe('tracer without bpftrace', () => {
  it('stays off when eBPF is switched off', async () => {
    const t = new Tracer({ enabled: false });
    expect(await t.start()).toEqual({ state: 'off', reason: 'eBPF switched off by configuration' });
    expect(t.live).toBe(false);
  });

  it('reports itself unavailable, with the reason, when bpftrace cannot run', async () => {
    const t = new Tracer({ bpftrace: '/nonexistent/bpftrace' });
    const s = await t.start();
    expect(s.state).toBe('unavailable');
    expect(s.reason).toMatch(/cannot run \/nonexistent\/bpftrace: .*ENOENT/);
    await t.stop();
  });

  it('reports bpftrace exiting at start-up with its own message', async () => {
    const t = new Tracer({ bpftrace: 'false' });
    const s = await t.start();
    expect(s).toMatchObject({ state: 'unavailable', reason: expect.stringMatching(/bpftrace exited \(status 1\)/) });
  });

  it('says why when tracefs cannot be mounted', async () => {
    expect(await ensureTracefs('/nonexistent/tracing')).toMatch(/tracefs is not mounted at \/nonexistent\/tracing and mounting it failed/);
  });
});

describe('startResolve with EBPF = off', () => {
  it('wires lineage and resolver to /proc only, and says why eBPF is not used', async () => {
    const { startResolve } = await import('../../../src/resolve/index.js');
    const stack = await startResolve({ ebpf: false, waitMs: 50 });
    try {
      expect(stack.tracerStatus).toEqual({ state: 'off', reason: 'eBPF switched off by configuration' });
      const a = await stack.resolver.resolve(
        { family: 4, localAddr: '127.0.0.1', localPort: 1, remoteAddr: '127.0.0.1', remotePort: 2 },
        { opener: 'local', time: Date.now() },
      );
      expect(a).toEqual({ pid: undefined, source: 'unresolved', reason: 'no tracked process is alive; eBPF not running' });
      expect(await stack.lineage.addRoot(process.pid)).toBe(true);
    } finally {
      await stack.stop();
    }
  });
});
