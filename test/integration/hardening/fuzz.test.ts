import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createNamespace, destroyNamespace, nsRun } from '../../support/netns.js';
import { createTime, sleeper } from '../../support/procs.js';
import { Daemon, TOKEN, rawSock, sleep, type RawReply } from './helpers.js';

// Random and hostile requests to both APIs of a real daemon in a private namespace, over its Unix
// socket (reachable from here whatever the network namespace). The daemon must stay up, answer
// every request it reads with 2xx or 4xx — never 5xx —, install nothing, and hold no job but those
// the fuzzer validly created. NETPROF_LONG=1 sends 100,000 instead of 10,000.
const TOTAL = process.env.NETPROF_LONG ? 100_000 : 10_000;
const CONCURRENCY = 48;
const SEED = Number(process.env.NETPROF_FUZZ_SEED ?? Date.now() % 1_000_000);

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = prng(SEED);
const int = (n: number) => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
const chance = (p: number) => rnd() < p;
const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
const pct = (b: Buffer) => [...b].map((x) => `%${x.toString(16).padStart(2, '0')}`).join('');

/** Values hostile to a parser, a shell, a log line or a rule comment, as they appear in a path. */
const VALUES = [
  '', '0', '-1', '-0', '1e309', 'NaN', 'Infinity', '-Infinity', '99999999999999999999999', '4194305', '0x10', '1.5', ' 1', '1 ',
  '../../etc/passwd', '..%2f..%2fetc%2fpasswd', '%2e%2e', '$(reboot)', '`id`', ';rm -rf /', '|cat', '&&true', "'", '"', '#', '\\',
  '%00', '%0a', '%0d%0a', '%09', '%7f', '%c2%85', '%e2%80%a8', '%ff%fe', '%c0%af', '%ed%a0%80', '%', '%zz', '%2', '%25', '{}', '[]', 'null',
  'root', 'nobody', '0', '65534', 'x'.repeat(101), 'y'.repeat(5000), '日本', 'é', '%F0%9F%92%A9', '<script>', '${IFS}', '*', '?', '~',
];
const NAMES = ['jobid', 'pid', 'owner', 'birthdate', 'token', 'JOBID', 'x', '', '=', 'jobid ', 'pid\t'];
const ROUTES = ['startprofile', 'endprocessprofile', 'endjobprofile', 'STARTPROFILE', 'EndJobProfile', 'startprofile ', 'startprofilex', 'v1', 'v2', '', '..', '%2e%2e'];
const METHODS = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'CONNECT', 'PROPFIND', 'get', 'G ET', 'GET\0', '\x01', 'X'.repeat(40)];
const V1 = ['jobs', 'processes', 'health', 'stats', 'shutdown', 'metrics', '', '.', '..', '%2F', 'jobs%2F..'];
const BODIES: Array<() => string | Buffer> = [
  () => '',
  () => '{}',
  () => '[]',
  () => 'null',
  () => '{"pid":',
  () => JSON.stringify({ pid: pick([-1, 0, 1e309, 1.5, '1', 'abc', null, true, [], {}, 2 ** 53, 4194305]), owner: pick(['root', '', 1, null, '$(id)']), birthdate: pick([0, -1, 'NaN', 1e300, null]) }),
  () => JSON.stringify({ pid: 1, extra: 'x'.repeat(int(1000)) }),
  () => JSON.stringify({ ['a'.repeat(int(100000))]: 1 }),
  () => '{"pid":1,"pid":2}',
  () => '{"__proto__":{"polluted":1},"pid":1}',
  () => '{"constructor":{"prototype":{"x":1}}}',
  () => '['.repeat(int(50000)),
  () => randomBytes(int(2000)),
  () => Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
  () => Buffer.from([0xff, 0xfe, 0x7b, 0x00, 0x7d, 0x00]),
  () => 'x'.repeat(70_000),
];

interface Case {
  bytes: Buffer;
  /** The request is complete and well-framed: an answer must come. */
  mustAnswer: boolean;
  what: string;
}

