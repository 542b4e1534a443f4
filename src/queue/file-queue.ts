/**
 * Durable, file-backed FIFO job queue (guarantees: docs/RELIABILITY.md).
 *
 * ## Files in `dir`
 *
 * - `NNNNNNNNNNNNNNNNNNNN.seg` — segments of the append-only log, named by the 20-digit
 *   zero-padded id of their first record (a lower bound: every id in a segment is >= its name
 *   and < the next segment's name). Records: `[u32 len][u32 crc32c(id+payload)][u64 id][payload]`,
 *   big-endian (see record.ts). A new segment is started when the next record would make the
 *   active one exceed `segmentSize` (a single larger record gets a segment of its own).
 * - `acks.log` — batches `[u32 8n][u32 crc][u64 lowWaterMark][u64 id × n]`: the ids acknowledged
 *   since the previous batch and the low-water mark (every id below it is acknowledged).
 * - `checkpoint` — 28 bytes: magic, version, low-water mark, next id, CRC.
 * - `*.tmp` — a checkpoint or ack log being replaced (rename is the commit point); removed at open.
 *
 * ## Appends (group commit)
 *
 * `append()` assigns the next id and queues the payload. A single writer loop takes every
 * queued record (up to 16 MiB, and not past the segment boundary), encodes them into one
 * buffer, writes it with one pwrite at the end of the active segment and, with
 * `fsync: 'always'`, one fdatasync; then every promise of the batch resolves. Appends made while
 * a batch is being written wait for the next batch, so one fdatasync covers all of them.
 * `fsync: 'none'` skips the fdatasync: a process crash (kill -9) loses nothing that was
 * resolved (the data is in the OS page cache), a power loss or kernel crash may lose the last
 * records.
 *
 * On a write or sync error (ENOSPC, EIO...) every append of the batch rejects with
 * QueueWriteError (message includes the errno code), the segment is truncated back to its last
 * good size (retried before the next write if that fails too) and the ids of the batch are
 * marked as never existing — ids are never reused, and a failed record is never handed out.
 * The next append is tried again normally, so the queue recovers when space returns.
 *
 * ## Reading
 *
 * `read(max)` is synchronous and never blocks: it hands out, in id order, records that are
 * durable and not handed out yet in this process, from an in-memory "ready" list. The ready list
 * is fed two ways: while the consumer keeps up, each committed batch is added to it directly (at
 * most `hotCacheBytes`, no disk read); otherwise a background prefetch reads the backlog from the
 * segments with buffered reads of `readBufferSize` (1 MiB) and stops once about that many bytes
 * are ready. So the backlog is never loaded as a whole: memory is bounded by hotCacheBytes +
 * 2 × readBufferSize whatever the depth. A read() that finds the ready list low starts the
 * prefetch; the prefetch also starts at open when there is a backlog. The 'readable' event fires
 * whenever records were added to the ready list (a commit or a prefetch): a consumer calls read()
 * once at start, then on 'readable' and whenever it has capacity again. `readAsync(max)` waits for
 * a running prefetch instead of returning [] (an empty result then means nothing is left).
 * A read error (EIO) is logged and the prefetch retried after 1 s.
 *
 * ## Acks
 *
 * `ack(id)` (any order) sets the id in an in-memory bitmap anchored at the low-water mark (one
 * bit per id). Acked ids are appended to `acks.log` in batches by an ack loop that runs right
 * after the acks of one event-loop turn (fdatasync with `fsync: 'always'`), so a crash
 * re-delivers only jobs acknowledged in the last moments (at-least-once). When the ack log
 * exceeds `ackLogMaxBytes` (and 4× its last compacted size), it is compacted: the checkpoint is
 * rewritten, then a new ack log holding the current low-water mark and the acked ids above it
 * replaces the old one (write tmp, fsync, rename, fsync dir). Replay takes the union of both
 * files, so any crash point is safe. Segments whose ids are all below the low-water mark, and
 * that the prefetch has left, are deleted after each ack batch — also when the batch could not be
 * persisted: their jobs are all finished, so deleting them loses nothing (a crash then simply
 * cannot re-deliver them), and on a full disk it is what frees room for the ack log and for new
 * appends (otherwise a full disk would stay full after the backlog drained: the ack log could
 * not grow, so no segment would ever be deleted). At open, ids below the first segment are
 * known to be done.
 *
 * ## Recovery (`FileQueue.open`)
 *
 * Reads the checkpoint and the ack log (both small), deletes fully acknowledged segments,
 * stats the others and scans ONLY the last segment from its start to find the end of the valid
 * records. Older segments are not read at open. A damaged tail (short record, bad checksum,
 * zeroed or garbage bytes) is truncated away and reported once with `logger.warn` and its byte
 * count; every valid record before it is kept. A corrupt checkpoint or a damaged ack log is
 * reported and ignored from the damage on (falling back to re-delivery, never to loss); both are
 * rewritten at open. The next id is above every id seen in the segment tail, the ack log and the
 * checkpoint, so ids are not reused after a cut tail.
 *
 * Corruption met later while reading a segment (bit rot in an older segment) is reported with
 * `logger.warn` and skipped: the reader searches forward, byte by byte, for the next offset that
 * holds a valid record (plausible length, id above the last one read and below the next one to
 * assign, matching CRC-32C); if there is none the rest of the segment is skipped. Records lost in
 * such a region are treated as gone. The search always moves forward: it can neither crash nor
 * loop. (A payload could in theory embed bytes that look like a valid record; JSON payloads cannot,
 * as every header contains 0x00 bytes, which JSON text never does.)
 *
 * ## Limits and accounting
 *
 * - `stats().depth` is computed from ids: (next id − low-water mark − acked/absent ids above it).
 *   Ids missing in the middle of the log from before a restart (a batch that failed in an earlier
 *   run, a corrupt region of an older segment) are counted until read() passes their place;
 *   otherwise it is exact (ids after the last valid record are known to be absent at open).
 * - `oldestEnqueuedAt` has a resolution of 1 s in this process; for jobs recovered at open it is
 *   the creation time of their segment (birthtime, or mtime where the filesystem has none).
 * - Only one process may open a queue directory at a time (the daemon's pid file ensures this;
 *   the queue does not lock the directory).
 */

