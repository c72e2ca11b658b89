import type { JobTallies, Traffic } from '../profiler/control.js';
import { escapeLabel, formatValue, type ExpositionWriter, type Family } from './exposition.js';
import { F } from './metric-families.js';

/**
 * The job-wide and per-process series of /metrics, kept as encoded text between scrapes. At
 * 10,000 jobs nearly all are idle and their figures never move, yet writing and encoding their
 * 140,000 lines anew was most of a scrape (and most of its garbage). Jobs are kept in blocks of
 * up to JOBS_PER_BLOCK, each holding its bytes per family; a scrape compares every job's figures
 * with the last scrape's and renders again only the blocks where a job's figures changed, a job
 * came or a job went. The comparison is of the figures themselves, so a block can never be
 * stale: there is no mark for the core to forget to set.
 *
 * Within a family, jobs appear in the order first seen (an ended job keeps its place); the order
 * of series carries no meaning in the exposition format.
 */

export interface Tally extends Traffic {
  connections: number;
}

/** A job's figures as a scrape shows them (a live job's or an ended one's). */
export interface JobRow {
  /** `job_id="…"`, escaped. */
  labels: string;
  t: Tally; // connections: the closed ones
  open: number;
  processes: number;
  endedAt?: number;
  procs: { labels: string; t: Tally; open: number }[];
}

/** Lines of one block and family, before they are encoded. */
class Lines {
  text = '';
  series = 0;

  sample(name: string, labels: string, value: number): void {
    this.text += `${name}{${labels}} ${formatValue(value)}\n`;
    this.series += 1;
  }
}

function traffic(out: Lines, name: string, labels: string, inbound: number, outbound: number): void {
  out.sample(name, `${labels},direction="in"`, inbound);
  out.sample(name, `${labels},direction="out"`, outbound);
}

/** The per-job families, and how one job's series of each are written. */
export const PER_JOB = new Map<Family, (out: Lines, r: JobRow) => void>([
  [F.jobBytes, (o, r) => traffic(o, F.jobBytes.name, r.labels, r.t.bytes_in, r.t.bytes_out)],
  [F.jobPackets, (o, r) => traffic(o, F.jobPackets.name, r.labels, r.t.packets_in, r.t.packets_out)],
  [F.jobOpened, (o, r) => o.sample(F.jobOpened.name, r.labels, r.open + r.t.connections)],
  [F.jobClosed, (o, r) => o.sample(F.jobClosed.name, r.labels, r.t.connections)],
  [F.jobOpen, (o, r) => o.sample(F.jobOpen.name, r.labels, r.open)],
  [F.jobProcesses, (o, r) => o.sample(F.jobProcesses.name, r.labels, r.processes)],
  [F.jobEnded, (o, r) => r.endedAt !== undefined && o.sample(F.jobEnded.name, r.labels, r.endedAt / 1000)],
  [F.procBytes, (o, r) => r.procs.forEach((p) => traffic(o, F.procBytes.name, p.labels, p.t.bytes_in, p.t.bytes_out))],
  [F.procPackets, (o, r) => r.procs.forEach((p) => traffic(o, F.procPackets.name, p.labels, p.t.packets_in, p.t.packets_out))],
  [F.procOpen, (o, r) => r.procs.forEach((p) => o.sample(F.procOpen.name, p.labels, p.open))],
  [F.procClosed, (o, r) => r.procs.forEach((p) => o.sample(F.procClosed.name, p.labels, p.t.connections))],
]);

/** Small enough that rendering a block again is a fraction of a millisecond, large enough that
 * a scrape at 10,000 jobs is some 80 buffers per family. */
export const JOBS_PER_BLOCK = 128;

interface Block {
  jobs: Set<JobEntry>;
  /** Encoded lines per family, made on first use after a change. */
  text: Map<Family, Buffer>;
}

/** What is kept of a job from one scrape to the next. */
export interface JobEntry {
  readonly id: string;
  /** `job_id="…"`, escaped: made once. */
  readonly labels: string;
  /** The pids with series of their own, with their labels, in the order first seen (stable: a
   * pid never moves between its own series and "other", which would break both counters). */
  readonly pids: Map<number, string>;
  /** The figures its lines were written with; none until first put. */
  row?: JobRow;
  block?: Block;
  /** The pass that last put it. */
  seen: number;
}

export class JobBlocks {
  private readonly entries = new Map<string, JobEntry>();
  private blocks: Block[] = [];
  private pass = 0;

  /** Starts a pass over every job (a scrape's): jobs it does not put are gone at end(). */
  begin(): void {
    this.pass += 1;
  }

