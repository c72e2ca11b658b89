import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { RotatingFile } from './rotating-file.js';
import { toJsonl, toTsv, type ConnectionRecord } from './record.js';
import { diag } from '../util/diag.js';

/** Most records in one write: bounds the string built for it (~10 MB of records). */
const MAX_RUN = 20_000;

export interface ConnectionLogOptions {
  dir: string;
  format: 'tsv' | 'jsonl';
  maxBytes: number;
  backupCount: number;
  /** Records held while the log cannot be written (disk full, directory gone). */
  bufferLimit?: number;
  retryMs?: number;
}

export interface LogStats {
  written: number;
  buffered: number;
  /** Records lost because the buffer was full while writing failed. */
  overflowed: number;
  /** Records that could not be serialised (a bug), reported and dropped. */
  unwritable: number;
  writeErrors: number;
  lastError?: string;
}

/**
 * The connection log: `<LOG_DIR>/<interface>.log`, one file per watched interface. A record that
 * cannot be written waits in a bounded buffer and is retried, in order; only what overflows that
 * buffer is lost, and it is counted and reported.
 */
export class ConnectionLog {
  private readonly files = new Map<string, RotatingFile>();
  private pending: ConnectionRecord[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private flushing: NodeJS.Immediate | undefined;
  readonly stats: LogStats = { written: 0, buffered: 0, overflowed: 0, unwritable: 0, writeErrors: 0 };

  constructor(private readonly opts: ConnectionLogOptions) {}

  /** Throws if the directory cannot be made: a start-up error, not a runtime one. */
  open(): void {
    mkdirSync(this.opts.dir, { recursive: true });
  }

  /** Queues the record; what one turn of the event loop queued is written at its end, in one
   * write per file (close() writes what is still queued). */
  write(record: ConnectionRecord): void {
    const limit = this.opts.bufferLimit ?? 100_000;
    // The bound is on records held while the log cannot be written: a healthy log writes a
    // turn's records at once rather than hold more than that.
    if (this.pending.length >= limit && !this.retryTimer) this.flush();
    if (this.pending.length >= limit) {
      this.stats.overflowed += 1;
      diag.error('connection log buffer full: record lost', { job: record.job, pid: record.pid, overflowed: this.stats.overflowed });
      return;
    }
    this.pending.push(record);
    this.stats.buffered = this.pending.length;
    if (this.flushing || this.retryTimer) return; // a retry is due: it writes this one too
    this.flushing = setImmediate(() => {
      this.flushing = undefined;
      this.flush();
    });
  }

  /** Writes what is pending, in order per file, one write per file; on failure keeps the rest
   * and retries later. */
  flush(): boolean {
    let failed = false;
    while (this.pending.length > 0 && !failed) {
      const byFile = new Map<string, ConnectionRecord[]>();
      for (const r of this.pending.slice(0, MAX_RUN)) {
        const list = byFile.get(r.iface);
        if (list) list.push(r);
        else byFile.set(r.iface, [r]);
      }
      const done = new Set<ConnectionRecord>();
      for (const [iface, records] of byFile) {
        const units: string[] = [];
        const kept: ConnectionRecord[] = [];
        for (const r of records) {
          const unit = this.serialise(r);
          if (unit === undefined) done.add(r);
          else units.push(unit), kept.push(r);
        }
        try {
          this.file(iface).writeAll(units);
          for (const r of kept) done.add(r);
          this.stats.written += kept.length;
        } catch (e) {
          const written = (e as { written?: number }).written ?? 0;
          for (const r of kept.slice(0, written)) done.add(r);
          this.stats.written += written;
          this.failed(iface, e as Error);
          failed = true;
          break;
        }
      }
      this.pending = this.pending.filter((r) => !done.has(r));
    }
    this.stats.buffered = this.pending.length;
    return this.pending.length === 0;
  }

  /** A record as a line (or two); undefined, reported and counted, if it cannot be made (a bug):
   * retrying it would hold every record behind it. */
  private serialise(r: ConnectionRecord): string | undefined {
    try {
      return this.opts.format === 'jsonl' ? toJsonl(r) : toTsv(r);
    } catch (e) {
      this.stats.unwritable += 1;
      diag.error('connection record cannot be written: dropped', { job: r.job, pid: r.pid, error: (e as Error).message });
      return undefined;
    }
  }

  close(): void {
    clearImmediate(this.flushing);
    this.flushing = undefined;
    this.flush();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    for (const f of this.files.values()) f.close();
    this.files.clear();
  }

  pathFor(iface: string): string {
    return join(this.opts.dir, `${iface}.log`);
  }

  private file(iface: string): RotatingFile {
    let f = this.files.get(iface);
    if (!f) {
      f = new RotatingFile(this.pathFor(iface), this.opts.maxBytes, this.opts.backupCount);
      this.files.set(iface, f);
    }
    return f;
  }

  private failed(iface: string, e: Error): void {
    this.stats.writeErrors += 1;
    if (this.stats.lastError !== e.message) diag.error('cannot write the connection log; holding records', { file: this.pathFor(iface), error: e.message, buffered: this.pending.length });
    this.stats.lastError = e.message;
    // Reopen on retry: the directory may have been replaced or the file removed.
    this.files.get(iface)?.close();
    this.files.delete(iface);
    try {
      mkdirSync(this.opts.dir, { recursive: true });
    } catch {
      /* retried with the write */
    }
    if (!this.retryTimer) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        if (this.flush() && this.stats.lastError) {
          diag.info('connection log writable again; held records written', { written: this.stats.written });
          this.stats.lastError = undefined;
        }
      }, this.opts.retryMs ?? 1000);
      this.retryTimer.unref();
    }
  }
}
