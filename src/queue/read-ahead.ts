/**
 * Reading: an in-memory "ready" list of durable records not handed out yet, fed by committed
 * batches while the consumer keeps up and by a bounded background prefetch from the segments
 * otherwise; the fetch position and the read cursor. See docs/QUEUE.md, "Reading".
 */

import type { Logger } from 'pino';
import type { AckLog } from './ack-log.js';
import { errnoCode, type QueueIo } from './io.js';
import type { QueueJob } from './job-queue.js';
import type { ResolvedOptions } from './options.js';
import { RECORD_HEADER_SIZE } from './record.js';
import type { FetchPosition } from './recovery.js';
import { SegmentCursor } from './segment-cursor.js';
import type { PendingRecord } from './segment-writer.js';
import { segmentFileName, type Segment, type SegmentReader, type Segments } from './segments.js';

const PREFETCH_RETRY_MS = 1000;

export interface ReadAheadHooks {
  /** The id the next append will get: no valid record can have it or a larger one. */
  nextId(): number;
  /** Records were added to the ready list. */
  announce(): void;
}

export class ReadAhead implements SegmentReader {
  private readonly io: QueueIo;
  private readonly log: Logger | undefined;
  // The fetch position is where the next disk read continues (after the ready list).
  private fetchSeg: Segment;
  private fetchPos: number;
  /** Id of the last record the fetch passed (records must have larger ids). */
  private fetchLastId: number;
  private cursor: SegmentCursor | null = null;
  private cursorSeg: Segment | null = null;
  /** The fetch position is the durable end: new commits go straight to the ready list. */
  private caughtUp: boolean;
  /** Payloads are owned by the queue (copies), handed out as they are. */
  private ready: (QueueJob | undefined)[] = [];
  private readyHead = 0;
  private readyBytes = 0;
  private prefetchRun: Promise<void> | null = null;
  private prefetchRetry: NodeJS.Timeout | null = null;
  private readFailing = false;
  /** Every id below this has been handed out, skipped as done, or found absent. */
  private nextToHandOut: number;
  private stopping = false;
  private closed = false;

  constructor(
    private readonly opts: ResolvedOptions,
    private readonly segments: Segments,
    private readonly acks: AckLog,
    start: FetchPosition,
    private readonly hooks: ReadAheadHooks,
  ) {
    this.io = opts.io;
    this.log = opts.logger;
    this.fetchSeg = start.seg;
    this.fetchPos = start.pos;
    this.fetchLastId = start.lastId;
    this.nextToHandOut = acks.lowWaterMark;
    const active = segments.active;
    this.caughtUp = this.fetchSeg === active && this.fetchPos >= active.size;
  }

  /** Every id below this has been handed out (or needs no handing out). */
  get readNextId(): number {
    return this.nextToHandOut;
  }

  /** The prefetch running now, if any (it never rejects). */
  get prefetching(): Promise<void> | null {
    return this.prefetchRun;
  }

