import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../../src/config/config.js';
import { ConnectionLog } from '../../../src/log/connection-log.js';
import { Profiler } from '../../../src/profiler/profiler.js';
import { sleeper } from '../../support/procs.js';

// The registry side of a job's end against real processes (no engine: nothing here reaches
// the kernel's packet path).
const kids = [sleeper(), sleeper()];
afterAll(() => {
  for (const k of kids) k.kill('SIGKILL');
});

describe('a registration while its job is being ended', () => {
  it('is refused with 409, not accepted and then dropped with the job; a second end gets the first’s result', async () => {
    const log = new ConnectionLog({ dir: mkdtempSync(join(tmpdir(), 'netprof-end-')), format: 'tsv', maxBytes: 0, backupCount: 0 });
    log.open();
    const profiler = new Profiler({ config: loadConfig('/nonexistent/config.ini'), log });
    await profiler.register('E', { pid: kids[0]!.pid! });
    const ending = profiler.endJob('E');
    const again = profiler.endJob('E');
    const late = profiler.register('E', { pid: kids[1]!.pid! });
    await expect(late).rejects.toMatchObject({ status: 409 });
    expect(await ending).toMatchObject({ processes: 1 });
    expect(await again).toEqual(await ending);
    expect(profiler.jobs().map((j) => j.job)).not.toContain('E');
    // Once it has ended, the job may start again.
    await profiler.register('E', { pid: kids[1]!.pid! });
    expect(profiler.jobs().map((j) => j.job)).toContain('E');
  });
});
