import { defineConfig } from 'vitest/config';

// Integration tests build private network namespaces and run real processes: give them room,
// and at most two files at a time on this two-core machine. The burst tests open tens of
// thousands of connections at once, which drains the kernel's per-CPU reserve that every
// nftables counter element is allocated from (docs/counters.md): next to them another file's
// datapath elements fail and its records turn partial. So they run last, one at a time.
const BURSTS = ['test/integration/hardening/busy-loop.test.ts', 'test/integration/counters/burst-elements.test.ts'];

export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    setupFiles: ['test/support/on-failure.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'suite', include: ['test/**/*.test.ts'], exclude: BURSTS, sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: 'bursts', include: BURSTS, fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
});
