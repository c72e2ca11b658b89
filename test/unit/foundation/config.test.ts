import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, checkAgainstHost, ConfigError, KEYS } from '../../../src/config/config.js';

function file(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'netprof-config-'));
  const path = join(dir, 'config.ini');
  writeFileSync(path, text);
  return path;
}

function error(text: string): string {
  try {
    loadConfig(file(text));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('config.ini', () => {
  it("reads the original's four keys", () => {
    const path = file('[CONFIG]\nINTERFACE = virbr0\nMAX_BYTES = 1048576\nBACKUP_COUNT = 100\nRULES_THRESHOLD = 1000\n');
    const c = loadConfig(path);
    expect(c.interfaces).toEqual(['virbr0']);
    expect(c.maxBytes).toBe(1048576);
    expect(c.backupCount).toBe(100);
    expect(c.rulesThreshold).toBe(1000);
  });

  it('gives every key a default, so an empty or missing file works', () => {
    const c = loadConfig(file('[CONFIG]\n'));
    expect(c).toMatchObject({
      interfaces: ['lo'], maxBytes: 1048576, backupCount: 100, rulesThreshold: 10000, engine: 'nftables',
      logFormat: 'tsv', listen: '127.0.0.1', port: 8080, followChildren: true, ebpf: 'auto', gcInterval: 10,
    });
    expect(loadConfig('/nonexistent/config.ini').engine).toBe('nftables');
    expect(loadConfig(file('[CONFIG]\n'))).toMatchObject({ lateGrace: 30, setSize: 262144 });
    for (const spec of Object.values(KEYS)) expect(spec.doc.length).toBeGreaterThan(5);
  });

  it('defaults RULES_THRESHOLD by engine: 10000 for nftables, the original 1000 for iptables', () => {
    expect(loadConfig(file('[CONFIG]\nENGINE = iptables\n')).rulesThreshold).toBe(1000);
    expect(loadConfig(file('[CONFIG]\nENGINE = iptables\nRULES_THRESHOLD = 50\n')).rulesThreshold).toBe(50);
    expect(loadConfig(file('[CONFIG]\n')).rulesThreshold).toBe(10000);
  });

  it('accepts configparser syntax: colon separator, lower-case keys, comments, several interfaces', () => {
    const c = loadConfig(file('# comment\n[CONFIG]\n; another\ninterface: eth0, veth1\nlog_format = JSONL\nfollow_children = off\n'));
    expect(c.interfaces).toEqual(['eth0', 'veth1']);
    expect(c.logFormat).toBe('jsonl');
    expect(c.followChildren).toBe(false);
  });

  it('resolves LOG_DIR relative to the config file', () => {
    const path = file('[CONFIG]\nLOG_DIR = logs\n');
    expect(loadConfig(path).logDir).toBe(join(path, '..', 'logs'));
  });

  it('names the file, the key and the value of a bad value', () => {
    expect(error('[CONFIG]\nMAX_BYTES = abc\n')).toMatch(/config\.ini:2: MAX_BYTES = abc: not a whole number/);
    expect(error('[CONFIG]\nBACKUP_COUNT = -1\n')).toMatch(/config\.ini:2: BACKUP_COUNT = -1/);
    expect(error('[CONFIG]\nRULES_THRESHOLD = 0\n')).toMatch(/RULES_THRESHOLD = 0: must be between 1/);
    expect(error('[CONFIG]\nENGINE = ipset\n')).toMatch(/ENGINE = ipset: must be one of nftables, iptables/);
    expect(error('[CONFIG]\nLOG_FORMAT = csv\n')).toMatch(/LOG_FORMAT = csv/);
    expect(error('[CONFIG]\nLISTEN = localhost\n')).toMatch(/LISTEN = localhost: must be an IPv4 or IPv6 address/);
    expect(error('[CONFIG]\nPORT = 70000\n')).toMatch(/PORT = 70000/);
    expect(error('[CONFIG]\nFOLLOW_CHILDREN = maybe\n')).toMatch(/FOLLOW_CHILDREN = maybe: must be yes or no/);
    expect(error('[CONFIG]\nINTERFACE = eth0,,eth1\n')).toMatch(/INTERFACE = eth0,,eth1: empty interface name/);
    expect(error('[CONFIG]\nINTERFACE = $(reboot)\n')).toMatch(/is not an interface name/);
    expect(error('[CONFIG]\nMAX_BYTES = 100 ; inline\n')).toMatch(/MAX_BYTES = 100 ; inline/);
  });

  it('refuses unknown keys, sections, duplicates and stray lines, naming the line', () => {
    expect(error('[CONFIG]\nMAX_BYTE = 10\n')).toMatch(/config\.ini:2: unknown key MAX_BYTE = 10/);
    expect(error('[OTHER]\nMAX_BYTES = 10\n')).toMatch(/section \[OTHER\] is unknown/);
    expect(error('[CONFIG]\nMAX_BYTES = 10\nmax_bytes = 20\n')).toMatch(/config\.ini:3: MAX_BYTES is set twice/);
    expect(error('MAX_BYTES = 10\n')).toMatch(/config\.ini:1: .* before any \[SECTION\]/);
    expect(error('[CONFIG]\njust words\n')).toMatch(/config\.ini:2: "just words" is not KEY = value/);
  });

  it('lets flags override the file, and checks them the same way', () => {
    const path = file('[CONFIG]\nENGINE = nftables\nPORT = 8080\n');
    const c = loadConfig(path, [{ key: 'ENGINE', value: 'iptables', origin: '--engine' }, { key: 'PORT', value: '9000', origin: 'PORT argument' }]);
    expect(c.engine).toBe('iptables');
    expect(c.port).toBe(9000);
    expect(() => loadConfig(path, [{ key: 'PORT', value: 'x', origin: 'PORT argument' }])).toThrow(/PORT argument: PORT = x/);
    expect(() => loadConfig(path, [{ key: 'NOPE', value: '1', origin: '--set NOPE' }])).toThrow(/--set NOPE: unknown key NOPE/);
  });

  it('refuses an interface that does not exist on this host', () => {
    const c = loadConfig(file('[CONFIG]\nINTERFACE = lo,nosuch0\n'));
    expect(() => checkAgainstHost(c)).toThrow(/config\.ini:2: INTERFACE = lo,nosuch0: interface "nosuch0" does not exist/);
    expect(() => checkAgainstHost(loadConfig(file('[CONFIG]\nINTERFACE = lo\n')))).not.toThrow();
  });

  it('says when a file named on the command line is missing', () => {
    expect(() => loadConfig('/nonexistent/netprof.ini', [], { fileRequired: true })).toThrow(/no such file/);
  });

  it('takes LATE_GRACE in seconds (0 = off) and refuses a SET_SIZE without room for RULES_THRESHOLD', () => {
    expect(loadConfig(file('[CONFIG]\nLATE_GRACE = 0\n')).lateGrace).toBe(0);
    expect(error('[CONFIG]\nLATE_GRACE = 30s\n')).toMatch(/LATE_GRACE = 30s: not a whole number of seconds/);
    expect(error('[CONFIG]\nLATE_GRACE = 4000\n')).toMatch(/between 0 and 3600/);
    expect(error('[CONFIG]\nRULES_THRESHOLD = 10000\nSET_SIZE = 20000\n')).toMatch(/SET_SIZE = 20000: must hold at least 2 × RULES_THRESHOLD \(10000\) \+ 1024/);
  });
});
