import type { IncomingMessage, ServerResponse } from 'node:http';
import { RequestError } from '../registry/registry.js';

/** Small HTTP helpers shared by the two APIs. */

export const MAX_BODY_BYTES = 64 * 1024;

/** Reads the request body, refusing more than MAX_BODY_BYTES without buffering it. */
export function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_BODY_BYTES) return reject(new RequestError(413, `request body over ${MAX_BODY_BYTES} bytes`));
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        reject(new RequestError(413, `request body over ${MAX_BODY_BYTES} bytes`));
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    // The client went away mid-body ("aborted"): its mistake, not ours — a 4xx, not a 500 and a
    // stack trace in the diagnostics (nobody is left to read the answer anyway).
    req.on('error', (e: NodeJS.ErrnoException) => reject(new RequestError(400, `request body incomplete (${e.code ?? e.message})`)));
  });
}

/** Splits a path into percent-decoded segments (a `/` inside a job id arrives as %2F). */
export function pathSegments(url: string): string[] {
  const path = url.split('?')[0]!;
  try {
    return path.split('/').filter((s, i) => i > 0 || s !== '').map((s) => decodeURIComponent(s));
  } catch {
    throw new RequestError(400, 'malformed percent-encoding in the path');
  }
}

export function send(res: ServerResponse, status: number, body: string | Buffer, type: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) return;
  // Encoded once: Content-Length from the string and res.end(string) would each walk it (a job
  // view of 10,000 connections is 5 MB).
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': bytes.length,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...extra,
  });
  res.end(bytes);
}

/** An answer already in pieces (a scrape's blocks of series): written as they are, never copied
 * into one buffer; corked, so that they leave in few system calls. */
export function sendChunks(res: ServerResponse, status: number, chunks: readonly Buffer[], type: string): void {
  if (res.headersSent) return;
  let length = 0;
  for (const c of chunks) length += c.length;
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': length, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
  if (res.req?.method === 'HEAD') return void res.end();
  res.cork();
  for (const c of chunks) res.write(c);
  res.end();
}

/** Answers up to this many characters are indented for a reader at a terminal; bigger ones go compact. */
export const PRETTY_MAX_CHARS = 64 * 1024;

export function sendJson(res: ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}): void {
  send(res, status, jsonText(value), 'application/json; charset=utf-8', extra);
}

/** A JSON answer's text. A job view of 10,000 connections is 3.5 MB compact, 5.6 MB indented,
 * and indenting took twice as long: the big answers a program reads come compact, the rest
 * stay readable at a terminal. */
export function jsonText(value: unknown): string {
  const compact = JSON.stringify(value) ?? 'null';
  return (compact.length <= PRETTY_MAX_CHARS ? JSON.stringify(value, null, 2) : compact) + '\n';
}

export function methodNotAllowed(allowed: string[]): RequestError & { allow: string } {
  return Object.assign(new RequestError(405, `method not allowed here; use ${allowed.join(' or ')}`), { allow: allowed.join(', ') });
}
