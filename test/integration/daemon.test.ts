import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNamespace, destroyNamespace, exited } from '../support/netns.js';
import { CLI, startDaemon, type RunningDaemon } from '../support/daemon.js';
import { createTime, deadPid, sleeper } from '../support/procs.js';

function runCli(args: string[], uid?: number) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000, ...(uid === undefined ? {} : { uid, gid: uid }) });
}

function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'netprof-cli-'));
  writeFileSync(join(dir, 'config.ini'), text);
  return join(dir, 'config.ini');
}

describe('netprof daemon start-up errors', () => {
  // These fail before the daemon touches anything, so they may run in the test's own namespace.
  it('stops on MAX_BYTES = abc with one line naming the key', () => {
    const r = runCli(['daemon', '--config', configFile('[CONFIG]\nMAX_BYTES = abc\n'), '9999']);
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/config\.ini:2: MAX_BYTES = abc: not a whole number/);
  });

  it('stops on an interface that does not exist, an unknown key, a missing --config file', () => {
    const r1 = runCli(['daemon', '--config', configFile('[CONFIG]\nINTERFACE = nosuch9\n')]);
    expect(r1.status).not.toBe(0);
    expect(r1.stderr).toMatch(/INTERFACE = nosuch9: interface "nosuch9" does not exist/);
    const r2 = runCli(['daemon', '--config', configFile('[CONFIG]\nCOLOUR = red\n')]);
    expect(r2.stderr).toMatch(/unknown key COLOUR = red/);
    const r3 = runCli(['daemon', '--config', '/nonexistent/netprof.ini']);
    expect(r3.stderr).toMatch(/netprof\.ini: no such file/);
    const r4 = runCli(['daemon', '--config', configFile('[CONFIG]\n'), '--set', 'BACKUP_COUNT=-1']);
    expect(r4.status).not.toBe(0);
    expect(r4.stderr).toMatch(/--set BACKUP_COUNT: BACKUP_COUNT = -1/);
  });

  it('refuses to start without root or CAP_NET_ADMIN and CAP_NET_RAW, in one clear line', () => {
    const r = runCli(['daemon', '--config', configFile('[CONFIG]\n')], 65534);
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim()).toBe('netprof: netprof daemon must run as root (or with CAP_NET_ADMIN and CAP_NET_RAW): it changes netfilter and captures packets');
  });
});

describe('netprof daemon answers the original path API', () => {
  let ns: string;
  let daemon: RunningDaemon;
  const job = sleeper();
  beforeAll(async () => {
    ns = await createNamespace('daemon');
    daemon = await startDaemon(ns);
  });
  afterAll(async () => {
    job.kill('SIGKILL');
    await daemon?.kill();
    await destroyNamespace(ns);
  });

  it('registers a live pid with 0, refuses a dead pid, a wrong owner and a start time 500 s off with 1 and the reason', async () => {
    const pid = job.pid!;
    const b = createTime(pid);
    expect(await daemon.curl(`/startprofile/jobid=1,pid=${pid},owner=root,birthdate=${b}`)).toEqual({ status: 200, body: '0' });
    const dead = await deadPid();
    const r1 = await daemon.curl(`/startprofile/jobid=2,pid=${dead},owner=root,birthdate=${b}`);
    expect(r1).toEqual({ status: 422, body: `1\nprocess ${dead} does not exist\n` });
    const r2 = await daemon.curl(`/startprofile/jobid=2,pid=${pid},owner=nobody,birthdate=${b}`);
    expect(r2.body).toMatch(/^1\nprocess \d+ belongs to root/);
    const r3 = await daemon.curl(`/startprofile/jobid=2,pid=${pid},owner=root,birthdate=${b - 500}`);
    expect(r3.body).toMatch(/^1\nprocess \d+ started at/);
    const jobs = JSON.parse((await daemon.curl('/v1/jobs')).body);
    expect(jobs.jobs).toHaveLength(1);
  });

  it('refuses a second daemon in the same network namespace, before touching anything', async () => {
    const second = startDaemon(ns);
    await expect(second).rejects.toThrow(/another netprof daemon \(pid \d+\) runs in this network namespace/);
    const jobs = JSON.parse((await daemon.curl('/v1/jobs')).body);
    expect(jobs.jobs).toHaveLength(1); // the first one is untouched
  });

  it('answers /shutdown, then exits 0', async () => {
    expect(await daemon.curl('/shutdown')).toEqual({ status: 200, body: '0' });
    expect(await exited(daemon.child)).toBe(0);
    expect(daemon.stderr()).toMatch(/"msg":"stopped"/);
  });
});

describe('netprof daemon signals', () => {
  it('stops cleanly on SIGTERM', async () => {
    const ns = await createNamespace('sigterm');
    try {
      const d = await startDaemon(ns);
      d.child.kill('SIGTERM'); // `ip netns exec` execs the daemon: this is its pid
      expect(await exited(d.child)).toBe(0);
    } finally {
      await destroyNamespace(ns);
    }
  });
});
