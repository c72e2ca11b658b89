import { readProcess, ownerUid, userName, type ProcessInfo } from './process-info.js';

/** A refusal the caller caused; `status` is the HTTP status the API answers with. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The identity a scheduler gives for a process. owner and birthdate may be left out by new
 * callers; they are then read from the live process. */
export interface ProcessClaim {
  pid: number;
  owner?: string;
  birthdate?: number;
}

export interface ProfiledProcess {
  pid: number;
  job: string;
  uid: number;
  user: string;
  /** Epoch seconds (psutil's create_time()). */
  startTime: number;
  startTicks: number;
  registeredAt: number;
  /** Set for a child that FOLLOW_CHILDREN added; undefined for a process the scheduler registered. */
  parent?: number;
  /** When the registry first noticed the process had exited. */
  exitedAt?: number;
}

export interface Job {
  id: string;
  registeredAt: number;
  processes: Map<number, ProfiledProcess>;
  /** When its last process ended; undefined while it has processes. */
  emptySince?: number;
}

/** Job ids are the scheduler's free text; refuse only what would corrupt a log line or a rule
 * comment, where the id is stored (nftables' comments hold 128 bytes). */
export const JOB_ID_MAX_BYTES = 100;

export function checkJobId(id: string | undefined): string {
  if (id === undefined || id === '') throw new RequestError(400, 'jobid is missing');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(id)) throw new RequestError(400, 'jobid holds a tab, newline or other control character');
  if (Buffer.byteLength(id) > JOB_ID_MAX_BYTES) throw new RequestError(400, `jobid is longer than ${JOB_ID_MAX_BYTES} bytes`);
  return id;
}

export const PID_MAX = 4194304; // the kernel's upper bound (pid_max limit on 64-bit)

export function checkPid(text: string | undefined): number {
  if (text === undefined || text === '') throw new RequestError(400, 'pid is missing');
  if (!/^\d{1,7}$/.test(text) || Number(text) < 1 || Number(text) > PID_MAX) {
    throw new RequestError(400, `pid "${clip(text)}" is not a process id (1 to ${PID_MAX})`);
  }
  return Number(text);
}

export function checkBirthdate(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^\d{1,12}(\.\d{1,9})?$/.test(text)) throw new RequestError(400, `birthdate "${clip(text)}" is not epoch seconds`);
  return Number(text);
}

export function checkOwner(text: string | undefined): string | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}\$?$/.test(text)) throw new RequestError(400, `owner "${clip(text)}" is not a user name or uid`);
  return text;
}

export function clip(s: string, n = 40): string {
  // eslint-disable-next-line no-control-regex
  const safe = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return safe.length > n ? `${safe.slice(0, n)}…` : safe;
}

/** Birthdates are compared as numbers to within this many seconds (the original compared strings). */
const BIRTHDATE_TOLERANCE_S = 1;

/**
 * The jobs and processes being profiled. Plain data plus the identity checks against /proc; it
 * knows nothing of connections.
 */
export class Registry {
  private readonly jobsById = new Map<string, Job>();
  private readonly byPid = new Map<number, ProfiledProcess>();

  /** Checks a claim against the live process; the reason names what differs. */
  verify(claim: ProcessClaim): ProcessInfo {
    const live = readProcess(claim.pid);
    if (!live) throw new RequestError(422, `process ${claim.pid} does not exist`);
    if (claim.owner !== undefined) {
      const uid = ownerUid(claim.owner);
      if (uid === undefined) throw new RequestError(422, `owner "${claim.owner}" is not a known user`);
      if (uid !== live.uid) throw new RequestError(422, `process ${claim.pid} belongs to ${userName(live.uid)} (uid ${live.uid}), not ${claim.owner}`);
    }
    if (claim.birthdate !== undefined && Math.abs(claim.birthdate - live.startTime) > BIRTHDATE_TOLERANCE_S) {
      throw new RequestError(422, `process ${claim.pid} started at ${live.startTime.toFixed(2)}, not ${claim.birthdate} (pid reused?)`);
    }
    return live;
  }

  /** Registers a verified process. Registering the same process again is a no-op. */
  add(jobId: string, info: ProcessInfo, parent?: number): { process: ProfiledProcess; added: boolean } {
    const existing = this.byPid.get(info.pid);
    if (existing) {
      if (existing.startTicks !== info.startTicks) {
        throw new RequestError(409, `pid ${info.pid} is still registered for an earlier process of job ${existing.job}; end it first`);
      }
      if (existing.job !== jobId) throw new RequestError(409, `process ${info.pid} is already profiled for job ${existing.job}`);
      return { process: existing, added: false };
    }
    let job = this.jobsById.get(jobId);
    if (!job) {
      job = { id: jobId, registeredAt: Date.now(), processes: new Map() };
      this.jobsById.set(jobId, job);
    }
    const proc: ProfiledProcess = {
      pid: info.pid,
      job: jobId,
      uid: info.uid,
      user: userName(info.uid),
      startTime: info.startTime,
      startTicks: info.startTicks,
      registeredAt: Date.now(),
      parent,
    };
    job.processes.set(proc.pid, proc);
    job.emptySince = undefined;
    this.byPid.set(proc.pid, proc);
    return { process: proc, added: true };
  }

