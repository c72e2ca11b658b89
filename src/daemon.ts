import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { checkAgainstHost, loadConfig, ConfigError, type Config, type Override } from './config/config.js';
import { ConnectionLog } from './log/connection-log.js';
import { Profiler } from './profiler/profiler.js';
import { createApiServer } from './api/server.js';
import { diag } from './util/diag.js';

export interface DaemonOptions {
  configFile: string;
  configGiven: boolean;
  overrides: Override[];
}

/** A start-up failure: one line for the operator, and the exit status. */
export class StartupError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

const CAP_NET_ADMIN = 12;
const CAP_NET_RAW = 13;

/** Root, or both capabilities the daemon needs (netfilter changes, packet capture). */
export function hasPrivileges(): boolean {
  if (process.getuid?.() === 0) return true;
  const m = /^CapEff:\s+([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (!m) return false;
  const eff = BigInt(`0x${m[1]}`);
  return ((eff >> BigInt(CAP_NET_ADMIN)) & 1n) === 1n && ((eff >> BigInt(CAP_NET_RAW)) & 1n) === 1n;
}

export async function runDaemon(opts: DaemonOptions): Promise<void> {
  if (!hasPrivileges()) {
    throw new StartupError('netprof daemon must run as root (or with CAP_NET_ADMIN and CAP_NET_RAW): it changes netfilter and captures packets', 77);
  }
  let config: Config;
  try {
    config = loadConfig(opts.configFile, opts.overrides, { fileRequired: opts.configGiven });
    checkAgainstHost(config);
  } catch (e) {
    if (e instanceof ConfigError) throw new StartupError(e.message, 78);
    throw e;
  }

  const log = new ConnectionLog({ dir: config.logDir, format: config.logFormat, maxBytes: config.maxBytes, backupCount: config.backupCount });
  try {
    log.open();
  } catch (e) {
    throw new StartupError(`LOG_DIR = ${config.logDir}: ${(e as Error).message}`, 73);
  }
  const profiler = new Profiler({ config, log });
  const server = createApiServer(profiler);
  await listen(server, config);

  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> =>
    (stopping ??= (async () => {
      diag.info('shutting down', { reason });
      server.close();
      server.closeIdleConnections();
      const logged = await profiler.stop();
      log.close();
      diag.info('stopped', { connections_logged: logged, log_buffered_lost: log.stats.buffered });
      process.exit(log.stats.buffered > 0 ? 1 : 0);
    })());
  profiler.setShutdownHandler((reason) => void stop(reason));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  diag.info('netprof daemon ready', {
    listen: `${config.listen}:${config.port}`,
    interfaces: config.interfaces,
    engine: config.engine,
    log: config.interfaces.map((i) => log.pathFor(i)),
  });
}

function listen(server: Server, config: Config): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      reject(new StartupError(`cannot listen on ${config.listen}:${config.port} (${config.origins.PORT}): ${e.code ?? e.message}`, 75));
    });
    server.listen(config.port, config.listen, () => resolve());
  });
}
