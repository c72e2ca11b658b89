import { readFileSync, existsSync } from 'node:fs';
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
  logDir: string;
  logFormat: 'tsv' | 'jsonl';
  listen: string;
  port: number;
  followChildren: boolean;
  ebpf: 'auto' | 'off';
  gcInterval: number;
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

const address: Parser<string> = (v) => {
  if (!isIP(v)) throw new Error('must be an IPv4 or IPv6 address');
  return v;
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
  RULES_THRESHOLD: { field: 'rulesThreshold', default: '1000', parse: integer(1, 10_000_000, 'connections'), doc: 'most connections counted at once; at the threshold garbage collection runs' },
  ENGINE: { field: 'engine', default: 'nftables', parse: oneOf('nftables', 'iptables'), doc: 'counter engine' },
  LOG_DIR: { field: 'logDir', default: '.', parse: text, doc: 'directory of the connection logs, relative to the config file' },
  LOG_FORMAT: { field: 'logFormat', default: 'tsv', parse: oneOf('tsv', 'jsonl'), doc: "the original's two tab-separated lines, or one JSON object per connection" },
  LISTEN: { field: 'listen', default: '127.0.0.1', parse: address, doc: 'address of the HTTP API' },
  PORT: { field: 'port', default: '8080', parse: integer(1, 65535, ''), doc: 'port of the HTTP API (the command line PORT overrides it)' },
  FOLLOW_CHILDREN: { field: 'followChildren', default: 'yes', parse: boolean, doc: "processes started by a registered process belong to its job" },
  EBPF: { field: 'ebpf', default: 'auto', parse: oneOf('auto', 'off'), doc: 'attribute connections with eBPF tracepoints (auto: when bpftrace works), else /proc only' },
  GC_INTERVAL: { field: 'gcInterval', default: '10', parse: integer(1, 3600, 'seconds'), doc: 'seconds between periodic garbage collections' },
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
      throw new ConfigError(`${given?.origin ?? 'default'}: ${name} = ${value}: ${(e as Error).message}`);
    }
  }
  const result = config as unknown as Config;
  result.logDir = resolve(dirname(path), result.logDir);
  return result;
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
  const origin = config.origins.INTERFACE ?? 'default';
  const present = existingInterfaces();
  for (const name of config.interfaces) {
    if (!present.has(name)) {
      throw new ConfigError(`${origin}: INTERFACE = ${config.interfaces.join(',')}: interface "${name}" does not exist here (have: ${[...present].filter((n) => n !== 'any').join(', ')})`);
    }
  }
}
