/**
 * The writer: assigns ids and appends records to the active segment with group commit (one
 * pwrite and, with fsync 'always', one fdatasync per batch), rolls to a new segment at
 * `segmentSize`, and fails a batch cleanly on a write error. See docs/QUEUE.md, "Appends".
 */

import type { Logger } from 'pino';
import { QueueWriteError } from '../errors.js';
import { errnoCode, syncDir, writeFully, type QueueIo } from './io.js';
import { MiB, type ResolvedOptions } from './options.js';
import { RECORD_HEADER_SIZE, encodeRecordInto } from './record.js';
import type { Segment, Segments } from './segments.js';

/** Larger batches would only delay the first append of the batch without saving syncs. */
const MAX_BATCH_BYTES = 16 * MiB;

export interface PendingRecord {
  id: number;
  payload: Uint8Array;
}

interface PendingAppend extends PendingRecord {
  resolve: (id: number) => void;
  reject: (err: Error) => void;
}

export interface WriterHooks {
  /**
   * The batch `records`, encoded as `buf`, is durable at the end of `seg`. Called before their
   * appends resolve, so a consumer can be handed them by the time a producer learns their ids.
   */
  committed(records: readonly PendingRecord[], buf: Buffer, seg: Segment): void;
  /** After the appends of a committed batch resolved. */
  announce(): void;
  /** The ids of a failed batch: they will never exist. */
  failed(ids: number[]): void;
}

export class SegmentWriter {
  private readonly io: QueueIo;
  private readonly log: Logger | undefined;
  private readonly always: boolean;
  /** The id the next append gets. */
  nextId: number;
  private pending: (PendingAppend | undefined)[] = [];
  private pendingHead = 0;
  /** Appends accepted whose batch has neither committed nor failed. */
  unconfirmed = 0;
  /** fdatasync calls made for appends (group commit: far fewer than appends). */
  syncs = 0;
  private writing = false;
  private writerIdle: Promise<void> = Promise.resolve();
  /** Bytes past active.size may hold a failed batch; truncate before writing again. */
  private tailDirty = false;
  /** A segment was created; fsync the directory before relying on it. */
  private dirDirty = false;
  private writeFailing = false;

  /** `fd`: the active segment of `segments`, open read-write. */
  constructor(
    private readonly opts: ResolvedOptions,
    private readonly segments: Segments,
    private fd: number,
    nextId: number,
    private readonly hooks: WriterHooks,
  ) {
    this.io = opts.io;
    this.log = opts.logger;
    this.always = opts.fsync === 'always';
    this.nextId = nextId;
  }

  /** Queue `payload` under the next id; resolves with the id once durable. Checked by the caller. */
  append(payload: Uint8Array): Promise<number> {
    const id = this.nextId++;
    this.unconfirmed++;
    return new Promise<number>((resolve, reject) => {
      this.pending.push({ id, payload, resolve, reject });
      if (!this.writing) this.start();
    });
  }

  /** Wait until every append accepted so far has committed or failed. */
  async drain(): Promise<void> {
    while (this.writing) await this.writerIdle;
  }

  async closeFd(): Promise<void> {
    const fd = this.fd;
    this.fd = -1;
    if (fd >= 0) await this.io.close(fd).catch(() => undefined);
  }

  private start(): void {
    this.writing = true;
    // Start on the next turn of the event loop so every append of this turn joins the batch.
    this.writerIdle = new Promise<void>((resolve) => {
      setImmediate(() => {
        this.run().then(resolve, resolve);
      });
    });
  }

  private async run(): Promise<void> {
    try {
      while (this.pendingHead < this.pending.length) await this.writeBatch();
    } catch (err) {
      // Not an I/O error (those fail their batch): a bug. Fail what is left so no caller hangs.
      this.log?.error({ err }, 'queue: writer loop failed');
      const rest = this.pending.slice(this.pendingHead).filter((p): p is PendingAppend => p !== undefined);
      this.pendingHead = this.pending.length;
      this.failBatch(rest, err);
    } finally {
      this.writing = false;
      this.pending = [];
      this.pendingHead = 0;
    }
  }

