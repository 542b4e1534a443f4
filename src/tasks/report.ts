import { closeSync, fdatasyncSync, ftruncateSync, fstatSync, openSync, writeSync } from 'node:fs';

/**
 * A task's failure report: CSV with the header `openid,errcode,errmsg`, one line per recipient
 * WeChat refused, in the order the answers came.
 *
 * The report and the counts must agree after a crash. The runner appends a line when it counts
 * a failure, and saves the report's length (`report_size`) with the counts; the line is synced
 * to disk before that save. A run first cuts the file back to the saved length: lines written
 * for answers the store never recorded go, and those recipients are sent again and reported
 * again when their answer comes. So every failure counted has exactly one line.
 */

export const REPORT_HEADER = 'openid,errcode,errmsg\n';

function csvField(value: string): string {
  return /[",\r\n]|^\s|\s$/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

export function reportLine(openid: string, errcode: number | string, errmsg: string): string {
  return `${csvField(openid)},${csvField(String(errcode))},${csvField(errmsg)}\n`;
}

/** Creates an empty report (the header only) and returns its size. Overwrites any file there. */
export function createReport(path: string): number {
  const fd = openSync(path, 'w', 0o644);
  try {
    const header = Buffer.from(REPORT_HEADER, 'utf8');
    writeSync(fd, header);
    fdatasyncSync(fd);
    return header.length;
  } finally {
    closeSync(fd);
  }
}

export class ReportWriter {
  #fd: number;
  #size: number;
  #dirty = false;
  /** Set when the file was shorter than recorded (lost or cut by someone): a note for the operator. */
  readonly damaged: string | undefined;

  private constructor(fd: number, size: number, damaged: string | undefined) {
    this.#fd = fd;
    this.#size = size;
    this.damaged = damaged;
  }

  /**
   * Opens the report for appending after cutting it back to `size` bytes (what the store counted).
   * A missing file is created with its header; a file shorter than `size` is kept as it is, and
   * {@link damaged} says so.
   */
  static open(path: string, size: number): ReportWriter {
    let fd: number;
    let damaged: string | undefined;
    try {
      fd = openSync(path, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      createReport(path);
      fd = openSync(path, 'r+');
      if (size > REPORT_HEADER.length) damaged = `report ${path} was missing and has been recreated; earlier failures are not in it`;
    }
    const actual = fstatSync(fd).size;
    if (actual > size) {
      ftruncateSync(fd, size);
      fdatasyncSync(fd);
    } else if (actual < size && damaged === undefined) {
      damaged = `report ${path} is shorter (${actual} bytes) than recorded (${size}); some failures are missing from it`;
    }
    return new ReportWriter(fd, Math.min(actual, size), damaged);
  }

  get size(): number {
    return this.#size;
  }

  append(openid: string, errcode: number | string, errmsg: string): void {
    const buf = Buffer.from(reportLine(openid, errcode, errmsg), 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(this.#fd, buf, off, buf.length - off, this.#size + off);
    this.#size += buf.length;
    this.#dirty = true;
  }

  /** Makes every line appended so far durable (called before the store records them). */
  sync(): void {
    if (!this.#dirty) return;
    fdatasyncSync(this.#fd);
    this.#dirty = false;
  }

  close(): void {
    if (this.#fd < 0) return;
    try {
      this.sync();
    } finally {
      closeSync(this.#fd);
      this.#fd = -1;
    }
  }
}
