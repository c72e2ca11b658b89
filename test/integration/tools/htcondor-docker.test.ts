import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createPair, type Pair } from '../../support/netns.js';
import { CLI, startDaemon, type RunningDaemon } from '../../support/daemon.js';
import { Podman, podmanUnavailable } from '../../support/podman.js';
import { run, type RunResult } from '../../../src/util/exec.js';

// contrib/htcondor/netprof_docker_wrapper as HTCondor's starter calls it (DOCKER = the wrapper):
// `create ... --name HTCJob<Cluster>_<Proc>_<slot>_PID<pid> ...`, then `start -a NAME`; also
// `run`. The real docker is podman's docker-compatible CLI in a private podman world in the
// node namespace (NETPROF_DOCKER = a small argv wrapper around it), the daemon a real netprof.
// What is checked: the daemon got the container's init pid under the right job while it ran,
// and the job was ended after it exited; docker's output and status went through untouched.
// (Counting the containers' connections is tested where it is built.)

const WRAPPER = resolve(__dirname, '../../../contrib/htcondor/netprof_docker_wrapper');
const unavailable = await podmanUnavailable();
if (unavailable) console.warn(`docker wrapper tests against podman skipped: ${unavailable}`);

describe.skipIf(unavailable !== undefined)(`netprof_docker_wrapper (HTCondor DOCKER)${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let pair: Pair;
  let world: Podman;
  let daemon: RunningDaemon;
  let dockerCli: string;
  const work = mkdtempSync(join(tmpdir(), 'netprof-hdock-'));
  const bin = join(work, 'bin');

  beforeAll(async () => {
    pair = await createPair('hdock');
    world = await Podman.create(pair.node.ns);
    mkdirSync(bin);
    dockerCli = world.writeCli(join(bin, 'podman-docker'));
    writeFileSync(join(bin, 'netprof'), `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`);
    chmodSync(join(bin, 'netprof'), 0o755);
    daemon = await startDaemon(pair.node.ns, { INTERFACE: 'veth0' });
  });
  afterAll(async () => {
    await daemon?.kill();
    await world?.destroy();
    await pair?.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  /** Runs the wrapper as the starter would: in the node's network namespace (nsenter, so that
   * podman sees the host's /sys and cgroups), with a clean environment. */
  function starter(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
    const e = {
      PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`,
      NETPROF_DOCKER: dockerCli,
      NETPROF_DAEMON: `http://127.0.0.1:${daemon.port}`,
      ...env,
    };
    const envArgs = Object.entries(e).map(([k, v]) => `${k}=${v}`);
    return run('nsenter', [`--net=/run/netns/${pair.node.ns}`, 'env', '-i', ...envArgs, '/bin/sh', WRAPPER, ...args], { timeout: 60_000 });
  }

  /** Polls until the job is registered with at least one process; returns its pids. */
  async function registeredPids(job: string, timeoutMs = 15_000): Promise<number[]> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await daemon.curl(`/v1/jobs/${job}`);
      if (r.status === 200) {
        const pids = (JSON.parse(r.body) as { process_list: { pid: number }[] }).process_list.map((p) => p.pid);
        if (pids.length > 0) return pids;
      }
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`job ${job} not registered after ${timeoutMs} ms; daemon said:\n${daemon.stderr().slice(-2000)}`);
  }

  async function ended(job: string, timeoutMs = 15_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await daemon.curl(`/v1/jobs/${job}`)).status === 404) return true;
      await new Promise((res) => setTimeout(res, 100));
    }
    return false;
  }

  /** Polls podman until the container runs; returns its init's host pid. */
  async function containerPid(name: string, timeoutMs = 15_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await world.run(['inspect', '-f', '{{.State.Pid}}', name]);
      const pid = Number(r.stdout.trim());
      if (r.code === 0 && pid > 0) return pid;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`container ${name} never ran`);
  }

  it("the starter's create, then start -a: the container's pid is registered as ClusterId.ProcId while it runs, the job ended when it exits", async () => {
    const name = `HTCJob4711_3_slot1_2_PID${process.pid}`;
    // What DockerAPI::createContainer passes, less what needs a registry or a job user.
    const create = await starter([
      'create', '--cpu-shares=100', '--cap-drop=all', '--cap-add=SYS_PTRACE', '--security-opt', 'no-new-privileges', '--init',
      '--name', name, '--label=org.htcondorproject=True', '--log-driver', 'none', '-e', 'HOME=/tmp', '--workdir', '/tmp',
      '--hostname', 'slot1-2', world.image, 'sh', '-c', 'sleep 4; echo "out line"; echo "err line" >&2; exit 3',
    ]);
    expect(create.code, create.stderr).toBe(0);
    expect(create.stdout.trim()).toMatch(/^[0-9a-f]{64}$/); // docker create prints the id: untouched
    expect((await daemon.curl('/v1/jobs/4711.3')).status).toBe(404); // created is not running

    const t0 = Date.now();
    const started = starter(['start', '-a', name]);
    const pid = await containerPid(name);
    const pids = await registeredPids('4711.3');
    console.log(`docker wrapper: container pid ${pid} registered ${Date.now() - t0} ms after start -a`);
    expect(pids).toEqual([pid]);
    const r = await started;
    expect(r.code).toBe(3); // the container's exit status, as docker start -a gives it
    expect(r.stdout).toContain('out line');
    expect(r.stderr).toContain('err line');
    expect(r.stderr).not.toMatch(/netprof_docker_wrapper:/);
    expect(await ended('4711.3')).toBe(true);
    await world.remove(name);
  });

  it('run (attached, --rm) of an HTCJob container: registered, output and status kept, ended after exit', async () => {
    const name = `HTCJob12_0__PID${process.pid}`; // a single-slot machine: empty slot name
    const running = starter(['run', '--rm', '--name', name, world.image, 'sh', '-c', 'sleep 3; echo done-run']);
    const pid = await containerPid(name);
    expect(await registeredPids('12.0')).toEqual([pid]);
    const r = await running;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('done-run');
    expect(await ended('12.0')).toBe(true);
  });

  it('run -d with an explicit NETPROF_JOB label: registered before run returns, ended by a background wait when it exits', async () => {
    const r = await starter(['run', '-d', '--name', 'anyname', '--label', 'NETPROF_JOB=900.7', world.image, 'sleep', '3']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
    const pid = await containerPid('anyname');
    expect(await registeredPids('900.7', 1000)).toEqual([pid]);
    expect(await ended('900.7', 20_000)).toBe(true);
    await world.remove('anyname');
  });

  it('an explicit NETPROF_JOB in the environment (-e) also works; a container of no job is not registered', async () => {
    const r = await starter(['run', '-d', '--name', 'envjob', '-e', 'NETPROF_JOB=901.0', world.image, 'sleep', '30']);
    expect(r.code, r.stderr).toBe(0);
    const pid = await containerPid('envjob');
    expect(await registeredPids('901.0', 1000)).toEqual([pid]);
    const plain = await starter(['run', '-d', '--name', 'plain', world.image, 'sleep', '30']);
    expect(plain.code).toBe(0);
    const jobs = JSON.parse((await daemon.curl('/v1/jobs')).body) as { jobs: { job: string }[] };
    expect(jobs.jobs.map((j) => j.job)).toEqual(['901.0']);
    await world.remove('envjob');
    await world.remove('plain');
    expect(await ended('901.0')).toBe(true);
  });

  it('netprof down: docker still runs, with its output and status, and the wrapper warns on stderr', async () => {
    const name = `HTCJob55_1_slot3_PID${process.pid}`;
    const r = await starter(['run', '--rm', '--name', name, world.image, 'sh', '-c', 'sleep 1; echo still-here; exit 7'], { NETPROF_DAEMON: 'http://127.0.0.1:9' });
    expect(r.code).toBe(7);
    expect(r.stdout.trim()).toBe('still-here');
    expect(r.stderr).toMatch(/netprof_docker_wrapper: could not register container pid \d+ as job 55\.1/);
    // the same without the netprof command: curl and the original GET paths
    const r2 = await starter(['run', '--rm', '--name', name, world.image, 'sh', '-c', 'sleep 1; echo again; exit 5'], {
      NETPROF_DAEMON: 'http://127.0.0.1:9',
      NETPROF: '/nonexistent/netprof',
    });
    expect(r2.code).toBe(5);
    expect(r2.stdout.trim()).toBe('again');
    expect(r2.stderr).toMatch(/netprof_docker_wrapper: could not register container pid \d+ as job 55\.1/);
  });

  it('without the netprof command, registers through the original GET /startprofile path (owner, birthdate) and ends with /endjobprofile', async () => {
    const name = `HTCJob77_2_slot1_PID${process.pid}`;
    const running = starter(['run', '--rm', '--name', name, world.image, 'sleep', '3'], { NETPROF: '/nonexistent/netprof' });
    const pid = await containerPid(name);
    expect(await registeredPids('77.2')).toEqual([pid]);
    const r = await running;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(await ended('77.2')).toBe(true);
  });

  it("every other command passes through with docker's output and status", async () => {
    const ok = await starter(['ps', '-a', '--format', '{{.Names}}']);
    expect(ok.code).toBe(0);
    const direct = await run(dockerCli, ['ps', '-a', '--format', '{{.Names}}']);
    expect(ok.stdout).toBe(direct.stdout);
    const bad = await starter(['inspect', 'no-such-container']);
    const badDirect = await run(dockerCli, ['inspect', 'no-such-container']);
    expect(bad.code).toBe(badDirect.code);
    expect(bad.code).not.toBe(0);
    // a start of a container that does not exist: docker's status, no registration attempt
    const missing = await starter(['start', '-a', `HTCJob1_1_slot1_PID${process.pid}`]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).not.toMatch(/netprof_docker_wrapper:/);
  });
});

