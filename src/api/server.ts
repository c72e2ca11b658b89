import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { DaemonControl } from '../profiler/control.js';
import { RequestError } from '../registry/registry.js';
import { handleCompat, isCompatPath } from './compat.js';
import { handleV1 } from './v1.js';
import { handleMetrics, metricsFor } from './metrics.js';
import { MAX_BODY_BYTES, pathSegments, send, sendJson } from './http.js';
import { diag } from '../util/diag.js';
import { authorize, extractPathToken, redactUrl, AuthError, type AccessPolicy } from './auth.js';

/** Request lines and headers beyond this are refused with 431 by Node itself. */
const MAX_HEADER_BYTES = 16 * 1024;

/** The HTTP server behind both APIs. A bad request gets a 4xx and a reason; an internal error
 * gets a 500 without a stack trace, which goes to the daemon's diagnostics instead. */
export function createApiServer(control: DaemonControl, policy: AccessPolicy = {}): Server {
  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    dispatch(req, res, control, policy).catch((e: unknown) => {
      diag.error('request failed', { method: req.method, url: redactUrl(req.url), error: (e as Error).stack ?? String(e) });
      sendError(res, new RequestError(500, 'internal error; see the daemon log'), isCompatUrl(req.url));
    });
  });
  metricsFor(control); // /metrics counts records from the start, not from the first scrape
  server.keepAliveTimeout = 5_000;
  // A client may half-close (shutdown(SHUT_WR)) once its request is sent. By default Node then
  // aborts the requests still being handled, and a registration that went through is never
  // answered; with this, the answer is written and the connection closed after it.
  (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Malformed requests never reach dispatch; answer them plainly if the socket still can.
    if (!socket.writable) return socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const reason = status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request';
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  return server;
}

async function dispatch(req: IncomingMessage, res: ServerResponse, control: DaemonControl, policy: AccessPolicy): Promise<void> {
  const url = req.url ?? '/';
  const compat = isCompatUrl(url);
  try {
    const segments = pathSegments(url);
    // Access first: a refused caller learns nothing else and changes nothing. Every original
    // path changes state; elsewhere, anything but a read does.
    const pathToken = compat ? extractPathToken(segments) : undefined;
    authorize(req, policy, compat || !['GET', 'HEAD'].includes(req.method ?? 'GET'), pathToken);
    if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) throw new RequestError(413, `request body over ${MAX_BODY_BYTES} bytes`);
    if (compat) return await handleCompat(req, res, segments, control);
    if (segments[0] === 'v1') return await handleV1(req, res, segments, control);
    if (segments[0] === 'metrics' && segments.length === 1) return await handleMetrics(req, res, control);
    throw new RequestError(404, 'no such path; see /v1/health, /v1/jobs, or the original /startprofile/… paths');
  } catch (e) {
    if (!(e instanceof RequestError)) throw e;
    if (e.status === 413) await drop(req);
    sendError(res, e, compat);
  }
}

/** Reads and drops the rest of a refused body before answering: closing on a client that is still
 * writing resets the connection, and it never reads the answer. Bounded at 2 s. */
function drop(req: IncomingMessage): Promise<void> {
  if (req.complete) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, 2_000);
    req.on('end', () => (clearTimeout(t), resolve()));
    req.on('error', () => (clearTimeout(t), resolve()));
    req.resume();
  });
}

function isCompatUrl(url = '/'): boolean {
  return isCompatPath([url.split(/[/?]/)[1] ?? '']);
}

/** The original's callers read `1` and a reason line; new callers read JSON. */
function sendError(res: ServerResponse, e: RequestError, compat: boolean): void {
  const extra: Record<string, string> = 'allow' in e ? { Allow: String((e as { allow: string }).allow) } : {};
  if (e instanceof AuthError) extra['WWW-Authenticate'] = e.wwwAuthenticate;
  if (compat) send(res, e.status, `1\n${e.message}\n`, 'text/plain; charset=utf-8', extra);
  else sendJson(res, e.status, { error: { status: e.status, message: e.message } }, extra);
}
