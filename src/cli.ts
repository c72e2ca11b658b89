#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { runDaemon, StartupError } from './daemon.js';
import type { Override } from './config/config.js';
import { addTools } from './tools/cli.js';
import { capYoungGeneration } from './util/young-generation.js';

/** V8's semi-space cap for the daemon (MB): see capYoungGeneration. 2 MB held 10,000 open
 * connections in 105 MB; under a burst of 50,000 it spent 2.9 s in GC against 1.3 s at V8's 16.
 * 4 is between. */
const SEMI_SPACE_MB = 4;

const semiSpace = (value: string): number => {
  const mb = Number(value);
  if (![1, 2, 4, 8, 16].includes(mb)) throw new InvalidArgumentError('expected 1, 2, 4, 8 or 16 (MB)');
  return mb;
};

const program = new Command();
program.name('netprof').description('Per-job, per-process, per-connection TCP accounting for batch schedulers');

const collect = (value: string, previous: Override[]): Override[] => {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('expected KEY=VALUE');
  return [...previous, { key: value.slice(0, eq).trim(), value: value.slice(eq + 1).trim(), origin: `--set ${value.slice(0, eq).trim()}` }];
};

program
  .command('daemon')
  .description('run the profiling daemon (as root)')
  .argument('[port]', 'HTTP port (overrides PORT in the config)')
  .option('-c, --config <file>', 'configuration file', 'config.ini')
  .option('-i, --interface <names>', 'interfaces to watch, comma-separated (INTERFACE)')
  .option('-e, --engine <engine>', 'nftables or iptables (ENGINE)')
  .option('-l, --listen <address>', 'API address (LISTEN)')
  .option('--log-dir <dir>', 'connection log directory (LOG_DIR)')
  .option('--log-format <format>', 'tsv or jsonl (LOG_FORMAT)')
  .option('-s, --set <KEY=VALUE>', 'set any config key; repeatable', collect, [])
  .option('--semi-space <MB>', "cap on V8's young-generation semi-spaces: 1, 2, 4, 8 or 16 (V8's own); smaller saves memory, costs scavenges", semiSpace, SEMI_SPACE_MB)
  .action(async (port: string | undefined, o: Record<string, unknown>, cmd: Command) => {
    capYoungGeneration(o.semiSpace as number);
    const overrides: Override[] = [];
    const flag = (key: string, value: unknown, name: string) => {
      if (typeof value === 'string') overrides.push({ key, value, origin: name });
    };
    flag('INTERFACE', o.interface, '--interface');
    flag('ENGINE', o.engine, '--engine');
    flag('LISTEN', o.listen, '--listen');
    flag('LOG_DIR', o.logDir, '--log-dir');
    flag('LOG_FORMAT', o.logFormat, '--log-format');
    overrides.push(...(o.set as Override[]));
    flag('PORT', port, 'PORT argument');
    try {
      await runDaemon({
        configFile: o.config as string,
        configGiven: cmd.getOptionValueSource('config') === 'cli',
        overrides,
      });
    } catch (e) {
      if (e instanceof StartupError) {
        process.stderr.write(`netprof: ${e.message}\n`);
        process.exit(e.exitCode);
      }
      throw e;
    }
  });

addTools(program);

program.parseAsync().catch((e: unknown) => {
  process.stderr.write(`netprof: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