import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { Logger } from 'pino';
import { QueueClosedError, QueueWriteError } from '../errors.js';
import { IdBitmap } from './id-bitmap.js';
import { errnoCode, nodeIo, syncDir, writeFully, type QueueIo } from './io.js';
import {
  RECORD_HEADER_SIZE,
  decodeAckLog,
  decodeCheckpoint,
  encodeAckBatch,
  encodeCheckpoint,
  encodeRecordInto,
  type AckLogContents,
  type Checkpoint,
} from './record.js';
import { SegmentCursor } from './segment-cursor.js';

const MiB = 1024 * 1024;
const MAX_BATCH_BYTES = 16 * MiB;
const MAX_SEGMENT_SIZE = 2 ** 40;
const SEGMENT_RE = /^(\d{20})\.seg$/;
const ACK_LOG = 'acks.log';
const CHECKPOINT = 'checkpoint';
const TMP_SUFFIX = '.tmp';
const TIME_RESOLUTION_MS = 1000;
const ACK_RETRY_MS = 1000;
const PREFETCH_RETRY_MS = 1000;

export type FsyncMode = 'always' | 'none';

export interface FileQueueOptions {
  /** Queue directory (created if missing). */
  dir: string;
  /**
   * Size at which a new segment file is started, in bytes.
   * @defaultValue 41943040 (40 MiB, as the original)
   */
  segmentSize?: number;
  /**
   * `'always'`: an append resolves after its record is fdatasync'ed (grouped).
   * `'none'`: after the write only; a power loss may lose the last records, a process crash does not.
   * @defaultValue 'always'
   */
  fsync?: FsyncMode;
  /** Warnings (damaged files), errors (failed writes) and an info line at open. */
  logger?: Logger;
  /**
   * Largest payload accepted by append(), and by the reader when validating records.
   * @defaultValue 8388608 (8 MiB; the protocol's default package_max_length is 2.4 MB)
   */
  maxPayloadSize?: number;
  /**
   * Bytes read from a segment at a time when reading back the backlog.
   * @defaultValue 1048576 (1 MiB)
   */
  readBufferSize?: number;
  /**
   * Just-written records kept in memory for a consumer that keeps up (avoids reading them back);
   * beyond this the consumer is "behind" and records are read back from disk.
   * @defaultValue 8388608 (8 MiB)
   */
  hotCacheBytes?: number;
  /**
   * Size of the ack log above which it is compacted.
   * @defaultValue 1048576 (1 MiB)
   */
  ackLogMaxBytes?: number;
  /** File-system operations; override some of them to inject faults in tests. */
  io?: Partial<QueueIo>;
}

export interface QueueJob {
  id: number;
  payload: Buffer;
}

