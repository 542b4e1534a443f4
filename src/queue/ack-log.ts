/**
 * Acknowledgements: which ids are done (in memory, a bitmap anchored at the low-water mark),
 * and their persistence in `acks.log` and `checkpoint` (the ack loop, compaction). See
 * docs/QUEUE.md, "Acks".
 */

import path from 'node:path';
import type { Logger } from 'pino';
import type { IdBitmap } from './id-bitmap.js';
import { errnoCode, syncDir, writeFully, type QueueIo } from './io.js';
import type { ResolvedOptions } from './options.js';
import { encodeAckBatch, encodeCheckpoint } from './record.js';

export const ACK_LOG = 'acks.log';
export const CHECKPOINT = 'checkpoint';
/** A checkpoint or ack log being replaced; the rename over the real name is the commit point. */
export const TMP_SUFFIX = '.tmp';
const ACK_RETRY_MS = 1000;

const noop = (): void => undefined;

export interface AckLogHooks {
  /** The id the next append will get: written to the checkpoint, so ids are never reused. */
  nextId(): number;
  /**
   * Delete the segments whose jobs are all done. Called after each ack batch, also when the
   * batch could not be persisted (see runLoop).
   */
  deleteConsumed(): Promise<void>;
}

export class AckLog {
  private readonly io: QueueIo;
  private readonly log: Logger | undefined;
  private readonly always: boolean;
  /** Acknowledged since the last batch written. */
  private pending: number[] = [];
  /** The low-water mark the files on disk already say. */
  private persistedLwm: number;
  private fd = -1;
  /** Bytes in the ack log (where the next batch goes). */
  private offset = 0;
  private lastSnapshotBytes = 0;
  /** A write failed: the next persist writes a snapshot, which holds every ack of the bitmap. */
  private needsSnapshot = false;
  private running = false;
  private idle: Promise<void> = Promise.resolve();
  private immediate: NodeJS.Immediate | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private failing = false;
  /** A segment may have become deletable without any new ack. */
  private maintenanceDue = false;
  private closed = false;

  /** `done` comes from recovery; what it says is already on disk until the first ack. */
  constructor(
    private readonly opts: ResolvedOptions,
    private readonly done: IdBitmap,
    private readonly hooks: AckLogHooks,
  ) {
    this.io = opts.io;
    this.log = opts.logger;
    this.always = opts.fsync === 'always';
    this.persistedLwm = done.lowWaterMark;
  }

  /** Every id below this is done. */
  get lowWaterMark(): number {
    return this.done.lowWaterMark;
  }

  /** Done ids at or above the low-water mark. */
  get doneAbove(): number {
    return this.done.setAbove;
  }

  isDone(id: number): boolean {
    return this.done.has(id);
  }

  /** Acknowledge `id`; false if it was done already. */
  ack(id: number): boolean {
    if (!this.done.set(id)) return false;
    this.pending.push(id);
    this.requestFlush();
    return true;
  }

  /**
   * Ids that will never exist (a failed batch) or were found missing (a cut tail, a corrupt
   * region): marked done, so the low-water mark can pass them. Not logged one by one: the
   * next low-water mark or snapshot covers them.
   */
  markGone(ids: readonly number[]): void {
    for (const id of ids) this.done.set(id);
    this.requestFlush();
  }

  /** As markGone, for the ids in [from, to). */
  markGoneRange(from: number, to: number): void {
    if (this.done.setRange(from, to) > 0) this.requestFlush();
  }

  /** The read-ahead left a segment behind: it may be deletable now. */
  segmentLeft(): void {
    this.maintenanceDue = true;
    this.requestFlush();
  }

  /**
   * At open: a fresh checkpoint and a compacted ack log (which also clears any damage). Not
   * fatal: with a full disk the queue must still open (appends then fail with QueueWriteError → 503).
   */
  async start(): Promise<void> {
    try {
      await this.snapshot();
    } catch (err) {
      this.needsSnapshot = true;
      this.writeFailed(err);
      this.requestFlush();
    }
  }

  /** Run the ack loop right after the acks of this event-loop turn. */
  requestFlush(): void {
    if (this.closed || this.running || this.immediate || this.retryTimer) return;
    this.immediate = setImmediate(() => {
      this.immediate = null;
      this.startLoop();
    });
  }

  /**
   * Stop the loop, then persist everything (checkpoint and compacted ack log) and delete the
   * consumed segments. Errors are logged: the acks not persisted are delivered again.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.immediate) clearImmediate(this.immediate);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.immediate = null;
    this.retryTimer = null;
    while (this.running) await this.idle;
    try {
      await this.snapshot();
      await this.hooks.deleteConsumed();
    } catch (err) {
      this.log?.error({ err, code: errnoCode(err) }, 'queue: could not persist acknowledgements at close; some jobs may be delivered again');
    }
  }

  /** Close the ack log's file (after close(), or when open fails). */
  async closeFd(): Promise<void> {
    const fd = this.fd;
    this.fd = -1;
    if (fd >= 0) await this.io.close(fd).catch(noop);
  }