  /** The registered process a claim names — matched against what was registered, so a process
   * that has already exited can still be ended. */
  find(jobId: string, claim: ProcessClaim): ProfiledProcess {
    const job = this.jobsById.get(jobId);
    if (!job) throw new RequestError(404, `job ${jobId} is not profiled`);
    const proc = job.processes.get(claim.pid);
    if (!proc) throw new RequestError(404, `process ${claim.pid} is not profiled in job ${jobId}`);
    if (claim.owner !== undefined && ownerUid(claim.owner) !== proc.uid && claim.owner !== proc.user) {
      throw new RequestError(422, `process ${claim.pid} of job ${jobId} was registered for ${proc.user}, not ${claim.owner}`);
    }
    if (claim.birthdate !== undefined && Math.abs(claim.birthdate - proc.startTime) > BIRTHDATE_TOLERANCE_S) {
      throw new RequestError(422, `process ${claim.pid} of job ${jobId} was registered with start time ${proc.startTime.toFixed(2)}, not ${claim.birthdate}`);
    }
    return proc;
  }

  remove(proc: ProfiledProcess, now = Date.now()): void {
    this.byPid.delete(proc.pid);
    const job = this.jobsById.get(proc.job);
    job?.processes.delete(proc.pid);
    if (job) job.emptySince = job.processes.size === 0 ? now : undefined;
  }

  /** Forgets what nobody ended: processes that exited long ago, then jobs left empty long ago.
   * Until then EndProcessProfile and EndJobProfile keep working for them. */
  prune(olderThanMs: number, now = Date.now()): string[] {
    for (const p of this.processes()) if (p.exitedAt !== undefined && now - p.exitedAt >= olderThanMs) this.remove(p, now);
    const pruned: string[] = [];
    for (const job of this.jobsById.values()) {
      if (job.emptySince !== undefined && now - job.emptySince >= olderThanMs) {
        this.jobsById.delete(job.id);
        pruned.push(job.id);
      }
    }
    return pruned;
  }

  /** Removes a job and returns its processes. An empty job is simply forgotten. */
  removeJob(jobId: string): ProfiledProcess[] {
    const job = this.jobsById.get(jobId);
    if (!job) throw new RequestError(404, `job ${jobId} is not profiled`);
    const procs = [...job.processes.values()];
    for (const p of procs) this.byPid.delete(p.pid);
    this.jobsById.delete(jobId);
    return procs;
  }

  process(pid: number): ProfiledProcess | undefined {
    return this.byPid.get(pid);
  }

  job(id: string): Job | undefined {
    return this.jobsById.get(id);
  }

  jobs(): Job[] {
    return [...this.jobsById.values()];
  }

  processes(): ProfiledProcess[] {
    return [...this.byPid.values()];
  }

  /** Registered processes that have exited, or whose pid now belongs to another process; each is
   * marked with when that was first noticed. */
  dead(now = Date.now()): ProfiledProcess[] {
    const dead = this.processes().filter((p) => p.exitedAt !== undefined || !isAlive(p));
    for (const p of dead) p.exitedAt ??= now;
    return dead;
  }
}

export function isAlive(p: Pick<ProfiledProcess, 'pid' | 'startTicks'>): boolean {
  const live = readProcess(p.pid);
  return live !== undefined && live.startTicks === p.startTicks;
}

/** When each process's liveness was last read, and what it was (isAliveRecently). */
const lastAlive = new WeakMap<Pick<ProfiledProcess, 'pid' | 'startTicks'>, { at: number; alive: boolean }>();

/**
 * isAlive() for views: a reading up to maxAgeMs old serves. A job view or a metrics scrape
 * shows every process's liveness, and each reading is a read of /proc/PID/stat: at 10,000
 * processes a scrape made 10,000 of them. A process known to have exited stays so.
 */
export function isAliveRecently(p: Pick<ProfiledProcess, 'pid' | 'startTicks' | 'exitedAt'>, maxAgeMs = 1_000, now = Date.now()): boolean {
  if (p.exitedAt !== undefined) return false;
  const last = lastAlive.get(p);
  if (last && now - last.at < maxAgeMs) return last.alive;
  const alive = isAlive(p);
  lastAlive.set(p, { at: now, alive });
  return alive;
}
