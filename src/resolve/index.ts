/** The resolve module's public face: what the profiler and the daemon import. */
import { Lineage, type LineageOptions } from './lineage.js';
import { Resolver, type ResolverOptions } from './resolver.js';
import { Tracer, type TracerOptions, type TracerStatus } from './tracer.js';

export { Tracer, ensureTracefs, type TracerOptions, type TracerState, type TracerStatus, type TracerStats } from './tracer.js';
export { Lineage, type LineageOptions, type ProcessRecord } from './lineage.js';
export {
  Resolver,
  type Attribution,
  type AttributionSource,
  type EventSource,
  type ResolveOptions,
  type ResolverOptions,
  type ResolverStats,
  type UnresolvedCode,
} from './resolver.js';
export type { TraceEvent, SocketEvent, ForkEvent, ExitEvent } from './events.js';
export { readStat, parseStat, childrenOf, descendantsOf, readTcpTables, parseTcpTable, TCP_STATE, type ProcStat, type TcpRow } from './procfs.js';

export interface ResolveStack {
  tracer: Tracer;
  lineage: Lineage;
  resolver: Resolver;
  /** Why eBPF is not used, when it is not (off by config, or unavailable). */
  tracerStatus: TracerStatus;
  stop(): Promise<void>;
}

/**
 * Wires the three together as the daemon wants them: the tracer (unless EBPF = off) feeding both
 * lineage and resolver. An unavailable tracer is not an error: resolution falls back to /proc,
 * and tracerStatus.reason says why.
 */
export async function startResolve(
  options: { ebpf: boolean; tracer?: Omit<TracerOptions, 'enabled'>; lineage?: LineageOptions } & Omit<ResolverOptions, 'lineage' | 'tracer'>,
): Promise<ResolveStack> {
  const { ebpf, tracer: tracerOptions, lineage: lineageOptions, ...resolverOptions } = options;
  const tracer = new Tracer({ ...tracerOptions, enabled: ebpf });
  const lineage = new Lineage(lineageOptions);
  const detach = lineage.attach(tracer);
  lineage.followForkEvents(() => tracer.status.state === 'live');
  const resolver = await Resolver.create({ ...resolverOptions, lineage, tracer });
  const tracerStatus = await tracer.start();
  return {
    tracer,
    lineage,
    resolver,
    tracerStatus,
    async stop() {
      resolver.close();
      detach();
      await tracer.stop();
    },
  };
}
