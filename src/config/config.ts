import { readFileSync, existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isIP } from 'node:net';
import { parseIni, IniError } from './ini.js';

/** The daemon's configuration: the original's [CONFIG] keys plus the new parts'. Every key has a
 * default; the original had none and crashed on a missing key. */
export interface Config {
  /** Interfaces to watch; each gets its own log file. */
  interfaces: string[];
  maxBytes: number;
  backupCount: number;
  rulesThreshold: number;
  engine: 'nftables' | 'iptables';
  /** How the nftables engine changes and reads its set elements. */
  elements: 'auto' | 'netlink' | 'nft';
  logDir: string;
  logFormat: 'tsv' | 'jsonl';
  listen: string;
  port: number;
  followChildren: boolean;
  ebpf: 'auto' | 'off';
  gcInterval: number;
  /** Seconds a connection may open before its process is registered and still be counted from
   * its first packet; 0 = off. */
  lateGrace: number;
  /** Kernel size of each flows set (nftables): two elements per counted connection and per
   * connection the grace list keeps. */
  setSize: number;
  /** Records held in memory while the connection log cannot be written. */
  logBuffer: number;
  /** Unix socket path of the API (absolute, resolved against the config file), or undefined. */
  socket: string | undefined;
  /** Permission bits of the socket file. */
  socketMode: number;
  /** Group owning the socket file (name or gid); undefined: root's group. */
  socketGroup: string | undefined;
  /** Bearer token that calls which change state must present; undefined: none required.
   * Filled from TOKEN, or from TOKEN_FILE by checkAgainstHost(). */
  token: string | undefined;
  tokenFile: string | undefined;
  /** Seconds an ended job's final totals stay on /metrics before its series go. */
  metricsGrace: number;
  /** Per job, how many processes get series of their own on /metrics; the rest are summed
   * under pid="other". 0: no per-process series. */
  metricsProcesses: number;
  /** Where each key's value came from ("config.ini:4", "--set", "default"), for error messages. */
  origins: Record<string, string>;
}

export class ConfigError extends Error {}

type Parser<T> = (value: string) => T;

interface KeySpec<K extends keyof Config> {
  field: K;
  default: string;
  parse: Parser<Config[K]>;
  doc: string;
}

function integer(min: number, max: number, what: string): Parser<number> {
  return (v) => {
    if (!/^\d+$/.test(v)) throw new Error(`not a whole number${what ? ` of ${what}` : ''}`);
    const n = Number(v);
    if (n < min || n > max) throw new Error(`must be between ${min} and ${max}`);
    return n;
  };
}

function oneOf<T extends string>(...choices: T[]): Parser<T> {
  return (v) => {
    const lower = v.toLowerCase() as T;
    if (!choices.includes(lower)) throw new Error(`must be one of ${choices.join(', ')}`);
    return lower;
  };
}

/** 'engine' (the default) is resolved once ENGINE is known; see loadConfig. */
const threshold: Parser<number> = (v) => (v === 'engine' ? 0 : integer(1, 10_000_000, 'connections')(v));

/** RULES_THRESHOLD's default per engine: the original's 1000 suits iptables, whose every rule
 * is evaluated for every packet; an nftables set costs one lookup however large. */
export const DEFAULT_THRESHOLD = { nftables: 10_000, iptables: 1_000 } as const;

const boolean: Parser<boolean> = (v) => {
  // configparser's getboolean() words.
  const lower = v.toLowerCase();
  if (['1', 'yes', 'true', 'on'].includes(lower)) return true;
  if (['0', 'no', 'false', 'off'].includes(lower)) return false;
  throw new Error('must be yes or no');
};

const interfaceList: Parser<string[]> = (v) => {
  const names = v.split(',').map((s) => s.trim());
  if (names.some((n) => n === '')) throw new Error('empty interface name in the list');
  for (const n of names) {
    if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(n)) throw new Error(`"${n}" is not an interface name`);
  }
  if (new Set(names).size !== names.length) throw new Error('an interface is listed twice');
  return names;
};

