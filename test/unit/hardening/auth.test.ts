import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkAgainstHost, ConfigError, loadConfig } from '../../../src/config/config.js';
import { ConnectionLog } from '../../../src/log/connection-log.js';
import { Profiler } from '../../../src/profiler/profiler.js';
import { createApiServer } from '../../../src/api/server.js';
import { extractPathToken, redactUrl, tokenMatches } from '../../../src/api/auth.js';
import { call } from '../../support/http.js';
import { createTime, sleeper } from '../../support/procs.js';

// The access layer in-process on loopback: a real Profiler (no kernel parts) behind a server
// that requires a token. A refused call must change nothing.
const TOKEN = 'Tok3n-for-tests.0123456789abcdef';
let server: Server;
let port: number;
let profiler: Profiler;
const shutdowns: string[] = [];
const kid = sleeper();

beforeAll(async () => {
  const config = loadConfig('/nonexistent/config.ini');
  const log = new ConnectionLog({ dir: mkdtempSync(join(tmpdir(), 'netprof-auth-')), format: 'tsv', maxBytes: 0, backupCount: 0 });
  log.open();
  profiler = new Profiler({ config, log });
  profiler.setShutdownHandler((reason) => shutdowns.push(reason));
  server = createApiServer(profiler, { token: TOKEN });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => {
  kid.kill('SIGKILL');
  server.close();
});

const get = (path: string, headers: Record<string, string> = {}) => call(port, 'GET', path, undefined, headers);
const bearer = (t = TOKEN) => ({ Authorization: `Bearer ${t}` });
const startPath = () => `/startprofile/jobid=7,pid=${kid.pid},owner=root,birthdate=${createTime(kid.pid!)}`;

describe('with TOKEN set', () => {
  it("refuses the original's paths without the token (401, body 1 and why) and changes nothing", async () => {
    for (const path of [startPath(), `/endjobprofile/jobid=7`, '/shutdown', `/endprocessprofile/jobid=7,pid=1,owner=root,birthdate=1`]) {
      const r = await get(path);
      expect(r.status, path).toBe(401);
      expect(r.body).toMatch(/^1\n.*token/);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="netprof"');
    }
    const wrong = await get(`${startPath()},token=${TOKEN.slice(0, -1)}x`);
    expect(wrong).toMatchObject({ status: 401, body: '1\nwrong token\n' });
    expect(await get(startPath(), bearer('not-the-token-000000'))).toMatchObject({ status: 401 });
    expect(await get(startPath(), { Authorization: 'Basic abc' })).toMatchObject({ status: 401 });
    expect(profiler.jobs()).toEqual([]);
    expect(shutdowns).toEqual([]);
  });

  it('accepts the token as a path parameter, anywhere among the parameters, or as a Bearer header', async () => {
    expect(await get(`${startPath()},token=${TOKEN}`)).toMatchObject({ status: 200, body: '0' });
    expect(await get(`/endjobprofile/token=${TOKEN},jobid=7`)).toMatchObject({ status: 200, body: '0' });
    expect(await get(startPath(), bearer())).toMatchObject({ status: 200, body: '0' });
    expect(await get('/endjobprofile/jobid=7', bearer())).toMatchObject({ status: 200, body: '0' });
    expect(await get(`/endjobprofile/jobid=7,token=${TOKEN},token=${TOKEN}`)).toMatchObject({ status: 400 });
    expect(await get(`${startPath()},token=${TOKEN}`, bearer('another-token-0000000'))).toMatchObject({ status: 401 });
    expect(profiler.jobs()).toEqual([]);
  });

  it('guards /v1 POST and DELETE with the Bearer header, leaves reads open on loopback', async () => {
    const body = JSON.stringify({ pid: kid.pid });
    const post = (h: Record<string, string>) => call(port, 'POST', '/v1/jobs/j1/processes', body, { 'Content-Type': 'application/json', ...h });
    const r = await post({});
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toMatchObject({ error: { status: 401 } });
    expect((await call(port, 'DELETE', '/v1/jobs/j1', undefined, {})).status).toBe(401);
    expect((await call(port, 'POST', '/v1/shutdown', undefined, {})).status).toBe(401);
    expect((await call(port, 'PUT', '/v1/jobs', undefined, {})).status).toBe(401);
    expect(profiler.jobs()).toEqual([]);
    for (const p of ['/v1/health', '/v1/stats', '/v1/jobs', '/v1/jobs/none']) expect((await get(p)).status, p).not.toBe(401);
    expect((await post(bearer())).status).toBe(201);
    expect((await call(port, 'DELETE', '/v1/jobs/j1', undefined, bearer())).status).toBe(200);
  });

  it('/shutdown with the token in the path answers 0 and shuts down', async () => {
    expect(await get(`/shutdown/token=${TOKEN}`)).toMatchObject({ status: 200, body: '0' });
    await new Promise((r) => setTimeout(r, 50));
    expect(shutdowns).toEqual(['GET /shutdown']);
  });
});

describe('token helpers', () => {
  it('compares whole tokens only', () => {
    expect(tokenMatches(TOKEN, TOKEN)).toBe(true);
    expect(tokenMatches(TOKEN.slice(0, 20), TOKEN)).toBe(false);
    expect(tokenMatches(`${TOKEN}x`, TOKEN)).toBe(false);
    expect(tokenMatches('', TOKEN)).toBe(false);
  });
  it('takes the token parameter out of the path, and out of what is logged', () => {
    const s = ['startprofile', 'jobid=1,token=abc,pid=2'];
    expect(extractPathToken(s)).toBe('abc');
    expect(s).toEqual(['startprofile', 'jobid=1,pid=2']);
    const t = ['shutdown', 'token=abc'];
    expect(extractPathToken(t)).toBe('abc');
    expect(t).toEqual(['shutdown']);
    expect(redactUrl('/startprofile/jobid=1,token=secret,pid=2')).toBe('/startprofile/jobid=1,token=…,pid=2');
  });
});

describe('access config keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'netprof-authcfg-'));
  const file = (text: string) => {
    const p = join(dir, `c${Math.random().toString(36).slice(2)}.ini`);
    writeFileSync(p, `[CONFIG]\n${text}`);
    return p;
  };
  const error = (text: string) => {
    try {
      checkAgainstHost(loadConfig(file(text)));
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message;
    }
    return 'no error';
  };

  it('defaults: no socket, mode 0660, no token; paths resolve against the config file', () => {
    const c = loadConfig(file(''));
    expect(c).toMatchObject({ socket: undefined, socketMode: 0o660, socketGroup: undefined, token: undefined, tokenFile: undefined, listen: '127.0.0.1' });
    const d = loadConfig(file('SOCKET = run/np.sock\nSOCKET_MODE = 0600\nSOCKET_GROUP = condor\nLISTEN = none\n'));
    expect(d).toMatchObject({ socket: join(dir, 'run/np.sock'), socketMode: 0o600, socketGroup: 'condor', listen: 'none' });
  });

  it('refuses what would leave the API open or unreachable, and never echoes a token', () => {
    expect(error('LISTEN = none\n')).toMatch(/LISTEN = none: set SOCKET too/);
    expect(error('LISTEN = 0.0.0.0\n')).toMatch(/not a loopback address, so set TOKEN or TOKEN_FILE/);
    expect(error('SOCKET_MODE = 0666\n')).toMatch(/SOCKET_MODE = 0666: must not let every user write/);
    expect(error('SOCKET_MODE = rw\n')).toMatch(/octal/);
    expect(error('SOCKET_GROUP = "a b"\n')).toMatch(/not a group name/);
    expect(error('TOKEN = short,secret\n')).toMatch(/TOKEN = \(hidden\): must be 16 to 256/);
    expect(error('TOKEN = short,secret\n')).not.toMatch(/short/);
    expect(error(`SOCKET = /${'x'.repeat(120)}\n`)).toMatch(/at most 107 bytes/);
    expect(error(`TOKEN = ${TOKEN}\nTOKEN_FILE = t\n`)).toMatch(/TOKEN is set too/);
    expect(error(`LISTEN = 0.0.0.0\nTOKEN = ${TOKEN}\n`)).toBe('no error');
  });

  it('TOKEN_FILE: read at start-up; refused when missing, world-readable or malformed', () => {
    expect(error('TOKEN_FILE = missing.token\n')).toMatch(/TOKEN_FILE = .*missing\.token: no such file/);
    const tf = join(dir, 'good.token');
    writeFileSync(tf, `${TOKEN}\n`);
    chmodSync(tf, 0o644);
    expect(error(`TOKEN_FILE = ${tf}\n`)).toMatch(/every user may read it \(mode 0644\)/);
    chmodSync(tf, 0o640);
    const c = loadConfig(file(`TOKEN_FILE = ${tf}\n`));
    checkAgainstHost(c);
    expect(c.token).toBe(TOKEN);
    writeFileSync(tf, 'two words\n');
    expect(error(`TOKEN_FILE = ${tf}\n`)).toMatch(/one token of 16 to 256/);
  });
});
