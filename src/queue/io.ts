/**
 * The file-system operations the queue uses, behind an interface so tests (and the later
 * crash/ENOSPC suite) can inject faults: `FileQueue.open({ dir, io: { write: failingWrite } })`.
 * Every operation is promise based on raw file descriptors (no FileHandle objects, so a queue
 * dropped without close() — a simulated crash — never triggers "closing file descriptor on GC").
 */

import fs from 'node:fs';

export interface QueueIo {
  open(path: string, flags: string): Promise<number>;
  close(fd: number): Promise<void>;
  /** pread: resolves with the number of bytes read (0 at end of file). */
  read(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** pwrite: resolves with the number of bytes written (may be short). */
  write(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  fdatasync(fd: number): Promise<void>;
  fsync(fd: number): Promise<void>;
  ftruncate(fd: number, length: number): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  readdir(path: string): Promise<string[]>;
  stat(path: string): Promise<{ size: number; birthtimeMs: number; mtimeMs: number }>;
  mkdir(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
}

function cb<T>(resolve: (v: T) => void, reject: (e: Error) => void) {
  return (err: Error | null, value: T) => (err ? reject(err) : resolve(value));
}

export const nodeIo: QueueIo = {
  open: (path, flags) => new Promise((res, rej) => fs.open(path, flags, 0o644, cb(res, rej))),
  close: (fd) => new Promise((res, rej) => fs.close(fd, (e) => (e ? rej(e) : res()))),
  read: (fd, buf, offset, length, position) =>
    new Promise((res, rej) => fs.read(fd, buf, offset, length, position, (e, n) => (e ? rej(e) : res(n)))),
  write: (fd, buf, offset, length, position) =>
    new Promise((res, rej) => fs.write(fd, buf, offset, length, position, (e, n) => (e ? rej(e) : res(n)))),
  fdatasync: (fd) => new Promise((res, rej) => fs.fdatasync(fd, (e) => (e ? rej(e) : res()))),
  fsync: (fd) => new Promise((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res()))),
  ftruncate: (fd, length) => new Promise((res, rej) => fs.ftruncate(fd, length, (e) => (e ? rej(e) : res()))),
  readFile: (path) => fs.promises.readFile(path),
  readdir: (path) => fs.promises.readdir(path),
  stat: (path) => fs.promises.stat(path),
  mkdir: async (path) => {
    await fs.promises.mkdir(path, { recursive: true });
  },
  rename: (from, to) => fs.promises.rename(from, to),
  unlink: (path) => fs.promises.unlink(path),
};

/** Write all of `buf` at `position`, looping over short writes. */
export async function writeFully(io: QueueIo, fd: number, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const n = await io.write(fd, buf, done, buf.byteLength - done, position + done);
    if (n <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += n;
  }
}

/** fsync a directory so that file creations, renames and deletions in it are durable. */
export async function syncDir(io: QueueIo, dir: string): Promise<void> {
  const fd = await io.open(dir, 'r');
  try {
    await io.fsync(fd);
  } catch (err) {
    // Some platforms/filesystems cannot fsync a directory; that is not a data error.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM' && code !== 'ENOTSUP') throw err;
  } finally {
    await io.close(fd).catch(() => undefined);
  }
}

export function errnoCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}
