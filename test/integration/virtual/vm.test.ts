import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from '../profiler/harness.js';
import { bootVm, qemuUnavailable, tunInterfaces, type Vm } from '../../support/qemu.js';
import { createTime } from '../../support/procs.js';
import { runOk } from '../../../src/util/exec.js';
import { linkTables } from './bridge.js';

// A real VM (qemu under TCG, a Debian kernel, a busybox guest) whose NIC is a tap on a bridge of
// the node: its qemu process is registered, the tap found from qemu's fdinfo, and the guest's
// connection logged under the VM process with the guest's own addresses.

const unavailable = await qemuUnavailable();
if (unavailable) console.warn(`VM tests skipped: ${unavailable}`);

describe.skipIf(unavailable !== undefined)(`a job in a qemu VM${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let world: World;
  let vm: Vm | undefined;

  beforeAll(async () => {
    world = await World.create('vm', { INTERFACE: 'veth0,lo,vmbr0' }, async (pair) => {
      await runOk('ip', ['-n', pair.node.ns, 'link', 'add', 'vmbr0', 'type', 'bridge']);
      await runOk('ip', ['-n', pair.node.ns, 'addr', 'add', '192.168.77.1/24', 'dev', 'vmbr0']);
      await runOk('ip', ['-n', pair.node.ns, 'link', 'set', 'vmbr0', 'up']);
    });
    world.file('half-mib', 512 * 1024);
    world.spawn(world.node.ns, 'python3', ['-m', 'http.server', '8000', '--bind', '192.168.77.1', '--directory', world.servedDir]);
  }, 60_000);

  afterAll(async () => {
    await vm?.kill();
    await world?.destroy();
  });

  it('logs the guest’s connection under the VM process, with the guest’s addresses', { timeout: 180_000 }, async () => {
    vm = await bootVm({
      ns: world.node.ns,
      bridge: 'vmbr0',
      tap: 'nptap1',
      guestV4: '192.168.77.2',
      prefix: 24,
      gatewayV4: '192.168.77.1',
      // The guest waits a little, so that the registration (after qemu opened its tap) comes first.
      commands: ['sleep 3; wget -q -O /tmp/f http://192.168.77.1:8000/half-mib && wc -c < /tmp/f'],
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && tunInterfaces(vm.pid).length === 0) await new Promise((r) => setTimeout(r, 50));
    const reg = await world.daemon.curl(`/startprofile/jobid=vm.1,pid=${vm.pid},owner=root,birthdate=${createTime(vm.pid)}`);
    expect(reg).toEqual({ status: 200, body: '0' });
    expect((await linkTables(world.node.ns)).length, 'the tap is counted').toBe(1);
    const r = await vm.result(0, 150_000);
    expect(r.code).toBe(0);
    expect(r.output.trim()).toBe(String(512 * 1024));
    const [rec] = await world.waitForRecords(1, (x) => x.job === 'vm.1', 20_000);
    expect(rec).toMatchObject({ pid: vm.pid, local_addr: '192.168.77.2', remote_addr: '192.168.77.1', remote_port: 8000, guest: true, link: 'nptap1', interface: 'vmbr0', attribution: 'tap', opened_by: 'local' });
    expect(rec!.bytes_in).toBeGreaterThan(512 * 1024);
    await world.expectOracleMatch([rec!], { within: 104 });
    await world.daemon.curl('/endjobprofile/jobid=vm.1');
    expect(await linkTables(world.node.ns)).toEqual([]);
  });
});
