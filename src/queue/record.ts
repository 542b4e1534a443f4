/**
 * On-disk encodings of the file queue (all integers big-endian).
 *
 * Segment record (16-byte header + payload):
 *
 *   offset size field
 *   0      4    payloadLen   u32, bytes of payload
 *   4      4    crc          CRC-32C over bytes [8, 16 + payloadLen): the id and the payload
 *   8      8    id           u64, the job id (< 2^53), strictly increasing through the log
 *   16     n    payload
 *
 * Ack-log batch: the same 16-byte header shape, where the "id" field holds the low-water
 * mark at the time of the write and the payload is `count` u64 acknowledged ids:
 *
 *   0 u32 byteLen (= 8 * count) · 4 u32 crc over [8, 16 + byteLen) · 8 u64 lowWaterMark · 16 u64[count] ids
 *
 * Checkpoint (28 bytes):
 *
 *   0 "MWQC" · 4 u32 version (1) · 8 u64 lowWaterMark · 16 u64 nextId · 24 u32 CRC-32C of [0, 24)
 *
 * A zeroed header never verifies: the CRC-32C of eight zero bytes is not zero, and id 0 is
 * never a valid job id.
 */

import { crc32c } from './crc32c.js';

export const RECORD_HEADER_SIZE = 16;
const TWO_32 = 0x1_0000_0000;
/** Largest high word of a u64 that still gives a safe JS integer (2^53 - 1). */
const MAX_HI = 0x1f_ffff;

export function writeU64(buf: Uint8Array, off: number, value: number): void {
  const view = toBuffer(buf);
  view.writeUInt32BE(Math.floor(value / TWO_32), off);
  view.writeUInt32BE(value >>> 0, off + 4);
}

/** The u64 at `off`, or -1 if it is not a safe JS integer. */
export function readU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32BE(off);
  if (hi > MAX_HI) return -1;
  return hi * TWO_32 + buf.readUInt32BE(off + 4);
}

