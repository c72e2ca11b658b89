import type { EndResult } from './control.js';
import { RequestError } from '../registry/registry.js';

/**
 * A job's end against registrations into it. A registration accepted while its job is being
 * ended would be dropped with the job, unlogged: it is refused (409). One still claiming what
 * its process has open when the end begins is waited for, so that what it claims is ended too.
 * A second end of the same job (a caller's retry of a big job's end) gets the first's result.
 */
export class JobEnds {
  private readonly ending = new Map<string, Promise<EndResult>>();
  private readonly adopting = new Map<string, Set<Promise<void>>>();

  refuseIfEnding(job: string): void {
    if (this.ending.has(job)) throw new RequestError(409, `job ${job} is being ended; register its processes after that, or under another job`);
  }

  /** A registration's claiming, which the job's end waits for. */
  async claiming(job: string, adoption: Promise<void>): Promise<void> {
    const all = this.adopting.get(job) ?? new Set<Promise<void>>();
    this.adopting.set(job, all.add(adoption));
    try {
      await adoption;
    } finally {
      all.delete(adoption);
      if (!all.size) this.adopting.delete(job);
    }
  }

  /** Runs the job's end once at a time; `run` starts after the registrations under way. */
  end(job: string, run: () => Promise<EndResult>): Promise<EndResult> {
    const under = this.ending.get(job);
    if (under) return under;
    const end = Promise.allSettled(this.adopting.get(job) ?? [])
      .then(run)
      .finally(() => this.ending.delete(job));
    this.ending.set(job, end);
    return end;
  }
}
