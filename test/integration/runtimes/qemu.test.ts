import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNamespace, destroyNamespace, nsRun, nsSpawn, waitForListen } from '../../support/netns.js';
import { bootVm, qemuUnavailable, tunInterfaces, type Vm } from '../../support/qemu.js';
import { runOk } from '../../../src/util/exec.js';

// test/support/qemu.ts itself: a TCG guest on a tap on a bridge in a test namespace downloads a
// file from a server bound to the bridge's address, and qemu's fdinfo names the tap.

const unavailable = await qemuUnavailable();
if (unavailable) console.warn(`qemu VM tests skipped: ${unavailable}`);
const SIZE = 200_000;

describe.skipIf(unavailable !== undefined)(`qemu test VM${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let ns: string;
  let vm: Vm | undefined;
  let serverLog = '';
  const www = mkdtempSync(join(tmpdir(), 'netprof-vm-www-'));

  beforeAll(async () => {
    ns = await createNamespace('vm');
    await runOk('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    await runOk('ip', ['-n', ns, 'addr', 'add', '192.168.77.1/24', 'dev', 'br0']);
    await runOk('ip', ['-n', ns, 'link', 'set', 'br0', 'up']);
    writeFileSync(join(www, 'data.bin'), Buffer.alloc(SIZE, 5));
    const server = nsSpawn(ns, 'python3', ['-m', 'http.server', '--bind', '192.168.77.1', '8000'], { cwd: www });
    server.stderr!.on('data', (d: Buffer) => (serverLog += d.toString()));
    await waitForListen(ns, 8000);
  });

  afterAll(async () => {
    await vm?.kill();
    if (ns) await destroyNamespace(ns);
    rmSync(www, { recursive: true, force: true });
  });

  it('the guest downloads a file from the bridge address over its tap; qemu holds the tap', { timeout: 120_000 }, async () => {
    const t0 = Date.now();
    vm = await bootVm({
      ns,
      bridge: 'br0',
      tap: 'nptap0',
      guestV4: '192.168.77.2',
      prefix: 24,
      gatewayV4: '192.168.77.1',
      commands: ['wget -q -O /tmp/f http://192.168.77.1:8000/data.bin && wc -c < /tmp/f', 'cat /sys/class/net/eth0/address'],
    });
    // qemu opens the tap at start-up, long before the guest is up.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && tunInterfaces(vm.pid).length === 0) await new Promise((r) => setTimeout(r, 50));
    expect(tunInterfaces(vm.pid)).toEqual(['nptap0']);
    const master = await nsRun(ns, 'ip', ['-o', 'link', 'show', 'master', 'br0']);
    expect(master.stdout).toContain('nptap0');

    await vm.waitFor(/NETPROF-VM ready/, 60_000);
    const boot = Date.now() - t0;
    const r0 = await vm.result(0, 30_000);
    const total = Date.now() - t0;
    console.log(`VM: network up ${boot} ms after bootVm, download done at ${total} ms`);
    expect(r0.code, vm.console()).toBe(0);
    expect(Number(r0.output.trim())).toBe(SIZE);
    expect(serverLog).toContain('192.168.77.2 - - ');
    const r1 = await vm.result(1);
    expect(r1.output.trim()).toMatch(/^52:54:00:/);

    await vm.waitFor(/NETPROF-VM done/);
    expect(await vm.exited).toBe(0); // poweroff -f with -no-reboot: qemu exits by itself
    const links = await nsRun(ns, 'ip', ['-o', 'link', 'show', 'nptap0']);
    expect(links.code).not.toBe(0); // the tap is gone with qemu
    vm = undefined;
  });
});