// The wrapper's reading of docker command lines, against a fake docker and a fake netprof that
// record how they are called (no runtime, no daemon: runs everywhere).
describe('netprof_docker_wrapper command-line reading (fake docker)', () => {
  const work = mkdtempSync(join(tmpdir(), 'netprof-fakedock-'));
  const log = join(work, 'docker.log');
  const nplog = join(work, 'netprof.log');
  const docker = join(work, 'docker');
  const netprof = join(work, 'netprof');
  writeFileSync(
    docker,
    `#!/bin/sh
printf '%s|' "$@" >> ${log}; echo >> ${log}
for a do
  case "$a" in
    inspect) case "$*" in
      *State.Pid*) echo 4242 ;;
      *State.Running*) echo false ;;
      *.Name*) echo /HTCJob5_6_slot1_PID1 ;;
      esac; exit 0 ;;
    wait) exit 0 ;;
    run|start) case "$*" in *" -d"*|*--detach*) echo cafe; exit 0 ;; esac; sleep 0.5; echo attached-out; exit 4 ;;
  esac
done
exit 0
`,
  );
  writeFileSync(netprof, `#!/bin/sh\nprintf '%s|' "$@" >> ${nplog}; echo >> ${nplog}\n`);
  chmodSync(docker, 0o755);
  chmodSync(netprof, 0o755);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  async function wrap(args: string[]): Promise<{ r: RunResult; docker: string[]; netprof: string[] }> {
    writeFileSync(log, '');
    writeFileSync(nplog, '');
    const r = await run('env', ['-i', 'PATH=/usr/bin:/bin', `NETPROF_DOCKER=${docker}`, `NETPROF=${netprof}`, 'NETPROF_DAEMON=http://127.0.0.1:1', '/bin/sh', WRAPPER, ...args], { timeout: 20_000 });
    await new Promise((res) => setTimeout(res, 300)); // a background `docker wait` monitor
    const lines = (f: string) => readFileSync(f, 'utf8').split('\n').filter(Boolean);
    return { r, docker: lines(log), netprof: lines(nplog) };
  }

  it('global options before run go to its own inspect and wait; -dit is detached; --name=NAME counts', async () => {
    const { r, docker: d, netprof: n } = await wrap(['-H', 'unix:///x.sock', 'run', '-dit', '--name=HTCJob5_6_slot1_PID1', 'img', 'sh']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('cafe\n');
    expect(d[0]).toBe('-H|unix:///x.sock|run|-dit|--name=HTCJob5_6_slot1_PID1|img|sh|');
    expect(d).toContain('-H|unix:///x.sock|inspect|-f|{{.State.Pid}}|HTCJob5_6_slot1_PID1|');
    expect(d).toContain('-H|unix:///x.sock|wait|HTCJob5_6_slot1_PID1|');
    expect(n[0]).toBe('start|--daemon|http://127.0.0.1:1|--timeout|5|5.6|4242|');
    expect(n).toContain('end-job|--daemon|http://127.0.0.1:1|--timeout|5|5.6|');
  });

  it("attached run: docker's output and status; values of short options (-p 8080:80, -e X) are skipped", async () => {
    const { r, netprof: n } = await wrap(['run', '-p', '8080:80', '-e', 'A=--name', '--name', 'HTCJob5_6_slot1_PID1', 'img']);
    expect(r.code).toBe(4);
    expect(r.stdout).toBe('attached-out\n');
    expect(n[0]).toBe('start|--daemon|http://127.0.0.1:1|--timeout|5|5.6|4242|');
    expect(n).toContain('end-job|--daemon|http://127.0.0.1:1|--timeout|5|5.6|');
  });

  it("a --name after the image is the container's command, not docker's: not profiled", async () => {
    const { r, docker: d, netprof: n } = await wrap(['run', 'img', 'prog', '--name', 'HTCJob5_6_slot1_PID1']);
    expect(r.code).toBe(4);
    expect(d).toEqual(['run|img|prog|--name|HTCJob5_6_slot1_PID1|']);
    expect(n).toEqual([]);
  });

  it('create, rm, stop and the rest are passed through untouched', async () => {
    const { r, docker: d, netprof: n } = await wrap(['create', '--name', 'HTCJob5_6_slot1_PID1', 'img']);
    expect(r.code).toBe(0);
    expect(d).toEqual(['create|--name|HTCJob5_6_slot1_PID1|img|']);
    expect(n).toEqual([]);
  });
});