  private startLoop(): void {
    if (this.running) return;
    this.running = true;
    this.idle = this.runLoop();
  }

  private workPending(): boolean {
    return this.pending.length > 0 || this.done.lowWaterMark !== this.persistedLwm || this.needsSnapshot || this.maintenanceDue;
  }

  private async runLoop(): Promise<void> {
    try {
      while (this.workPending()) {
        this.maintenanceDue = false;
        if (!(await this.persist())) {
          // The disk may be full: deleting the consumed segments is what makes room for the
          // ack log (and for new appends), so do it even though the acks are not persisted.
          // Their jobs are all finished, so deleting them loses nothing (a crash then simply
          // cannot re-deliver them); otherwise a full disk would stay full after the backlog
          // drained: the ack log could not grow, so no segment would ever be deleted.
          await this.hooks.deleteConsumed().catch((err: unknown) => this.log?.warn({ err }, 'queue: deleting consumed segments failed'));
          if (!this.closed) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = null;
              this.startLoop();
            }, ACK_RETRY_MS);
            this.retryTimer.unref();
          }
          return;
        }
        await this.hooks.deleteConsumed();
      }
    } catch (err) {
      this.log?.error({ err }, 'queue: ack loop failed');
    } finally {
      this.running = false;
    }
  }

  /** Write pending acks (or a compacted snapshot). False on an I/O error (retried later). */
  private async persist(): Promise<boolean> {
    const lwm = this.done.lowWaterMark;
    if (this.pending.length === 0 && lwm === this.persistedLwm && !this.needsSnapshot) return true;
    // 4× the last snapshot: a log that cannot shrink much (many acks above the low-water mark)
    // is not rewritten after every batch.
    if (this.needsSnapshot || this.offset >= Math.max(this.opts.ackLogMaxBytes, 4 * this.lastSnapshotBytes)) {
      try {
        await this.snapshot();
      } catch (err) {
        this.needsSnapshot = true;
        this.writeFailed(err);
        return false;
      }
      return true;
    }
    const ids = this.pending;
    this.pending = [];
    const batch = encodeAckBatch(lwm, ids);
    try {
      await writeFully(this.io, this.fd, batch, this.offset);
      if (this.always) await this.io.fdatasync(this.fd);
    } catch (err) {
      // The bitmap still holds these acks: the snapshot written on retry includes them.
      this.needsSnapshot = true;
      this.writeFailed(err);
      return false;
    }
    this.offset += batch.length;
    this.persistedLwm = lwm;
    this.succeeded();
    return true;
  }

  private writeFailed(err: unknown): void {
    if (this.failing) return;
    this.failing = true;
    this.log?.error({ err, code: errnoCode(err) }, 'queue: persisting acknowledgements failed; retrying');
  }

  private succeeded(): void {
    if (!this.failing) return;
    this.failing = false;
    this.log?.info('queue: acknowledgements are persisted again');
  }

  /**
   * Write the checkpoint, then replace the ack log by one batch holding the low-water mark and
   * every acked id above it. Replay takes the union of both files, so a crash at any point
   * between is safe. Synced even with fsync 'none' (it is rare).
   */
  private async snapshot(): Promise<void> {
    const { io } = this;
    const lwm = this.done.lowWaterMark;
    const ids = this.done.setIds();
    this.pending = []; // all of them are in the bitmap, hence in this snapshot
    await this.writeFileAtomically(CHECKPOINT, encodeCheckpoint({ lowWaterMark: lwm, nextId: this.hooks.nextId() }), false);
    const buf = encodeAckBatch(lwm, ids);
    const fd = await this.writeFileAtomically(ACK_LOG, buf, true);
    const old = this.fd;
    this.fd = fd;
    this.offset = buf.length;
    this.lastSnapshotBytes = buf.length;
    if (old >= 0) await io.close(old).catch(noop);
    await syncDir(io, this.opts.dir);
    this.persistedLwm = lwm;
    this.needsSnapshot = false;
    this.succeeded();
  }

  /** Write `name`.tmp, fdatasync, rename over `name`. Returns the open fd if `keepOpen`, else -1. */
  private async writeFileAtomically(name: string, data: Buffer, keepOpen: boolean): Promise<number> {
    const { io } = this;
    const file = path.join(this.opts.dir, name);
    const tmp = file + TMP_SUFFIX;
    const fd = await io.open(tmp, 'w+');
    let ok = false;
    try {
      await writeFully(io, fd, data, 0);
      await io.fdatasync(fd);
      await io.rename(tmp, file);
      ok = true;
    } finally {
      if (!ok || !keepOpen) await io.close(fd).catch(noop);
    }
    return keepOpen ? fd : -1;
  }
}
