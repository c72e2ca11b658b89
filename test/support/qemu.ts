import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { run, runOk } from '../../src/util/exec.js';

/**
 * A real virtual machine for issue 13's VM tests: qemu-system-x86_64 under TCG (no KVM here),
 * started inside a test namespace (nsenter --net=/run/netns/NS), its NIC a virtio-net on a tap
 * device enslaved to a bridge in that namespace. The guest is the Debian kernel that
 * scripts/setup.sh extracts into build/vm/ (vmlinuz, and virtio_net, virtio_pci and their
 * dependencies) and an initramfs built per boot from busybox-static: its /init configures eth0
 * statically, runs the caller's shell commands one after another, prints their output and a
 * marker line per command on the serial console (ttyS0, qemu's stdout) and powers off.
 *
 * Console lines the init prints:
 *   NETPROF-VM ready                     eth0 is configured (the commands start now)
 *   NETPROF-VM begin N                   command N starts; its output (stdout and stderr) follows
 *   NETPROF-VM end N exit CODE           command N ended with CODE
 *   NETPROF-VM done                      all commands ran; the guest powers off
 */

export const VM_DIR = process.env.NETPROF_VM_DIR ?? resolve(__dirname, '../../build/vm');
const BUSYBOX = '/bin/busybox';
/** The guest's modules in load order, as scripts/setup.sh wrote them (virtio_pci, virtio_net and
 * their dependencies). */
function modules(): string[] {
  try {
    return readFileSync(join(VM_DIR, 'modules', 'order'), 'utf8').trim().split(/\s+/).filter((m) => /^[\w-]+$/.test(m));
  } catch {
    return [];
  }
}

export interface VmOptions {
  ns: string;
  /** An existing bridge in the namespace; the tap is enslaved to it. */
  bridge: string;
  /** The tap's name (at most 15 characters); created in the namespace, deleted by kill()/exit. */
  tap: string;
  guestV4: string;
  prefix: number;
  gatewayV4: string;
  /** Shell commands the guest runs in order (busybox sh), each as its own script. */
  commands: string[];
  memoryMb?: number;
  /** The guest NIC's MAC; default 52:54:00 and three random bytes. */
  mac?: string;
}

export interface CommandResult {
  code: number;
  output: string;
}

export interface Vm {
  /** qemu's pid (the process that owns the tap). */
  pid: number;
  tap: string;
  /** Everything on the serial console so far. */
  console(): string;
  /** Resolves with the first match of the regex on the console; rejects after timeoutMs, or
   * when qemu exits without it. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Waits for command N's end marker and returns its exit code and output. */
  result(index: number, timeoutMs?: number): Promise<CommandResult>;
  /** Resolves with qemu's exit code (null when killed) once it has exited and the tap is gone. */
  exited: Promise<number | null>;
  /** SIGKILL qemu, then remove the tap and the initramfs. Safe to call twice. */
  kill(): Promise<void>;
}

const live = new Map<ChildProcess, { ns: string; tap: string; dir: string }>();

/** Why a VM cannot boot here, or undefined when it can: for it.skip / describe.skipIf. */
export async function qemuUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'VM tests need root';
  const q = await run('qemu-system-x86_64', ['--version']);
  if (q.code !== 0) return 'qemu-system-x86_64 is not installed (Debian package qemu-system-x86; scripts/setup.sh installs it)';
  for (const [cmd, pkg] of [['cpio', 'cpio'], ['gzip', 'gzip'], ['nsenter', 'util-linux']] as const) {
    if ((await run(cmd, ['--version'])).code !== 0) return `${cmd} is not installed (Debian package ${pkg})`;
  }
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} is missing (Debian package busybox-static; scripts/setup.sh installs it)`;
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  if (!modules().includes('virtio_net')) return `no guest kernel: ${join(VM_DIR, 'modules', 'order')} is missing or names no virtio_net (scripts/setup.sh extracts it from Debian's linux-image package)`;
  for (const f of ['vmlinuz', ...modules().map((m) => `modules/${m}.ko`)]) {
    if (!existsSync(join(VM_DIR, f))) return `no guest kernel: ${join(VM_DIR, f)} is missing (scripts/setup.sh extracts it from Debian's linux-image package)`;
  }
  return undefined;
}

/** The interfaces a process holds open through /dev/net/tun, from /proc/PID/fdinfo (`iff:`). */
export function tunInterfaces(pid: number): string[] {
  const found: string[] = [];
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return found;
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== '/dev/net/tun') continue;
      const m = /^iff:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) found.push(m[1]!);
    } catch {
      /* the fd closed meanwhile */
    }
  }
  return found;
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`bootVm: ${what}`);
}

function initScript(o: VmOptions): string {
  // The addresses are checked above: nothing but digits and dots reaches the guest's script.
  return `#!/bin/sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in ${modules().join(' ')}; do insmod /lib/modules/$m.ko || echo "NETPROF-VM insmod $m failed"; done
ip link set lo up
n=0
while ! ip link show eth0 >/dev/null 2>&1; do
  n=$((n + 1)); [ $n -gt 100 ] && { echo "NETPROF-VM no eth0"; poweroff -f; }
  sleep 0.1
done
ip addr add ${o.guestV4}/${o.prefix} dev eth0
ip link set eth0 up
ip route add default via ${o.gatewayV4}
echo "NETPROF-VM ready"
i=0
while [ -f /commands/$i ]; do
  echo "NETPROF-VM begin $i"
  sh /commands/$i 2>&1
  echo "NETPROF-VM end $i exit $?"
  i=$((i + 1))
done
echo "NETPROF-VM done"
poweroff -f
`;
}

