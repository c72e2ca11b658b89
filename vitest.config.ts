import { defineConfig } from 'vitest/config';

// Integration tests build private network namespaces and run real processes: give them room,
// and at most two files at a time on this two-core machine.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
