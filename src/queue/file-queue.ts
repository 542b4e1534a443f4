/**
 * Durable, file-backed FIFO job queue: the first implementation of JobQueue (job-queue.ts).
 * How it works — files on disk, group commit, reading, acks, recovery, limits — is in
 * docs/QUEUE.md; the guarantees are in docs/RELIABILITY.md.
 *
 * This class is the running queue and its public surface; the work is done by its parts:
 * recovery.ts (open), segments.ts and segment-writer.ts (appends), ack-log.ts (acks,
 * checkpoint, compaction), read-ahead.ts (reading), handed-out.ts (in flight, hold, release).
 */

import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { QueueClosedError } from '../errors.js';
import { AckLog } from './ack-log.js';
import { HandedOut } from './handed-out.js';
import type { JobQueue, JobQueueEvents, JobQueueStats, QueueJob } from './job-queue.js';
import { validateOptions, type FileQueueOptions, type ResolvedOptions } from './options.js';
import { ReadAhead } from './read-ahead.js';
import { loadQueue, type RecoveredQueue } from './recovery.js';
import { SegmentWriter } from './segment-writer.js';
import type { Segment, Segments } from './segments.js';
import { Deferrals } from './deferrals.js';

export type { FileQueueOptions, FsyncMode } from './options.js';
export type { QueueJob } from './job-queue.js';
export { segmentFileName } from './segments.js';

export interface QueueStats extends JobQueueStats {
  /** Segment files. */
  segments: number;
  /** Bytes in segment files. */
  bytes: number;
  /** fdatasync calls made for appends since open (group commit: far fewer than appends). */
  syncs: number;
  /** append() calls whose write has not finished yet. */
  pendingAppends: number;
  /** Every id below this is acknowledged. */
  lowWaterMark: number;
  /** Id the next append will get. */
  nextId: number;
}

const TIME_RESOLUTION_MS = 1000;

/**
 * When jobs were appended, to 1 s: entries (firstId, time) with increasing firstId. One entry
 * per second of appends instead of one per job; recovered jobs get their segment's birth time.
 */
class EnqueueTimes {
  private times: { firstId: number; t: number }[] = [];
  private head = 0;

  constructor(segments: readonly Segment[]) {
    for (const s of segments) this.times.push({ firstId: s.firstId, t: s.birthMs });
  }

  /** Job `id` is being appended now. */
  note(id: number): void {
    const now = Date.now();
    const last = this.times[this.times.length - 1];
    if (!last || now - last.t >= TIME_RESOLUTION_MS) this.times.push({ firstId: id, t: now });
  }

  /** When the job at the low-water mark `lwm` was appended. */
  oldest(lwm: number): number | undefined {
    const times = this.times;
    while (this.head + 1 < times.length && times[this.head + 1]!.firstId <= lwm) this.head++;
    if (this.head > 1024 && this.head * 2 > times.length) {
      this.times = times.slice(this.head);
      this.head = 0;
    }
    return this.times[this.head]?.t;
  }
}

export class FileQueue extends EventEmitter<JobQueueEvents> implements JobQueue {
  private readonly opts: ResolvedOptions;
  private readonly log: Logger | undefined;
  private readonly segments: Segments;
  private readonly writer: SegmentWriter;
  private readonly acks: AckLog;
  private readonly reader: ReadAhead;
  private readonly handedOut = new HandedOut();
  private readonly times: EnqueueTimes;
  private releaseSignalled = false;
  private readonly deferrals = new Deferrals();
  /** No more appends or reads. */
  private closing = false;
  /** No more acks; fds are being or have been closed. */
  private closed = false;
  private closePromise: Promise<void> | null = null;

  private constructor(opts: ResolvedOptions, r: RecoveredQueue) {
    super();
    this.opts = opts;
    this.log = opts.logger;
    this.segments = r.segments;
    this.times = new EnqueueTimes(r.segments.all());
    this.acks = new AckLog(opts, r.done, {
      nextId: () => this.writer.nextId,
      deleteConsumed: () => this.segments.deleteConsumed(() => this.acks.lowWaterMark, this.reader),
    });
    this.writer = new SegmentWriter(opts, r.segments, r.writeFd, r.nextId, {
      committed: (records, buf, seg) => this.reader.committed(records, buf, seg),
      announce: () => this.emitReadable(),
      failed: (ids) => this.acks.markGone(ids),
    });
    this.reader = new ReadAhead(opts, r.segments, this.acks, r.fetch, {
      nextId: () => this.writer.nextId,
      announce: () => this.emitReadable(),
    });
  }

  /** Open (and recover) the queue in `options.dir`. */
  static async open(options: FileQueueOptions): Promise<FileQueue> {
    const started = Date.now();
    const opts = validateOptions(options);
    const q = new FileQueue(opts, await loadQueue(opts));
    try {
      await q.acks.start();
    } catch (err) {
      await q.closeFds();
      throw err;
    }
    q.log?.info(
      {
        dir: opts.dir,
        segments: q.segments.count,
        bytes: q.segments.totalBytes,
        depth: q.stats().depth,
        lowWaterMark: q.acks.lowWaterMark,
        nextId: q.writer.nextId,
        ms: Date.now() - started,
      },
      'queue: opened',
    );
    q.reader.maybePrefetch();
    return q;
  }