  /** Move up to `max` records not handed out yet into `out`, in id order; starts a prefetch when low. */
  take(max: number, out: QueueJob[]): void {
    const limit = out.length + max;
    while (out.length < limit && this.readyHead < this.ready.length) {
      const r = this.ready[this.readyHead]!;
      this.ready[this.readyHead++] = undefined;
      this.readyBytes -= RECORD_HEADER_SIZE + r.payload.length;
      this.deliver(r, out);
    }
    if (this.readyHead === this.ready.length) {
      this.ready = [];
      this.readyHead = 0;
      this.readyBytes = 0;
    } else if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.readyHead);
      this.readyHead = 0;
    }
    this.maybePrefetch();
  }

  /** A batch committed at the end of `seg`: straight to the ready list while the consumer keeps up. */
  committed(records: readonly PendingRecord[], buf: Buffer, seg: Segment): void {
    if (!this.caughtUp) return;
    if (this.readyBytes + buf.length > this.opts.hotCacheBytes) {
      this.caughtUp = false; // the next take() starts a prefetch from the fetch position
      return;
    }
    let o = 0;
    for (const p of records) {
      const start = o + RECORD_HEADER_SIZE;
      o = start + p.payload.byteLength;
      // a copy: a view would keep the whole batch buffer (up to 16 MiB) alive while the job runs
      this.ready.push({ id: p.id, payload: Buffer.from(buf.subarray(start, o)) });
    }
    this.readyBytes += buf.length;
    if (this.fetchSeg !== seg) this.acks.segmentLeft(); // the segment left behind may be deletable now
    this.fetchSeg = seg;
    this.fetchPos = seg.size;
    this.fetchLastId = records[records.length - 1]!.id;
  }

  isReading(seg: Segment): boolean {
    return this.fetchSeg === seg;
  }

  async leave(seg: Segment): Promise<void> {
    if (this.cursorSeg === seg) await this.closeCursor();
  }

  /** No more prefetches; waits for the running one. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.prefetchRetry) clearTimeout(this.prefetchRetry);
    this.prefetchRetry = null;
    while (this.prefetchRun) await this.prefetchRun;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.closeCursor();
  }

  maybePrefetch(): void {
    if (this.caughtUp || this.prefetchRun || this.prefetchRetry || this.stopping) return;
    // about half a buffer left: read the next one before the consumer runs dry
    if (this.readyBytes >= this.opts.readBufferSize / 2) return;
    this.prefetchRun = (async () => {
      const added = await this.prefetch();
      // clear the flag first, so a 'readable' listener's read() can start the next prefetch
      this.prefetchRun = null;
      if (added > 0) this.hooks.announce();
    })();
  }

  /**
   * Read records after the fetch position into the ready list, about readBufferSize bytes.
   * Returns how many records were added. Never rejects.
   */
  private async prefetch(): Promise<number> {
    let added = 0;
    try {
      while (this.readyBytes < this.opts.readBufferSize && !this.closed) {
        const seg = this.fetchSeg;
        if (this.fetchPos >= seg.size) {
          if (seg === this.segments.active) break;
          const next = this.segments.after(seg);
          if (!next) break;
          await this.closeCursor();
          this.fetchSeg = next;
          this.fetchPos = 0;
          this.fetchLastId = Math.max(this.fetchLastId, next.firstId - 1);
          this.acks.segmentLeft(); // the segment left behind may be deletable now
          continue;
        }
        if (!this.cursor || this.cursorSeg !== seg) {
          await this.closeCursor();
          if (!(await this.openCursor(seg))) continue;
        }
        const cursor = this.cursor!;
        cursor.pos = this.fetchPos;
        const end = seg.size;
        const item = await cursor.next(end, this.fetchLastId, this.hooks.nextId());
        const name = segmentFileName(seg.firstId);
        switch (item.kind) {
          case 'record':
            this.fetchPos = item.end;
            this.fetchLastId = item.id;
            if (!this.acks.isDone(item.id)) {
              // (a done id needs no place in the ready list; take() treats the gap as done)
              this.ready.push({ id: item.id, payload: item.payload });
              this.readyBytes += RECORD_HEADER_SIZE + item.payload.length;
              added++;
            }
            break;
          case 'skipped':
            this.log?.warn(
              { segment: name, offset: item.offset, bytes: item.bytes },
              `queue: skipped ${item.bytes} corrupt bytes at offset ${item.offset} of segment ${name}; jobs stored there are lost`,
            );
            this.fetchPos = item.offset + item.bytes;
            break;
          case 'tail':
            this.log?.warn(
              { segment: name, offset: item.offset, bytes: item.bytes },
              `queue: skipped the last ${item.bytes} bytes of segment ${name} (corrupt from offset ${item.offset}); jobs stored there are lost`,
            );
            this.fetchPos = end;
            break;
          case 'end':
            this.fetchPos = end;
            break;
        }
      }
      if (this.fetchSeg === this.segments.active && this.fetchPos >= this.fetchSeg.size) this.caughtUp = true;
      if (this.readFailing) {
        this.readFailing = false;
        this.log?.info('queue: reading segments works again');
      }
    } catch (err) {
      // Keep the position; try again later. (The consumer sees no records meanwhile.)
      if (!this.readFailing) {
        this.readFailing = true;
        this.log?.error({ err, code: errnoCode(err), segment: segmentFileName(this.fetchSeg.firstId) }, 'queue: reading a segment failed; retrying');
      }
      if (!this.stopping) {
        this.prefetchRetry = setTimeout(() => {
          this.prefetchRetry = null;
          this.maybePrefetch();
        }, PREFETCH_RETRY_MS);
        this.prefetchRetry.unref();
      }
    }
    return added;
  }

  /** Open a read cursor on `seg`; false (and the segment skipped) if its file has vanished. */
  private async openCursor(seg: Segment): Promise<boolean> {
    let fd: number;
    try {
      fd = await this.io.open(this.segments.path(seg.firstId), 'r');
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' || seg === this.segments.active) throw err;
      this.log?.error({ segment: segmentFileName(seg.firstId) }, 'queue: segment file disappeared; its jobs are lost');
      this.fetchPos = seg.size;
      return false;
    }
    this.cursor = new SegmentCursor(this.io, fd, this.fetchPos, this.opts.readBufferSize, this.opts.maxPayloadSize);
    this.cursorSeg = seg;
    return true;
  }

  private async closeCursor(): Promise<void> {
    const c = this.cursor;
    if (!c) return;
    this.cursor = null;
    this.cursorSeg = null;
    await this.io.close(c.fd).catch(() => undefined);
  }

  /** Hand out record `r` unless it is done already; note ids found missing before it. */
  private deliver(r: QueueJob, out: QueueJob[]): void {
    const id = r.id;
    if (id < this.nextToHandOut) return; // below the low-water mark at open
    // ids between do not exist (failed batch, cut tail or corrupt region): they are done
    if (id > this.nextToHandOut) this.acks.markGoneRange(this.nextToHandOut, id);
    this.nextToHandOut = id + 1;
    if (this.acks.isDone(id)) return;
    out.push(r);
  }
}