export interface QueueStats {
  /** Jobs appended (durably) and not acknowledged. */
  depth: number;
  /** Jobs handed out by read() and not acknowledged. */
  inFlight: number;
  /** When the oldest unacknowledged job was appended (ms since epoch); undefined if none. */
  oldestEnqueuedAt?: number;
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

interface ResolvedOptions {
  dir: string;
  segmentSize: number;
  fsync: FsyncMode;
  logger: Logger | undefined;
  maxPayloadSize: number;
  readBufferSize: number;
  hotCacheBytes: number;
  ackLogMaxBytes: number;
  io: QueueIo;
}

interface Segment {
  firstId: number;
  /** Bytes of valid, durable data (for the active segment: up to the end of the last committed batch). */
  size: number;
  birthMs: number;
}

interface PendingAppend {
  id: number;
  payload: Uint8Array;
  resolve: (id: number) => void;
  reject: (err: Error) => void;
}

interface ReadyRecord {
  id: number;
  /** Owned by the queue (a copy), handed out as is. */
  payload: Buffer;
}

type QueueEvents = { readable: [] };

const noop = (): void => undefined;

export function segmentFileName(firstId: number): string {
  return `${String(firstId).padStart(20, '0')}.seg`;
}

function validateOptions(o: FileQueueOptions): ResolvedOptions {
  if (o === null || typeof o !== 'object') throw new TypeError('FileQueue options must be an object');
  if (typeof o.dir !== 'string' || o.dir.length === 0) {
    throw new TypeError('FileQueue option "dir" must be a non-empty string (the queue directory)');
  }
  const int = (name: string, value: unknown, def: number, min: number, max: number): number => {
    if (value === undefined) return def;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new RangeError(`FileQueue option "${name}" must be an integer from ${min} to ${max}, got ${String(value)}`);
    }
    return value;
  };
  const fsync = o.fsync ?? 'always';
  if (fsync !== 'always' && fsync !== 'none') {
    throw new RangeError(`FileQueue option "fsync" must be 'always' or 'none', got ${JSON.stringify(fsync)}`);
  }
  if (o.logger !== undefined && (o.logger === null || typeof o.logger.warn !== 'function')) {
    throw new TypeError('FileQueue option "logger" must be a pino logger');
  }
  if (o.io !== undefined && (o.io === null || typeof o.io !== 'object')) {
    throw new TypeError('FileQueue option "io" must be an object of file-system functions');
  }
  return {
    dir: path.resolve(o.dir),
    segmentSize: int('segmentSize', o.segmentSize, 40 * MiB, 1, MAX_SEGMENT_SIZE),
    fsync,
    logger: o.logger,
    maxPayloadSize: int('maxPayloadSize', o.maxPayloadSize, 8 * MiB, 0, 1024 * MiB),
    readBufferSize: int('readBufferSize', o.readBufferSize, MiB, 4096, 256 * MiB),
    hotCacheBytes: int('hotCacheBytes', o.hotCacheBytes, 8 * MiB, 0, 1024 * MiB),
    ackLogMaxBytes: int('ackLogMaxBytes', o.ackLogMaxBytes, MiB, 1, 1024 * MiB),
    io: { ...nodeIo, ...o.io },
  };
}

export class FileQueue extends EventEmitter<QueueEvents> {
  private readonly opts: ResolvedOptions;
  private readonly io: QueueIo;
  private readonly log: Logger | undefined;
  private readonly always: boolean;

  // ---- segments / writer
  private segments: Segment[] = [];
  private active!: Segment;
  private writeFd = -1;
  private totalBytes = 0;
  private nextId = 1;
  private pending: (PendingAppend | undefined)[] = [];
  private pendingHead = 0;
  /** Appends accepted whose batch has neither committed nor failed. */
  private unconfirmed = 0;
  private writing = false;
  private writerIdle: Promise<void> = Promise.resolve();
  /** Bytes past active.size may hold a failed batch; truncate before writing again. */
  private tailDirty = false;
  /** A segment was created; fsync the directory before relying on it. */
  private dirDirty = false;
  private writeFailing = false;
  private syncs = 0;

  // ---- acknowledgements
  private bitmap!: IdBitmap;
  private pendingAcks: number[] = [];
  private persistedLwm = 1;
  private ackFd = -1;
  private ackOffset = 0;
  private lastSnapshotBytes = 0;
  private ackNeedsSnapshot = false;
  private ackRunning = false;
  private ackIdle: Promise<void> = Promise.resolve();
  private ackImmediate: NodeJS.Immediate | null = null;
  private ackRetryTimer: NodeJS.Timeout | null = null;
  private ackFailing = false;
  private maintenanceDue = false;

  // ---- reading: the fetch position is where the next disk read continues (after the ready list)
  private fetchSeg!: Segment;
  private fetchPos = 0;
  /** Id of the last record the fetch passed (records must have larger ids). */
  private fetchLastId = 0;
  private cursor: SegmentCursor | null = null;
  private cursorSeg: Segment | null = null;
  /** The fetch position is the durable end: new commits go straight to the ready list. */
  private caughtUp = false;
  private ready: (ReadyRecord | undefined)[] = [];
  private readyHead = 0;
  private readyBytes = 0;
  private prefetching: Promise<void> | null = null;
  private prefetchRetry: NodeJS.Timeout | null = null;
  private readFailing = false;
  /** Every id below this has been handed out, skipped as acked, or found absent. */
  private readNextId = 1;
  private inFlight = 0;

  // ---- enqueue times: entries (firstId, time) with increasing firstId
  private times: { firstId: number; t: number }[] = [];
  private timesHead = 0;

  // ---- lifecycle
  /** No more appends or reads. */
  private closing = false;
  /** No more acks; fds are being or have been closed. */
  private closed = false;
  private closePromise: Promise<void> | null = null;

