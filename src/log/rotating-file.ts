import { closeSync, fstatSync, ftruncateSync, openSync, renameSync, writeSync } from 'node:fs';

/**
 * An append-only file rolled the way Python's RotatingFileHandler rolls the original's log:
 * before a write would bring the file to maxBytes it becomes `.1`, `.1` becomes `.2` … up to
 * `.backupCount`; the oldest is dropped. maxBytes or backupCount of 0 means never roll (as in
 * Python). Unlike Python, sizes are in bytes, not characters, and a unit given to write() is
 * never split across files: an oversized unit goes whole into a fresh file.
 *
 * Our own ~50 lines rather than a library: the npm rotators (rotating-file-stream, winston's)
 * name and number backups differently and roll by time or asynchronously, and existing readers
 * of the original's logs expect exactly this naming.
 */
export class RotatingFile {
  private fd: number | undefined;
  private size = 0;

  constructor(
    readonly path: string,
    readonly maxBytes: number,
    readonly backupCount: number,
  ) {}

  /** Appends `text` whole; throws the system error (ENOSPC, EACCES …) if it cannot. */
  write(text: string): void {
    this.writeAll([text]);
  }

  /**
   * Appends units in order, each whole, rolling between two of them as a write of each would,
   * with one write(2) per file instead of one per unit (a burst's 50,000 records spent ~0.8 s
   * of the event loop in system calls). On an error, what the failed write began is taken back
   * and the error is thrown with `written`: how many units are in the file.
   */
  writeAll(units: readonly string[]): number {
    let done = 0;
    try {
      while (done < units.length) {
        this.open();
        let len = 0;
        let end = done;
        for (; end < units.length; end++) {
          const n = Buffer.byteLength(units[end]!, 'utf8');
          if (this.wouldRoll(this.size + len, n)) break;
          len += n;
        }
        if (end === done) {
          // The next unit does not fit what is left of this file: roll, then it goes first.
          this.roll();
          this.open();
          end = done + 1;
          len = Buffer.byteLength(units[done]!, 'utf8');
        }
        // Encoded straight into one buffer: no joined copy of the records on the JavaScript heap.
        const data = Buffer.allocUnsafe(len);
        for (let i = done, at = 0; i < end; i++) at += data.write(units[i]!, at, 'utf8');
        this.append(data);
        done = end;
      }
    } catch (e) {
      // A failed roll or open too: what went before it is in a file, and must not be retried.
      throw Object.assign(e as Error, { written: done });
    }
    return done;
  }

  private append(data: Buffer): void {
    const fd = this.fd!;
    let off = 0;
    try {
      while (off < data.length) off += writeSync(fd, data, off);
    } catch (e) {
      // Disk full mid-write (a short write, then ENOSPC): take the part back, so that the retry
      // writes the units whole instead of after a torn half of one.
      if (off > 0) {
        try {
          ftruncateSync(fd, this.size);
        } catch {
          /* the retry reopens the file */
        }
      }
      throw e;
    }
    this.size += data.length;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private open(): number {
    if (this.fd === undefined) {
      this.fd = openSync(this.path, 'a', 0o640);
      this.size = fstatSync(this.fd).size;
    }
    return this.fd;
  }

  /** Whether a unit of len bytes, written when the file holds `at`, must go to a fresh file. */
  private wouldRoll(at: number, len: number): boolean {
    return this.maxBytes > 0 && this.backupCount > 0 && at > 0 && at + len >= this.maxBytes;
  }

  private roll(): void {
    this.close();
    for (let i = this.backupCount - 1; i >= 1; i--) renameIfExists(`${this.path}.${i}`, `${this.path}.${i + 1}`);
    renameIfExists(this.path, `${this.path}.1`);
  }
}

function renameIfExists(from: string, to: string): void {
  try {
    renameSync(from, to); // replaces `to`, dropping the oldest backup
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
