import type { Health, JobSummary } from '../profiler/control.js';
import { EXIT, UsageError, callJson, describe, jobPath, type Endpoint } from './client.js';
import { bytes, table } from './format.js';

/** Thin clients of the /v1 API: status, start, end, end-job, shutdown. */

const out = (s: string) => process.stdout.write(s);

export function parsePid(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 4_194_304) throw new UsageError(`"${text}" is not a pid`);
  return Number(text);
}

/** `netprof status`: health, counters and jobs. 0 healthy, 1 degraded or stopping. */
export async function status(e: Endpoint, o: { json?: boolean }): Promise<number> {
  const health = await callJson<Health>(e, 'GET', '/v1/health'); // 503 while stopping: refused, exit 1
  const stats = await callJson<Record<string, unknown>>(e, 'GET', '/v1/stats');
  const { jobs } = await callJson<{ jobs: JobSummary[] }>(e, 'GET', '/v1/jobs');
  if (o.json) {
    out(JSON.stringify({ daemon: describe(e), health, stats, jobs }, null, 2) + '\n');
  } else {
    const conns = (stats.connections ?? {}) as { opened?: number; unresolved?: number };
    const log = (stats.log ?? {}) as { written?: number; overflowed?: number };
    out(
      `daemon      ${describe(e)}: ${health.status}, up ${health.uptime_s} s, engine ${health.engine}, interfaces ${health.interfaces.join(',')}\n` +
        `now         ${jobs.length} jobs, ${stats.processes ?? 0} processes, ${stats.connections_tracked ?? 0} connections open, ${stats.counters_installed ?? 0} counters installed\n` +
        `since start ${conns.opened ?? 0} connections opened, ${conns.unresolved ?? 0} unresolved, ${log.written ?? 0} records logged, ${log.overflowed ?? 0} lost\n`,
    );
    for (const p of health.problems) out(`problem     ${p}\n`);
    if (jobs.length) {
      out('\n');
      out(
        table(
          ['JOB', 'PROCS', 'OPEN', 'CLOSED', 'IN', 'OUT', 'SINCE'],
          jobs.map((j) => [j.job, String(j.processes), String(j.open_connections), String(j.closed_connections), bytes(j.bytes_in), bytes(j.bytes_out), j.registered_at]),
          [false, true, true, true, true, true],
        ),
      );
    }
  }
  if (health.status !== 'ok') {
    process.stderr.write(`netprof: the daemon is ${health.status}${health.problems.length ? `: ${health.problems.join('; ')}` : ''}\n`);
    return EXIT.REFUSED;
  }
  return EXIT.OK;
}

interface Registered {
  job: string;
  pid: number;
  owner: string;
  uid: number;
  birthdate: number;
  already_registered: boolean;
}

/** Registers a pid for a job; owner and birthdate, when given, must match the live process. */
export async function register(e: Endpoint, job: string, pid: number, claim: { owner?: string; birthdate?: string } = {}): Promise<Registered> {
  const body: Record<string, unknown> = { pid };
  if (claim.owner !== undefined) body.owner = claim.owner;
  if (claim.birthdate !== undefined) {
    if (!Number.isFinite(Number(claim.birthdate))) throw new UsageError(`--birthdate ${claim.birthdate}: expected epoch seconds`);
    body.birthdate = Number(claim.birthdate);
  }
  return callJson<Registered>(e, 'POST', `${jobPath(job)}/processes`, body);
}

export async function start(e: Endpoint, job: string, pidText: string, o: { owner?: string; birthdate?: string; json?: boolean }): Promise<number> {
  const r = await register(e, job, parsePid(pidText), o);
  out(o.json ? JSON.stringify(r) + '\n' : `${r.already_registered ? 'already profiled' : 'profiling'}: job ${r.job}, pid ${r.pid} (${r.owner}, started ${r.birthdate})\n`);
  return EXIT.OK;
}

export async function end(e: Endpoint, job: string, pidText: string, o: { json?: boolean }): Promise<number> {
  const r = await callJson<{ job: string; pid: number; connections_logged: number }>(e, 'DELETE', `${jobPath(job)}/processes/${parsePid(pidText)}`);
  out(o.json ? JSON.stringify(r) + '\n' : `ended: job ${r.job}, pid ${r.pid}, ${r.connections_logged} open connections logged\n`);
  return EXIT.OK;
}

export async function endJob(e: Endpoint, job: string, o: { json?: boolean }): Promise<number> {
  const r = await callJson<{ job: string; processes_ended: number; connections_logged: number }>(e, 'DELETE', jobPath(job));
  out(o.json ? JSON.stringify(r) + '\n' : `ended: job ${r.job}, ${r.processes_ended} processes, ${r.connections_logged} open connections logged\n`);
  return EXIT.OK;
}

export async function shutdown(e: Endpoint): Promise<number> {
  await callJson(e, 'POST', '/v1/shutdown');
  out('the daemon is shutting down\n');
  return EXIT.OK;
}
