import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Every temporary file of a test run (configs, logs, served files, daemons' directories) goes
 * under one directory, removed when the run ends, also when tests fail: tests leave nothing in
 * /tmp. Workers and the daemons they start inherit TMPDIR.
 */
export default function setup(): () => void {
  // Once per run: each vitest project runs the global setup, and a second root inside the first
  // made paths too long (podman refuses a runroot over 50 characters).
  if (process.env.NETPROF_TEST_ROOT) return () => undefined;
  const root = mkdtempSync(join(tmpdir(), 'netprof-test-'));
  process.env.NETPROF_TEST_ROOT = root;
  chmodSync(root, 0o755); // tests run some processes as nobody, which must reach their files
  process.env.TMPDIR = root;
  return () => {
    rmSync(root, { recursive: true, force: true });
    delete process.env.NETPROF_TEST_ROOT;
  };
}