function request(method: string, path: string | Buffer, opts: { headers?: string[]; body?: string | Buffer; auth?: 'good' | 'bad' | 'none'; cl?: string } = {}): Buffer {
  const body = opts.body === undefined ? Buffer.alloc(0) : Buffer.from(opts.body as string);
  const auth = opts.auth ?? 'good';
  const head = [
    'Host: netprof',
    'Connection: close',
    ...(auth === 'good' ? [`Authorization: Bearer ${TOKEN}`] : auth === 'bad' ? [pick(['Authorization: Bearer wrong-token-0000000', 'Authorization: Basic eDp5', 'Authorization: Bearer', `Authorization: Bearer ${TOKEN} ${TOKEN}`, `Authorization: bearer ${TOKEN.toUpperCase()}`])] : []),
    ...(opts.headers ?? []),
    ...(opts.cl !== undefined ? [`Content-Length: ${opts.cl}`] : body.length ? [`Content-Length: ${body.length}`] : []),
  ].join('\r\n');
  return Buffer.concat([Buffer.from(`${method} `), Buffer.from(path as string), Buffer.from(` HTTP/1.1\r\n${head}\r\n\r\n`), body]);
}

const authChoice = (): 'good' | 'bad' | 'none' => (chance(0.75) ? 'good' : chance(0.5) ? 'bad' : 'none');

/** One random or hostile request (never a valid shutdown). */
function hostile(): Case {
  const kind = int(10);
  if (kind <= 3) {
    // The original's paths, parameters from the hostile pool.
    const auth = authChoice();
    const route = auth === 'good' ? pick(ROUTES) : pick([...ROUTES, 'shutdown', 'SHUTDOWN']);
    const params = Array.from({ length: int(6) }, () => (chance(0.1) ? pick(VALUES) : `${pick(NAMES)}=${chance(0.1) ? pct(randomBytes(int(20))) : pick(VALUES)}`));
    if (chance(0.3)) params.push(`token=${chance(0.7) && !/shutdown/i.test(route) ? TOKEN : pick(VALUES)}`);
    const path = `/${route}/${params.join(pick([',', ',', ',,', ';', '/']))}${chance(0.1) ? `?${pick(VALUES)}` : ''}`;
    return { bytes: request(pick(['GET', 'GET', 'GET', 'HEAD', 'POST']), path.replace(/ /g, '%20'), { auth: params.some((p) => p === `token=${TOKEN}`) ? 'none' : auth }), mustAnswer: true, what: 'compat' };
  }
  if (kind <= 6) {
    // The JSON API: methods, segments, bodies, content types.
    const auth = authChoice();
    let segs = Array.from({ length: 1 + int(5) }, (_, i) => (i === 0 ? pick(V1) : chance(0.5) ? pick(V1) : pick(VALUES)));
    let method = pick(METHODS.slice(0, 9));
    if (segs.some((s) => /shutdown/i.test(s)) && auth === 'good') segs = ['health'];
    const path = `/v1/${segs.join('/')}`.replace(/ /g, '%20');
    const body = chance(0.6) ? pick(BODIES)() : undefined;
    const headers = chance(0.8) ? [`Content-Type: ${pick(['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/jsonx', 'APPLICATION/JSON', ''])}`] : [];
    if (method === 'CONNECT') method = 'GET';
    return { bytes: request(method, path, { auth, body, headers }), mustAnswer: true, what: 'v1' };
  }
  // Framing and bytes no client library would send.
  const variant = int(16);
  const auth = chance(0.5) ? 'none' : 'bad';
  switch (variant) {
    case 0: return { bytes: request('GET', `/${'a'.repeat(17_000 + int(100_000))}`, { auth }), mustAnswer: true, what: 'huge path' };
    case 1: return { bytes: request('GET', '/v1/health', { auth, headers: [`X-Big: ${'b'.repeat(17_000 + int(40_000))}`] }), mustAnswer: true, what: 'huge header' };
    case 2: return { bytes: request('GET', Buffer.concat([Buffer.from('/v1/jobs/'), randomBytes(1 + int(40))]), { auth }), mustAnswer: false, what: 'raw bytes in path' };
    case 3: return { bytes: request('GET', Buffer.from([0x2f, 0x76, 0x31, 0x2f, 0x6a, 0x6f, 0x62, 0x73, 0x2f, 0xc3, 0x28, 0xff, 0xfe]), { auth: 'good' }), mustAnswer: false, what: 'bad utf-8 in path' };
    case 4: return { bytes: request('GET', `/startprofile/jobid=1\0,pid=1`, { auth }), mustAnswer: true, what: 'NUL in path' };
    case 5: return { bytes: randomBytes(1 + int(3000)), mustAnswer: false, what: 'random bytes' };
    case 6: return { bytes: request('POST', '/v1/jobs/x/processes', { auth: 'good', headers: ['Content-Type: application/json'], body: 'x'.repeat(65 * 1024 + int(1024 * 1024)) }), mustAnswer: true, what: 'huge body' };
    case 7: return { bytes: request('POST', '/v1/jobs/x/processes', { auth: 'good', headers: ['Content-Type: application/json'], cl: pick(['-1', '99999999999999999999', '1e3', '0x10', ' 5', '5, 6', 'abc']), body: '{}' }), mustAnswer: true, what: 'bad content-length' };
    case 8: return { bytes: request('POST', '/v1/jobs/x/processes', { auth: 'good', headers: ['Content-Type: application/json', 'Transfer-Encoding: chunked'], cl: '5', body: '5\r\n{}\r\n0\r\n\r\n' }), mustAnswer: true, what: 'CL and TE' };
    case 9: return { bytes: request('POST', '/v1/jobs/x/processes', { auth: 'good', headers: ['Content-Type: application/json', 'Transfer-Encoding: chunked'], body: `${pick(['fffffffffffffffff', 'zz', '-1', '10000000'])}\r\n{}\r\n0\r\n\r\n` }), mustAnswer: false, what: 'bad chunks' };
    case 10: return { bytes: Buffer.from(`GET /v1/health HTTP/${pick(['0.9', '2.0', '1.2', '9.9', '1'])}\r\nHost: x\r\nConnection: close\r\n\r\n`), mustAnswer: false, what: 'bad version' };
    case 11: return { bytes: Buffer.from(`GET /v1/health HTTP/1.1\r\n${Array.from({ length: 200 + int(3000) }, (_, i) => `X-H${i}: v`).join('\r\n')}\r\nConnection: close\r\n\r\n`), mustAnswer: true, what: 'many headers' };
    case 12: return { bytes: Buffer.from('GET /v1/health HTTP/1.1\nHost: x\nConnection: close\n\n'), mustAnswer: false, what: 'bare LF' };
    case 13: return { bytes: Buffer.from(`GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`.repeat(1 + int(20))), mustAnswer: true, what: 'pipelined' };
    case 14: return { bytes: request('GET', `/v1/jobs/${'%2e%2e%2f'.repeat(1 + int(50))}etc%2fpasswd`, { auth }), mustAnswer: true, what: 'traversal' };
    default: return { bytes: request('POST', '/v1/jobs/x/processes', { auth: 'good', headers: ['Content-Type: application/json'], cl: '100', body: '{"pid":' }), mustAnswer: false, what: 'short body, half-closed' };
  }
}

