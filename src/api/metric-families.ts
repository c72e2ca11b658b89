import type { Family, Kind } from './exposition.js';

/** What GET /metrics shows: names, types and help as Prometheus, the rules and the dashboard in
 * deploy/prometheus/ know them. Labels stay bounded: `job_id` and `pid`, never a connection's
 * addresses or ports. */

const family = (type: Kind) => (name: string, help: string, labelled = false): Family => ({ name, type, help, labelled });
const gauge = family('gauge');
const counter = family('counter');

/** Every family, in the order they are written. */
export const F = {
  up: gauge('netprof_up', '1 while the daemon answers'),
  health: gauge('netprof_health', 'the daemon health: 1 for the current status', true),
  problems: gauge('netprof_health_problems', 'problems /v1/health reports (capture down, eBPF lost, log unwritable)'),
  uptime: gauge('netprof_uptime_seconds', 'seconds since the daemon started'),
  jobs: gauge('netprof_jobs', 'jobs profiled now'),
  processes: gauge('netprof_processes', 'processes profiled now'),
  tracked: gauge('netprof_connections_tracked', 'connections tracked now'),
  installed: gauge('netprof_counters_installed', 'connection counters installed in netfilter now'),
  events: counter('netprof_events_total', 'connection events seen by capture, by kind', true),
  opened: counter('netprof_connections_opened_total', 'connections of profiled processes opened'),
  closedAll: counter('netprof_connections_closed_total', 'connections of profiled processes logged, by why', true),
  unresolved: counter('netprof_connections_unresolved_total', 'connections no process could be found for'),
  notProfiled: counter('netprof_connections_not_profiled_total', 'connections of processes nobody registered'),
  uncounted: counter('netprof_connections_uncounted_total', 'connections logged without counts (no room, counter lost)'),
  noRoom: counter('netprof_connections_no_room_total', 'connections that found no room at RULES_THRESHOLD'),
  gcRuns: counter('netprof_gc_runs_total', 'garbage collections'),
  gcReclaimed: counter('netprof_gc_reclaimed_total', 'connections reclaimed by garbage collection'),
  engineErrors: counter('netprof_engine_errors_total', 'errors from the counter engine'),
  registrations: counter('netprof_registrations_total', 'process registrations accepted'),
  refused: counter('netprof_registrations_refused_total', 'process registrations refused'),
  frames: counter('netprof_capture_frames_total', 'frames read from capture', true),
  skipped: counter('netprof_capture_skipped_frames_total', 'frames read but not turned into events (undecodable, not local, ...)', true),
  dropped: counter('netprof_capture_kernel_dropped_total', 'packets tcpdump reports the kernel dropped', true),
  restarts: counter('netprof_capture_restarts_total', 'capture restarts', true),
  listening: gauge('netprof_capture_listening', '1 while capture on the interface runs', true),
  logWritten: counter('netprof_log_records_written_total', 'records written to the connection log'),
  logBuffered: gauge('netprof_log_buffered_records', 'records waiting to be written'),
  logOverflowed: counter('netprof_log_overflowed_total', 'records lost because the log buffer was full'),
  logErrors: counter('netprof_log_write_errors_total', 'failed writes to the connection log'),
  logLimit: gauge('netprof_log_buffer_limit_records', 'LOG_BUFFER: records the buffer holds before it overflows'),
  ebpf: gauge('netprof_ebpf_state', 'the eBPF tracer: 1 for its current state (live, off, starting, restarting, unavailable, stopped)', true),
  ebpfLost: counter('netprof_ebpf_lost_events_total', 'tracer events the kernel dropped (bpftrace read too slowly)'),
  ebpfRestarts: counter('netprof_ebpf_restarts_total', 'tracer restarts'),
  lateGrace: gauge('netprof_late_grace_seconds', 'LATE_GRACE: configured, and effective (lower while a flood of unprofiled connections fills the grace list)', true),
  unclaimed: gauge('netprof_unclaimed_connections', 'unprofiled connections whose counters the grace list keeps now'),
  releasedEarly: counter('netprof_unclaimed_released_early_total', 'unprofiled connections given up before LATE_GRACE was over, for want of room'),
  ownApi: counter('netprof_connections_own_api_total', "connections to or from the daemon's own API (never a job's)"),
  outOfScope: counter('netprof_connections_out_of_scope_total', 'connections found without a packet that cross no configured interface', true),
  repaired: counter('netprof_counters_repaired_total', 'times the counters were found removed behind the daemon (a ruleset flush) and reinstalled'),
  cpu: counter('netprof_daemon_cpu_seconds_total', 'CPU time of the daemon (part="daemon") and of its helpers nft, tcpdump, bpftrace (part="helpers")', true),
  rss: gauge('netprof_daemon_resident_memory_bytes', 'resident memory of the daemon and of its helpers', true),
  endedJobs: gauge('netprof_metrics_ended_jobs', 'ended jobs whose final totals are still shown (METRICS_GRACE)'),
  jobBytes: counter('netprof_job_bytes_total', 'bytes of the job, open connections live plus closed ones (in: received)', true),
  jobPackets: counter('netprof_job_packets_total', 'packets of the job, open connections live plus closed ones', true),
  jobOpened: counter('netprof_job_connections_opened_total', 'connections the job opened or accepted', true),
  jobClosed: counter('netprof_job_connections_closed_total', 'connections of the job logged', true),
  jobOpen: gauge('netprof_job_open_connections', 'connections of the job open now', true),
  jobProcesses: gauge('netprof_job_processes', 'processes of the job profiled now', true),
  jobEnded: gauge('netprof_job_ended_timestamp_seconds', 'when an ended job ended; its series go METRICS_GRACE later', true),
  procBytes: counter('netprof_process_bytes_total', 'bytes of the process (pid="other": the job\'s processes beyond METRICS_PROCESSES), open connections live plus closed ones', true),
  procPackets: counter('netprof_process_packets_total', 'packets of the process, open connections live plus closed ones', true),
  procOpen: gauge('netprof_process_open_connections', 'connections of the process open now', true),
  procClosed: counter('netprof_process_connections_closed_total', 'connections of the process logged', true),
};
