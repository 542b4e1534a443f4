/**
 * Recovery at open (as Kafka's LogLoader): from the files in the queue directory, the state a
 * running queue starts from. Reads the checkpoint and the ack log (both small), deletes fully
 * acknowledged segments, stats the others and scans ONLY the last segment, to find the end of
 * the valid records and cut a damaged tail. Older segments are not read. See docs/QUEUE.md.
 */

import path from 'node:path';
import { IdBitmap } from './id-bitmap.js';
import { errnoCode, syncDir } from './io.js';
import type { ResolvedOptions } from './options.js';
import { decodeAckLog, decodeCheckpoint, type AckLogContents, type Checkpoint } from './record.js';
import { SegmentCursor } from './segment-cursor.js';
import { parseSegmentName, segmentFileName, Segments, type Segment } from './segments.js';
import { ACK_LOG, CHECKPOINT, TMP_SUFFIX } from './ack-log.js';

const noop = (): void => undefined;

/** Where the read-ahead starts: the segment holding the low-water mark. */
export interface FetchPosition {
  seg: Segment;
  /** Byte offset in `seg` of the next record to read. */
  pos: number;
  /** Records at `pos` and after must have larger ids than this. */
  lastId: number;
}

export interface RecoveredQueue {
  /** At least one segment; the last one is the active one. */
  segments: Segments;
  /** The active segment, open read-write; its size is the end of its last valid record. */
  writeFd: number;
  /** Above every id seen in the segment tail, the ack log and the checkpoint: ids are never reused. */
  nextId: number;
  /**
   * Ids known to need no delivery: the acknowledged ones, and those that exist nowhere (below
   * the first segment, after the last valid record). Its low-water mark is where reading starts.
   */
  done: IdBitmap;
  fetch: FetchPosition;
}

/** Open the queue directory `opts.dir` (created if missing) and recover its state. */
export async function loadQueue(opts: ResolvedOptions): Promise<RecoveredQueue> {
  const { io, dir, logger: log } = opts;
  await io.mkdir(dir);
  const file = (name: string): string => path.join(dir, name);

  // ---- directory listing
  const segs: Segment[] = [];
  for (const name of await io.readdir(dir)) {
    const firstId = parseSegmentName(name);
    if (firstId !== undefined) {
      if (Number.isNaN(firstId)) log?.warn({ file: name }, `queue: ignoring ${name}: not a valid segment name`);
      else segs.push({ firstId, size: 0, birthMs: 0 });
    } else if (name === ACK_LOG + TMP_SUFFIX || name === CHECKPOINT + TMP_SUFFIX) {
      // an interrupted replacement: the rename is the commit point, so the old file is intact
      await io.unlink(file(name)).catch(noop);
    }
  }
  segs.sort((a, b) => a.firstId - b.firstId);
  const segPath = (firstId: number): string => file(segmentFileName(firstId));

  // ---- checkpoint and ack log
  const cp = await readCheckpoint(opts, file(CHECKPOINT), segs.length > 0);
  const acks = await readAckLog(opts, file(ACK_LOG), segs.length > 0);
  let lwm = Math.max(1, cp?.lowWaterMark ?? 0, acks.lowWaterMark);
  let maxAcked = 0;
  for (const id of acks.ids) if (id > maxAcked) maxAcked = id;

  // ---- delete segments whose ids are all acknowledged (never the last one)
  while (segs.length > 1 && segs[1]!.firstId <= lwm) {
    const s = segs.shift()!;
    await io.unlink(segPath(s.firstId)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') log?.warn({ err, segment: segmentFileName(s.firstId) }, 'queue: could not delete a consumed segment');
    });
  }
  // Ids below the first segment are in no file: acknowledged (their segment was deleted, maybe
  // before the acks reached the ack log: see Segments.deleteConsumed) or never written.
  if (segs.length > 0 && segs[0]!.firstId > lwm) lwm = segs[0]!.firstId;
  for (const s of segs) {
    const st = await io.stat(segPath(s.firstId));
    s.size = st.size;
    s.birthMs = Math.floor(st.birthtimeMs > 0 ? st.birthtimeMs : st.mtimeMs);
  }

  let writeFd = -1;
  try {
    // ---- scan the last segment: find the end of the valid records, cut a damaged tail
    let afterId = 0;
    let startOffset = 0;
    if (segs.length > 0) {
      const last = segs[segs.length - 1]!;
      writeFd = await io.open(segPath(last.firstId), 'r+');
      const r = await scanTail(opts, writeFd, last, lwm);
      afterId = r.lastId;
      startOffset = r.startOffset;
    }

    // ---- ids and acknowledgements
    const nextId = Math.max(1, lwm, cp?.nextId ?? 0, maxAcked + 1, afterId + 1, segs.length > 0 ? segs[segs.length - 1]!.firstId : 0);
    const done = new IdBitmap(lwm);
    for (const id of acks.ids) if (id < nextId) done.set(id);
    // Ids above the last valid record of the last segment exist nowhere (cut tail, failed batch).
    done.setRange(afterId + 1, nextId);
    lwm = done.lowWaterMark;

    if (segs.length === 0) {
      const seg: Segment = { firstId: nextId, size: 0, birthMs: Date.now() };
      writeFd = await io.open(segPath(seg.firstId), 'w+');
      await syncDir(io, dir);
      segs.push(seg);
      startOffset = 0;
    }
    const segments = new Segments(dir, io, log, segs);
    const active = segments.active;

    // ---- fetch position: the segment holding the low-water mark
    let fetch = segs[0]!;
    for (const s of segs) if (s.firstId <= lwm) fetch = s;
    const position: FetchPosition =
      fetch === active
        ? { seg: fetch, pos: startOffset, lastId: Math.max(fetch.firstId - 1, startOffset > 0 ? lwm - 1 : 0) }
        : { seg: fetch, pos: 0, lastId: fetch.firstId - 1 };
    return { segments, writeFd, nextId, done, fetch: position };
  } catch (err) {
    if (writeFd >= 0) await io.close(writeFd).catch(noop);
    throw err;
  }
}

