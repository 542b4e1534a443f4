/**
 * The segment files of the log, oldest first (as Kafka's LogSegments): naming, the active
 * (last) segment, byte accounting and the deletion of consumed segments. See docs/QUEUE.md.
 */

import path from 'node:path';
import type { Logger } from 'pino';
import { errnoCode, type QueueIo } from './io.js';

const SEGMENT_RE = /^(\d{20})\.seg$/;

export interface Segment {
  /** Lower bound of its ids: every id in it is >= firstId and < the next segment's firstId. */
  firstId: number;
  /** Bytes of valid, durable data (for the active segment: up to the end of the last committed batch). */
  size: number;
  /** When it was created (ms since epoch): the enqueue time of the jobs recovered from it. */
  birthMs: number;
}

export function segmentFileName(firstId: number): string {
  return `${String(firstId).padStart(20, '0')}.seg`;
}

/** The first id named by a segment file name; undefined if `name` is no segment, NaN if a bad one. */
export function parseSegmentName(name: string): number | undefined {
  const m = SEGMENT_RE.exec(name);
  if (!m) return undefined;
  const firstId = Number(m[1]);
  return Number.isSafeInteger(firstId) && firstId >= 1 ? firstId : NaN;
}

/** What deleting a segment must ask of the read-ahead. */
export interface SegmentReader {
  /** True while the read-ahead has not read past the end of `seg`. */
  isReading(seg: Segment): boolean;
  /** Close any file the read-ahead still has open on `seg`. */
  leave(seg: Segment): Promise<void>;
}

export class Segments {
  private readonly list: Segment[];
  /** Bytes in segment files. */
  totalBytes = 0;

  /** `list`: at least one segment, sorted by firstId; the last one is the active one. */
  constructor(
    private readonly dir: string,
    private readonly io: QueueIo,
    private readonly log: Logger | undefined,
    list: Segment[],
  ) {
    if (list.length === 0) throw new Error('queue: a log needs at least one segment');
    this.list = list;
    for (const s of list) this.totalBytes += s.size;
  }

  get count(): number {
    return this.list.length;
  }

  /** The segment appends go to (the last one). */
  get active(): Segment {
    return this.list[this.list.length - 1]!;
  }

  all(): readonly Segment[] {
    return this.list;
  }

  /** The segment after `seg` (undefined for the active one). */
  after(seg: Segment): Segment | undefined {
    return this.list[this.list.indexOf(seg) + 1];
  }

  path(firstId: number): string {
    return path.join(this.dir, segmentFileName(firstId));
  }

  /** A new active segment (its file already created). */
  add(seg: Segment): void {
    this.list.push(seg);
  }

  /** `bytes` were committed at the end of the active segment `seg`. */
  grew(seg: Segment, bytes: number): void {
    seg.size += bytes;
    this.totalBytes += bytes;
  }

  /**
   * Delete the segments whose jobs are all acknowledged (every id below the next segment's
   * firstId is below `lowWaterMark`) and that the read-ahead has left. Never the active segment.
   * "Acknowledged" means in memory: every one of those jobs finished, so none can be lost by
   * deleting them, whether or not their acks reached the ack log yet.
   */
  async deleteConsumed(lowWaterMark: () => number, reader: SegmentReader): Promise<void> {
    while (this.list.length > 1) {
      const s0 = this.list[0]!;
      const s1 = this.list[1]!;
      if (s1.firstId > lowWaterMark() || reader.isReading(s0)) return;
      await reader.leave(s0);
      if (this.list[0] !== s0) continue;
      this.list.shift();
      this.totalBytes -= s0.size;
      try {
        await this.io.unlink(this.path(s0.firstId));
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') {
          this.log?.warn({ err, segment: segmentFileName(s0.firstId) }, 'queue: could not delete a consumed segment (retried at next open)');
        }
      }
    }
  }
}