  /** The job's entry, made (and kept) on first use. */
  job(id: string): JobEntry {
    let e = this.entries.get(id);
    if (!e) this.entries.set(id, (e = { id, labels: `job_id="${escapeLabel(id)}"`, pids: new Map(), seen: this.pass }));
    return e;
  }

  /** Whether the current pass has put the job. */
  putNow(id: string): boolean {
    return this.entries.get(id)?.seen === this.pass;
  }

  /** A job's figures now: its block loses its text if they differ from those it was written
   * with. A pass over a few jobs (new ones, written ahead of the scrape) may put without begin(). */
  put(e: JobEntry, row: JobRow): void {
    e.seen = this.pass;
    if (!e.block || !e.row) {
      e.row = row;
      e.block = this.room();
      e.block.jobs.add(e);
      e.block.text.clear();
      return;
    }
    // Same figures: the row it was written with stays (it is long-lived; the new one dies young).
    if (sameFigures(e.row, row)) return;
    e.block.text.clear();
    e.row = row;
  }

  /** The job shows what it showed: kept as it is. */
  keep(e: JobEntry): void {
    e.seen = this.pass;
  }

  /** Ends a pass begun with begin(): jobs it did not put have gone. */
  end(): void {
    for (const [id, e] of this.entries) {
      if (e.seen === this.pass) continue;
      this.entries.delete(id);
      e.block?.jobs.delete(e);
      e.block?.text.clear();
    }
    this.blocks = this.blocks.filter((b) => b.jobs.size > 0);
  }

  /** Renders the blocks that lost their text, every family, giving the event loop its turns. */
  async prepare(w: ExpositionWriter): Promise<void> {
    for (const f of PER_JOB.keys()) for (const b of this.blocks) if (!b.text.has(f)) await this.renderInto(w, b, f);
  }

  /** Every job's series of a per-job family, block by block; a block without text is rendered
   * now, giving the event loop its turns. */
  async write(w: ExpositionWriter, f: Family): Promise<void> {
    for (const b of this.blocks) {
      w.chunk(b.text.get(f) ?? (await this.renderInto(w, b, f)));
    }
  }

  private async renderInto(w: ExpositionWriter, b: Block, f: Family): Promise<Buffer> {
    const out = new Lines();
    const render = PER_JOB.get(f)!;
    for (const e of b.jobs) render(out, e.row!);
    const bytes = Buffer.from(out.text, 'utf8');
    b.text.set(f, bytes);
    w.rendered(out.series);
    await w.breathe();
    return bytes;
  }

  /** The block a new job goes to: the last one, while it has room. */
  private room(): Block {
    const last = this.blocks.at(-1);
    if (last && last.jobs.size < JOBS_PER_BLOCK) return last;
    const b: Block = { jobs: new Set(), text: new Map() };
    this.blocks.push(b);
    return b;
  }
}

/**
 * Whether a live job's tallies would make the row it was last written with, checked without
 * making one: most jobs are idle and nothing of theirs moves. Only for a job without closed
 * connections of its own records whose every process has series of its own (the row's order is
 * then the tallies'); for any other, false, and the row is made and compared.
 */
export function sameAsWritten(e: JobEntry, d: JobTallies): boolean {
  const r = e.row;
  if (!r || r.endedAt !== undefined || r.open !== d.open_connections || r.processes !== d.processes.length || r.procs.length !== d.processes.length) return false;
  if (!sameTraffic(r.t, d) || r.t.connections !== d.closed_connections) return false;
  for (let i = 0; i < d.processes.length; i++) {
    const p = d.processes[i]!;
    const q = r.procs[i]!;
    if (q.labels !== e.pids.get(p.pid) || q.open !== p.open_connections || q.t.connections !== 0 || !sameTraffic(q.t, p)) return false;
  }
  return true;
}

function sameTraffic(a: Traffic, b: Traffic): boolean {
  return a.bytes_in === b.bytes_in && a.bytes_out === b.bytes_out && a.packets_in === b.packets_in && a.packets_out === b.packets_out;
}

function sameTally(a: Tally, b: Tally): boolean {
  return a.bytes_in === b.bytes_in && a.bytes_out === b.bytes_out && a.packets_in === b.packets_in && a.packets_out === b.packets_out && a.connections === b.connections;
}

/** Whether two rows of a job write the same lines. */
function sameFigures(a: JobRow, b: JobRow): boolean {
  if (a.open !== b.open || a.processes !== b.processes || a.endedAt !== b.endedAt || a.procs.length !== b.procs.length || !sameTally(a.t, b.t)) return false;
  for (let i = 0; i < a.procs.length; i++) {
    const p = a.procs[i]!;
    const q = b.procs[i]!;
    if (p.labels !== q.labels || p.open !== q.open || !sameTally(p.t, q.t)) return false;
  }
  return true;
}
