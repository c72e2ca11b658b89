import type { Registry, ProfiledProcess } from '../registry/registry.js';
import { readProcess } from '../registry/process-info.js';
import type { Lineage } from '../resolve/index.js';
import type { TrackerStats } from './tracker-stats.js';

/**
 * Who belongs to a job: a registered process (unless its pid now names another process) and,
 * with FOLLOW_CHILDREN (a lineage given), any descendant of one, which joins its ancestor's job.
 */
export class Membership {
  private readonly liveCache = new Map<number, { at: number; info: ReturnType<typeof readProcess> }>();

  constructor(
    private readonly registry: Registry,
    private readonly lineage: Pick<Lineage, 'rootOf' | 'lookup'> | undefined,
    private readonly stats: Pick<TrackerStats, 'ownerExitedFirst' | 'pidReused' | 'childrenAdded'>,
  ) {}

  /** The registered process, or — with FOLLOW_CHILDREN — a descendant of one, added to its job. */
  profiledProcess(pid: number): ProfiledProcess | undefined {
    const registry = this.registry;
    const known = registry.process(pid);
    if (known) {
      // The pid may have been reused since: only the registered process itself counts. One that
      // has already exited keeps its connections (it may connect and exit at once).
      const live = this.liveProcess(pid);
      if (!live) this.stats.ownerExitedFirst += 1;
      else if (live.startTicks !== known.startTicks && known.startTicks >= 0) {
        this.stats.pidReused += 1;
        return undefined;
      }
      return known;
    }
    const lineage = this.lineage;
    if (!lineage) return undefined;
    const root = lineage.rootOf(pid);
    const rootProc = root === undefined ? undefined : registry.process(root);
    if (!rootProc) return undefined;
    const rec = lineage.lookup(pid);
    const live = readProcess(pid);
    // A child that lived a few milliseconds is gone before /proc can be read: what the fork
    // event told is all there is, and it inherits its root's user.
    const info = live ?? { pid, ppid: rec?.parent ?? root!, uid: rootProc.uid, startTicks: rec?.startTicks ?? -1, startTime: NaN };
    const added = registry.add(rootProc.job, info, rec?.parent ?? root);
    this.stats.childrenAdded += 1;
    return added.process;
  }

  /** /proc's view of a pid, read at most once a second per pid: a registered process making
   * thousands of connections would otherwise cost two file reads each. */
  private liveProcess(pid: number): ReturnType<typeof readProcess> {
    const now = Date.now();
    const cached = this.liveCache.get(pid);
    if (cached && now - cached.at < 1_000) return cached.info;
    if (this.liveCache.size > 10_000) this.liveCache.clear();
    const info = readProcess(pid);
    this.liveCache.set(pid, { at: now, info });
    return info;
  }
}
