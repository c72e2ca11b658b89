import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, statSync, writeFileSync } from 'node:fs';
import { createNamespace, destroyNamespace, exited } from '../../support/netns.js';
import { Daemon, TOKEN, sockCall } from './helpers.js';

// Who may call: the Unix socket's mode and group, LISTEN = none, the token on the socket too,
// a stale socket replaced after kill -9, the file removed at exit.
let ns: string;
beforeAll(async () => {
  ns = await createNamespace('access');
});
afterAll(async () => {
  await destroyNamespace(ns);
});

/** Tries to connect to the socket as another uid/gid; returns the error code or 'connected'. */
function connectAs(socket: string, uid: number, gid: number): string {
  const js = `const s=require('net').connect(${JSON.stringify(socket)});s.on('connect',()=>{console.log('connected');s.destroy()});s.on('error',e=>console.log(e.code))`;
  return spawnSync(process.execPath, ['-e', js], { uid, gid, encoding: 'utf8', timeout: 10_000 }).stdout.trim();
}

describe('the Unix socket', () => {
  it('is made with SOCKET_MODE and SOCKET_GROUP: the group may call, others may not; LISTEN = none opens no port', async () => {
    const d = new Daemon(ns, { config: { SOCKET_MODE: '0660', SOCKET_GROUP: 'daemon', TOKEN } });
    chmodSync(d.dir, 0o755); // so that only the socket's own mode decides
    await d.start();
    try {
      const st = statSync(d.socket);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o777).toBe(0o660);
      expect(st.gid).toBe(1); // daemon
      expect(st.uid).toBe(0);
      expect(connectAs(d.socket, 65534, 1)).toBe('connected');
      expect(connectAs(d.socket, 65534, 65534)).toBe('EACCES');
      const ss = spawnSync('ip', ['netns', 'exec', ns, 'ss', '-Hltn'], { encoding: 'utf8' });
      expect(ss.stdout.trim()).toBe('');
      // Reads are open on the socket; changes need the token here too.
      expect((await d.call('GET', '/v1/health')).status).toBe(200);
      expect((await d.call('POST', '/v1/shutdown')).status).toBe(401);
      expect((await d.call('GET', '/shutdown')).status).toBe(401);
      expect(d.alive).toBe(true);
      expect(await sockCall(d.socket, 'GET', `/shutdown/token=${TOKEN}`)).toMatchObject({ status: 200, body: '0' });
      expect(await exited(d.child)).toBe(0);
      expect(existsSync(d.socket)).toBe(false);
    } finally {
      await d.kill9();
    }
  });

  it('replaces a stale socket left by kill -9, refuses to take over a live one or a non-socket file', async () => {
    const d = new Daemon(ns);
    await d.start();
    // A second daemon on the same socket would steal the first one's callers — and, had it got
    // as far as the counters, harvested and removed the first one's table.
    const second = new Daemon(ns, { config: { SOCKET: d.socket } });
    await expect(second.start()).rejects.toThrow(/another process .* is serving it/);
    expect(second.stderr()).not.toMatch(/harvested/);
    expect(spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'netprof']).status).toBe(0);
    await d.kill9();
    expect(lstatSync(d.socket).isSocket()).toBe(true); // kill -9 leaves it behind
    await d.start();
    try {
      expect(d.stderr()).toMatch(/removed a stale API socket/);
      expect((await d.call('GET', '/v1/health')).status).toBe(200);
    } finally {
      d.child.kill('SIGTERM');
      expect(await exited(d.child)).toBe(0);
    }
    expect(existsSync(d.socket)).toBe(false); // removed on SIGTERM
    writeFileSync(d.socket, 'not a socket');
    await expect(d.start()).rejects.toThrow(/exists and is not a socket; not removing it/);
  });
});
