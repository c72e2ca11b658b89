import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { RotatingFile } from './rotating-file.js';
import { toJsonl, toTsv, type ConnectionRecord } from './record.js';
import { diag } from '../util/diag.js';

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
  private readonly pending: ConnectionRecord[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  readonly stats: LogStats = { written: 0, buffered: 0, overflowed: 0, writeErrors: 0 };

  constructor(private readonly opts: ConnectionLogOptions) {}

  /** Throws if the directory cannot be made: a start-up error, not a runtime one. */
  open(): void {
    mkdirSync(this.opts.dir, { recursive: true });
  }

  write(record: ConnectionRecord): void {
    const limit = this.opts.bufferLimit ?? 100_000;
    if (this.pending.length >= limit) {
      this.stats.overflowed += 1;
      diag.error('connection log buffer full: record lost', { job: record.job, pid: record.pid, overflowed: this.stats.overflowed });
      return;
    }
    this.pending.push(record);
    this.flush();
  }

  /** Writes what is pending, in order; on failure keeps the rest and retries later. */
  flush(): boolean {
    while (this.pending.length > 0) {
      const record = this.pending[0]!;
      try {
        this.file(record.iface).write(this.opts.format === 'jsonl' ? toJsonl(record) : toTsv(record));
      } catch (e) {
        this.failed(record.iface, e as Error);
        break;
      }
      this.pending.shift();
      this.stats.written += 1;
    }
    this.stats.buffered = this.pending.length;
    return this.pending.length === 0;
  }

  close(): void {
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
