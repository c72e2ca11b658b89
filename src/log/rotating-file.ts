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
    const data = Buffer.from(text, 'utf8');
    const fd = this.open();
    if (this.shouldRoll(data.length)) {
      this.roll();
      return this.write(text);
    }
    let off = 0;
    try {
      while (off < data.length) off += writeSync(fd, data, off);
    } catch (e) {
      // Disk full mid-record (a short write, then ENOSPC): take the part back, so that the retry
      // writes the record whole instead of after a torn half of it.
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

  private shouldRoll(len: number): boolean {
    return this.maxBytes > 0 && this.backupCount > 0 && this.size > 0 && this.size + len >= this.maxBytes;
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