/**
 * The bytes of a small bookkeeping file, or undefined when it does not exist. Missing where
 * segments exist means it was lost: said once, since jobs already acknowledged may then be
 * delivered again (never lost).
 */
async function readBookkeeping(opts: ResolvedOptions, file: string, what: string, expectFiles: boolean): Promise<Buffer | undefined> {
  try {
    return await opts.io.readFile(file);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    if (expectFiles) opts.logger?.warn({ file }, `queue: ${what} is missing; acknowledged jobs may be delivered again`);
    return undefined;
  }
}

async function readCheckpoint(opts: ResolvedOptions, file: string, expectFiles: boolean): Promise<Checkpoint | undefined> {
  const buf = await readBookkeeping(opts, file, 'checkpoint', expectFiles);
  if (!buf) return undefined;
  const cp = decodeCheckpoint(buf);
  if (!cp) {
    opts.logger?.warn(
      { file, bytes: buf.length },
      `queue: checkpoint is corrupt (${buf.length} bytes); ignoring it, acknowledged jobs may be delivered again`,
    );
  }
  return cp;
}

async function readAckLog(opts: ResolvedOptions, file: string, expectFiles: boolean): Promise<AckLogContents> {
  const buf = await readBookkeeping(opts, file, 'ack log', expectFiles);
  if (!buf) return { lowWaterMark: 0, ids: [], validBytes: 0, damagedBytes: 0 };
  const acks = decodeAckLog(buf);
  if (acks.damagedBytes > 0) {
    opts.logger?.warn(
      { file, bytes: acks.damagedBytes, validBytes: acks.validBytes },
      `queue: ignored ${acks.damagedBytes} damaged bytes at offset ${acks.validBytes} of the ack log; acknowledged jobs may be delivered again`,
    );
  }
  return acks;
}

/**
 * Scan `seg` (the last segment, open as `fd`) from its start; truncate what follows the last
 * valid record. Returns the last valid id (or firstId - 1) and the offset of the first record
 * whose id is >= lwm (or the end).
 */
async function scanTail(opts: ResolvedOptions, fd: number, seg: Segment, lwm: number): Promise<{ lastId: number; startOffset: number }> {
  const { io, logger: log } = opts;
  const cursor = new SegmentCursor(io, fd, 0, opts.readBufferSize, opts.maxPayloadSize);
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
    await io.ftruncate(fd, validEnd);
    if (opts.fsync === 'always') await io.fdatasync(fd);
    seg.size = validEnd;
  }
  if (cut > 0 || skipped > 0) {
    const parts: string[] = [];
    if (cut > 0) parts.push(`cut ${cut} bytes of torn or corrupt data from the end`);
    if (skipped > 0) parts.push(`found ${skipped} corrupt bytes in ${regions} region(s) before valid records (kept; the reader will skip them)`);
    log?.warn({ segment: name, bytes: cut, truncatedAt: validEnd, skippedBytes: skipped }, `queue: segment ${name}: ${parts.join('; ')}`);
  }
  return { lastId, startOffset: startOffset < 0 ? validEnd : startOffset };
}