async function buildInitramfs(dir: string, o: VmOptions): Promise<string> {
  const root = join(dir, 'root');
  for (const d of ['bin', 'lib/modules', 'commands']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  // /bin/sh for the kernel to run /init with; the init installs the other applet links itself.
  await runOk('ln', ['-s', 'busybox', join(root, 'bin', 'sh')]);
  for (const m of modules()) copyFileSync(join(VM_DIR, 'modules', `${m}.ko`), join(root, 'lib', 'modules', `${m}.ko`));
  o.commands.forEach((c, i) => writeFileSync(join(root, 'commands', String(i)), `${c}\n`));
  writeFileSync(join(root, 'init'), initScript(o));
  chmodSync(join(root, 'init'), 0o755);
  const out = join(dir, 'initramfs.gz');
  // The paths travel as positional parameters, never inside the script.
  await runOk('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2"', 'sh', root, out]);
  rmSync(root, { recursive: true, force: true });
  return out;
}

async function removeTap(ns: string, tap: string): Promise<void> {
  if (existsSync(`/run/netns/${ns}`)) await run('ip', ['-n', ns, 'link', 'del', tap]);
}

/** Boots the VM and returns at once (qemu running; the guest boots in 8–12 s under TCG). */
export async function bootVm(o: VmOptions): Promise<Vm> {
  const v4 = /^(\d{1,3}\.){3}\d{1,3}$/;
  check(v4.test(o.guestV4) && v4.test(o.gatewayV4), 'guestV4 and gatewayV4 must be IPv4 addresses');
  check(Number.isInteger(o.prefix) && o.prefix >= 1 && o.prefix <= 32, 'prefix must be 1..32');
  check(/^[\w.-]{1,15}$/.test(o.tap), 'tap must be a short interface name');
  const mac = o.mac ?? `52:54:00:${[0, 0, 0].map(() => Math.floor(Math.random() * 256).toString(16).padStart(2, '0')).join(':')}`;
  check(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac), 'mac must be xx:xx:xx:xx:xx:xx');

  const dir = mkdtempSync(join(tmpdir(), 'netprof-vm-'));
  let tapMade = false;
  try {
    const initrd = await buildInitramfs(dir, o);
    await runOk('ip', ['-n', o.ns, 'tuntap', 'add', 'dev', o.tap, 'mode', 'tap']);
    tapMade = true;
    await runOk('ip', ['-n', o.ns, 'link', 'set', o.tap, 'master', o.bridge]);
    await runOk('ip', ['-n', o.ns, 'link', 'set', o.tap, 'up']);
    const args = [
      `--net=/run/netns/${o.ns}`,
      'qemu-system-x86_64',
      '-accel', 'tcg',
      '-nographic',
      '-no-user-config',
      '-no-reboot',
      '-m', String(o.memoryMb ?? 256),
      '-kernel', join(VM_DIR, 'vmlinuz'),
      '-initrd', initrd,
      '-append', 'console=ttyS0 quiet panic=-1 rdinit=/init',
      '-netdev', `tap,id=n0,ifname=${o.tap},script=no,downscript=no`,
      // romfile= : no PXE option ROM (ipxe-qemu is only a recommendation, not installed)
      '-device', `virtio-net-pci,netdev=n0,mac=${mac},romfile=`,
    ];
    // nsenter enters only the network namespace, so it execs qemu in place: child.pid is qemu.
    const child = spawn('nsenter', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    live.set(child, { ns: o.ns, tap: o.tap, dir });
    let text = '';
    const onData = (d: Buffer) => (text += d.toString().replace(/\r/g, ''));
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    const exited = new Promise<number | null>((res) => {
      child.once('exit', (code) => {
        void removeTap(o.ns, o.tap).then(() => {
          rmSync(dir, { recursive: true, force: true });
          live.delete(child);
          res(code);
        });
      });
    });
    if (child.pid === undefined) throw new Error('bootVm: could not start nsenter/qemu');

    const waitFor = (re: RegExp, timeoutMs = 60_000) =>
      new Promise<RegExpMatchArray>((res, rej) => {
        let done = false;
        const finish = (f: () => void) => {
          if (done) return;
          done = true;
          clearTimeout(t);
          child.stdout!.off('data', test);
          f();
        };
        const test = () => {
          const m = re.exec(text);
          if (m) finish(() => res(m));
        };
        const t = setTimeout(() => finish(() => rej(new Error(`VM: no ${re} on the console after ${timeoutMs} ms:\n${text.slice(-3000)}`))), timeoutMs);
        child.stdout!.on('data', test);
        void exited.then(() => {
          test();
          finish(() => rej(new Error(`VM: qemu exited without ${re} on the console:\n${text.slice(-3000)}`)));
        });
        test();
      });

    return {
      pid: child.pid,
      tap: o.tap,
      console: () => text,
      waitFor,
      async result(index, timeoutMs = 60_000) {
        const m = await waitFor(new RegExp(`NETPROF-VM begin ${index}\\n([\\s\\S]*?)NETPROF-VM end ${index} exit (\\d+)\\n`), timeoutMs);
        return { code: Number(m[2]), output: m[1]! };
      },
      exited,
      async kill() {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
      },
    };
  } catch (e) {
    if (tapMade) await removeTap(o.ns, o.tap);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

process.on('exit', () => {
  for (const [child, v] of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
    spawnSync('ip', ['-n', v.ns, 'link', 'del', v.tap], { stdio: 'ignore' });
    rmSync(v.dir, { recursive: true, force: true });
  }
});
