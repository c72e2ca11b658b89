import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DaemonControl } from '../profiler/control.js';
import { RequestError, checkBirthdate, checkJobId, checkOwner, checkPid, type ProcessClaim } from '../registry/registry.js';
import { methodNotAllowed, readBody, sendJson } from './http.js';

/**
 * The JSON API for new callers, resource-shaped:
 *   GET    /v1/health                      liveness and problems (503 while stopping)
 *   GET    /v1/stats                       the daemon's counters
 *   GET    /v1/jobs                        jobs with totals
 *   GET    /v1/jobs/{job}                  one job, its processes, their live connections
 *   DELETE /v1/jobs/{job}                  end the job (logs every connection)
 *   POST   /v1/jobs/{job}/processes        register {"pid", "owner"?, "birthdate"?}
 *   DELETE /v1/jobs/{job}/processes/{pid}  end one process
 *   POST   /v1/jobs/{job}/processes/{pid}/links  {"interface"}: count a VM's tap as the process's
 *   POST   /v1/shutdown                    orderly shutdown
 * Errors: {"error": {"status", "message"}} with a 4xx status for the caller's mistakes.
 */
export async function handleV1(req: IncomingMessage, res: ServerResponse, segments: string[], control: DaemonControl): Promise<void> {
  const method = req.method ?? 'GET';
  const [, resource, jobText, sub, pidText, ...rest] = segments;
  const reads = ['GET', 'HEAD'];

  if (resource === 'health' && segments.length === 2) {
    if (!reads.includes(method)) throw methodNotAllowed(['GET']);
    const health = control.health();
    return sendJson(res, health.status === 'stopping' ? 503 : 200, health);
  }
  if (resource === 'stats' && segments.length === 2) {
    if (!reads.includes(method)) throw methodNotAllowed(['GET']);
    return sendJson(res, 200, control.stats());
  }
  if (resource === 'shutdown' && segments.length === 2) {
    if (method !== 'POST') throw methodNotAllowed(['POST']);
    sendJson(res, 202, { status: 'shutting down' }, { Connection: 'close' });
    res.once('finish', () => control.shutdown('POST /v1/shutdown'));
    return;
  }
  if (resource !== 'jobs' || rest.length > 1 || (rest.length === 1 && rest[0] !== 'links')) throw new RequestError(404, 'no such path');

  if (jobText === undefined) {
    if (!reads.includes(method)) throw methodNotAllowed(['GET']);
    return sendJson(res, 200, { jobs: control.jobs() });
  }
  const job = checkJobId(jobText);
  if (sub === undefined) {
    if (reads.includes(method)) {
      const detail = await control.job(job);
      if (!detail) throw new RequestError(404, `job ${job} is not profiled`);
      return sendJson(res, 200, detail);
    }
    if (method === 'DELETE') {
      const ended = await control.endJob(job);
      return sendJson(res, 200, { job, processes_ended: ended.processes, connections_logged: ended.connectionsLogged });
    }
    throw methodNotAllowed(['GET', 'DELETE']);
  }
  if (sub !== 'processes') throw new RequestError(404, 'no such path');
  if (pidText === undefined) {
    if (method !== 'POST') throw methodNotAllowed(['POST']);
    const claim = await claimFromBody(req);
    const { process, added } = await control.register(job, claim);
    return sendJson(res, added ? 201 : 200, {
      job,
      pid: process.pid,
      owner: process.user,
      uid: process.uid,
      birthdate: process.startTime,
      already_registered: !added,
    });
  }
  if (rest[0] === 'links') {
    if (method !== 'POST') throw methodNotAllowed(['POST']);
    const device = await interfaceFromBody(req);
    const given = await control.giveLink(job, checkPid(pidText), device);
    return sendJson(res, 201, { job, pid: Number(pidText), ...given });
  }
  if (method !== 'DELETE') throw methodNotAllowed(['DELETE']);
  const ended = await control.endProcess(job, { pid: checkPid(pidText) });
  return sendJson(res, 200, { job, pid: Number(pidText), connections_logged: ended.connectionsLogged });
}

async function jsonObject(req: IncomingMessage, what: string): Promise<Record<string, unknown>> {
  const type = String(req.headers['content-type'] ?? '');
  if (!/^application\/json\b/i.test(type)) throw new RequestError(415, `send the ${what} as application/json`);
  const text = await readBody(req);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new RequestError(400, 'the body is not valid JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RequestError(400, 'the body must be a JSON object');
  return body as Record<string, unknown>;
}

const IFNAME = /^[A-Za-z0-9_.@+-]{1,15}$/;

async function interfaceFromBody(req: IncomingMessage): Promise<string> {
  const o = await jsonObject(req, 'interface');
  for (const k of Object.keys(o)) if (k !== 'interface') throw new RequestError(400, `unknown field "${k.slice(0, 40)}" (expected interface)`);
  if (typeof o.interface !== 'string' || !IFNAME.test(o.interface) || o.interface.startsWith('-')) throw new RequestError(400, 'interface must be an interface name (1–15 of A–Z a–z 0–9 _ . @ + -)');
  return o.interface;
}

async function claimFromBody(req: IncomingMessage): Promise<ProcessClaim> {
  const o = await jsonObject(req, 'process');
  for (const k of Object.keys(o)) {
    if (!['pid', 'owner', 'birthdate'].includes(k)) throw new RequestError(400, `unknown field "${k.slice(0, 40)}" (expected pid, owner, birthdate)`);
  }
  const asText = (v: unknown, name: string): string | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'number' && Number.isFinite(v)) return String(v);
    if (typeof v === 'string') return v;
    throw new RequestError(400, `${name} must be a number or a string`);
  };
  return {
    pid: checkPid(asText(o.pid, 'pid')),
    owner: checkOwner(asText(o.owner, 'owner')),
    birthdate: checkBirthdate(asText(o.birthdate, 'birthdate')),
  };
}
