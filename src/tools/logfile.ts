import { createReadStream, readdirSync, statSync, existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

/**
 * Reading connection logs back: both formats (the original's two TSV lines per connection, and
 * jsonl), detected per line, and the rolled files of a log in the order they were written.
 */

/** One connection as a log tells it. Bytes are undefined when it was not counted. */
export interface LoggedConnection {
  /** Epoch ms the record was written (the connection's end, or when its process/job ended). */
  time: number;
  /** Epoch ms of its first packet, when the log says (jsonl only). */
  start?: number;
  job: string;
  pid: number;
  localAddr: string;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  bytesIn?: number;
  bytesOut?: number;
  packetsIn?: number;
  packetsOut?: number;
  reason?: string;
}

/** `2014-04-26 16:17:28,909` (local time, as the daemon writes it) → epoch ms. */
export function parseAsctime(t: string): number {
  const m = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:,(\d{1,3}))?$/.exec(t);
  if (!m) return NaN;
  return new Date(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, m[7] ? +m[7].padEnd(3, '0') : 0).getTime();
}

/** Records come in bursts within the same second: parse each second once. */
let cachedSecond = '';
let cachedMs = NaN;
function timeOf(t: string): number {
  const second = t.slice(0, 19);
  if (second !== cachedSecond) {
    cachedSecond = second;
    cachedMs = parseAsctime(second);
  }
  const ms = /^,(\d{1,3})$/.exec(t.slice(19));
  return ms ? cachedMs + Number(ms[1]!.padEnd(3, '0')) : t.length === 19 ? cachedMs : parseAsctime(t);
}

const bytesOf = (s: string | undefined): number | undefined => (s === undefined || s === '-' || !/^\d+$/.test(s) ? undefined : Number(s));

interface TsvHalf {
  time: number;
  job: string;
  pid: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  dir: 'IN' | 'OUT';
  bytes: number | undefined;
}

function parseTsvLine(line: string): TsvHalf | undefined {
  const sep = line.indexOf(' \t ');
  if (sep < 0) return undefined;
  const f = line.slice(sep + 3).split('\t');
  if (f.length !== 8) return undefined;
  const dir = f[6];
  if (dir !== 'IN' && dir !== 'OUT') return undefined;
  return {
    time: timeOf(line.slice(0, sep)),
    job: f[0]!,
    pid: Number(f[1]),
    src: f[2]!,
    sport: Number(f[3]),
    dst: f[4]!,
    dport: Number(f[5]),
    dir,
    bytes: bytesOf(f[7]!.trim()),
  };
}

function parseJsonLine(line: string): LoggedConnection | undefined {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null || typeof o.job !== 'string') return undefined;
  const ms = (v: unknown) => (typeof v === 'string' ? Date.parse(v) : NaN);
  const n = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const time = ms(o.end ?? o.time);
  const start = ms(o.start);
  return {
    time,
    ...(Number.isFinite(start) ? { start } : {}),
    job: o.job,
    pid: Number(o.pid),
    localAddr: String(o.local_addr),
    localPort: Number(o.local_port),
    remoteAddr: String(o.remote_addr),
    remotePort: Number(o.remote_port),
    bytesIn: n(o.bytes_in),
    bytesOut: n(o.bytes_out),
    packetsIn: n(o.packets_in),
    packetsOut: n(o.packets_out),
    ...(typeof o.end_reason === 'string' ? { reason: o.end_reason } : {}),
  };
}

/**
 * Turns lines into connections. A TSV connection is an IN line followed by its OUT line; an IN
 * line without its OUT (a truncated file) still counts, with its bytes in only. Lines that are
 * neither format are counted in `skipped`.
 */
export class LogParser {
  skipped = 0;
  private pendingIn: TsvHalf | undefined;

  constructor(private readonly emit: (c: LoggedConnection) => void) {}

  line(line: string): void {
    if (line.length === 0) return;
    if (line.charCodeAt(0) === 123 /* { */) {
      this.flush();
      const c = parseJsonLine(line);
      if (c) this.emit(c);
      else this.skipped += 1;
      return;
    }
    const h = parseTsvLine(line);
    if (!h) {
      this.skipped += 1;
      return;
    }
    if (h.dir === 'IN') {
      this.flush();
      this.pendingIn = h;
      return;
    }
    const i = this.pendingIn;
    this.pendingIn = undefined;
    // OUT: local → remote. Its IN partner has the same job, pid and the ends swapped.
    const paired = i && i.job === h.job && i.pid === h.pid && i.src === h.dst && i.sport === h.dport && i.dst === h.src && i.dport === h.sport;
    if (i && !paired) this.emitIn(i);
    this.emit({
      time: h.time,
      job: h.job,
      pid: h.pid,
      localAddr: h.src,
      localPort: h.sport,
      remoteAddr: h.dst,
      remotePort: h.dport,
      bytesIn: paired ? i.bytes : undefined,
      bytesOut: h.bytes,
    });
  }

  /** Call at the end of the input (or of each file). */
  flush(): void {
    if (this.pendingIn) this.emitIn(this.pendingIn);
    this.pendingIn = undefined;
  }

  private emitIn(i: TsvHalf): void {
    this.emit({ time: i.time, job: i.job, pid: i.pid, localAddr: i.dst, localPort: i.dport, remoteAddr: i.src, remotePort: i.sport, bytesIn: i.bytes });
  }
}

/** Streams a file (or stdin for `-`) through the parser, line by line. */
export async function readLog(source: string | Readable, parser: LogParser): Promise<void> {
  const input = typeof source === 'string' ? (source === '-' ? process.stdin : createReadStream(source, { highWaterMark: 1 << 20 })) : source;
  const rl = createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) parser.line(line);
  parser.flush();
}

/**
 * The files to read, oldest first. A directory: every `*.log` in it with its rolled siblings. A
 * base name (`x.log`, which may itself be gone): `x.log.N` … `x.log.1`, then `x.log`. Anything
 * else (`x.log.3`, `-`) is read as given.
 */
export function expandLogPaths(args: readonly string[]): string[] {
  const out: string[] = [];
  for (const a of args) {
    if (a === '-') {
      out.push(a);
      continue;
    }
    if (existsSync(a) && statSync(a).isDirectory()) {
      const bases = readdirSync(a)
        .filter((n) => n.endsWith('.log'))
        .sort();
      for (const b of bases) out.push(...rolled(join(a, b)));
      continue;
    }
    if (/\.\d+$/.test(a) && existsSync(a)) {
      out.push(a);
      continue;
    }
    const found = rolled(a);
    out.push(...(found.length ? found : [a])); // a missing file fails when read, naming it
  }
  return [...new Set(out)];
}

function rolled(base: string): string[] {
  const dir = dirname(base);
  const name = basename(base);
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const numbered = entries
    .map((n) => (n.startsWith(`${name}.`) ? /^\d+$/.exec(n.slice(name.length + 1))?.[0] : undefined))
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((x, y) => y - x)
    .map((n) => join(dir, `${name}.${n}`));
  return [...numbered, ...(entries.includes(name) ? [base] : [])];
}
