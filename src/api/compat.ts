import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DaemonControl } from '../profiler/control.js';
import { RequestError, checkBirthdate, checkJobId, checkOwner, checkPid, clip, type ProcessClaim } from '../registry/registry.js';
import { methodNotAllowed, send } from './http.js';

/**
 * The original tool's API, as its callers use it: GET, parameters in the path
 * (`/startprofile/jobid=1,pid=13554,owner=rohit,birthdate=1398546000.12`), body `0` on success.
 * Unlike the original, a failure says why (`1`, then a line with the reason) with a 4xx status,
 * and /shutdown answers before the daemon exits.
 */

const ROUTES = new Set(['startprofile', 'endprocessprofile', 'endjobprofile', 'shutdown']);

export function isCompatPath(segments: string[]): boolean {
  return segments.length >= 1 && ROUTES.has(segments[0]!.toLowerCase());
}

function parseParams(text: string | undefined, allowed: readonly string[]): Map<string, string> {
  const params = new Map<string, string>();
  if (!text) return params;
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new RequestError(400, `"${clip(part)}" is not name=value`);
    const name = part.slice(0, eq).trim().toLowerCase();
    if (!allowed.includes(name)) throw new RequestError(400, `unknown parameter "${clip(name)}" (expected ${allowed.join(', ')})`);
    if (params.has(name)) throw new RequestError(400, `parameter ${name} given twice`);
    params.set(name, part.slice(eq + 1));
  }
  return params;
}

function claimFrom(params: Map<string, string>): ProcessClaim {
  const claim: ProcessClaim = { pid: checkPid(params.get('pid')) };
  const owner = checkOwner(params.get('owner'));
  const birthdate = checkBirthdate(params.get('birthdate'));
  if (owner === undefined) throw new RequestError(400, 'owner is missing');
  if (birthdate === undefined) throw new RequestError(400, 'birthdate is missing');
  claim.owner = owner;
  claim.birthdate = birthdate;
  return claim;
}

const PROCESS_PARAMS = ['jobid', 'pid', 'owner', 'birthdate'] as const;

/** Handles one of the original's paths; a RequestError propagates to the server, which answers
 * it in this API's style (`1` and the reason). */
export async function handleCompat(req: IncomingMessage, res: ServerResponse, segments: string[], control: DaemonControl): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw methodNotAllowed(['GET']);
  if (segments.length > 2) throw new RequestError(404, 'no such path');
  const route = segments[0]!.toLowerCase();
  const text = segments[1];
  switch (route) {
    case 'startprofile': {
      const p = parseParams(text, PROCESS_PARAMS);
      await control.register(checkJobId(p.get('jobid')), claimFrom(p));
      break;
    }
    case 'endprocessprofile': {
      const p = parseParams(text, PROCESS_PARAMS);
      await control.endProcess(checkJobId(p.get('jobid')), claimFrom(p));
      break;
    }
    case 'endjobprofile': {
      const p = parseParams(text, ['jobid']);
      await control.endJob(checkJobId(p.get('jobid')));
      break;
    }
    case 'shutdown':
      if (text) throw new RequestError(404, 'no such path');
      send(res, 200, '0', 'text/plain; charset=utf-8', { Connection: 'close' });
      res.once('finish', () => control.shutdown('GET /shutdown'));
      return;
  }
  send(res, 200, '0', 'text/plain; charset=utf-8');
}