/** LISTEN: an address, or `none` (serve only the Unix socket). */
const address: Parser<string> = (v) => {
  if (v.toLowerCase() === 'none') return 'none';
  if (!isIP(v)) throw new Error('must be an IPv4 or IPv6 address, or none');
  return v;
};

const optionalText: Parser<string | undefined> = (v) => (v === '' || v.toLowerCase() === 'none' ? undefined : v);

const socketPath: Parser<string | undefined> = (v) => {
  const p = optionalText(v);
  if (p === undefined) return undefined;
  // struct sockaddr_un holds 108 bytes with the NUL; checked again once resolved.
  if (Buffer.byteLength(p) > 107) throw new Error('a Unix socket path is at most 107 bytes');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f]/.test(p)) throw new Error('holds a control character');
  return p;
};

const fileMode: Parser<number> = (v) => {
  if (!/^0?[0-7]{3}$/.test(v)) throw new Error('must be octal permission bits like 0660');
  const mode = parseInt(v, 8);
  if (mode & 0o002) throw new Error('must not let every user write (connect to) the socket');
  return mode;
};

const groupName: Parser<string | undefined> = (v) => {
  const g = optionalText(v);
  if (g !== undefined && !/^([a-z_][a-z0-9_.-]{0,31}\$?|\d{1,10})$/i.test(g)) throw new Error('is not a group name or gid');
  return g;
};

/** Tokens travel in a header and, for the original's callers, as `token=T` inside the path, where
 * `,` and `/` separate things: URL-safe characters only, and long enough not to be guessed. */
export const TOKEN_PATTERN = /^[A-Za-z0-9._~+-]{16,256}$/;

const token: Parser<string | undefined> = (v) => {
  const t = optionalText(v);
  if (t !== undefined && !TOKEN_PATTERN.test(t)) throw new Error('must be 16 to 256 characters from A-Z a-z 0-9 . _ ~ + - (e.g. openssl rand -hex 32)');
  return t;
};

const text: Parser<string> = (v) => {
  if (v === '') throw new Error('must not be empty');
  return v;
};

