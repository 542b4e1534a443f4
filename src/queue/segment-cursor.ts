/**
 * Sequential, buffered reader of the records of one segment file.
 *
 * Reads `bufferSize` bytes at a time (1 MiB by default; more only for a single record larger
 * than that), never the whole file. It never reads at or beyond the `end` it is given, so a
 * reader of the active segment only sees bytes that are already durable.
 *
 * When the bytes at the current position are not a valid record, it searches forward one
 * byte at a time for the next offset holding a valid record (plausible header — length within
 * limits, id above the last one and below the next unassigned one — AND a matching CRC-32C),
 * and reports the bad region as `skipped`; if there is none, the rest is reported as `tail`.
 * Every step moves the position forward, so a damaged file can never make it loop.
 */

import type { QueueIo } from './io.js';
import { RECORD_HEADER_SIZE, checkHeader, verifyRecord, type HeaderLimits } from './record.js';

export type CursorItem =
  | { kind: 'record'; id: number; payload: Buffer; offset: number; end: number }
  /** Bytes [offset, offset + bytes) hold no valid record; a valid one starts right after. */
  | { kind: 'skipped'; offset: number; bytes: number }
  /** Bytes [offset, offset + bytes) up to `end` hold no valid record at all. */
  | { kind: 'tail'; offset: number; bytes: number }
  | { kind: 'end'; offset: number };

const EMPTY = Buffer.alloc(0);

export class SegmentCursor {
  /** File offset of the next record. */
  pos: number;
  private buf: Buffer;
  private bufStart = 0;
  private bufLen = 0;

  constructor(
    private readonly io: QueueIo,
    readonly fd: number,
    start: number,
    private readonly bufferSize: number,
    private readonly maxPayload: number,
  ) {
    this.pos = start;
    this.buf = Buffer.allocUnsafe(bufferSize);
  }

  /**
   * The next item before `end`. Valid records must have `afterId < id < beforeId`.
   * The payload of a record is a copy (safe to keep); with `copyPayload` false it is empty
   * (used by the recovery scan, which only needs ids and offsets).
   */
  async next(end: number, afterId: number, beforeId: number, copyPayload = true): Promise<CursorItem> {
    const start = this.pos;
    if (start >= end) return { kind: 'end', offset: start };
    const limits: HeaderLimits = { maxPayload: this.maxPayload, afterId, beforeId };
    const len = await this.validAt(start, end, limits);
    if (len >= 0) {
      const o = start - this.bufStart + RECORD_HEADER_SIZE;
      const id = this.buf.readUInt32BE(o - 8) * 0x1_0000_0000 + this.buf.readUInt32BE(o - 4);
      const payload = copyPayload ? Buffer.from(this.buf.subarray(o, o + len)) : EMPTY;
      this.pos = start + RECORD_HEADER_SIZE + len;
      return { kind: 'record', id, payload, offset: start, end: this.pos };
    }
    const resume = await this.resync(start + 1, end, limits);
    if (resume < 0) {
      this.pos = end;
      return { kind: 'tail', offset: start, bytes: end - start };
    }
    this.pos = resume;
    return { kind: 'skipped', offset: start, bytes: resume - start };
  }

  /** Payload length of the valid record at `off`, or -1. Leaves the record in the buffer. */
  private async validAt(off: number, end: number, limits: HeaderLimits): Promise<number> {
    if (end - off < RECORD_HEADER_SIZE) return -1;
    if (!(await this.ensure(off, RECORD_HEADER_SIZE, end))) return -1;
    const len = checkHeader(this.buf, off - this.bufStart, limits, end - off - RECORD_HEADER_SIZE);
    if (len < 0) return -1;
    if (!(await this.ensure(off, RECORD_HEADER_SIZE + len, end))) return -1;
    return verifyRecord(this.buf, off - this.bufStart, len) ? len : -1;
  }

  /** First offset >= from holding a valid record, or -1. */
  private async resync(from: number, end: number, limits: HeaderLimits): Promise<number> {
    let c = from;
    while (end - c >= RECORD_HEADER_SIZE) {
      if (!(await this.ensure(c, RECORD_HEADER_SIZE, end))) return -1;
      const bufEnd = Math.min(this.bufStart + this.bufLen, end);
      const lastCandidate = bufEnd - RECORD_HEADER_SIZE;
      let needsRead = -1;
      for (; c <= lastCandidate; c++) {
        const o = c - this.bufStart;
        const len = checkHeader(this.buf, o, limits, end - c - RECORD_HEADER_SIZE);
        if (len < 0) continue;
        if (c + RECORD_HEADER_SIZE + len <= bufEnd) {
          if (verifyRecord(this.buf, o, len)) return c;
          continue;
        }
        needsRead = c;
        break;
      }
      if (needsRead >= 0) {
        if ((await this.validAt(needsRead, end, limits)) >= 0) return needsRead;
        c = needsRead + 1;
      }
    }
    return -1;
  }

  /** Make bytes [off, off + n) available in the buffer; false if the file is shorter. */
  private async ensure(off: number, n: number, end: number): Promise<boolean> {
    if (off >= this.bufStart && off + n <= this.bufStart + this.bufLen) return true;
    const size = Math.max(this.bufferSize, n);
    if (this.buf.length < size || this.buf.length > 2 * size) this.buf = Buffer.allocUnsafe(size);
    const want = Math.min(size, end - off);
    let got = 0;
    this.bufStart = off;
    this.bufLen = 0;
    while (got < want) {
      const r = await this.io.read(this.fd, this.buf, got, want - got, off + got);
      if (r <= 0) break;
      got += r;
    }
    this.bufLen = got;
    return got >= n;
  }
}
