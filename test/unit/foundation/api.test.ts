import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig } from '../../../src/config/config.js';
import { ConnectionLog } from '../../../src/log/connection-log.js';
import { Profiler } from '../../../src/profiler/profiler.js';
import { createApiServer } from '../../../src/api/server.js';
import { call, raw } from '../../support/http.js';
import { createTime, deadPid, sleeper } from '../../support/procs.js';

// The API layer in-process on loopback, with the real registry against real processes. No
// engine: nothing here reaches the kernel's packet path.
let server: Server;
let port: number;
const shutdowns: string[] = [];
const kids = [sleeper(), sleeper(), sleeper(), sleeper(65534)];
const [p1, p2, p3, pNobody] = kids.map((k) => k.pid!) as [number, number, number, number];

beforeAll(async () => {
  const config = loadConfig('/nonexistent/config.ini');
  const log = new ConnectionLog({ dir: mkdtempSync(join(tmpdir(), 'netprof-api-')), format: 'tsv', maxBytes: 0, backupCount: 0 });
  log.open();
  const profiler = new Profiler({ config, log });
  profiler.setShutdownHandler((reason) => shutdowns.push(reason));
  server = createApiServer(profiler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => {
  kids.forEach((k) => k.kill('SIGKILL'));
  server.close();
});

const get = (path: string) => call(port, 'GET', path);
const start = (job: string, pid: number | string, owner = 'root', birthdate: number | string = createTime(Number(pid))) =>
  get(`/startprofile/jobid=${job},pid=${pid},owner=${owner},birthdate=${birthdate}`);

describe("the original's path API", () => {
  it('registers a live process: 200 and body 0', async () => {
    const r = await start('1', p1);
    expect(r).toMatchObject({ status: 200, body: '0' });
    const jobs = JSON.parse((await get('/v1/jobs')).body).jobs;
    expect(jobs.find((j: { job: string }) => j.job === '1')).toMatchObject({ processes: 1 });
  });

  it('refuses a dead pid, a wrong owner and a start time 500 s off with 1 and the reason', async () => {
    const dead = await deadPid();
    const r1 = await get(`/startprofile/jobid=2,pid=${dead},owner=root,birthdate=1700000000`);
    expect(r1.status).toBe(422);
    expect(r1.body).toBe(`1\nprocess ${dead} does not exist\n`);
    const r2 = await start('2', p2, 'nobody');
    expect(r2.status).toBe(422);
    expect(r2.body).toMatch(/^1\nprocess \d+ belongs to root \(uid 0\), not nobody\n$/);
    const r3 = await start('2', p2, 'root', createTime(p2) - 500);
    expect(r3.status).toBe(422);
    expect(r3.body).toMatch(/^1\nprocess \d+ started at/);
    expect(await start('2', pNobody, 'nobody')).toMatchObject({ status: 200, body: '0' });
  });

  it('refuses malformed parameters with 400 and a reason, never a 500', async () => {
    const b = createTime(p2);
    const cases = [
      `/startprofile/jobid=3,pid=abc,owner=root,birthdate=${b}`,
      `/startprofile/jobid=3,pid=-5,owner=root,birthdate=${b}`,
      `/startprofile/jobid=3,pid=99999999999999999999,owner=root,birthdate=${b}`,
      `/startprofile/jobid=3,pid=${p2},owner=root`,
      `/startprofile/jobid=3,pid=${p2},birthdate=${b}`,
      `/startprofile/pid=${p2},owner=root,birthdate=${b}`,
      `/startprofile/jobid=3,pid=${p2},owner=root,birthdate=soon`,
      `/startprofile/jobid=3,pid=${p2},owner=root,birthdate=${b},color=red`,
      `/startprofile/jobid=3,jobid=4,pid=${p2},owner=root,birthdate=${b}`,
      `/startprofile/jobid=a%09b,pid=${p2},owner=root,birthdate=${b}`,
      `/startprofile/jobid=%E0%A4%A,pid=${p2},owner=root,birthdate=${b}`,
      `/startprofile/jobid=${'x'.repeat(200)},pid=${p2},owner=root,birthdate=${b}`,
      `/startprofile/garbage`,
      `/startprofile/`,
      `/endjobprofile/`,
      `/endprocessprofile/jobid=3,pid=x,owner=root,birthdate=1`,
    ];
    for (const path of cases) {
      const r = await get(path);
      expect(r.status, path).toBe(400);
      expect(r.body, path).toMatch(/^1\n.+\n$/);
    }
  });

  it('ends a process and a job, including ones that never opened a connection', async () => {
    expect(await start('4', p3)).toMatchObject({ body: '0' });
    expect(await get(`/endprocessprofile/jobid=4,pid=${p3},owner=root,birthdate=${createTime(p3)}`)).toMatchObject({ status: 200, body: '0' });
    expect(await get('/endjobprofile/jobid=4')).toMatchObject({ status: 200, body: '0' });
    expect(await get('/endjobprofile/jobid=4')).toMatchObject({ status: 404, body: '1\njob 4 is not profiled\n' });
    expect((await get(`/endprocessprofile/jobid=4,pid=${p3},owner=root,birthdate=1`)).status).toBe(404);
  });

  it('answers unknown paths with 404 and other methods with 405', async () => {
    expect((await get('/startprofilex/jobid=1')).status).toBe(404);
    expect((await get('/')).status).toBe(404);
    expect((await get('/shutdown/now')).status).toBe(404);
    const r = await call(port, 'POST', `/startprofile/jobid=1,pid=${p1},owner=root,birthdate=1`);
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET');
    expect((await call(port, 'DELETE', '/endjobprofile/jobid=1')).status).toBe(405);
  });
});

describe('the JSON API', () => {
  const json = { 'Content-Type': 'application/json' };

  it('registers, lists, shows and ends', async () => {
    const job = encodeURIComponent('schedd#77.0#1700000000/x');
    const r = await call(port, 'POST', `/v1/jobs/${job}/processes`, JSON.stringify({ pid: p2 }), json);
    expect(r.status).toBe(201);
    expect(JSON.parse(r.body)).toMatchObject({ job: 'schedd#77.0#1700000000/x', pid: p2, owner: 'root', already_registered: false });
    const again = await call(port, 'POST', `/v1/jobs/${job}/processes`, JSON.stringify({ pid: p2, owner: 'root', birthdate: createTime(p2) }), json);
    expect(again.status).toBe(200);
    const detail = JSON.parse((await get(`/v1/jobs/${job}`)).body);
    expect(detail).toMatchObject({ job: 'schedd#77.0#1700000000/x', processes: 1, open_connections: 0 });
    expect(detail.process_list[0]).toMatchObject({ pid: p2, owner: 'root', alive: true, connections: [] });
    const ended = await call(port, 'DELETE', `/v1/jobs/${job}/processes/${p2}`);
    expect(ended.status).toBe(200);
    expect(JSON.parse(ended.body)).toMatchObject({ pid: p2, connections_logged: 0 });
    expect((await call(port, 'DELETE', `/v1/jobs/${job}`)).status).toBe(200);
    expect((await get(`/v1/jobs/${job}`)).status).toBe(404);
  });

  it('refuses bad bodies with 4xx and a JSON reason', async () => {
    const post = (body: string, headers: Record<string, string> = json) => call(port, 'POST', '/v1/jobs/9/processes', body, headers);
    const cases: Array<[string, Record<string, string>, number, RegExp]> = [
      ['{', json, 400, /not valid JSON/],
      ['[]', json, 400, /JSON object/],
      ['{"pid": -1}', json, 400, /not a process id/],
      ['{"pid": "12abc"}', json, 400, /not a process id/],
      ['{"pid": 1e300}', json, 400, /not a process id/],
      ['{"pid": true}', json, 400, /number or a string/],
      ['{}', json, 400, /pid is missing/],
      [`{"pid": ${p1}, "extra": 1}`, json, 400, /unknown field/],
      [`{"pid": ${p1}}`, { 'Content-Type': 'text/plain' }, 415, /application\/json/],
      [`{"pid": ${p1}, "owner": "nobody"}`, json, 422, /belongs to root/],
    ];
    for (const [body, headers, status, message] of cases) {
      const r = await post(body, headers);
      expect(r.status, body).toBe(status);
      expect(JSON.parse(r.body).error.message, body).toMatch(message);
    }
    const bad = await call(port, 'POST', `/v1/jobs/${encodeURIComponent('a\nb')}/processes`, `{"pid": ${p1}}`, json);
    expect(bad.status).toBe(400);
  });

  it('refuses a 1 MB request and a 1 MB path without reading them into memory', async () => {
    const big = Buffer.alloc(1024 * 1024, 'a');
    const r = await call(port, 'POST', '/v1/jobs/9/processes', big, json).catch((e: Error) => ({ status: 0, body: e.message }));
    expect(r.status).toBe(413);
    const compat = await call(port, 'GET', '/endjobprofile/jobid=1', big).catch((e: Error) => ({ status: 0, body: e.message }));
    expect(compat.status).toBe(413);
    const longPath = await raw(port, `GET /startprofile/jobid=${'x'.repeat(1024 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(longPath).toMatch(/^HTTP\/1\.1 431/);
    const garbage = await raw(port, 'NOT HTTP AT ALL\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400/);
  });

  it('answers unknown paths and wrong methods properly', async () => {
    expect((await get('/v1/nothing')).status).toBe(404);
    expect((await get('/v1/jobs/1/processes/2/extra')).status).toBe(404);
    const r = await call(port, 'PUT', '/v1/jobs');
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET');
    expect((await call(port, 'GET', '/v1/shutdown')).status).toBe(405);
    expect((await call(port, 'DELETE', '/v1/jobs/1/processes/abc')).status).toBe(400);
  });

  it('serves health and statistics', async () => {
    const h = await get('/v1/health');
    expect(h.status).toBe(200);
    expect(JSON.parse(h.body)).toMatchObject({ status: 'ok', interfaces: ['lo'] });
    const s = JSON.parse((await get('/v1/stats')).body);
    expect(s.profiler.registrations).toBeGreaterThan(0);
    expect(s.profiler.registrationsRefused).toBeGreaterThan(0);
  });

  it('answers shutdown before acting on it, on both APIs', async () => {
    const r = await call(port, 'POST', '/v1/shutdown');
    expect(r.status).toBe(202);
    const c = await get('/shutdown');
    expect(c).toMatchObject({ status: 200, body: '0' });
    await new Promise((res) => setTimeout(res, 20));
    expect(shutdowns).toEqual(['POST /v1/shutdown', 'GET /shutdown']);
  });
});
