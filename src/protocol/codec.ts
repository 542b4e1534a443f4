/**
 * Frame codec for the Mega-Wechat wire protocol (docs/PROTOCOL.md). Command-agnostic: it knows
 * lengths, not meanings; commands.ts gives frames their meaning.
 *
 *   packLength u32 BE   bytes that follow this field
 *   headerLen  u32 BE
 *   header     headerLen bytes
 *   opaque     u32 BE
 *   bodyLen    u32 BE   } both absent (tset): the frame ends right after opaque
 *   body       bodyLen  }
 *
 * Like mqtt-packet's parser, nothing here touches a socket: the server feeds Buffers in
 * and decides what an error means for the connection.
 */

import { FrameTooLargeError, MalformedFrameError } from '../errors.js';

/** The original's `package_max_length`: the largest whole frame, length field included. */
export const DEFAULT_PACKAGE_MAX_LENGTH = 2465792;

export interface Frame {
  /**
   * Decoded as latin1 (one char per byte) so any frame re-encodes to the same bytes;
   * commands.ts is what insists on printable ASCII.
   */
  header: string;
  opaque: number;
  /** `null`: the bodyLen and body fields are absent (tset). An empty body is a 0-length Buffer. */
  body: Buffer | null;
}

export interface FrameDecoderOptions {
  /** Largest whole frame accepted, 4-byte length field included. Default {@link DEFAULT_PACKAGE_MAX_LENGTH}. */
  maxLength?: number;
}

const U32_MAX = 0xffffffff;
/** headerLen + opaque: the fewest bytes a packLength can announce. */
const MIN_PACK_LENGTH = 8;
const NON_LATIN1 = /[^\x00-\xff]/;
const EMPTY = Buffer.alloc(0);

export function encodeFrame(frame: Frame): Buffer {
  const { header, opaque, body } = frame;
  checkU32('opaque', opaque);
  // latin1 would silently turn such characters into other bytes.
  if (NON_LATIN1.test(header)) throw new RangeError('frame header must contain only single-byte characters');
  const headerLen = header.length;
  const packLength = 4 + headerLen + 4 + (body === null ? 0 : 4 + body.length);
  if (packLength > U32_MAX) throw new RangeError(`frame of ${packLength + 4} bytes cannot be encoded`);

  const buf = Buffer.allocUnsafe(4 + packLength);
  buf.writeUInt32BE(packLength, 0);
  buf.writeUInt32BE(headerLen, 4);
  buf.write(header, 8, 'latin1');
  const offset = 8 + headerLen;
  buf.writeUInt32BE(opaque, offset);
  if (body !== null) {
    buf.writeUInt32BE(body.length, offset + 4);
    body.copy(buf, offset + 8);
  }
  return buf;
}

/**
 * Decodes `buf` as exactly one complete frame. The returned body is a view into `buf`
 * (no copy), so it lives as long as `buf` is left unmodified.
 */
export function decodeFrame(buf: Buffer): Frame {
  if (buf.length < 4) throw new MalformedFrameError(`frame of ${buf.length} bytes is shorter than its length field`);
  const packLength = buf.readUInt32BE(0);
  if (packLength !== buf.length - 4) {
    throw new MalformedFrameError(`packLength ${packLength} does not match the ${buf.length - 4} bytes that follow it`);
  }
  return decodeAt(buf, 0, buf.length);
}

/**
 * Streaming decoder: feed it whatever the socket delivers, get back complete frames.
 *
 * Bodies of frames that arrived whole within one chunk are views into that chunk, so
 * `push` takes ownership of the chunk: do not modify it afterwards (net.Socket 'data'
 * chunks are never reused). A frame split across chunks is assembled in a buffer of
 * its own. Either way a returned body stays valid whatever is pushed later.
 *
 * Once bad bytes are met, the stream has lost its framing and cannot be resynchronised:
 * the decoder drops what it held and every later `push` throws the same error. Frames
 * completed earlier in the same chunk are still returned (so they are answered exactly as if
 * the chunk had been split before the bad bytes), and `error` then holds the error: check it
 * after handling them. A chunk with no complete frame before the bad bytes throws at once.
 */
export class FrameDecoder {
  readonly maxLength: number;

  // Partial frame: bytes gathered so far. The buffer grows geometrically (capped at the
  // frame's length) so a frame trickling in byte by byte costs O(n), and memory follows
  // the bytes actually received rather than the length a peer merely announces.
  #acc: Buffer = EMPTY;
  #accLength = 0;
  /** Whole length of the partial frame, or -1 while fewer than 4 bytes of it are here. */
  #frameLength = -1;
  #error: unknown = undefined;
  #failed = false;

  constructor(options: FrameDecoderOptions = {}) {
    const { maxLength = DEFAULT_PACKAGE_MAX_LENGTH } = options;
    if (typeof maxLength !== 'number' || !Number.isSafeInteger(maxLength) || maxLength <= 0) {
      throw new RangeError(`maxLength must be a positive integer, got ${String(maxLength)}`);
    }
    this.maxLength = maxLength;
  }

