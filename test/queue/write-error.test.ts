import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { QueueWriteError } from '../../src/errors.js';
import { FileQueue, nodeIo, type QueueIo } from '../../src/queue/index.js';
import { drain, errnoError, fakeLogger, ids, lastSeg, text, tmpDir } from './helpers.js';

const b = (s: string): Buffer => Buffer.from(s);

/** An io whose segment writes/syncs/truncates fail while the matching flag is set. */
function faultyIo() {
  const faults = { write: '', partialWrite: '', fdatasync: '', ftruncate: '' };
  const io: Partial<QueueIo> = {
    write: async (fd, buf, off, len, pos) => {
      if (faults.partialWrite) {
        // half of the bytes reach the file, then the disk is full
        const half = Math.max(1, Math.floor(len / 2));
        await nodeIo.write(fd, buf, off, half, pos);
        const code = faults.partialWrite;
        faults.partialWrite = '';
        faults.write = code;
        return half;
      }
      if (faults.write) throw errnoError(faults.write, 'write');
      return nodeIo.write(fd, buf, off, len, pos);
    },
    fdatasync: async (fd) => {
      if (faults.fdatasync) throw errnoError(faults.fdatasync, 'fdatasync');
      return nodeIo.fdatasync(fd);
    },
    ftruncate: async (fd, len) => {
      if (faults.ftruncate) throw errnoError(faults.ftruncate, 'ftruncate');
      return nodeIo.ftruncate(fd, len);
    },
  };
  return { io, faults };
}

describe('write errors', () => {
  it('rejects the whole batch with QueueWriteError, never hands it out, recovers after', async (t) => {
    const dir = tmpDir(t);
    const { io, faults } = faultyIo();
    const { logger, calls } = fakeLogger();
    const q = await FileQueue.open({ dir, io, logger });
    await q.append(b('ok1'));

    faults.write = 'ENOSPC';
    const results = await Promise.allSettled([1, 2, 3].map((i) => q.append(b(`lost${i}`))));
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      const err = (r as PromiseRejectedResult).reason as QueueWriteError;
      assert.ok(err instanceof QueueWriteError);
      assert.equal(err.code, 'MEGA_ERR_QUEUE_WRITE');
      assert.match(err.message, /ENOSPC/);
    }
    assert.equal(calls.filter((c) => c.level === 'error').length, 1, 'logged once per failure streak');
    assert.equal(q.stats().depth, 1);
    assert.equal(q.stats().pendingAppends, 0);

    faults.write = '';
    const id = await q.append(b('ok2'));
    assert.equal(id, 5, 'ids of failed appends are not reused');
    assert.deepEqual(text(await drain(q)), ['ok1', 'ok2']);
    assert.equal(q.stats().depth, 2);
    await q.close();

    const { logger: l2, warns } = fakeLogger();
    const q2 = await FileQueue.open({ dir, logger: l2 });
    assert.equal(warns().length, 0, 'no damaged tail left behind');
    assert.deepEqual(ids(await drain(q2)), [1, 5]);
    await q2.close();
  });

  it('truncates a partial write back to the last good record', async (t) => {
    const dir = tmpDir(t);
    const { io, faults } = faultyIo();
    const q = await FileQueue.open({ dir, io });
    await q.append(b('good'));
    const goodSize = fs.statSync(lastSeg(dir)).size;
    faults.partialWrite = 'ENOSPC';
    await assert.rejects(q.append(Buffer.alloc(1000, 'x')), /ENOSPC/);
    assert.equal(fs.statSync(lastSeg(dir)).size, goodSize);
    faults.write = '';
    await q.append(b('after'));
    assert.deepEqual(text(await drain(q)), ['good', 'after']);
    await q.close();
  });

  it('fails the batch when fdatasync fails (EIO) and when truncating fails too', async (t) => {
    const dir = tmpDir(t);
    const { io, faults } = faultyIo();
    const q = await FileQueue.open({ dir, io });
    await q.append(b('a'));
    faults.fdatasync = 'EIO';
    faults.ftruncate = 'EIO';
    await assert.rejects(q.append(b('b')), (err: Error) => err instanceof QueueWriteError && /EIO/.test(err.message));
    faults.fdatasync = '';
    // the tail is still dirty and cannot be truncated: the next batch fails without writing
    await assert.rejects(q.append(b('c')), (err: Error) => err instanceof QueueWriteError && /EIO/.test(err.message));
    faults.ftruncate = '';
    await q.append(b('d'));
    assert.deepEqual(text(await drain(q)), ['a', 'd']);
    await q.close();
    const q2 = await FileQueue.open({ dir });
    assert.deepEqual(text(await drain(q2)), ['a', 'd']);
    await q2.close();
  });

  it('a failing ack-log write is retried and never loses the ack in memory', async (t) => {
    const dir = tmpDir(t);
    const { io, faults } = faultyIo();
    const q = await FileQueue.open({ dir, io });
    for (const s of ['a', 'b', 'c']) await q.append(b(s));
    await q.readAsync(3);
    faults.write = 'ENOSPC'; // the ack log write fails too
    q.ack(1);
    q.ack(2);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(q.stats().lowWaterMark, 3);
    faults.write = '';
    await q.close(); // the final snapshot persists them
    const q2 = await FileQueue.open({ dir });
    assert.deepEqual(text(await drain(q2)), ['c']);
    await q2.close();
  });

  it('opens on a full disk (the open-time snapshot fails) and persists acks once space returns', async (t) => {
    const dir = tmpDir(t);
    let q = await FileQueue.open({ dir });
    for (const s of ['a', 'b', 'c']) await q.append(b(s));
    await q.close();

    let full = true;
    const { logger, calls } = fakeLogger();
    q = await FileQueue.open({
      dir,
      logger,
      io: {
        open: async (p, flags) => {
          if (full && p.endsWith('.tmp')) throw errnoError('ENOSPC', 'open');
          return nodeIo.open(p, flags);
        },
      },
    });
    assert.equal(calls.filter((c) => c.level === 'error').length, 1);
    const jobs = await q.readAsync(10);
    assert.deepEqual(text(jobs), ['a', 'b', 'c']);
    q.ack(1);
    full = false;
    await q.close();
    q = await FileQueue.open({ dir });
    assert.deepEqual(text(await drain(q)), ['b', 'c']);
    await q.close();
  });
});