  /** Remove from the queue the records of the next batch: at least one, then while they fit. */
  private takeBatch(): { items: PendingAppend[]; bytes: number } {
    const first = this.pending[this.pendingHead]!;
    const firstSize = RECORD_HEADER_SIZE + first.payload.byteLength;
    // not past the segment boundary (a single larger record gets a segment of its own)
    const room = Math.max(this.opts.segmentSize - this.segments.active.size, firstSize);
    const limit = Math.max(Math.min(room, MAX_BATCH_BYTES), firstSize);
    const items: PendingAppend[] = [];
    let bytes = 0;
    while (this.pendingHead < this.pending.length) {
      const p = this.pending[this.pendingHead]!;
      const size = RECORD_HEADER_SIZE + p.payload.byteLength;
      if (items.length > 0 && bytes + size > limit) break;
      items.push(p);
      bytes += size;
      this.pending[this.pendingHead++] = undefined;
    }
    if (this.pendingHead > 4096 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    return { items, bytes };
  }

  private async writeBatch(): Promise<void> {
    const first = this.pending[this.pendingHead]!;
    const firstSize = RECORD_HEADER_SIZE + first.payload.byteLength;
    try {
      if (this.tailDirty) {
        await this.io.ftruncate(this.fd, this.segments.active.size);
        this.tailDirty = false;
      }
      const active = this.segments.active;
      if (active.size > 0 && active.size + firstSize > this.opts.segmentSize) await this.roll(first.id);
      if (this.dirDirty) {
        if (this.always) await syncDir(this.io, this.opts.dir);
        this.dirDirty = false;
      }
    } catch (err) {
      this.failBatch(this.takeBatch().items, err);
      return;
    }

    const { items, bytes } = this.takeBatch();
    const buf = Buffer.allocUnsafe(bytes);
    let off = 0;
    for (const p of items) off = encodeRecordInto(buf, off, p.id, p.payload);

    const seg = this.segments.active;
    const fd = this.fd;
    const pos = seg.size;
    try {
      await writeFully(this.io, fd, buf, pos);
      if (this.always) {
        await this.io.fdatasync(fd);
        this.syncs++;
      }
    } catch (err) {
      this.tailDirty = true;
      try {
        await this.io.ftruncate(fd, pos);
        this.tailDirty = false;
      } catch {
        // retried before the next write
      }
      this.failBatch(items, err);
      return;
    }
    this.commit(items, buf, seg);
  }

  private async roll(firstId: number): Promise<void> {
    const seg: Segment = { firstId, size: 0, birthMs: Date.now() };
    const fd = await this.io.open(this.segments.path(firstId), 'w+');
    const old = this.fd;
    this.fd = fd;
    this.segments.add(seg);
    this.dirDirty = true;
    await this.io.close(old).catch((err: unknown) => this.log?.warn({ err }, 'queue: closing a full segment failed'));
  }

  private commit(items: PendingAppend[], buf: Buffer, seg: Segment): void {
    this.segments.grew(seg, buf.length);
    this.unconfirmed -= items.length;
    if (this.writeFailing) {
      this.writeFailing = false;
      this.log?.info('queue: appends succeed again');
    }
    this.hooks.committed(items, buf, seg);
    for (const p of items) p.resolve(p.id);
    this.hooks.announce();
  }

  /**
   * Every append of the batch rejects with QueueWriteError (naming the errno code). The ids are
   * never reused, and a failed record is never handed out; the next append is tried normally,
   * so the queue recovers when space returns.
   */
  private failBatch(items: PendingAppend[], err: unknown): void {
    if (items.length === 0) return;
    const code = errnoCode(err);
    const message = err instanceof Error ? err.message : String(err);
    // The ids of the batch will never exist: mark them so the low-water mark can pass them.
    this.hooks.failed(items.map((p) => p.id));
    this.unconfirmed -= items.length;
    if (!this.writeFailing) {
      this.writeFailing = true;
      this.log?.error({ err, code, records: items.length }, `queue: append failed (${code}); retrying with the next append`);
    }
    const error = new QueueWriteError(`queue write failed (${code}): ${message}`, { cause: err });
    for (const p of items) p.reject(error);
  }
}