let ns: string;
let d: Daemon;
const sleepers: ChildProcess[] = [];
beforeAll(async () => {
  ns = await createNamespace('fuzz');
  d = await new Daemon(ns, { config: { TOKEN, INTERFACE: 'lo' } }).start();
  for (let i = 0; i < 24; i++) sleepers.push(sleeper());
});
afterAll(async () => {
  if (d && !d.alive) console.log(`daemon exited (${d.child.exitCode ?? d.child.signalCode}):\n${d.stderr().split('\n').slice(-30).join('\n')}`);
  for (const s of sleepers) s.kill('SIGKILL');
  await d?.kill9();
  await destroyNamespace(ns);
});

describe(`fuzzing both APIs (${TOTAL} requests, seed ${SEED}: NETPROF_FUZZ_SEED=${SEED} repeats it)`, () => {
  it('stays up, answers 2xx/4xx and never 5xx, installs nothing, keeps only the jobs validly created', async () => {
    const free = sleepers.map((s) => ({ pid: s.pid!, birth: createTime(s.pid!) }));
    const kept = new Map<string, number>(); // job → pid, validly created and not ended
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    let sent = 0;

    // Hostile clients held open for the whole run: slow (one header byte every 200 ms), silent,
    // and half-open (half a request, then their write side closed).
    const held: Socket[] = [];
    const slowTimers: NodeJS.Timeout[] = [];
    for (let i = 0; i < 150; i++) {
      const s = connect(d.socket);
      s.on('error', () => undefined);
      held.push(s);
      if (i % 3 === 0) {
        s.write('GET /v1/health HTTP/1.1\r\nHost: x\r\n');
        slowTimers.push(setInterval(() => s.writable && s.write('X'), 200));
      } else if (i % 3 === 1) s.end('POST /v1/jobs/x/processes HTTP/1.1\r\nContent-Length: 50\r\n\r\n{"pid"');
    }

    const note = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
    const check = (c: Case, r: RawReply) => {
      note(r.status);
      if (r.status >= 500) failures.push(`${r.status} for ${c.what}: ${c.bytes.subarray(0, 120).toString('latin1')}`);
      else if (r.status === 0 && c.mustAnswer) failures.push(`no answer (${r.error ?? 'closed'}) for ${c.what}: ${c.bytes.subarray(0, 120).toString('latin1')}`);
      else if (r.status !== 0 && r.status < 200) failures.push(`${r.status} for ${c.what}`);
    };

    /** A valid registration (odd but acceptable job id, over either API), then most often its end. */
    const validFlow = async (n: number) => {
      const proc = free.pop();
      if (!proc) return;
      const odd = pick(['a"b', "it's", '$(touch /tmp/x)', '`id`', 'x;y', '#c', 'ü日本💩', 'a\\b', '%s%n', 'a b', '../x', '<b>', 'schedd#1.0#17']);
      const job = `valid-${n}-${odd}`;
      const viaCompat = !/[,/%]/.test(job) && chance(0.5);
      const r = viaCompat
        ? await rawSock(d.socket, request('GET', `/startprofile/jobid=${encodeURIComponent(job)},pid=${proc.pid},owner=root,birthdate=${proc.birth},token=${TOKEN}`, { auth: 'none' }))
        : await rawSock(d.socket, request('POST', `/v1/jobs/${encodeURIComponent(job)}/processes`, { headers: ['Content-Type: application/json'], body: JSON.stringify({ pid: proc.pid, owner: 'root', birthdate: proc.birth }) }));
      sent += 1;
      note(r.status);
      if (r.status !== (viaCompat ? 200 : 201)) failures.push(`valid registration of ${job} answered ${r.status} ${r.error ?? ""}: ${r.text.slice(0, 300)}`);
      if (chance(0.8) || free.length === 0) {
        const e = await rawSock(d.socket, request('DELETE', `/v1/jobs/${encodeURIComponent(job)}`));
        sent += 1;
        note(e.status);
        if (e.status !== 200) failures.push(`valid end of ${job} answered ${e.status}: ${e.text.slice(0, 300)}`);
        free.push(proc);
      } else kept.set(job, proc.pid);
    };

    // Many connections at once, first.
    const burst = await Promise.all(Array.from({ length: 400 }, () => rawSock(d.socket, request('GET', '/v1/health', { auth: 'none' }))));
    sent += burst.length;
    for (const r of burst) {
      note(r.status);
      if (r.status !== 200) failures.push(`burst: ${r.status} ${r.error ?? ''}`);
    }

    let next = 0;
    const worker = async () => {
      while (sent < TOTAL) {
        const n = next++;
        if (n % 20 === 0) {
          await validFlow(n);
          continue;
        }
        const c = hostile();
        sent += 1;
        check(c, await rawSock(d.socket, c.bytes));
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const elapsed = Date.now() - t0;
    // The held clients did not starve anyone; the daemon still answers at once with them open.
    const h = await d.call('GET', '/v1/health');
    slowTimers.forEach(clearInterval);
    held.forEach((s) => s.destroy());

    console.log(`fuzz: ${sent} requests in ${elapsed} ms; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
    expect(failures.slice(0, 20)).toEqual([]);
    expect(d.alive).toBe(true);
    expect(h.status).toBe(200);
    expect(d.stderr()).not.toMatch(/"msg":"request failed"/);

    // Nothing installed: no owner elements; only the kept jobs registered.
    const t = await nsRun(ns, 'nft', ['-j', 'list', 'table', 'inet', 'netprof']);
    const sets = JSON.parse(t.stdout).nftables.filter((i: any) => i.set && /^owners/.test(i.set.name));
    expect(sets.flatMap((s: any) => s.set.elem ?? [])).toEqual([]);
    const jobs = (await d.json('/v1/jobs')).jobs.map((j: any) => j.job).sort();
    expect(jobs).toEqual([...kept.keys()].sort());
    for (const [job, pid] of kept) {
      const detail = await d.json(`/v1/jobs/${encodeURIComponent(job)}`);
      expect(detail.job).toBe(job);
      expect(detail.process_list.map((p: any) => p.pid)).toEqual([pid]);
    }
    const stats = await d.json('/v1/stats');
    expect(stats.counters_installed).toBe(0);
  }, 120_000);
});
