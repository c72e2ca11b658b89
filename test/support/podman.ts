import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk, type RunResult } from '../../src/util/exec.js';

/**
 * A private podman world inside a test namespace, for issue 13's container tests.
 *
 * Podman runs rootful, started with `nsenter --net=/run/netns/NS` (not `ip netns exec`, which
 * remounts /sys and hides the cgroups podman needs), so netavark builds the bridge (podman0),
 * its iptables rules and ip_forward inside the test namespace; a container's veth peer lands on
 * podman0 there. Everything podman keeps is under one temporary directory — storage (--root,
 * vfs), state (--runroot), --tmpdir, the network configs, runc's state (--runtime-flag root=),
 * the events log, containers.conf and storage.conf — and destroy() removes it. Nothing under
 * /var/lib/containers or /etc/containers is written: the image is imported in a private mount
 * namespace with a tmpfs over /var/lib, because containers/image keeps its blob-info cache in
 * /var/lib/containers/cache for root whatever --root says. The one shared thing podman writes is
 * netavark's IPAM database, /run/containers/networks/ipam.db (tmpfs; its path is fixed in podman
 * 4.3): each world uses its own network name, and destroy() removes the network and with it its
 * allocations.
 *
 * Facts measured on these machines: podman 4.3 needs runc (crun refuses the hybrid cgroups),
 * explicit ulimits, cgroup_manager="cgroupfs" and events_logger="file".
 */

const RUN_ID = randomBytes(2).toString('hex');
let serial = 0;
const BUSYBOX = '/bin/busybox';
/** Every world not yet destroyed, for the last-resort cleanup at exit. */
const live = new Map<string, Podman>();

export interface StartOptions {
  name: string;
  /** podman's -p forms, e.g. ['8080:80']: host (namespace) port : container port. */
  publish?: string[];
  /** The container's command, e.g. ['httpd', '-f', '-p', '80']. */
  cmd: string[];
  env?: Record<string, string>;
  labels?: Record<string, string>;
}

export interface Container {
  id: string;
  name: string;
  /** The host pid of the container's init (podman inspect {{.State.Pid}}). */
  pid: number;
  ipv4: string;
  /** Present when the world's network has IPv6 (see Podman.ipv6). */
  ipv6?: string;
}

