import { afterAll, describe, expect, it } from 'vitest';
import { Registry, RequestError, checkJobId, checkPid, checkBirthdate } from '../../../src/registry/registry.js';
import { createTime, deadPid, sleeper } from '../../support/procs.js';

const children = [sleeper(), sleeper(65534)];
afterAll(() => children.forEach((c) => c.kill('SIGKILL')));
const [live, nobody] = children.map((c) => c.pid!) as [number, number];

function refusal(fn: () => unknown): RequestError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RequestError);
    return e as RequestError;
  }
  throw new Error('expected a refusal');
}

describe('process identity against the live process', () => {
  it('accepts a live process by user name and by uid, birthdate compared as a number', () => {
    const r = new Registry();
    const b = createTime(live);
    expect(r.verify({ pid: live, owner: 'root', birthdate: b }).pid).toBe(live);
    expect(r.verify({ pid: live, owner: '0', birthdate: Number(b.toFixed(0)) }).uid).toBe(0);
    // The original compared strings: "1398546000.12" never matched "1398546000.120".
    expect(r.verify({ pid: live, owner: 'root', birthdate: Number(`${b.toFixed(2)}0`) }).pid).toBe(live);
    expect(r.verify({ pid: nobody, owner: 'nobody', birthdate: createTime(nobody) }).uid).toBe(65534);
  });

  it('refuses a dead pid, a wrong owner and a start time 500 s off, with the reason', async () => {
    const r = new Registry();
    const dead = await deadPid();
    expect(refusal(() => r.verify({ pid: dead, owner: 'root', birthdate: 1 })).message).toMatch(`process ${dead} does not exist`);
    const owner = refusal(() => r.verify({ pid: live, owner: 'nobody', birthdate: createTime(live) }));
    expect(owner.status).toBe(422);
    expect(owner.message).toMatch(/belongs to root \(uid 0\), not nobody/);
    expect(refusal(() => r.verify({ pid: nobody, owner: 'root' })).message).toMatch(/belongs to nobody/);
    const late = refusal(() => r.verify({ pid: live, owner: 'root', birthdate: createTime(live) - 500 }));
    expect(late.message).toMatch(/started at .* not .*pid reused/);
    expect(refusal(() => r.verify({ pid: live, owner: 'no-such-user-x' })).message).toMatch(/not a known user/);
  });

  it('tolerates a second of difference and no more', () => {
    const r = new Registry();
    const b = createTime(live);
    expect(() => r.verify({ pid: live, birthdate: b + 0.9 })).not.toThrow();
    expect(() => r.verify({ pid: live, birthdate: b - 1.5 })).toThrow(RequestError);
  });
});

describe('jobs and processes', () => {
  it('registers, is idempotent, refuses the same pid for another job', () => {
    const r = new Registry();
    const info = r.verify({ pid: live });
    expect(r.add('123.0', info).added).toBe(true);
    expect(r.add('123.0', info).added).toBe(false);
    expect(refusal(() => r.add('124.0', info)).status).toBe(409);
    expect(r.jobs().map((j) => j.id)).toEqual(['123.0']);
  });

  it('ends a process that never opened a connection, and one that has already exited', async () => {
    const r = new Registry();
    const c = sleeper();
    const pid = c.pid!;
    const b = createTime(pid);
    r.add('j', r.verify({ pid }));
    c.kill('SIGKILL');
    await new Promise((res) => c.once('exit', res));
    expect(r.dead().map((p) => p.pid)).toEqual([pid]);
    // The identity it was registered with still names it.
    const found = r.find('j', { pid, owner: 'root', birthdate: b });
    r.remove(found);
    expect(r.process(pid)).toBeUndefined();
    expect(r.job('j')?.processes.size).toBe(0);
    expect(r.removeJob('j')).toEqual([]);
    expect(refusal(() => r.removeJob('j')).status).toBe(404);
  });

  it('refuses to end a process under the wrong job or identity', () => {
    const r = new Registry();
    r.add('a', r.verify({ pid: live }));
    expect(refusal(() => r.find('b', { pid: live })).status).toBe(404);
    expect(refusal(() => r.find('a', { pid: live, owner: 'nobody' })).status).toBe(422);
    expect(refusal(() => r.find('a', { pid: live, birthdate: 1 })).status).toBe(422);
  });

  it('forgets a job left empty after a grace period', () => {
    const r = new Registry();
    const p = r.add('a', r.verify({ pid: live })).process;
    r.remove(p);
    expect(r.prune(60_000)).toEqual([]);
    expect(r.prune(60_000, Date.now() + 61_000)).toEqual(['a']);
  });
});

describe('checking what callers send', () => {
  it('takes HTCondor job ids and refuses only what would corrupt the log', () => {
    for (const ok of ['123.0', 'schedd#123.0#1700000000', 'job with "quotes" and $(x);', 'ünïcode']) expect(checkJobId(ok)).toBe(ok);
    for (const bad of ['', 'a\tb', 'a\nb', 'a\u0000b', 'a\u007fb', 'x'.repeat(101)]) expect(() => checkJobId(bad)).toThrow(RequestError);
  });

  it('refuses pids that are not pids and birthdates that are not numbers', () => {
    for (const bad of ['', 'abc', '-1', '0', '1.5', '99999999999', '4194305', ' 1']) expect(() => checkPid(bad)).toThrow(RequestError);
    expect(checkPid('4194304')).toBe(4194304);
    for (const bad of ['abc', '-5', '1e9', 'NaN', '1398546000.12.1']) expect(() => checkBirthdate(bad)).toThrow(RequestError);
    expect(checkBirthdate('1398546000.12')).toBe(1398546000.12);
  });
});