  /** Bytes of an incomplete frame held, 0 between frames: lets the server time out a stalled frame. */
  get bufferedBytes(): number {
    return this.#accLength;
  }

  /**
   * Returns every frame completed by `chunk`, in order.
   * @throws FrameTooLargeError as soon as a length field announces a frame above `maxLength`.
   * @throws MalformedFrameError when the lengths inside a frame disagree.
   */
  push(chunk: Buffer): Frame[] {
    if (this.#failed) throw this.#error;
    const frames: Frame[] = [];
    try {
      this.#push(chunk, frames);
      return frames;
    } catch (err) {
      this.#failed = true;
      this.#error = err;
      this.#acc = EMPTY;
      this.#accLength = 0;
      if (frames.length === 0) throw err;
      return frames;
    }
  }

  /** The error that ended the stream, once met (possibly by a `push` that returned frames). */
  get error(): Error | undefined {
    return this.#failed ? (this.#error as Error) : undefined;
  }

  #push(chunk: Buffer, frames: Frame[]): void {
    let offset = 0;

    if (this.#accLength > 0) {
      if (this.#frameLength < 0) {
        offset = Math.min(4 - this.#accLength, chunk.length);
        this.#append(chunk, 0, offset);
        if (this.#accLength < 4) return;
        this.#frameLength = this.#checkPackLength(this.#acc.readUInt32BE(0));
      }
      const take = Math.min(this.#frameLength - this.#accLength, chunk.length - offset);
      this.#append(chunk, offset, offset + take);
      offset += take;
      if (this.#accLength < this.#frameLength) return;
      // #acc is exactly #frameLength long (capacity is capped there) and is never written again.
      frames.push(decodeAt(this.#acc, 0, this.#frameLength));
      this.#acc = EMPTY;
      this.#accLength = 0;
      this.#frameLength = -1;
    }

    const end = chunk.length;
    while (end - offset >= 4) {
      const frameLength = this.#checkPackLength(chunk.readUInt32BE(offset));
      if (end - offset < frameLength) {
        this.#frameLength = frameLength;
        break;
      }
      frames.push(decodeAt(chunk, offset, offset + frameLength));
      offset += frameLength;
    }
    if (offset < end) this.#append(chunk, offset, end);
  }

  /** Returns the whole frame length, checked before any of the frame's other bytes arrive. */
  #checkPackLength(packLength: number): number {
    const frameLength = packLength + 4;
    if (frameLength > this.maxLength) throw new FrameTooLargeError(frameLength, this.maxLength);
    if (packLength < MIN_PACK_LENGTH) {
      throw new MalformedFrameError(`packLength ${packLength} is below the minimum of ${MIN_PACK_LENGTH}`);
    }
    return frameLength;
  }

  #append(src: Buffer, start: number, end: number): void {
    const needed = this.#accLength + (end - start);
    if (needed > this.#acc.length) {
      const cap = this.#frameLength < 0 ? 4 : this.#frameLength;
      const grown = Buffer.allocUnsafe(Math.min(cap, Math.max(needed, this.#acc.length * 2)));
      this.#acc.copy(grown, 0, 0, this.#accLength);
      this.#acc = grown;
    }
    src.copy(this.#acc, this.#accLength, start, end);
    this.#accLength = needed;
  }
}

/** Decodes the frame occupying buf[start, end); the caller has checked that packLength === end - start - 4. */
function decodeAt(buf: Buffer, start: number, end: number): Frame {
  const packLength = end - start - 4;
  if (packLength < MIN_PACK_LENGTH) {
    throw new MalformedFrameError(`packLength ${packLength} is below the minimum of ${MIN_PACK_LENGTH}`);
  }
  const headerLen = buf.readUInt32BE(start + 4);
  if (headerLen > packLength - MIN_PACK_LENGTH) {
    throw new MalformedFrameError(`headerLen ${headerLen} overruns packLength ${packLength}`);
  }
  const headerEnd = start + 8 + headerLen;
  const header = buf.toString('latin1', start + 8, headerEnd);
  const opaque = buf.readUInt32BE(headerEnd);
  const rest = end - headerEnd - 4;
  if (rest === 0) return { header, opaque, body: null };
  if (rest < 4) {
    throw new MalformedFrameError(`${rest} stray bytes after opaque, where a 4-byte bodyLen or nothing was expected`);
  }
  const bodyLen = buf.readUInt32BE(headerEnd + 4);
  if (bodyLen !== rest - 4) {
    throw new MalformedFrameError(`bodyLen ${bodyLen} does not match the ${rest - 4} bytes left in the frame`);
  }
  return { header, opaque, body: buf.subarray(headerEnd + 8, end) };
}

function checkU32(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new RangeError(`${name} must be an integer from 0 to ${U32_MAX}, got ${String(value)}`);
  }
}