/** Keys, their defaults and what they mean. The README's table and config.ini follow this. */
export const KEYS: { [name: string]: KeySpec<keyof Config> } = {
  INTERFACE: { field: 'interfaces', default: 'lo', parse: interfaceList, doc: 'interfaces to watch, comma-separated; `any` for all' },
  MAX_BYTES: { field: 'maxBytes', default: '1048576', parse: integer(0, Number.MAX_SAFE_INTEGER, 'bytes'), doc: 'roll a log file before it reaches this size; 0 = never roll' },
  BACKUP_COUNT: { field: 'backupCount', default: '100', parse: integer(0, 100000, 'files'), doc: 'rolled files kept (.1 newest … .N); 0 = never roll' },
  RULES_THRESHOLD: { field: 'rulesThreshold', default: 'engine', parse: threshold, doc: 'most connections counted at once; at the threshold garbage collection runs. Default: 10000 with nftables (a hash lookup per packet however many), 1000 with iptables (every rule costs every packet)' },
  ENGINE: { field: 'engine', default: 'nftables', parse: oneOf('nftables', 'iptables'), doc: 'counter engine' },
  ELEMENTS: { field: 'elements', default: 'auto', parse: oneOf('auto', 'netlink', 'nft'), doc: 'how the nftables engine changes and reads its set elements: netlink (our own socket, native/nfset), nft (the nft program, slower), auto (netlink when the addon loads, else nft with a warning)' },
  LOG_DIR: { field: 'logDir', default: '.', parse: text, doc: 'directory of the connection logs, relative to the config file' },
  LOG_FORMAT: { field: 'logFormat', default: 'tsv', parse: oneOf('tsv', 'jsonl'), doc: "the original's two tab-separated lines, or one JSON object per connection" },
  LISTEN: { field: 'listen', default: '127.0.0.1', parse: address, doc: 'address of the HTTP API' },
  PORT: { field: 'port', default: '8080', parse: integer(1, 65535, ''), doc: 'port of the HTTP API (the command line PORT overrides it)' },
  FOLLOW_CHILDREN: { field: 'followChildren', default: 'yes', parse: boolean, doc: "processes started by a registered process belong to its job" },
  EBPF: { field: 'ebpf', default: 'auto', parse: oneOf('auto', 'off'), doc: 'attribute connections with eBPF tracepoints (auto: when bpftrace works), else /proc only' },
  GC_INTERVAL: { field: 'gcInterval', default: '10', parse: integer(1, 3600, 'seconds'), doc: 'seconds between periodic garbage collections' },
  LATE_GRACE: { field: 'lateGrace', default: '30', parse: integer(0, 3600, 'seconds'), doc: 'seconds a connection may open before its process is registered and still be counted from its first packet (its counters are kept that long); 0 = off' },
  SET_SIZE: { field: 'setSize', default: '262144', parse: integer(1024, 16_777_216, 'elements'), doc: "most elements of each nftables flows set (two per connection): room for RULES_THRESHOLD counted connections and the grace list's; bounds the kernel memory used (~100 bytes each)" },
  LOG_BUFFER: { field: 'logBuffer', default: '100000', parse: integer(1, 10_000_000, 'records'), doc: 'records held in memory while the log cannot be written; beyond, records are lost, counted and reported' },
  SOCKET: { field: 'socket', default: '', parse: socketPath, doc: 'also serve the API on this Unix socket (path, relative to the config file); empty: none' },
  SOCKET_MODE: { field: 'socketMode', default: '0660', parse: fileMode, doc: 'permission bits of the Unix socket' },
  SOCKET_GROUP: { field: 'socketGroup', default: '', parse: groupName, doc: "group of the Unix socket (e.g. condor); empty: root's group" },
  TOKEN: { field: 'token', default: '', parse: token, doc: 'bearer token required by every call that changes state; empty: none' },
  TOKEN_FILE: { field: 'tokenFile', default: '', parse: optionalText, doc: 'read TOKEN from this file at start-up (not readable by every user)' },
  METRICS_GRACE: { field: 'metricsGrace', default: '300', parse: integer(1, 86_400, 'seconds'), doc: "seconds an ended job's final totals stay on /metrics; keep it above the scrape interval" },
  METRICS_PROCESSES: { field: 'metricsProcesses', default: '10', parse: integer(0, 1000, 'processes'), doc: 'per job, processes with series of their own on /metrics; the rest are summed as pid="other"; 0: none' },
} as const;

export const SECTION = 'CONFIG';

export interface Override {
  key: string;
  value: string;
  /** Where the value came from, for error messages (e.g. "--set" or "PORT argument"). */
  origin: string;
}

/**
 * Reads and validates the config file, then applies overrides (command-line flags win). Any
 * problem throws a ConfigError whose message is one line naming the file, the key and the value.
 */
