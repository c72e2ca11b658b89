import type { LinkSites } from './link-sites.js';
import type { ProfilerParts } from './profiler.js';
import type { UnclaimedStats } from './unclaimed.js';

/** GET /v1/health's parts that read the profiler's pieces (profiler.ts stays a coordinator). */

export interface LateGrace {
  configured_s: number;
  shortened_to_s: number | null;
  unclaimed_held: number;
  unclaimed_max: number;
  released_early: number;
}

/** LATE_GRACE as configured and as it is now: under a flood of unprofiled connections the
 * grace list gives up its oldest counters early, and says so. */
export function lateGraceOf(parts: Pick<ProfilerParts, 'config' | 'maxUnclaimed'>, u: UnclaimedStats): LateGrace {
  return {
    configured_s: parts.config.lateGrace,
    shortened_to_s: u.shortestGraceMs === undefined ? null : Math.round(u.shortestGraceMs / 100) / 10,
    unclaimed_held: u.held,
    unclaimed_max: parts.maxUnclaimed ?? 100_000,
    released_early: u.releasedEarly,
  };
}

/** What is wrong now, one line each (empty: healthy). */
export function healthProblems(parts: ProfilerParts, links: LinkSites | undefined, grace: LateGrace): string[] {
  const problems: string[] = [];
  if (parts.log.stats.lastError) problems.push(`connection log: ${parts.log.stats.lastError}`);
  if (parts.log.stats.overflowed) problems.push(`connection log: ${parts.log.stats.overflowed} records lost while it could not be written`);
  if (parts.log.stats.unwritable) problems.push(`connection log: ${parts.log.stats.unwritable} records could not be serialised (a bug: see the diagnostics)`);
  for (const i of parts.capture?.stats() ?? []) if (!i.listening) problems.push(`capture on ${i.iface} is down: ${i.lastError ?? 'restarting'}`);
  problems.push(...(links?.problems() ?? []));
  if (grace.shortened_to_s !== null) {
    problems.push(`LATE_GRACE shortened to ${grace.shortened_to_s} s: ${grace.unclaimed_held} unprofiled connections' counters kept, the most there is room for (${grace.unclaimed_max})`);
  }
  const tracer = parts.resolve?.tracer.status;
  if (tracer && tracer.state !== 'live' && tracer.state !== 'off') problems.push(`eBPF ${tracer.state}${tracer.reason ? `: ${tracer.reason}` : ''}`);
  return problems;
}
