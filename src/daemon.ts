import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { connect, createServer } from 'node:net';
import { dirname } from 'node:path';
import { checkAgainstHost, loadConfig, ConfigError, type Config, type Override } from './config/config.js';
import { ConnectionLog } from './log/connection-log.js';
import { Profiler } from './profiler/profiler.js';
import { createApiServer } from './api/server.js';
import { metricsFor } from './api/metrics.js';
import { diag } from './util/diag.js';
import { createCounterEngine, type CounterEngine } from './counters/index.js';
import { Capture, LocalAddresses } from './capture/index.js';
import { startResolve, type ResolveStack } from './resolve/index.js';
import { Scope } from './profiler/scope.js';
import { maxUnclaimed } from './profiler/room.js';
import { RouteTable } from './resolve/routes.js';
import { claimNetworkNamespace } from './util/netns-claim.js';
import { harvestLinkTables, linkOpener } from './daemon-links.js';

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

  const log = new ConnectionLog({ dir: config.logDir, format: config.logFormat, maxBytes: config.maxBytes, backupCount: config.backupCount, bufferLimit: config.logBuffer });
  try {
    log.open();
  } catch (e) {
    throw new StartupError(`LOG_DIR = ${config.logDir}: ${(e as Error).message}`, 73);
  }
  // Before the kernel is touched: a second daemon started by mistake must fail here, not after
  // harvesting (and then removing) the first one's live counters.
  await checkListenable(config);
  const claim = claimNetworkNamespace();
  if ('heldBy' in claim) throw new StartupError(`another netprof daemon (pid ${claim.heldBy}) runs in this network namespace (${claim.path}); one per namespace`, 75);
  process.once('exit', () => claim.release());
  let parts: Parts;
  try {
    parts = await startParts(config);
  } catch (e) {
    claim.release();
    throw e;
  }
  const routes = new RouteTable();
  routes.start();
  const scope = new Scope({
    configured: config.interfaces,
    isLocal: (a) => parts.local.has(a),
    deviceFor: (k) => routes.deviceFor(k),
    ...(config.listen === 'none' ? {} : { api: { addr: config.listen, port: config.port } }),
  });
  const links = config.engine === 'nftables' ? linkOpener({ config, tracer: parts.resolve.tracer, lineage: parts.resolve.lineage }) : undefined;
  const profiler = new Profiler({ config, log, ...parts, scope, maxUnclaimed: maxUnclaimed(config.rulesThreshold, config.setSize), ...(links ? { links } : {}) });
  // /metrics observes from before the harvested records are logged (it keeps them out of the
  // jobs' series), with the configured bounds of its series; the listeners share it.
  metricsFor(profiler, { graceMs: config.metricsGrace * 1000, processLimit: config.metricsProcesses, logBufferLimit: config.logBuffer });
  await profiler.start(parts.recovered);
  let api: Listeners;
  try {
    api = await listen(profiler, config);
  } catch (e) {
    await stopParts(parts);
    throw e;
  }

  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> =>
    (stopping ??= (async () => {
      diag.info('shutting down', { reason });
      api.close();
      await parts.capture.stop();
      const logged = await profiler.stop();
      await stopParts(parts);
      routes.stop();
      log.close();
      diag.info('stopped', { connections_logged: logged, log_records_unwritten: log.stats.buffered });
      process.exit(log.stats.buffered > 0 ? 1 : 0);
    })());
  profiler.setShutdownHandler((reason) => void stop(reason));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  diag.info('netprof daemon ready', {
    listen: config.listen === 'none' ? 'none' : `${config.listen}:${config.port}`,
    ...(config.socket ? { socket: config.socket } : {}),
    token: config.token ? 'required for changes' : 'none',
    interfaces: config.interfaces,
    engine: config.engine,
    ebpf: parts.resolve.tracerStatus.state,
    ...(parts.resolve.tracerStatus.reason ? { ebpf_reason: parts.resolve.tracerStatus.reason } : {}),
    log: config.interfaces.map((i) => log.pathFor(i)),
  });
}

interface Parts {
  engine: CounterEngine;
  resolve: ResolveStack;
  capture: Capture;
  local: LocalAddresses;
  recovered: Awaited<ReturnType<CounterEngine['start']>>;
}

/** Counters first (harvesting a crashed run), then attribution, then capture: by the time a SYN
 * is seen, everything that handles it is live. */