export function loadConfig(file: string, overrides: Override[] = [], opts: { fileRequired?: boolean } = {}): Config {
  const path = resolve(file);
  const raw = new Map<string, { value: string; origin: string }>();
  if (existsSync(path)) {
    let content: string;
    try {
      content = readFileSync(path, 'utf8');
    } catch (e) {
      throw new ConfigError(`${file}: cannot read: ${(e as Error).message}`);
    }
    let entries;
    try {
      entries = parseIni(content);
    } catch (e) {
      if (e instanceof IniError) throw new ConfigError(`${file}:${e.line}: ${e.message}`);
      throw e;
    }
    for (const en of entries) {
      if (en.section !== SECTION) throw new ConfigError(`${file}:${en.line}: section [${en.section}] is unknown (expected [${SECTION}])`);
      if (!(en.key in KEYS)) throw new ConfigError(`${file}:${en.line}: unknown key ${en.key} = ${en.value} (known: ${Object.keys(KEYS).join(', ')})`);
      raw.set(en.key, { value: en.value, origin: `${file}:${en.line}` });
    }
  } else if (opts.fileRequired) {
    throw new ConfigError(`${file}: no such file`);
  }
  for (const o of overrides) {
    const key = o.key.toUpperCase();
    if (!(key in KEYS)) throw new ConfigError(`${o.origin}: unknown key ${o.key} = ${o.value}`);
    raw.set(key, { value: o.value, origin: o.origin });
  }

  const origins: Record<string, string> = {};
  const config: Record<string, unknown> = { origins };
  for (const [name, spec] of Object.entries(KEYS)) {
    const given = raw.get(name);
    const value = given?.value ?? spec.default;
    origins[name] = given?.origin ?? 'default';
    try {
      config[spec.field] = spec.parse(value);
    } catch (e) {
      const shown = name === 'TOKEN' ? '(hidden)' : value;
      throw new ConfigError(`${given?.origin ?? 'default'}: ${name} = ${shown}: ${(e as Error).message}`);
    }
  }
  const result = config as unknown as Config;
  if (result.rulesThreshold === 0) result.rulesThreshold = DEFAULT_THRESHOLD[result.engine];
  if (result.setSize < 2 * result.rulesThreshold + 1024) {
    throw new ConfigError(`${origins.SET_SIZE}: SET_SIZE = ${result.setSize}: must hold at least 2 × RULES_THRESHOLD (${result.rulesThreshold}) + 1024 elements`);
  }
  result.logDir = resolve(dirname(path), result.logDir);
  if (result.socket !== undefined) {
    result.socket = resolve(dirname(path), result.socket);
    if (Buffer.byteLength(result.socket) > 107) throw new ConfigError(`${origins.SOCKET}: SOCKET = ${result.socket}: a Unix socket path is at most 107 bytes`);
  }
  if (result.tokenFile !== undefined) result.tokenFile = resolve(dirname(path), result.tokenFile);
  if (result.listen === 'none' && result.socket === undefined) {
    throw new ConfigError(`${origins.LISTEN}: LISTEN = none: set SOCKET too, or the API is unreachable`);
  }
  if (result.token !== undefined && result.tokenFile !== undefined) {
    throw new ConfigError(`${origins.TOKEN_FILE}: TOKEN_FILE = ${result.tokenFile}: TOKEN is set too (${origins.TOKEN}); set one of them`);
  }
  if (result.listen !== 'none' && !isLoopback(result.listen) && result.token === undefined && result.tokenFile === undefined) {
    throw new ConfigError(`${origins.LISTEN}: LISTEN = ${result.listen}: not a loopback address, so set TOKEN or TOKEN_FILE (anyone who can reach the port could end jobs or stop the daemon)`);
  }
  return result;
}

export function isLoopback(addr: string): boolean {
  return /^127\./.test(addr) || addr === '::1' || /^::ffff:127\./i.test(addr);
}

/** Reads TOKEN_FILE: one line, the token. Refused when missing, empty, malformed, or readable or
 * writable by every user (then it is no secret). */
export function readTokenFile(config: Config): string {
  const file = config.tokenFile!;
  const where = `${config.origins.TOKEN_FILE}: TOKEN_FILE = ${file}`;
  let st;
  try {
    st = statSync(file);
  } catch (e) {
    throw new ConfigError(`${where}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (!st.isFile()) throw new ConfigError(`${where}: not a regular file`);
  if (st.mode & 0o007) throw new ConfigError(`${where}: every user may read it (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); chmod 0600 or 0640`);
  const text = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  if (!TOKEN_PATTERN.test(text)) throw new ConfigError(`${where}: the file must hold one token of 16 to 256 characters from A-Z a-z 0-9 . _ ~ + -`);
  return text;
}

/** Interface names that exist in this process's network namespace (/proc/net/dev is per-namespace). */
export function existingInterfaces(): Set<string> {
  const names = new Set<string>(['any']);
  const dev = readFileSync('/proc/net/dev', 'utf8');
  for (const line of dev.split('\n').slice(2)) {
    const name = line.split(':')[0]?.trim();
    if (name) names.add(name);
  }
  return names;
}

/** Start-up checks that depend on the machine, not just the text. */
export function checkAgainstHost(config: Config): void {
  if (config.tokenFile !== undefined) config.token = readTokenFile(config);
  const origin = config.origins.INTERFACE ?? 'default';
  const present = existingInterfaces();
  for (const name of config.interfaces) {
    if (!present.has(name)) {
      throw new ConfigError(`${origin}: INTERFACE = ${config.interfaces.join(',')}: interface "${name}" does not exist here (have: ${[...present].filter((n) => n !== 'any').join(', ')})`);
    }
  }
}