  /**
   * Append one job. Resolves with its id once the record is durable (see `fsync`);
   * rejects with QueueWriteError if it could not be written, QueueClosedError after close().
   * The payload must not be modified until the promise settles.
   */
  append(payload: Uint8Array): Promise<number> {
    if (this.closing) return Promise.reject(new QueueClosedError());
    if (!(payload instanceof Uint8Array)) {
      return Promise.reject(new TypeError('FileQueue.append: payload must be a Buffer or Uint8Array'));
    }
    if (payload.byteLength > this.opts.maxPayloadSize) {
      return Promise.reject(
        new RangeError(`FileQueue.append: payload of ${payload.byteLength} bytes exceeds maxPayloadSize ${this.opts.maxPayloadSize}`),
      );
    }
    this.times.note(this.writer.nextId); // the id append() is about to assign
    return this.writer.append(payload);
  }

  /**
   * Append several jobs (consecutive ids, committed in order, usually in one batch).
   * Each record succeeds or fails on its own, as with separate append() calls; the promise
   * rejects if any of them failed.
   */
  appendMany(payloads: readonly Uint8Array[]): Promise<number[]> {
    return Promise.all(payloads.map((p) => this.append(p)));
  }

  /**
   * Up to `max` durable records not handed out yet (in this process), in FIFO order, from
   * memory; never blocks. Released jobs come first. An empty array means none is ready now:
   * 'readable' fires when some are (a backlog on disk is being prefetched, or new appends commit).
   */
  read(max = 1): QueueJob[] {
    if (this.closing) throw new QueueClosedError();
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`FileQueue.read: max must be a positive integer, got ${String(max)}`);
    }
    const out: QueueJob[] = [];
    this.handedOut.takeReleased(max, (id) => this.acks.isDone(id), out);
    this.reader.take(max - out.length, out);
    this.handedOut.record(out);
    this.deferrals.annotate(out);
    return out;
  }

  /**
   * Like read(), but when nothing is ready and the backlog on disk is being prefetched, waits
   * for it. Resolves with [] only when every durable record has been handed out (or reading the
   * disk fails; the error is logged and retried).
   */
  async readAsync(max = 1): Promise<QueueJob[]> {
    for (;;) {
      const jobs = this.read(max);
      const prefetching = this.reader.prefetching;
      if (jobs.length > 0 || !prefetching) return jobs;
      await prefetching;
    }
  }

  /**
   * The job `id` (handed out by read()) is finished; acknowledgements may come in any order
   * and repeated acks are ignored. Persisted shortly after (at-least-once delivery).
   */
  ack(id: number): void {
    this.checkHandedOut('ack', id);
    if (!this.acks.ack(id)) return;
    this.handedOut.acked(id);
    this.deferrals.forget(id);
  }

  /** See JobQueue.defer: held until `delayMs` has passed, then released (front of the line). */
  defer(id: number, delayMs: number): void {
    this.checkHandedOut('defer', id);
    if (this.acks.isDone(id)) return;
    this.deferrals.defer(
      id,
      delayMs,
      () => this.hold(id),
      () => {
        if (!this.closing) this.release(id);
      },
    );
  }

  /** See JobQueue.hold: the job stays unacknowledged and is not handed out again until release(). */
  hold(id: number): void {
    this.checkHandedOut('hold', id);
    if (this.acks.isDone(id)) return;
    if (!this.handedOut.hold(id)) throw new RangeError(`FileQueue.hold: job id ${id} is not handed out (it was released and not read again)`);
  }

  /** See JobQueue.release: the next read() hands the job out again, before any new one. */
  release(id: number): void {
    this.checkHandedOut('release', id);
    if (this.acks.isDone(id) || this.handedOut.isReleased(id)) return;
    if (!this.handedOut.release(id)) throw new RangeError(`FileQueue.release: job id ${id} is not handed out`);
    if (this.releaseSignalled) return;
    this.releaseSignalled = true;
    // Not synchronously: release() is typically called from the consumer's own outcome
    // handling, which should not be re-entered by its 'readable' listener.
    queueMicrotask(() => {
      this.releaseSignalled = false;
      if (!this.closing) this.emitReadable();
    });
  }

  /** Cheap counters (no disk access). */
  stats(): QueueStats {
    const lwm = this.acks.lowWaterMark;
    const nextId = this.writer.nextId;
    const pendingAppends = this.writer.unconfirmed;
    const depth = Math.max(0, nextId - lwm - this.acks.doneAbove - pendingAppends);
    return {
      depth,
      inFlight: this.handedOut.inFlight,
      held: this.handedOut.heldCount,
      deferred: this.deferrals.pending,
      oldestEnqueuedAt: depth > 0 ? this.times.oldest(lwm) : undefined,
      segments: this.segments.count,
      bytes: this.segments.totalBytes,
      syncs: this.writer.syncs,
      pendingAppends,
      lowWaterMark: lwm,
      nextId,
    };
  }

  /**
   * Finish the appends already accepted, persist acknowledgements and the checkpoint,
   * close files. Idempotent. Afterwards every method throws/rejects QueueClosedError.
   */
  close(): Promise<void> {
    if (!this.closePromise) this.closePromise = this.doClose();
    return this.closePromise;
  }

  private checkHandedOut(method: string, id: number): void {
    if (this.closed) throw new QueueClosedError();
    if (!Number.isSafeInteger(id) || id < 1 || id >= this.reader.readNextId) {
      throw new RangeError(`FileQueue.${method}: job id ${String(id)} was not handed out by read()`);
    }
  }

  private emitReadable(): void {
    try {
      this.emit('readable');
    } catch (err) {
      this.log?.error({ err }, "queue: a 'readable' listener threw");
    }
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    this.deferrals.close();
    const readerStopped = this.reader.stop(); // no prefetch starts from now on
    await this.writer.drain();
    await readerStopped;
    this.closed = true;
    await this.acks.close();
    await this.closeFds();
  }

  private async closeFds(): Promise<void> {
    await this.reader.close();
    await this.writer.closeFd();
    await this.acks.closeFd();
  }
}