/** Why podman cannot run here, or undefined when it can: for it.skip / describe.skipIf. */
export async function podmanUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'podman tests need root';
  for (const [cmd, pkg] of [['podman', 'podman'], ['runc', 'runc'], ['nsenter', 'util-linux'], ['unshare', 'util-linux']] as const) {
    const r = await run(cmd, ['--version']);
    if (r.code !== 0) return `${cmd} is not installed (Debian package ${pkg}; scripts/setup.sh installs it)`;
  }
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} is missing (Debian package busybox-static; scripts/setup.sh installs it)`;
  return undefined;
}

function sh1(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export class Podman {
  /** The podman image every container runs: Debian's busybox-static and its applet links. */
  readonly image = 'localhost/netprof-busybox:latest';
  /** The bridge in the test namespace that containers' veth peers join. */
  readonly bridge = 'podman0';
  readonly network: string;
  readonly subnetV4: string;
  readonly gatewayV4: string;
  readonly subnetV6: string;
  readonly gatewayV6: string;
  /** True when the network was made dual-stack and containers get an IPv6 address. */
  ipv6 = false;
  private destroyed = false;

  private constructor(readonly ns: string, readonly dir: string, index: number) {
    this.network = `np${RUN_ID}n${index}`;
    const k = 1 + (index % 250);
    this.subnetV4 = `172.31.${k}.0/24`;
    this.gatewayV4 = `172.31.${k}.1`;
    this.subnetV6 = `fd31:${k.toString(16)}::/64`;
    this.gatewayV6 = `fd31:${k.toString(16)}::1`;
  }

  /** Makes the world in the namespace: its directory, configuration, image and network. */
  static async create(ns: string, options: { ipv6?: boolean } = {}): Promise<Podman> {
    serial += 1;
    // A short name: podman refuses a runroot longer than 50 characters.
    const dir = mkdtempSync(join(tmpdir(), 'pm-'));
    const p = new Podman(ns, dir, serial + (process.pid % 100) * 7);
    live.set(dir, p);
    try {
      for (const d of ['root', 'runroot', 'tmp', 'net', 'runc']) mkdirSync(join(dir, d));
      writeFileSync(
        join(dir, 'containers.conf'),
        [
          '[containers]',
          'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
          '[engine]',
          'cgroup_manager = "cgroupfs"',
          'events_logger = "file"',
          `events_logfile_path = "${join(dir, 'events.log')}"`,
          'runtime = "runc"',
          '[network]',
          `network_config_dir = "${join(dir, 'net')}"`,
          // containers join the world's network (bridge podman0) unless told otherwise
          `default_network = "${p.network}"`,
          '',
        ].join('\n'),
      );
      writeFileSync(
        join(dir, 'storage.conf'),
        ['[storage]', 'driver = "vfs"', `runroot = "${join(dir, 'runroot')}"`, `graphroot = "${join(dir, 'root')}"`, ''].join('\n'),
      );
      await p.importImage();
      await p.createNetwork(options.ipv6 ?? true);
    } catch (e) {
      await p.destroy();
      throw e;
    }
    return p;
  }

  /** podman's global flags for this world. */
  flags(): string[] {
    const d = this.dir;
    return [
      '--root', join(d, 'root'),
      '--runroot', join(d, 'runroot'),
      '--tmpdir', join(d, 'tmp'),
      '--network-config-dir', join(d, 'net'),
      '--storage-driver', 'vfs',
      '--cgroup-manager', 'cgroupfs',
      '--events-backend', 'file',
      '--runtime', 'runc',
      '--runtime-flag', `root=${join(d, 'runc')}`,
    ];
  }

  /** The environment podman needs besides the flags (the config files, TMPDIR for image copies). */
  env(): Record<string, string> {
    return {
      CONTAINERS_CONF: join(this.dir, 'containers.conf'),
      CONTAINERS_STORAGE_CONF: join(this.dir, 'storage.conf'),
      TMPDIR: join(this.dir, 'tmp'),
    };
  }

  /** The argv that runs podman in this world: nsenter into the namespace, podman, the flags. */
  argv(): string[] {
    return ['nsenter', `--net=/run/netns/${this.ns}`, 'podman', ...this.flags()];
  }

  /**
   * Writes an executable that runs podman in this world with its own arguments ("$@", never
   * interpolated) — a docker-compatible CLI for callers that expect one command (e.g.
   * NETPROF_DOCKER). The paths written into it are this world's own.
   */
  writeCli(path: string): string {
    const env = Object.entries(this.env()).map(([k, v]) => `export ${k}=${sh1(v)}`);
    // netavark runs iptables and sysctl from PATH: a caller's minimal PATH must not hide them.
    const path0 = 'export PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"';
    writeFileSync(path, ['#!/bin/sh', path0, ...env, `exec ${this.argv().map(sh1).join(' ')} "$@"`, ''].join('\n'));
    chmodSync(path, 0o755);
    return path;
  }

  /** Runs podman in this world with the given arguments (the raw CLI). */
  run(args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
    const [file, ...rest] = this.argv();
    return run(file!, [...rest, ...args], { timeout: timeoutMs, env: { ...process.env, ...this.env() } });
  }

  /** Like run(), but a non-zero exit throws with podman's message. */
  async runOk(args: readonly string[], timeoutMs = 60_000): Promise<string> {
    const r = await this.run(args, timeoutMs);
    if (r.code !== 0) throw new Error(`podman ${args.slice(0, 3).join(' ')}…: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ') || `exit status ${r.code}`}`);
    return r.stdout;
  }

  /** Starts a detached container on the world's network and returns what tests need of it. */
  async startContainer(o: StartOptions): Promise<Container> {
    const args = ['run', '-d', '--name', o.name, '--network', this.network];
    for (const p of o.publish ?? []) args.push('-p', p);
    for (const [k, v] of Object.entries(o.env ?? {})) args.push('-e', `${k}=${v}`);
    for (const [k, v] of Object.entries(o.labels ?? {})) args.push('--label', `${k}=${v}`);
    args.push(this.image, ...o.cmd);
    const id = (await this.runOk(args)).trim();
    return this.inspect(o.name, id);
  }

  /** The pid and addresses of a running container. */
  async inspect(name: string, knownId?: string): Promise<Container> {
    const fmt = '{{.Id}} {{.State.Pid}}{{range .NetworkSettings.Networks}} {{.IPAddress}} {{.GlobalIPv6Address}}{{end}}';
    const out = (await this.runOk(['inspect', '-f', fmt, name])).trim().split(/\s+/);
    const [id, pid, ipv4, ipv6] = out;
    const c: Container = { id: knownId ?? id!, name, pid: Number(pid), ipv4: ipv4 ?? '' };
    if (ipv6) c.ipv6 = ipv6;
    if (!(c.pid > 0)) throw new Error(`container ${name} has no pid (${out.join(' ')})`);
    return c;
  }

  /** Runs a command in a running container. */
  exec(name: string, cmd: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
    return this.run(['exec', name, ...cmd], timeoutMs);
  }

  /** Removes a container, running or not, at once. */
  async remove(name: string): Promise<void> {
    await this.run(['rm', '-f', '-t', '0', name]);
  }

  /** Removes every container, the network, every mount under the world and its directory. Safe
   * to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    if (existsSync(join(this.dir, 'containers.conf'))) {
      await this.run(['rm', '-a', '-f', '-t', '0']);
      await this.run(['network', 'rm', '-f', this.network]); // and its IPAM allocations
    }
    for (const m of mountsUnder(this.dir)) await run('umount', ['-l', m]);
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this.dir);
  }

  private async importImage(): Promise<void> {
    const rootfs = join(this.dir, 'rootfs');
    for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'www']) mkdirSync(join(rootfs, d), { recursive: true });
    copyFileSync(BUSYBOX, join(rootfs, 'bin', 'busybox'));
    chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
    const applets = (await runOk(BUSYBOX, ['--list'])).split('\n').filter((a) => /^[\w.[-]+$/.test(a) && a !== 'busybox');
    for (const a of applets) symlinkSync('busybox', join(rootfs, 'bin', a));
    writeFileSync(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n');
    writeFileSync(join(rootfs, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
    const tarball = join(this.dir, 'busybox.tar');
    await runOk('tar', ['-C', rootfs, '-cf', tarball, '.']);
    rmSync(rootfs, { recursive: true, force: true });
    // A private mount namespace with a tmpfs over /var/lib: the import's blob-info cache lands
    // there and vanishes with it. The arguments travel as positional parameters.
    const [file, ...rest] = this.argv();
    const r = await run(
      'unshare',
      ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs -o size=1m,mode=0755 netprof-test /var/lib && exec "$@"', 'sh', file!, ...rest, 'import', '--change', 'CMD=/bin/sh', tarball, this.image],
      { timeout: 60_000, env: { ...process.env, ...this.env() } },
    );
    if (r.code !== 0) throw new Error(`podman import: ${r.stderr.trim()}`);
    rmSync(tarball, { force: true });
  }

  private async createNetwork(ipv6: boolean): Promise<void> {
    // Written as podman's own network file rather than made with `podman network create`: it is
    // the default network (containers.conf default_network, so that callers that do not say
    // --network, like HTCondor's starter, land on it), which podman would otherwise make up in
    // memory, IPv4 only; and podman 4.3 has no --interface-name to call the bridge podman0.
    const subnets = [{ subnet: this.subnetV4, gateway: this.gatewayV4 }];
    if (ipv6) subnets.push({ subnet: this.subnetV6, gateway: this.gatewayV6 });
    const conf = {
      name: this.network,
      id: randomBytes(32).toString('hex'),
      driver: 'bridge',
      network_interface: this.bridge,
      created: new Date().toISOString(),
      subnets,
      ipv6_enabled: ipv6,
      internal: false,
      dns_enabled: false,
      ipam_options: { driver: 'host-local' },
    };
    writeFileSync(join(this.dir, 'net', `${this.network}.json`), JSON.stringify(conf, null, 1));
    const seen = JSON.parse(await this.runOk(['network', 'inspect', this.network])) as { network_interface?: string; subnets?: unknown[] }[];
    if (seen[0]?.network_interface !== this.bridge || seen[0]?.subnets?.length !== subnets.length) {
      throw new Error(`podman does not see the network as written: ${JSON.stringify(seen)}`);
    }
    this.ipv6 = ipv6;
  }
}

function mountsUnder(dir: string): string[] {
  let text = '';
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

process.on('exit', () => {
  // Last resort for a crashed test: containers first (their namespaces and conmons), then files.
  // (netns.ts's own handler may already have deleted the namespace: then podman runs outside
  // it, and only the bridge's teardown, which died with the namespace, fails.)
  for (const p of live.values()) {
    const env = { ...process.env, ...p.env() };
    const argv = existsSync(`/run/netns/${p.ns}`) ? p.argv() : ['podman', ...p.flags()];
    const [file, ...rest] = argv;
    spawnSync(file!, [...rest, 'rm', '-a', '-f', '-t', '0'], { env, stdio: 'ignore' });
    spawnSync(file!, [...rest, 'network', 'rm', '-f', p.network], { env, stdio: 'ignore' });
    for (const m of mountsUnder(p.dir)) spawnSync('umount', ['-l', m]);
    rmSync(p.dir, { recursive: true, force: true });
  }
});
