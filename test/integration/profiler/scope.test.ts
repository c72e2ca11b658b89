import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { World } from './harness.js';
import { createNamespace, destroyNamespace, exited, waitForListen } from '../../support/netns.js';
import { runOk } from '../../../src/util/exec.js';

// One rule on every path: a connection is the job's only when it crosses a configured interface,
// and never when it is the daemon's own API. The node has two links (veth0 to the usual remote,
// veth1 to a second one) and a web server on loopback; the job holds a connection to each before
// it registers itself through the API (as a registration helper would), then downloads from
// each and calls the API again.
const HOLD = resolve(__dirname, 'hold.py');
let w: World;
let second: string;
let remote2 = '';
beforeAll(async () => {
  w = await World.create('scope', { INTERFACE: 'veth0' });
  second = await createNamespace('scope-r2');
  const net = w.node.v4.replace(/\.0\.1$/, '');
  remote2 = `${net}.1.2`;
  await runOk('ip', ['link', 'add', 'veth1', 'netns', w.node.ns, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', second]);
  await runOk('ip', ['-n', w.node.ns, 'addr', 'add', `${net}.1.1/24`, 'dev', 'veth1']);
  await runOk('ip', ['-n', second, 'addr', 'add', `${remote2}/24`, 'dev', 'veth0']);
  await runOk('ip', ['-n', w.node.ns, 'link', 'set', 'veth1', 'up']);
  await runOk('ip', ['-n', second, 'link', 'set', 'veth0', 'up']);
  w.file('f', 30_000);
  await w.serveHttp(8000);
  w.spawn(second, 'python3', ['-m', 'http.server', '8000', '--bind', remote2, '--directory', w.servedDir]);
  w.spawn(w.node.ns, 'python3', ['-m', 'http.server', '8001', '--bind', '127.0.0.1', '--directory', w.servedDir]);
  await waitForListen(second, 8000);
  await waitForListen(w.node.ns, 8001);
});
afterAll(async () => {
  await w?.destroy();
  if (second) await destroyNamespace(second);
});

/** The job: holds three connections, registers itself, downloads three times, asks the API. */
async function runJob(job: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'netprof-scope-'));
  const api = `http://127.0.0.1:${w.daemon.port}`;
  const script = [
    `python3 ${HOLD} ${dir}/ready ${dir}/gate ${w.remote.v4}:8000 ${remote2}:8000 127.0.0.1:8001 &`,
    `while [ ! -f ${dir}/ready ]; do sleep 0.05; done`,
    `curl -sf -X POST -H 'Content-Type: application/json' -d "{\\"pid\\": $$}" ${api}/v1/jobs/${job}/processes >/dev/null || exit 9`,
    `for u in http://${w.remote.v4}:8000/f http://${remote2}:8000/f http://127.0.0.1:8001/f; do curl -sf -o /dev/null $u || exit 8; done`,
    `curl -sf ${api}/v1/health >/dev/null || exit 7`,
    `touch ${dir}/gate; wait`,
  ].join('\n');
  const sh = w.spawn(w.node.ns, 'sh', ['-c', script]);
  expect(await exited(sh)).toBe(0);
  await w.daemon.curl(`/endjobprofile/jobid=${job}`);
  return sh.pid!;
}

describe('which connections are the job\'s', () => {
  it('INTERFACE = veth0: only veth0\'s connections, neither the other link, nor loopback, nor the API', async () => {
    await runJob('scope.1');
    const recs = w.records().filter((r) => r.job === 'scope.1');
    expect(recs.map((r) => `${r.interface} ${r.remote_addr}:${r.remote_port}`).sort()).toEqual([`veth0 ${w.remote.v4}:8000`, `veth0 ${w.remote.v4}:8000`]);
    // One held since before the registration (its SYN was captured: claimed from the grace list,
    // counted from its first packet), one downloaded after it.
    expect(recs.filter((r) => r.late).map((r) => r.partial)).toEqual([false]);
    expect(readdirSync(w.daemon.logDir)).toEqual(['veth0.log']);
    const stats = JSON.parse((await w.daemon.curl('/v1/stats')).body);
    expect(stats.connections.ownApi).toBeGreaterThanOrEqual(1);
    expect(stats.connections.outOfScope['not-configured']).toBeGreaterThanOrEqual(2);
  });

  it('INTERFACE = veth0,lo: loopback is counted too, to lo.log — the API still never', async () => {
    await w.restartDaemon({ INTERFACE: 'veth0,lo' });
    const pid = await runJob('scope.2');
    const recs = w.records().filter((r) => r.job === 'scope.2');
    const seen = recs.map((r) => `${r.interface} ${r.remote_addr}:${r.remote_port}`).sort();
    expect(seen).toEqual([`lo 127.0.0.1:8001`, `lo 127.0.0.1:8001`, `veth0 ${w.remote.v4}:8000`, `veth0 ${w.remote.v4}:8000`]);
    expect(recs.every((r) => r.remote_port !== w.daemon.port && r.local_port !== w.daemon.port)).toBe(true);
    expect(recs.some((r) => r.pid === pid)).toBe(false); // the shell itself only talked to the API
    expect(readdirSync(w.daemon.logDir).sort()).toEqual(['lo.log', 'veth0.log']);
  });
});
