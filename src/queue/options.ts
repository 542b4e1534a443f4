/** The options of `FileQueue.open`, their defaults and their validation (docs/QUEUE.md). */

import path from 'node:path';
import type { Logger } from 'pino';
import { nodeIo, type QueueIo } from './io.js';

export const MiB = 1024 * 1024;
const MAX_SEGMENT_SIZE = 2 ** 40;

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

/** The options with every default filled in, shared by the parts of the queue. */
export interface ResolvedOptions {
  /** Absolute. */
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

export function validateOptions(o: FileQueueOptions): ResolvedOptions {
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
