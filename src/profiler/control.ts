import type { ProcessClaim, ProfiledProcess } from '../registry/registry.js';
import type { ConnectionRecord } from '../log/record.js';

/** What the HTTP APIs may ask of the daemon. The profiler implements it; the API modules only
 * translate requests and answers. */
export interface DaemonControl {
  register(job: string, claim: ProcessClaim): Promise<{ process: ProfiledProcess; added: boolean }>;
  endProcess(job: string, claim: ProcessClaim): Promise<EndResult>;
  endJob(job: string): Promise<EndResult>;
  /** Counts a link (a VM's tap a hypervisor handed over) as the registered process's. */
  giveLink(job: string, pid: number, device: string): Promise<{ link: string; bridge: string | null; logged_as: string }>;
  /** Begins an orderly shutdown (log everything, remove what was installed, exit 0). Called
   * after the answer has been sent. */
  shutdown(reason: string): void;
  jobs(): JobSummary[];
  /** One job with live counters read from the kernel now: its own connections, or (readAll,
   * for a scrape that asks for every job in turn) one shared read of all of them. */
  job(id: string, opts?: { readAll?: boolean }): Promise<JobDetail | undefined>;
  /** One shared read of every open connection's counters from the kernel (waited for at most
   * a short while when many are open; eachTally() then gives the last figures). */
  refreshCounts(): Promise<void>;
  /** Every job's open connections' counts per process, from the last read, plus its closed
   * connections' totals: what a metrics scrape needs, in one pass instead of a view per job.
   * Synchronous, so that a caller's own record totals (observe()) are of the same moment.
   * Handed over one job at a time, never as one list: at 10,000 jobs a list of them all was
   * most of what a scrape's garbage collections had to copy. `only`: just these jobs (those of
   * them profiled). */
  eachTally(visit: (t: JobTallies) => void, only?: ReadonlySet<string>): void;
  health(): Health;
  stats(): Record<string, unknown>;
  /** Tells the observer of every connection record as it is logged, of every job started, and
   * of every job ended (after its records). For GET /metrics: totals of closed connections per process, and the
   * final totals of ended jobs. Returns a function that stops the observation. */
  observe(observer: DaemonObserver): () => void;
}

export interface DaemonObserver {
  record?(r: ConnectionRecord): void;
  /** A job's first process was registered. */
  jobStarted?(job: string): void;
  jobEnded?(job: string): void;
}

export interface EndResult {
  processes: number;
  connectionsLogged: number;
}

export interface Traffic {
  bytes_in: number;
  bytes_out: number;
  packets_in: number;
  packets_out: number;
}

export interface JobSummary extends Traffic {
  job: string;
  registered_at: string;
  processes: number;
  open_connections: number;
  closed_connections: number;
}

export interface ConnectionView extends Traffic {
  interface: string;
  local_addr: string;
  local_port: number;
  remote_addr: string;
  remote_port: number;
  opened_by: string;
  since: string | null;
  state: string;
  counted: boolean;
  partial: boolean;
  /** It opened before its process was registered. */
  late: boolean;
  attribution: string;
}

export interface ProcessView extends Traffic {
  pid: number;
  owner: string;
  uid: number;
  birthdate: number;
  parent: number | null;
  alive: boolean;
  connections: ConnectionView[];
}

export interface JobDetail extends JobSummary {
  /** When the open connections' counts were read from the kernel (null: not yet). */
  counts_read_at: string | null;
  process_list: ProcessView[];
}

export interface ProcessTally extends Traffic {
  pid: number;
  open_connections: number;
}

/** A job's totals (open connections live plus closed ones), and each registered process's
 * open connections. */
export interface JobTallies extends Traffic {
  job: string;
  open_connections: number;
  closed_connections: number;
  processes: ProcessTally[];
}

export interface Health {
  status: 'ok' | 'degraded' | 'stopping';
  uptime_s: number;
  engine: string;
  interfaces: string[];
  /** LATE_GRACE as configured, and the age at which unclaimed counters were last given up early
   * (null: never in the last minute). */
  late_grace: { configured_s: number; shortened_to_s: number | null; unclaimed_held: number; unclaimed_max: number; released_early: number };
  problems: string[];
}
