import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { World } from './harness.js';
import { exited, nsRun, waitForListen } from '../../support/netns.js';
import { createTime } from '../../support/procs.js';

// Connections that are still open when their process, their job or the daemon ends, and one that
// was open before its process was registered.
let w: World;
let nextPort = 8300;
beforeAll(async () => {
  w = await World.create('life');
});
afterAll(async () => w?.destroy());

/** An nc connection from the node to a fresh nc listener on the remote; returns the client. */
async function openConnection(): Promise<{ client: ChildProcess; port: number }> {
  const port = nextPort++;
  w.spawn(w.remote.ns, 'nc', ['-l', w.remote.v4, String(port)]);
  await waitForListen(w.remote.ns, port);
  const client = w.spawn(w.node.ns, 'nc', ['-N', w.remote.v4, String(port)]);
  await waitForEstablished(port);
  return { client, port };
}

async function waitForEstablished(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const r = await nsRun(w.node.ns, 'ss', ['-Htn', 'state', 'established', `dport = :${port}`]);
    if (r.stdout.trim()) return;
    await new Promise((res) => setTimeout(res, 25));
  }
  throw new Error(`no connection to port ${port}`);
}

const send = (c: ChildProcess, bytes: number) => new Promise<void>((res) => c.stdin!.write(Buffer.alloc(bytes, 7), () => res()));
const settle = () => new Promise((r) => setTimeout(r, 300));

describe('connections that outlive the profile', () => {
  it('counts a connection already open at registration from its first packet', async () => {
    const { client, port } = await openConnection();
    await send(client, 20_000); // before the scheduler registers the process
    await settle();
    await w.register('late.0', client.pid!);
    await send(client, 30_000);
    client.stdin!.end();
    await exited(client);
    const [r] = await w.waitForRecords(1, (x) => x.job === 'late.0');
    // Claimed at the registration from the grace list (its SYN was seen), counted from its first packet.
    expect(r).toMatchObject({ pid: client.pid, remote_port: port, end_reason: 'fin', partial: false, late: true });
    expect(r!.bytes_out).toBeGreaterThan(50_000); // the 20 kB sent before registration too
    await w.expectOracleMatch([r!]);
  });

  it('counts a child’s connection already open when its parent is registered, under the child’s pid', async () => {
    const port = nextPort++;
    w.spawn(w.remote.ns, 'nc', ['-l', w.remote.v4, String(port)]);
    await waitForListen(w.remote.ns, port);
    // nc is the shell's child and reads the shell's stdin: the connection lives until it ends.
    const sh = w.spawn(w.node.ns, 'sh', ['-c', `nc -N ${w.remote.v4} ${port}; true`]);
    await waitForEstablished(port);
    await send(sh, 15_000);
    await settle();
    await w.register('latechild.0', sh.pid!);
    sh.stdin!.end();
    await exited(sh);
    const [r] = await w.waitForRecords(1, (x) => x.job === 'latechild.0');
    expect(r).toMatchObject({ remote_port: port, end_reason: 'fin', partial: false, late: true });
    expect(r!.pid).not.toBe(sh.pid);
    expect(r!.bytes_out).toBeGreaterThan(15_000);
    await w.expectOracleMatch([r!]);
  });

  it('logs the open connections of a process at EndProcessProfile, and nothing of it afterwards', async () => {
    const { client, port } = await openConnection();
    await w.register('endp.0', client.pid!);
    await send(client, 10_000);
    await settle();
    const birth = createTime(client.pid!);
    expect(await w.daemon.curl(`/endprocessprofile/jobid=endp.0,pid=${client.pid},owner=root,birthdate=${birth}`)).toEqual({ status: 200, body: '0' });
    const [r] = await w.waitForRecords(1, (x) => x.job === 'endp.0');
    expect(r).toMatchObject({ pid: client.pid, remote_port: port, end_reason: 'process-end' });
    expect(r!.bytes_out).toBeGreaterThan(10_000);
    await w.expectOracleMatch([r!], { open: true });
    client.stdin!.end();
    await exited(client);
    await settle();
    expect(w.records().filter((x) => x.job === 'endp.0')).toHaveLength(1);
  });

  it('logs every open connection of every process of a job at EndJobProfile', async () => {
    const a = await openConnection();
    const b = await openConnection();
    await w.register('endj.0', a.client.pid!);
    await w.register('endj.0', b.client.pid!);
    await send(a.client, 4_000);
    await send(b.client, 6_000);
    await settle();
    expect(await w.daemon.curl('/endjobprofile/jobid=endj.0')).toEqual({ status: 200, body: '0' });
    const recs = await w.waitForRecords(2, (x) => x.job === 'endj.0');
    expect(recs.map((r) => r.end_reason)).toEqual(['job-end', 'job-end']);
    expect(recs.map((r) => r.pid).sort()).toEqual([a.client.pid, b.client.pid].sort());
    await w.expectOracleMatch(recs, { open: true });
    expect(JSON.parse((await w.daemon.curl('/v1/jobs')).body).jobs.find((j: { job: string }) => j.job === 'endj.0')).toBeUndefined();
  });

  it('shows live byte counts of open connections on the job endpoint', async () => {
    const { client } = await openConnection();
    await w.register('live.0', client.pid!);
    await send(client, 25_000);
    await settle();
    const asked = Date.now();
    const job = JSON.parse((await w.daemon.curl('/v1/jobs/live.0')).body);
    // Few connections: the answer waited for a read (one read serves all callers for 0.5 s).
    expect(Date.parse(job.counts_read_at)).toBeGreaterThanOrEqual(asked - 600);
    const conn = job.process_list[0].connections[0];
    expect(conn).toMatchObject({ state: 'open', counted: true, partial: false });
    expect(conn.bytes_out).toBeGreaterThan(25_000);
    expect(job.bytes_out).toBe(conn.bytes_out);
  });

  it('logs everything still open at /shutdown, exits 0 and leaves nothing in netfilter', async () => {
    const { client } = await openConnection();
    await w.register('shut.0', client.pid!);
    await send(client, 8_000);
    await settle();
    expect(await w.daemon.curl('/shutdown')).toEqual({ status: 200, body: '0' });
    expect(await exited(w.daemon.child)).toBe(0);
    const recs = w.records().filter((x) => x.end_reason === 'shutdown');
    // live.0's connection and shut.0's.
    expect(recs.map((r) => r.job).sort()).toEqual(['live.0', 'shut.0']);
    for (const r of recs) expect(r.bytes_out).toBeGreaterThan(8_000);
    const tables = await nsRun(w.node.ns, 'nft', ['list', 'tables']);
    expect(tables.stdout.trim()).toBe('table inet oracle');
  });
});