async function startParts(config: Config): Promise<Parts> {
  const engine = createCounterEngine(config.engine, {
    capacity: config.rulesThreshold,
    setSize: config.setSize,
    elements: config.elements,
    lateGrace: config.lateGrace,
    interfaces: config.interfaces.includes('any') ? undefined : config.interfaces,
  });
  let recovered;
  try {
    recovered = await engine.start();
    if (config.engine === 'nftables') recovered.push(...(await harvestLinkTables()));
  } catch (e) {
    throw new StartupError(`ENGINE = ${config.engine}: cannot install counters: ${(e as Error).message}`, 71);
  }
  if (recovered.length) diag.warn('harvested counters left by an earlier run', { connections: recovered.length });
  // Forks are remembered as long as a registration may claim the connections of a child that
  // connected and exited before its parent was registered.
  const lineage = { recentForkMs: Math.max(10_000, config.lateGrace * 1000), exitedGraceMs: Math.max(60_000, config.lateGrace * 2000) };
  const resolve = await startResolve({ ebpf: config.ebpf !== 'off', lineage, tracer: { log: (level, msg, fields) => diag[level](msg, fields) } });
  if (resolve.tracerStatus.state !== 'live') {
    diag.warn('eBPF attribution unavailable: using /proc only', { state: resolve.tracerStatus.state, reason: resolve.tracerStatus.reason });
  }
  const local = LocalAddresses.fromSystem();
  // Addresses come and go (DHCP, IPv6 temporary addresses): which end is local must follow.
  setInterval(() => local.refreshFromSystem(), 5_000).unref();
  const capture = new Capture({ interfaces: config.interfaces, local });
  capture.on('warning', (w) => diag.warn('capture', { warning: w }));
  capture.on('down', (d) => diag.error('capture stopped; restarting', { iface: d.iface, reason: d.reason }));
  capture.on('gap', (g) => diag.info('capture restarted', { iface: g.iface, gap_ms: g.end - g.start }));
  try {
    await capture.start();
  } catch (e) {
    await resolve.stop();
    await engine.stop();
    throw new StartupError(`INTERFACE = ${config.interfaces.join(',')}: cannot capture: ${(e as Error).message}`, 71);
  }
  return { engine, resolve, capture, local, recovered };
}

async function stopParts(parts: Parts): Promise<void> {
  await parts.capture.stop();
  await parts.resolve.stop();
  await parts.engine.stop().catch((e: Error) => diag.error('could not remove the counters', { error: e.message }));
}

interface Listeners {
  /** Stops accepting, closes idle keep-alive connections, removes the socket file. */
  close(): void;
}

/**
 * The API's listeners: TCP on LISTEN:PORT (unless LISTEN = none) and the Unix socket SOCKET, both
 * served by the same handler. The socket is created with mode SOCKET_MODE and group SOCKET_GROUP
 * (never wider in between: the umask is 0177 while it is bound), a stale socket file left by a
 * killed run is replaced, a live one (another daemon) or anything that is not a socket is not,
 * and the file is removed at exit.
 */
async function listen(control: Profiler, config: Config): Promise<Listeners> {
  const servers: Server[] = [];
  const closeAll = (): void => {
    for (const s of servers) {
      s.close();
      s.closeIdleConnections();
    }
  };
  try {
    if (config.listen !== 'none') {
      const tcp = createApiServer(control, { token: config.token });
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', (e: NodeJS.ErrnoException) => {
          reject(new StartupError(`cannot listen on ${config.listen}:${config.port} (${config.origins.PORT}): ${e.code ?? e.message}`, 75));
        });
        tcp.listen(config.port, config.listen, () => resolve());
      });
      servers.push(tcp);
    }
    if (config.socket) servers.push(await listenUnix(control, config, config.socket));
  } catch (e) {
    closeAll();
    throw e;
  }
  return { close: closeAll };
}

async function listenUnix(control: Profiler, config: Config, path: string): Promise<Server> {
  const where = `SOCKET = ${path} (${config.origins.SOCKET})`;
  const gid = config.socketGroup === undefined ? undefined : groupId(config.socketGroup, `SOCKET_GROUP = ${config.socketGroup} (${config.origins.SOCKET_GROUP})`);
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  await removeStaleSocket(path, where);
  const server = createApiServer(control, { token: config.token, unixSocket: true });
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new StartupError(`cannot listen on ${where}: ${e.code ?? e.message}`, 75)));
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(umask);
  }
  try {
    if (gid !== undefined) chownSync(path, 0, gid);
    chmodSync(path, config.socketMode);
  } catch (e) {
    server.close();
    throw new StartupError(`cannot set the owner or mode of ${where}: ${(e as Error).message}`, 75);
  }
  const ino = statSync(path).ino;
  // server.close() unlinks the file; process.exit() (shutdown, a fatal error) does not.
  process.once('exit', () => {
    try {
      if (statSync(path).ino === ino) unlinkSync(path);
    } catch {
      /* already gone */
    }
  });
  return server;
}

/** Fails as listen() would if the port is taken or the socket is served by a live process. */
async function checkListenable(config: Config): Promise<void> {
  if (config.socket) await removeStaleSocket(config.socket, `SOCKET = ${config.socket} (${config.origins.SOCKET})`);
  if (config.listen === 'none') return;
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (e: NodeJS.ErrnoException) => reject(new StartupError(`cannot listen on ${config.listen}:${config.port} (${config.origins.PORT}): ${e.code ?? e.message}`, 75)));
    probe.listen(config.port, config.listen, () => probe.close(() => resolve()));
  });
}

/** Removes a socket file nobody listens on; refuses a live one or a file that is not a socket. */
async function removeStaleSocket(path: string, where: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new StartupError(`cannot listen on ${where}: the path exists and is not a socket; not removing it`, 78);
  const live = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new StartupError(`cannot listen on ${where}: another process (another netprof daemon?) is serving it`, 75);
  unlinkSync(path);
  diag.warn('removed a stale API socket left by an earlier run', { socket: path });
}

/** A group name (from /etc/group) or a numeric gid. */
function groupId(group: string, where: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    /* no /etc/group: only numeric gids */
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new StartupError(`${where}: no such group`, 78);
}