function toBuffer(buf: Uint8Array): Buffer {
  return Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Bytes a record with a payload of `payloadLen` bytes takes on disk. */
export function recordSize(payloadLen: number): number {
  return RECORD_HEADER_SIZE + payloadLen;
}

/** Encode one record into `target` at `off`; returns the offset after it. */
export function encodeRecordInto(target: Buffer, off: number, id: number, payload: Uint8Array): number {
  const len = payload.byteLength;
  target.writeUInt32BE(len, off);
  writeU64(target, off + 8, id);
  target.set(payload, off + RECORD_HEADER_SIZE);
  const end = off + RECORD_HEADER_SIZE + len;
  target.writeUInt32BE(crc32c(target, 0, off + 8, end), off + 4);
  return end;
}

export function encodeRecord(id: number, payload: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(recordSize(payload.byteLength));
  encodeRecordInto(buf, 0, id, payload);
  return buf;
}

/** Limits a header must satisfy to be considered at all (before its CRC is computed). */
export interface HeaderLimits {
  /** Largest acceptable payload. */
  maxPayload: number;
  /** The id must be greater than this. */
  afterId: number;
  /** The id must be less than this. */
  beforeId: number;
}

/**
 * Plausibility check of the header at `buf[off]` (16 bytes must be available).
 * Returns the payload length, or -1 when the header cannot start a valid record.
 * `room` is the number of bytes available after the header (until the end of valid data).
 */
export function checkHeader(buf: Buffer, off: number, limits: HeaderLimits, room: number): number {
  const len = buf.readUInt32BE(off);
  if (len > limits.maxPayload || len > room) return -1;
  const id = readU64(buf, off + 8);
  if (id <= limits.afterId || id >= limits.beforeId) return -1;
  return len;
}

/** Whether the CRC of the record at `off` (whose whole `16 + len` bytes are in `buf`) matches. */
export function verifyRecord(buf: Buffer, off: number, len: number): boolean {
  return buf.readUInt32BE(off + 4) === crc32c(buf, 0, off + 8, off + RECORD_HEADER_SIZE + len);
}

export type DecodeResult =
  | { kind: 'record'; id: number; payload: Buffer; size: number }
  /** Not enough bytes in `[off, end)` to hold the whole record. */
  | { kind: 'incomplete' }
  | { kind: 'corrupt'; reason: string };

/**
 * Decode the record at `buf[off]`, looking at bytes before `end` only. The returned payload
 * is a view into `buf` (copy it if `buf` is reused).
 */
export function decodeRecord(
  buf: Buffer,
  off: number,
  end: number = buf.length,
  limits: HeaderLimits = { maxPayload: 0xffff_ffff, afterId: 0, beforeId: Number.MAX_SAFE_INTEGER + 1 },
): DecodeResult {
  if (end - off < RECORD_HEADER_SIZE) return { kind: 'incomplete' };
  const len = buf.readUInt32BE(off);
  if (len > limits.maxPayload) return { kind: 'corrupt', reason: `payload length ${len} exceeds ${limits.maxPayload}` };
  const id = readU64(buf, off + 8);
  if (id < 0) return { kind: 'corrupt', reason: 'id is not a safe integer' };
  if (id <= limits.afterId || id >= limits.beforeId) return { kind: 'corrupt', reason: `id ${id} out of order` };
  if (end - off - RECORD_HEADER_SIZE < len) return { kind: 'incomplete' };
  if (!verifyRecord(buf, off, len)) return { kind: 'corrupt', reason: 'checksum mismatch' };
  const start = off + RECORD_HEADER_SIZE;
  return { kind: 'record', id, payload: buf.subarray(start, start + len), size: RECORD_HEADER_SIZE + len };
}

// ---------------------------------------------------------------- ack log

/** Encode one ack-log batch: the low-water mark and the ids acknowledged since the last batch. */
export function encodeAckBatch(lowWaterMark: number, ids: ArrayLike<number>): Buffer {
  const n = ids.length;
  const buf = Buffer.allocUnsafe(RECORD_HEADER_SIZE + 8 * n);
  buf.writeUInt32BE(8 * n, 0);
  writeU64(buf, 8, lowWaterMark);
  for (let i = 0, o = RECORD_HEADER_SIZE; i < n; i++, o += 8) writeU64(buf, o, ids[i]!);
  buf.writeUInt32BE(crc32c(buf, 0, 8, buf.length), 4);
  return buf;
}

export interface AckLogContents {
  /** Highest low-water mark of all valid batches (0 if none). */
  lowWaterMark: number;
  /** Every acknowledged id of the valid batches, in log order (duplicates possible). */
  ids: number[];
  /** Byte length of the valid prefix. */
  validBytes: number;
  /** Bytes after the valid prefix (damage or a torn last batch). */
  damagedBytes: number;
}

/** Largest ack batch accepted while reading (64 MiB = 8 Mi ids). */
const MAX_ACK_BATCH_BYTES = 64 * 1024 * 1024;

/** Parse an ack log; stops at the first batch that is short, implausible or fails its CRC. */
export function decodeAckLog(buf: Buffer): AckLogContents {
  let off = 0;
  let lowWaterMark = 0;
  const ids: number[] = [];
  while (buf.length - off >= RECORD_HEADER_SIZE) {
    const len = buf.readUInt32BE(off);
    if (len % 8 !== 0 || len > MAX_ACK_BATCH_BYTES || buf.length - off - RECORD_HEADER_SIZE < len) break;
    const lwm = readU64(buf, off + 8);
    if (lwm < 0 || !verifyRecord(buf, off, len)) break;
    const end = off + RECORD_HEADER_SIZE + len;
    let ok = true;
    const first = ids.length;
    for (let o = off + RECORD_HEADER_SIZE; o < end; o += 8) {
      const id = readU64(buf, o);
      if (id < 1) {
        ok = false;
        break;
      }
      ids.push(id);
    }
    if (!ok) {
      ids.length = first;
      break;
    }
    if (lwm > lowWaterMark) lowWaterMark = lwm;
    off = end;
  }
  return { lowWaterMark, ids, validBytes: off, damagedBytes: buf.length - off };
}

// ---------------------------------------------------------------- checkpoint

export const CHECKPOINT_SIZE = 28;
const CHECKPOINT_MAGIC = 0x4d575143; // "MWQC"
const CHECKPOINT_VERSION = 1;

export interface Checkpoint {
  /** Every id below this is acknowledged. */
  lowWaterMark: number;
  /** Next id the queue would have assigned when the checkpoint was written (ids are never reused). */
  nextId: number;
}

export function encodeCheckpoint(cp: Checkpoint): Buffer {
  const buf = Buffer.alloc(CHECKPOINT_SIZE);
  buf.writeUInt32BE(CHECKPOINT_MAGIC, 0);
  buf.writeUInt32BE(CHECKPOINT_VERSION, 4);
  writeU64(buf, 8, cp.lowWaterMark);
  writeU64(buf, 16, cp.nextId);
  buf.writeUInt32BE(crc32c(buf, 0, 0, 24), 24);
  return buf;
}

/** The checkpoint in `buf`, or undefined if it is not a valid one (wrong size, magic, version or CRC). */
export function decodeCheckpoint(buf: Buffer): Checkpoint | undefined {
  if (buf.length !== CHECKPOINT_SIZE) return undefined;
  if (buf.readUInt32BE(0) !== CHECKPOINT_MAGIC || buf.readUInt32BE(4) !== CHECKPOINT_VERSION) return undefined;
  if (buf.readUInt32BE(24) !== crc32c(buf, 0, 0, 24)) return undefined;
  const lowWaterMark = readU64(buf, 8);
  const nextId = readU64(buf, 16);
  if (lowWaterMark < 0 || nextId < 0) return undefined;
  return { lowWaterMark, nextId };
}
