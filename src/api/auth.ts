import type { IncomingMessage } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import { RequestError } from '../registry/registry.js';

/**
 * Who may call the daemon. Reads (health, stats, job listings, metrics) are open to callers on
 * loopback and on the Unix socket, whose file mode and group already say who may connect. When a
 * token is configured (TOKEN / TOKEN_FILE), every call that changes state — the original's four
 * paths and any /v1 call that is not GET or HEAD — must carry it, on every listener; a caller
 * that is neither on loopback nor on the socket must carry it for reads too.
 *
 * The token is given as `Authorization: Bearer <token>`, or, for the original's callers (which
 * cannot add headers), as a `token=<token>` parameter among the path's parameters:
 * `/startprofile/jobid=1,pid=2,owner=u,birthdate=3,token=T`, `/shutdown/token=T`.
 */

export interface AccessPolicy {
  /** Required on calls that change state; undefined: no token is required. */
  token?: string;
  /** This listener is the Unix socket: every caller passed its file permissions. */
  unixSocket?: boolean;
}

/** A refused caller: 401 and a Bearer challenge. */
export class AuthError extends RequestError {
  readonly wwwAuthenticate = 'Bearer realm="netprof"';
  constructor(message: string) {
    super(401, message);
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time comparison: both sides are hashed to the same length first, so neither the
 * length nor the first differing byte of the expected token shows in the time taken. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** True for a caller on the Unix socket or on loopback. */
export function isLocalCaller(req: IncomingMessage, policy: AccessPolicy): boolean {
  if (policy.unixSocket) return true;
  const a = req.socket.remoteAddress;
  if (a === undefined) return false;
  return /^127\./.test(a) || a === '::1' || /^::ffff:127\./i.test(a);
}

/**
 * Takes a `token=` parameter out of the original API's parameter segment (segments[1]), so the
 * route handlers never see it, and returns it. More than one is a malformed request.
 */
export function extractPathToken(segments: string[]): string | undefined {
  const text = segments[1];
  if (text === undefined) return undefined;
  const parts = text.split(',');
  const kept: string[] = [];
  let found: string | undefined;
  for (const part of parts) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim().toLowerCase() === 'token') {
      if (found !== undefined) throw new RequestError(400, 'parameter token given twice');
      found = part.slice(eq + 1);
    } else kept.push(part);
  }
  if (found === undefined) return undefined;
  if (kept.length) segments[1] = kept.join(',');
  else segments.splice(1, 1);
  return found;
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (h === undefined) return undefined;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(h);
  if (!m) throw new AuthError('the Authorization header must be "Bearer <token>"');
  return m[1];
}

/**
 * Throws AuthError unless the caller may make this call. `changesState` is decided by the
 * dispatcher; `pathToken` is what extractPathToken() found (original API only).
 */
export function authorize(req: IncomingMessage, policy: AccessPolicy, changesState: boolean, pathToken?: string): void {
  const expected = policy.token;
  if (expected === undefined) return;
  if (!changesState && isLocalCaller(req, policy)) return;
  const header = bearer(req);
  if (header !== undefined && pathToken !== undefined && header !== pathToken) throw new AuthError('two different tokens given');
  const given = header ?? pathToken;
  if (given === undefined) throw new AuthError(changesState ? 'this call changes state: give the token (Authorization: Bearer <token>, or token=<token> in the path)' : 'give the token (Authorization: Bearer <token>)');
  if (!tokenMatches(given, expected)) throw new AuthError('wrong token');
}

/** The request line as it may be logged: token parameters blanked. */
export function redactUrl(url: string | undefined): string | undefined {
  return url?.slice(0, 200).replace(/(token=)[^,/?&]*/gi, '$1…');
}
