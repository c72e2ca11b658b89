/**
 * The Prometheus text exposition format (version 0.0.4), written by hand: a scrape at 10,000
 * jobs has some 140,000 series, and a metrics library's per-series objects and label hashing
 * cost more than the text itself. The output is what prom-client wrote: families in the order
 * given, each with HELP and TYPE, a blank line between families.
 */

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Kind = 'counter' | 'gauge';

export interface Family {
  name: string;
  type: Kind;
  help: string;
  /** Without labels a family always has its one series (0 until set), as prom-client's. */
  labelled: boolean;
}

/** Series written between two turns of the event loop: a few milliseconds of work. */
const SERIES_PER_SLICE = 4_000;

/** A label value: backslash, double quote and newline escaped (a job id can hold anything). */
export function escapeLabel(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"') : v;
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf';
  return String(v);
}

/**
 * Builds the answer in slices, yielding the event loop between them so that the API keeps
 * answering during a huge scrape. Each slice is encoded as it is finished: the answer is a list
 * of small buffers, never one huge string that would be flattened and encoded in one go.
 */
export class ExpositionWriter {
  private readonly chunks: Buffer[] = [];
  private text = '';
  private series = 0;
  private families = 0;

  family(f: Family): void {
    this.text += `${this.families++ ? '\n' : ''}# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.type}\n`;
  }

  /** One series; `labels` already formatted (`a="x",b="y"`, values escaped) or empty. */
  sample(name: string, labels: string, value: number): void {
    this.text += labels ? `${name}{${labels}} ${formatValue(value)}\n` : `${name} ${formatValue(value)}\n`;
    this.series += 1;
  }

  /** Bytes written elsewhere (a block of series kept from an earlier scrape), in their place. */
  chunk(bytes: Buffer): void {
    this.flush(false);
    if (bytes.length) this.chunks.push(bytes);
  }

  /** Counts series written elsewhere towards the slice. */
  rendered(series: number): void {
    this.series += series;
  }

  /** Gives the event loop a turn once a slice is written; call it between rows. */
  async breathe(): Promise<void> {
    if (this.series < SERIES_PER_SLICE) return;
    this.flush();
    await new Promise<void>((r) => setImmediate(r));
  }

  /** The answer, in the pieces it was written in. */
  finish(): Buffer[] {
    this.flush();
    return this.chunks;
  }

  private flush(sliceDone = true): void {
    if (this.text) this.chunks.push(Buffer.from(this.text, 'utf8'));
    this.text = '';
    if (sliceDone) this.series = 0;
  }
}
