import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Every temporary file of a test run (configs, logs, served files, daemons' directories) goes
 * under one directory, removed when the run ends, also when tests fail: tests leave nothing in
 * /tmp. Workers and the daemons they start inherit TMPDIR.
 */
export default function setup(): () => void {
  const root = mkdtempSync(join(tmpdir(), 'netprof-test-'));
  chmodSync(root, 0o755); // tests run some processes as nobody, which must reach their files
  process.env.TMPDIR = root;
  return () => rmSync(root, { recursive: true, force: true });
}
