import { afterEach, beforeEach } from 'vitest';
import { startedDaemons } from './daemon.js';

// A failed integration test prints what its daemons said while it ran (warnings and errors):
// CI keeps only the failure's message, and a record's note alone cannot tell, say, an engine
// error from a full set.
const seen = new Map<object, number>();

beforeEach(() => {
  for (const d of startedDaemons) seen.set(d, d.stderr().length);
});

afterEach(({ task }) => {
  if (task.result?.state !== 'fail') return;
  for (const d of startedDaemons) {
    const said = d.stderr().slice(seen.get(d) ?? 0).split('\n').filter((l) => /"level":"(warn|error)"/.test(l));
    if (!said.length) continue;
    const state = d.child.exitCode !== null || d.child.signalCode !== null ? `exited (${d.child.exitCode ?? d.child.signalCode})` : 'running';
    console.error(`daemon in ${d.ns} (${state}), its warnings and errors during the test (last 40 of ${said.length}):\n${said.slice(-40).join('\n')}`);
  }
});
