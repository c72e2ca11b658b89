import { request } from 'node:http';
import { readFileSync } from 'node:fs';

/**
 * The operators' tools talk to the daemon's /v1 API through this client: over TCP
 * (`http://127.0.0.1:8080`) or the Unix socket (`unix:/run/netprof.sock`), with the token when
 * one is configured (TOKEN on the daemon: `--token`, `--token-file` or $NETPROF_TOKEN here).
 */

/** Exit statuses every tool uses, so scripts can rely on them. */
export const EXIT = {
  OK: 0,
  /** The daemon answered and refused (its reason goes to stderr). */
  REFUSED: 1,
  /** Bad command line. */
  USAGE: 2,
  /** No answer: not running, wrong address, or timed out. */
  UNREACHABLE: 3,
} as const;

export const DEFAULT_DAEMON = 'http://127.0.0.1:8080';

export interface Endpoint {
  /** `unix:/path` form: the socket path. */
  socketPath?: string;
  host?: string;
  port?: number;
  token?: string;
  timeoutMs: number;
}

/** The daemon could not be reached: exit 3. */
export class UnreachableError extends Error {}

/** The daemon refused: exit 1, with its status and reason. */
export class RefusedError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Bad use of the command: exit 2. */
export class UsageError extends Error {}

export interface ClientOptions {
  daemon?: string;
  token?: string;
  tokenFile?: string;
  timeout?: string;
}

export function endpoint(o: ClientOptions): Endpoint {
  const text = o.daemon ?? process.env.NETPROF_DAEMON ?? DEFAULT_DAEMON;
  let token = o.token ?? process.env.NETPROF_TOKEN;
  if (o.tokenFile !== undefined) {
    try {
      token = readFileSync(o.tokenFile, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`--token-file ${o.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const timeoutMs = o.timeout === undefined ? 10_000 : Number(o.timeout) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new UsageError(`--timeout ${o.timeout}: expected seconds`);
  if (text.startsWith('unix:')) {
    const socketPath = text.slice(5);
    if (!socketPath) throw new UsageError('--daemon unix:PATH needs a path');
    return { socketPath, token, timeoutMs };
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--daemon ${text}: expected http://HOST:PORT or unix:/PATH`);
  }
  if (url.protocol !== 'http:') throw new UsageError(`--daemon ${text}: only http:// and unix: are supported`);
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80), token, timeoutMs };
}

export function describe(e: Endpoint): string {
  return e.socketPath ? `unix:${e.socketPath}` : `http://${e.host?.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

export interface Answer {
  status: number;
  body: string;
}

/** One request; rejects only when the daemon cannot be reached. */
export function call(e: Endpoint, method: string, path: string, body?: unknown): Promise<Answer> {
  const data = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (data !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = String(Buffer.byteLength(data));
  }
  if (e.token) headers.Authorization = `Bearer ${e.token}`;
  return new Promise((resolve, reject) => {
    const req = request(
      { ...(e.socketPath ? { socketPath: e.socketPath } : { host: e.host, port: e.port }), method, path, headers, timeout: e.timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => reject(new UnreachableError(`${describe(e)}: ${err.message}`)));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${e.timeoutMs / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new UnreachableError(`cannot reach the daemon at ${describe(e)}: ${err.code ?? err.message}`)));
    if (data !== undefined) req.write(data);
    req.end();
  });
}

/** A request whose answer must be 2xx JSON; anything else is the daemon's refusal. */
export async function callJson<T>(e: Endpoint, method: string, path: string, body?: unknown): Promise<T> {
  const a = await call(e, method, path, body);
  let parsed: unknown;
  try {
    parsed = a.body ? JSON.parse(a.body) : {};
  } catch {
    parsed = undefined;
  }
  if (a.status < 200 || a.status > 299) {
    const msg = (parsed as { error?: { message?: string } } | undefined)?.error?.message ?? a.body.trim() ?? `HTTP ${a.status}`;
    throw new RefusedError(a.status, msg || `HTTP ${a.status}`);
  }
  if (parsed === undefined) throw new RefusedError(a.status, `the daemon's answer is not JSON: ${a.body.slice(0, 200)}`);
  return parsed as T;
}

export const jobPath = (job: string): string => `/v1/jobs/${encodeURIComponent(job)}`;

/** Runs a tool's body and turns its errors into the documented exit statuses. */
export async function exitWith(body: () => Promise<number | void>): Promise<never> {
  let code: number;
  try {
    code = (await body()) ?? EXIT.OK;
  } catch (e) {
    if (e instanceof RefusedError) {
      process.stderr.write(`netprof: refused (${e.status}): ${e.message}\n`);
      code = EXIT.REFUSED;
    } else if (e instanceof UnreachableError) {
      process.stderr.write(`netprof: ${e.message}\n`);
      code = EXIT.UNREACHABLE;
    } else if (e instanceof UsageError) {
      process.stderr.write(`netprof: ${e.message}\n`);
      code = EXIT.USAGE;
    } else {
      process.stderr.write(`netprof: ${(e as Error).stack ?? String(e)}\n`);
      code = EXIT.REFUSED;
    }
  }
  process.exitCode = code;
  // Let stdout drain (a pipe to head/jq), then leave.
  await new Promise<void>((r) => (process.stdout.writableLength ? process.stdout.once('drain', () => r()) : r()));
  process.exit(code);
}