  private constructor(opts: ResolvedOptions) {
    super();
    this.opts = opts;
    this.io = opts.io;
    this.log = opts.logger;
    this.always = opts.fsync === 'always';
  }

  /** Open (and recover) the queue in `options.dir`. */
  static async open(options: FileQueueOptions): Promise<FileQueue> {
    const q = new FileQueue(validateOptions(options));
    try {
      await q.recover();
    } catch (err) {
      await q.closeFds();
      throw err;
    }
    return q;
  }

  // ================================================================ public API

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
    const id = this.nextId++;
    this.noteTime(id);
    this.unconfirmed++;
    return new Promise<number>((resolve, reject) => {
      this.pending.push({ id, payload, resolve, reject });
      if (!this.writing) this.startWriter();
    });
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
   * memory; never blocks. An empty array means none is ready now: 'readable' fires when some are
   * (a backlog on disk is being prefetched, or new appends commit).
   */
  read(max = 1): QueueJob[] {
    if (this.closing) throw new QueueClosedError();
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`FileQueue.read: max must be a positive integer, got ${String(max)}`);
    }
    const out: QueueJob[] = [];
    while (out.length < max && this.readyHead < this.ready.length) {
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
      if (jobs.length > 0 || !this.prefetching) return jobs;
      await this.prefetching;
    }
  }

  /**
   * The job `id` (handed out by read()) is finished; acknowledgements may come in any order
   * and repeated acks are ignored. Persisted shortly after (at-least-once delivery).
   */
  ack(id: number): void {
    if (this.closed) throw new QueueClosedError();
    if (!Number.isSafeInteger(id) || id < 1 || id >= this.readNextId) {
      throw new RangeError(`FileQueue.ack: job id ${String(id)} was not handed out by read()`);
    }
    if (this.bitmap.has(id)) return;
    this.bitmap.set(id);
    this.inFlight--;
    this.pendingAcks.push(id);
    this.requestAckFlush();
  }

  /** Cheap counters (no disk access). */
  stats(): QueueStats {
    const lwm = this.bitmap.lowWaterMark;
    const depth = Math.max(0, this.nextId - lwm - this.bitmap.setAbove - this.unconfirmed);
    return {
      depth,
      inFlight: this.inFlight,
      oldestEnqueuedAt: depth > 0 ? this.oldestTime(lwm) : undefined,
      segments: this.segments.length,
      bytes: this.totalBytes,
      syncs: this.syncs,
      pendingAppends: this.unconfirmed,
      lowWaterMark: lwm,
      nextId: this.nextId,
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

  // ================================================================ recovery

  private segPath(firstId: number): string {
    return path.join(this.opts.dir, segmentFileName(firstId));
  }

  private file(name: string): string {
    return path.join(this.opts.dir, name);
  }

  private async recover(): Promise<void> {
    const started = Date.now();
    const { io } = this;
    const dir = this.opts.dir;
    await io.mkdir(dir);

    // ---- directory listing
    const segs: Segment[] = [];
    for (const name of await io.readdir(dir)) {
      const m = SEGMENT_RE.exec(name);
      if (m) {
        const firstId = Number(m[1]);
        if (Number.isSafeInteger(firstId) && firstId >= 1) segs.push({ firstId, size: 0, birthMs: 0 });
        else this.log?.warn({ file: name }, `queue: ignoring ${name}: not a valid segment name`);
      } else if (name === ACK_LOG + TMP_SUFFIX || name === CHECKPOINT + TMP_SUFFIX) {
        await io.unlink(this.file(name)).catch(noop);
      }
    }
    segs.sort((a, b) => a.firstId - b.firstId);

    // ---- checkpoint and ack log
    const cp = await this.readCheckpoint(segs.length > 0);
    const acks = await this.readAckLog(segs.length > 0);
    let lwm = Math.max(1, cp?.lowWaterMark ?? 0, acks.lowWaterMark);
    let maxAcked = 0;
    for (const id of acks.ids) if (id > maxAcked) maxAcked = id;

    // ---- delete segments whose ids are all acknowledged (never the last one)
    while (segs.length > 1 && segs[1]!.firstId <= lwm) {
      const s = segs.shift()!;
      await io.unlink(this.segPath(s.firstId)).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') this.log?.warn({ err, segment: segmentFileName(s.firstId) }, 'queue: could not delete a consumed segment');
      });
    }
    // Ids below the first segment are in no file: acknowledged (their segment was deleted, maybe
    // before the acks reached the ack log: see deleteConsumedSegments) or never written.
    if (segs.length > 0 && segs[0]!.firstId > lwm) lwm = segs[0]!.firstId;
    for (const s of segs) {
      const st = await io.stat(this.segPath(s.firstId));
      s.size = st.size;
      s.birthMs = Math.floor(st.birthtimeMs > 0 ? st.birthtimeMs : st.mtimeMs);
    }

    // ---- scan the last segment: find the end of the valid records, cut a damaged tail
    let afterId = 0;
    let startOffset = 0;
    if (segs.length > 0) {
      const last = segs[segs.length - 1]!;
      this.writeFd = await io.open(this.segPath(last.firstId), 'r+');
      const r = await this.scanTail(last, lwm);
      afterId = r.lastId;
      startOffset = r.startOffset;
    }

    // ---- ids and acknowledgements
    this.nextId = Math.max(1, lwm, cp?.nextId ?? 0, maxAcked + 1, afterId + 1, segs.length > 0 ? segs[segs.length - 1]!.firstId : 0);
    this.bitmap = new IdBitmap(lwm);
    for (const id of acks.ids) if (id < this.nextId) this.bitmap.set(id);
    // Ids above the last valid record of the last segment exist nowhere (cut tail, failed batch).
    this.bitmap.setRange(afterId + 1, this.nextId);
    lwm = this.bitmap.lowWaterMark;

    if (segs.length === 0) {
      const seg: Segment = { firstId: this.nextId, size: 0, birthMs: Date.now() };
      this.writeFd = await io.open(this.segPath(seg.firstId), 'w+');
      await syncDir(io, dir);
      segs.push(seg);
      startOffset = 0;
    }
    this.segments = segs;
    this.active = segs[segs.length - 1]!;
    for (const s of segs) {
      this.totalBytes += s.size;
      this.times.push({ firstId: s.firstId, t: s.birthMs });
    }

    // ---- fetch position: the segment holding the low-water mark
    let fetch = segs[0]!;
    for (const s of segs) if (s.firstId <= lwm) fetch = s;
    this.fetchSeg = fetch;
    if (fetch === this.active) {
      this.fetchPos = startOffset;
      this.fetchLastId = Math.max(fetch.firstId - 1, startOffset > 0 ? lwm - 1 : 0);
    } else {
      this.fetchPos = 0;
      this.fetchLastId = fetch.firstId - 1;
    }
    this.readNextId = lwm;
    this.caughtUp = this.fetchSeg === this.active && this.fetchPos >= this.active.size;

    // ---- fresh checkpoint and compacted ack log (also clears any damage). Not fatal: with a
    // full disk the queue must still open (appends then fail with QueueWriteError → 503).
    this.persistedLwm = lwm; // what the files on disk already say
    try {
      await this.snapshot();
    } catch (err) {
      this.ackNeedsSnapshot = true;
      this.ackWriteFailed(err);
      this.requestAckFlush();
    }

    this.log?.info(
      {
        dir,
        segments: segs.length,
        bytes: this.totalBytes,
        depth: this.stats().depth,
        lowWaterMark: lwm,
        nextId: this.nextId,
        ms: Date.now() - started,
      },
      'queue: opened',
    );
    this.maybePrefetch();
  }

  private async readCheckpoint(expectFiles: boolean): Promise<Checkpoint | undefined> {
    const file = this.file(CHECKPOINT);
    let buf: Buffer;
    try {
      buf = await this.io.readFile(file);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      if (expectFiles) this.log?.warn({ file }, 'queue: checkpoint is missing; acknowledged jobs may be delivered again');
      return undefined;
    }
    const cp = decodeCheckpoint(buf);
    if (!cp) {
      this.log?.warn(
        { file, bytes: buf.length },
        `queue: checkpoint is corrupt (${buf.length} bytes); ignoring it, acknowledged jobs may be delivered again`,
      );
    }
    return cp;
  }

  private async readAckLog(expectFiles: boolean): Promise<AckLogContents> {
    const file = this.file(ACK_LOG);
    let buf: Buffer;
    try {
      buf = await this.io.readFile(file);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      if (expectFiles) this.log?.warn({ file }, 'queue: ack log is missing; acknowledged jobs may be delivered again');
      return { lowWaterMark: 0, ids: [], validBytes: 0, damagedBytes: 0 };
    }
    const acks = decodeAckLog(buf);
    if (acks.damagedBytes > 0) {
      this.log?.warn(
        { file, bytes: acks.damagedBytes, validBytes: acks.validBytes },
        `queue: ignored ${acks.damagedBytes} damaged bytes at offset ${acks.validBytes} of the ack log; acknowledged jobs may be delivered again`,
      );
    }
    return acks;
  }

  /**
   * Scan `seg` (the last segment, open as writeFd) from its start; truncate what follows the
   * last valid record. Returns the last valid id (or firstId - 1) and the offset of the first
   * record whose id is >= lwm (or the end).
   */
  private async scanTail(seg: Segment, lwm: number): Promise<{ lastId: number; startOffset: number }> {
    const cursor = new SegmentCursor(this.io, this.writeFd, 0, this.opts.readBufferSize, this.opts.maxPayloadSize);
    const name = segmentFileName(seg.firstId);
    let lastId = seg.firstId - 1;
    let validEnd = 0;
    let startOffset = -1;
    let skipped = 0;
    let regions = 0;
    for (;;) {
      const item = await cursor.next(seg.size, lastId, Number.MAX_SAFE_INTEGER + 1, false);
      if (item.kind === 'end' || item.kind === 'tail') break;
      if (item.kind === 'skipped') {
        skipped += item.bytes;
        regions++;
        continue;
      }
      lastId = item.id;
      validEnd = item.end;
      if (startOffset < 0 && item.id >= lwm) startOffset = item.offset;
    }
    const cut = seg.size - validEnd;
    if (cut > 0) {
      await this.io.ftruncate(this.writeFd, validEnd);
      if (this.always) await this.io.fdatasync(this.writeFd);
      seg.size = validEnd;
    }
    if (cut > 0 || skipped > 0) {
      const parts: string[] = [];
      if (cut > 0) parts.push(`cut ${cut} bytes of torn or corrupt data from the end`);
      if (skipped > 0) parts.push(`found ${skipped} corrupt bytes in ${regions} region(s) before valid records (kept; the reader will skip them)`);
      this.log?.warn(
        { segment: name, bytes: cut, truncatedAt: validEnd, skippedBytes: skipped },
        `queue: segment ${name}: ${parts.join('; ')}`,
      );
    }
    return { lastId, startOffset: startOffset < 0 ? validEnd : startOffset };
  }

  // ================================================================ writer

  private startWriter(): void {
    this.writing = true;
    // Start on the next turn of the event loop so every append of this turn joins the batch.
    this.writerIdle = new Promise<void>((resolve) => {
      setImmediate(() => {
        this.runWriter().then(resolve, resolve);
      });
    });
  }

  private async runWriter(): Promise<void> {
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
    const room = Math.max(this.opts.segmentSize - this.active.size, firstSize);
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
        await this.io.ftruncate(this.writeFd, this.active.size);
        this.tailDirty = false;
      }
      if (this.active.size > 0 && this.active.size + firstSize > this.opts.segmentSize) await this.roll(first.id);
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

    const seg = this.active;
    const fd = this.writeFd;
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
    this.commit(items, buf, seg, pos);
  }

  private async roll(firstId: number): Promise<void> {
    const seg: Segment = { firstId, size: 0, birthMs: Date.now() };
    const fd = await this.io.open(this.segPath(firstId), 'w+');
    const old = this.writeFd;
    this.writeFd = fd;
    this.segments.push(seg);
    this.active = seg;
    this.dirDirty = true;
    await this.io.close(old).catch((err: unknown) => this.log?.warn({ err }, 'queue: closing a full segment failed'));
  }

  private commit(items: PendingAppend[], buf: Buffer, seg: Segment, pos: number): void {
    seg.size = pos + buf.length;
    this.totalBytes += buf.length;
    this.unconfirmed -= items.length;
    if (this.writeFailing) {
      this.writeFailing = false;
      this.log?.info('queue: appends succeed again');
    }
    if (this.caughtUp) {
      if (this.readyBytes + buf.length <= this.opts.hotCacheBytes) {
        let o = 0;
        for (const p of items) {
          const start = o + RECORD_HEADER_SIZE;
          o = start + p.payload.byteLength;
          // a copy: a view would keep the whole batch buffer (up to 16 MiB) alive while the job runs
          this.ready.push({ id: p.id, payload: Buffer.from(buf.subarray(start, o)) });
        }
        this.readyBytes += buf.length;
        if (this.fetchSeg !== seg) {
          this.maintenanceDue = true; // the segment left behind may be deletable now
          this.requestAckFlush();
        }
        this.fetchSeg = seg;
        this.fetchPos = seg.size;
        this.fetchLastId = items[items.length - 1]!.id;
      } else {
        this.caughtUp = false; // the next read() starts a prefetch from the fetch position
      }
    }
    for (const p of items) p.resolve(p.id);
    this.emitReadable();
  }

  private emitReadable(): void {
    try {
      this.emit('readable');
    } catch (err) {
      this.log?.error({ err }, "queue: a 'readable' listener threw");
    }
  }

  private failBatch(items: PendingAppend[], err: unknown): void {
    if (items.length === 0) return;
    const code = errnoCode(err);
    const message = err instanceof Error ? err.message : String(err);
    // The ids of the batch will never exist: mark them so the low-water mark can pass them.
    for (const p of items) this.bitmap.set(p.id);
    this.unconfirmed -= items.length;
    if (!this.writeFailing) {
      this.writeFailing = true;
      this.log?.error({ err, code, records: items.length }, `queue: append failed (${code}); retrying with the next append`);
    }
    const error = new QueueWriteError(`queue write failed (${code}): ${message}`, { cause: err });
    for (const p of items) p.reject(error);
    this.requestAckFlush();
  }

  // ================================================================ reader

  private maybePrefetch(): void {
    if (this.caughtUp || this.prefetching || this.prefetchRetry || this.closing) return;
    if (this.readyBytes >= this.opts.readBufferSize / 2) return;
    this.prefetching = (async () => {
      const added = await this.prefetch();
      // clear the flag first, so a 'readable' listener's read() can start the next prefetch
      this.prefetching = null;
      if (added > 0) this.emitReadable();
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
          if (seg === this.active) break;
          const next = this.segments[this.segments.indexOf(seg) + 1];
          if (!next) break;
          await this.closeCursor();
          this.fetchSeg = next;
          this.fetchPos = 0;
          this.fetchLastId = Math.max(this.fetchLastId, next.firstId - 1);
          this.maintenanceDue = true; // the segment left behind may be deletable now
          this.requestAckFlush();
          continue;
        }
        if (!this.cursor || this.cursorSeg !== seg) {
          await this.closeCursor();
          if (!(await this.openCursor(seg))) continue;
        }
        const cursor = this.cursor!;
        cursor.pos = this.fetchPos;
        const end = seg.size;
        const item = await cursor.next(end, this.fetchLastId, this.nextId);
        const name = segmentFileName(seg.firstId);
        switch (item.kind) {
          case 'record':
            this.fetchPos = item.end;
            this.fetchLastId = item.id;
            if (!this.bitmap.has(item.id)) {
              // (an acked id needs no place in the ready list; read() treats the gap as done)
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
      if (this.fetchSeg === this.active && this.fetchPos >= this.active.size) this.caughtUp = true;
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
      if (!this.closing) {
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
      fd = await this.io.open(this.segPath(seg.firstId), 'r');
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' || seg === this.active) throw err;
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
    await this.io.close(c.fd).catch(noop);
  }

  /** Hand out record `r` unless it is acknowledged already; note ids found missing before it. */
  private deliver(r: ReadyRecord, out: QueueJob[]): void {
    const id = r.id;
    if (id < this.readNextId) return; // below the low-water mark at open
    if (id > this.readNextId) {
      // ids between do not exist (failed batch, cut tail or corrupt region): they are done
      if (this.bitmap.setRange(this.readNextId, id) > 0) this.requestAckFlush();
    }
    this.readNextId = id + 1;
    if (this.bitmap.has(id)) return;
    this.inFlight++;
    out.push({ id, payload: r.payload });
  }

  // ================================================================ acks

  private requestAckFlush(): void {
    if (this.closed || this.ackRunning || this.ackImmediate || this.ackRetryTimer) return;
    this.ackImmediate = setImmediate(() => {
      this.ackImmediate = null;
      this.startAckLoop();
    });
  }

  private startAckLoop(): void {
    if (this.ackRunning) return;
    this.ackRunning = true;
    this.ackIdle = this.runAckLoop();
  }

  private ackWorkPending(): boolean {
    return (
      this.pendingAcks.length > 0 ||
      this.bitmap.lowWaterMark !== this.persistedLwm ||
      this.ackNeedsSnapshot ||
      this.maintenanceDue
    );
  }

  private async runAckLoop(): Promise<void> {
    try {
      while (this.ackWorkPending()) {
        this.maintenanceDue = false;
        if (!(await this.persistAcks())) {
          // The disk may be full: deleting the consumed segments is what makes room for the
          // ack log (and for new appends), so do it even though the acks are not persisted.
          await this.deleteConsumedSegments().catch((err: unknown) => this.log?.warn({ err }, 'queue: deleting consumed segments failed'));
          if (!this.closed) {
            this.ackRetryTimer = setTimeout(() => {
              this.ackRetryTimer = null;
              this.startAckLoop();
            }, ACK_RETRY_MS);
            this.ackRetryTimer.unref();
          }
          return;
        }
        await this.deleteConsumedSegments();
      }
    } catch (err) {
      this.log?.error({ err }, 'queue: ack loop failed');
    } finally {
      this.ackRunning = false;
    }
  }

  /** Write pending acks (or a compacted snapshot). False on an I/O error (retried later). */
  private async persistAcks(): Promise<boolean> {
    const lwm = this.bitmap.lowWaterMark;
    if (this.pendingAcks.length === 0 && lwm === this.persistedLwm && !this.ackNeedsSnapshot) return true;
    if (this.ackNeedsSnapshot || this.ackOffset >= Math.max(this.opts.ackLogMaxBytes, 4 * this.lastSnapshotBytes)) {
      try {
        await this.snapshot();
      } catch (err) {
        this.ackNeedsSnapshot = true;
        this.ackWriteFailed(err);
        return false;
      }
      return true;
    }
    const ids = this.pendingAcks;
    this.pendingAcks = [];
    const batch = encodeAckBatch(lwm, ids);
    try {
      await writeFully(this.io, this.ackFd, batch, this.ackOffset);
      if (this.always) await this.io.fdatasync(this.ackFd);
    } catch (err) {
      // The bitmap still holds these acks: the snapshot written on retry includes them.
      this.ackNeedsSnapshot = true;
      this.ackWriteFailed(err);
      return false;
    }
    this.ackOffset += batch.length;
    this.persistedLwm = lwm;
    this.ackSucceeded();
    return true;
  }

  private ackWriteFailed(err: unknown): void {
    if (this.ackFailing) return;
    this.ackFailing = true;
    this.log?.error({ err, code: errnoCode(err) }, 'queue: persisting acknowledgements failed; retrying');
  }

  private ackSucceeded(): void {
    if (!this.ackFailing) return;
    this.ackFailing = false;
    this.log?.info('queue: acknowledgements are persisted again');
  }

  /**
   * Write the checkpoint, then replace the ack log by one batch holding the low-water mark and
   * every acked id above it. Synced even with fsync 'none' (it is rare).
   */
  private async snapshot(): Promise<void> {
    const { io } = this;
    const lwm = this.bitmap.lowWaterMark;
    const ids = this.bitmap.setIds();
    this.pendingAcks = []; // all of them are in the bitmap, hence in this snapshot
    await this.writeFileAtomically(CHECKPOINT, encodeCheckpoint({ lowWaterMark: lwm, nextId: this.nextId }), false);
    const buf = encodeAckBatch(lwm, ids);
    const fd = await this.writeFileAtomically(ACK_LOG, buf, true);
    const old = this.ackFd;
    this.ackFd = fd;
    this.ackOffset = buf.length;
    this.lastSnapshotBytes = buf.length;
    if (old >= 0) await io.close(old).catch(noop);
    await syncDir(io, this.opts.dir);
    this.persistedLwm = lwm;
    this.ackNeedsSnapshot = false;
    this.ackSucceeded();
  }

  /** Write `name`.tmp, fdatasync, rename over `name`. Returns the open fd if `keepOpen`, else -1. */
  private async writeFileAtomically(name: string, data: Buffer, keepOpen: boolean): Promise<number> {
    const { io } = this;
    const tmp = this.file(name + TMP_SUFFIX);
    const fd = await io.open(tmp, 'w+');
    let ok = false;
    try {
      await writeFully(io, fd, data, 0);
      await io.fdatasync(fd);
      await io.rename(tmp, this.file(name));
      ok = true;
    } finally {
      if (!ok || !keepOpen) await io.close(fd).catch(noop);
    }
    return keepOpen ? fd : -1;
  }

  /**
   * Delete the segments whose jobs are all acknowledged (in memory: every one of them finished,
   * so none can be lost by deleting them, whether or not their acks reached the ack log yet)
   * and that the prefetch has left. Never the active segment.
   */
  private async deleteConsumedSegments(): Promise<void> {
    while (this.segments.length > 1) {
      const s0 = this.segments[0]!;
      const s1 = this.segments[1]!;
      if (s1.firstId > this.bitmap.lowWaterMark || this.fetchSeg === s0) return;
      if (this.cursorSeg === s0) await this.closeCursor();
      if (this.segments[0] !== s0) continue;
      this.segments.shift();
      this.totalBytes -= s0.size;
      try {
        await this.io.unlink(this.segPath(s0.firstId));
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') {
          this.log?.warn({ err, segment: segmentFileName(s0.firstId) }, 'queue: could not delete a consumed segment (retried at next open)');
        }
      }
    }
  }

  // ================================================================ misc

  private noteTime(id: number): void {
    const now = Date.now();
    const last = this.times[this.times.length - 1];
    if (!last || now - last.t >= TIME_RESOLUTION_MS) this.times.push({ firstId: id, t: now });
  }

  private oldestTime(lwm: number): number | undefined {
    const times = this.times;
    while (this.timesHead + 1 < times.length && times[this.timesHead + 1]!.firstId <= lwm) this.timesHead++;
    if (this.timesHead > 1024 && this.timesHead * 2 > times.length) {
      this.times = times.slice(this.timesHead);
      this.timesHead = 0;
    }
    return this.times[this.timesHead]?.t;
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    while (this.writing) await this.writerIdle;
    if (this.prefetchRetry) clearTimeout(this.prefetchRetry);
    this.prefetchRetry = null;
    while (this.prefetching) await this.prefetching;
    this.closed = true;
    if (this.ackImmediate) clearImmediate(this.ackImmediate);
    if (this.ackRetryTimer) clearTimeout(this.ackRetryTimer);
    this.ackImmediate = null;
    this.ackRetryTimer = null;
    while (this.ackRunning) await this.ackIdle;
    try {
      await this.snapshot();
      await this.deleteConsumedSegments();
    } catch (err) {
      this.log?.error({ err, code: errnoCode(err) }, 'queue: could not persist acknowledgements at close; some jobs may be delivered again');
    }
    await this.closeFds();
  }

  private async closeFds(): Promise<void> {
    await this.closeCursor();
    const fds = [this.writeFd, this.ackFd];
    this.writeFd = -1;
    this.ackFd = -1;
    for (const fd of fds) if (fd >= 0) await this.io.close(fd).catch(noop);
  }
}
