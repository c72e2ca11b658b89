import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createPair, nsSpawn, waitForListen, type Pair } from '../../support/netns.js';
import { CLI, startDaemon, type RunningDaemon } from '../../support/daemon.js';
import { run } from '../../../src/util/exec.js';

// contrib/htcondor/netprof_job_wrapper as the starter runs it: the job's command line as its
// arguments, the job ad in the file named by $_CONDOR_JOB_AD, and a fake condor_chirp on PATH
// that records how it was called.

const WRAPPER = resolve(__dirname, '../../../contrib/htcondor/netprof_job_wrapper');
let pair: Pair;
let daemon: RunningDaemon;
const work = mkdtempSync(join(tmpdir(), 'netprof-condor-'));
const bin = join(work, 'bin');
const chirpLog = join(work, 'chirp.log');

beforeAll(async () => {
  pair = await createPair('condor');
  await run('mkdir', ['-p', bin, join(work, 'www')]);
  writeFileSync(join(work, 'www', 'input.dat'), Buffer.alloc(200_000, 1));
  nsSpawn(pair.remote.ns, 'python3', ['-m', 'http.server', '--bind', pair.remote.v4, '8000'], { cwd: join(work, 'www'), stdio: 'ignore' });
  await waitForListen(pair.remote.ns, 8000);
  // `netprof` on PATH, and a condor_chirp that records its arguments, one call per line.
  writeFileSync(join(bin, 'netprof'), `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`);
  writeFileSync(join(bin, 'condor_chirp'), `#!/bin/sh\nprintf '%s\\n' "$*" >> ${chirpLog}\n`);
  chmodSync(join(bin, 'netprof'), 0o755);
  chmodSync(join(bin, 'condor_chirp'), 0o755);
  daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0', LOG_FORMAT: 'jsonl' });
});
afterAll(async () => {
  await daemon?.kill();
  await pair?.destroy();
});

function starter(args: string[], ad: string) {
  const adFile = join(work, `job.ad.${Math.random().toString(36).slice(2)}`);
  writeFileSync(adFile, ad);
  const env = [`PATH=${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, `_CONDOR_JOB_AD=${adFile}`, `NETPROF_DAEMON=http://127.0.0.1:${daemon.port}`];
  return run('ip', ['netns', 'exec', pair.node.ns, 'env', '-i', ...env, '/bin/sh', WRAPPER, ...args], { timeout: 30_000 });
}

const AD = (cluster: number, proc: number) => `MyType = "Job"\nOwner = "alice"\nClusterId = ${cluster}\nProcId = ${proc}\nCmd = "/usr/bin/curl"\nWantIOProxy = true\n`;

describe('netprof_job_wrapper (HTCondor USER_JOB_WRAPPER)', () => {
  it("registers the job as ClusterId.ProcId, runs it, chirps NetworkInputMb/NetworkOutputMb/NetprofConnections, exits with the job's status", async () => {
    writeFileSync(chirpLog, '');
    const url = `http://${pair.remote.v4}:8000/input.dat`;
    const r = await starter(['/bin/sh', '-c', 'curl -sS -o /dev/null "$1" && curl -sS -o /dev/null "$1"; exit 3', 'job', url], AD(1234, 5));
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/^netprof: job 1234\.5: command exited with status 3/m);
    expect(r.stderr).toMatch(/netprof: 2 connections, /);
    const calls = readFileSync(chirpLog, 'utf8').trim().split('\n');
    // What condor_chirp would have been called with:
    console.log(calls.join('\n'));
    const log = readFileSync(join(daemon.logDir, 'veth0.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.job === '1234.5');
    expect(log).toHaveLength(2);
    const bytesIn = log.reduce((n: number, x: { bytes_in: number }) => n + x.bytes_in, 0);
    const bytesOut = log.reduce((n: number, x: { bytes_out: number }) => n + x.bytes_out, 0);
    expect(bytesIn).toBeGreaterThan(400_000);
    expect(calls).toEqual([
      `set_job_attr NetworkInputMb ${(bytesIn / 1048576).toFixed(6)}`,
      `set_job_attr NetworkOutputMb ${(bytesOut / 1048576).toFixed(6)}`,
      'set_job_attr NetprofConnections 2',
      `set_job_attr NetprofBytesIn ${bytesIn}`,
      `set_job_attr NetprofBytesOut ${bytesOut}`,
    ]);
  });

  it('passes arguments with spaces and quotes through untouched, and reads a lower-case ad', async () => {
    writeFileSync(chirpLog, '');
    const out = join(work, 'args.txt');
    const r = await starter(['/bin/sh', '-c', 'printf "[%s]\\n" "$@" > "$0"', out, 'a b', `it's "q"`, '$HOME;`id`'], 'clusterid = 7\nprocid = 0\n');
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(`[a b]\n[it's "q"]\n[$HOME;\`id\`]\n`);
    expect(readFileSync(chirpLog, 'utf8')).toContain('set_job_attr NetprofConnections 0');
  });

  it('without ClusterId/ProcId in the ad: runs the job unprofiled and chirps nothing', async () => {
    writeFileSync(chirpLog, '');
    const r = await starter(['/bin/sh', '-c', 'exit 4'], 'MyType = "Job"\n');
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/no ClusterId\/ProcId in the job ad/);
    expect(readFileSync(chirpLog, 'utf8')).toBe('');
  });

  it('SIGTERM to the wrapper (condor_rm) reaches the job; the wrapper exits 143', async () => {
    writeFileSync(chirpLog, '');
    const adFile = join(work, 'job.ad.term');
    writeFileSync(adFile, AD(99, 1));
    const w = nsSpawn(pair.node.ns, 'env', ['-i', `PATH=${bin}:/usr/bin:/bin`, `_CONDOR_JOB_AD=${adFile}`, `NETPROF_DAEMON=http://127.0.0.1:${daemon.port}`, '/bin/sh', WRAPPER, 'sleep', '600']);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await daemon.curl('/v1/jobs/99.1')).status !== 200) await new Promise((r) => setTimeout(r, 50));
    expect((await daemon.curl('/v1/jobs/99.1')).status).toBe(200);
    w.kill('SIGTERM'); // `ip netns exec` and `env` exec: this is the wrapper's shell
    const code = await new Promise((r) => w.once('exit', (c) => r(c)));
    expect(code).toBe(143);
    expect((await daemon.curl('/v1/jobs/99.1')).status).toBe(404);
    expect(readFileSync(chirpLog, 'utf8')).toContain('set_job_attr NetprofConnections 0');
  });
});
