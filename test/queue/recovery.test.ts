import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FileQueue, nodeIo, segmentFileName } from '../../src/queue/index.js';
import { drain, fakeLogger, ids, lastSeg, segFiles, text, tmpDir, type LogCall } from './helpers.js';

const b = (s: string): Buffer => Buffer.from(s);
const REC = (n: number): number => 16 + n; // record size for an n-byte payload

/** A queue with `n` records "job1".."jobN" (4-byte payloads for n < 10), closed. */
async function seed(dir: string, n: number, opts: { segmentSize?: number } = {}): Promise<void> {
  const q = await FileQueue.open({ dir, ...opts });
  for (let i = 1; i <= n; i++) await q.append(b(`job${i}`));
  await q.close();
}

async function reopen(dir: string, opts: { segmentSize?: number } = {}) {
  const { logger, warns } = fakeLogger();
  const q = await FileQueue.open({ dir, logger, ...opts });
  return { q, warns };
}

/** The one warning, which must mention `bytes` both in its fields and its message. */
function assertOneWarning(warns: LogCall[], bytes: number): void {
  assert.equal(warns.length, 1, `one warning, got ${JSON.stringify(warns)}`);
  const w = warns[0]!;
  assert.equal((w.obj as { bytes: number }).bytes, bytes);
  assert.match(w.msg ?? '', new RegExp(`\\b${bytes} bytes`));
}

describe('recovery of a damaged segment tail', () => {
  it('cuts a truncated last record and keeps the others', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 5);
    const seg = lastSeg(dir);
    fs.truncateSync(seg, 5 * REC(4) - 3);
    const { q, warns } = await reopen(dir);
    assertOneWarning(warns(), REC(4) - 3);
    assert.equal(fs.statSync(seg).size, 4 * REC(4), 'file truncated to the last valid record');
    assert.equal(q.stats().depth, 4, 'the cut record is not counted');
    assert.deepEqual(text(await drain(q)), ['job1', 'job2', 'job3', 'job4']);
    assert.equal(await q.append(b('job6')), 6, 'the lost id is not reused');
    await q.close();
    const again = await reopen(dir);
    assert.equal(again.warns().length, 0, 'reported once only');
    assert.deepEqual(text(await drain(again.q)), ['job1', 'job2', 'job3', 'job4', 'job6']);
    await again.q.close();
  });

  it('cuts garbage appended after the last record', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 3);
    fs.appendFileSync(lastSeg(dir), randomBytes(100));
    const { q, warns } = await reopen(dir);
    assertOneWarning(warns(), 100);
    assert.deepEqual(text(await drain(q)), ['job1', 'job2', 'job3']);
    await q.append(b('job4'));
    await q.close();
    const again = await reopen(dir);
    assert.equal(again.warns().length, 0);
    assert.deepEqual(text(await drain(again.q)), ['job1', 'job2', 'job3', 'job4']);
    await again.q.close();
  });

  it('cuts a zeroed region at the tail (preallocated, never written)', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 3);
    fs.appendFileSync(lastSeg(dir), Buffer.alloc(4096));
    const { q, warns } = await reopen(dir);
    assertOneWarning(warns(), 4096);
    assert.deepEqual(text(await drain(q)), ['job1', 'job2', 'job3']);
    await q.close();
  });

  it('cuts a last record whose bytes were zeroed, or whose checksum fails', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 3);
    const fd = fs.openSync(lastSeg(dir), 'r+');
    fs.writeSync(fd, Buffer.alloc(REC(4)), 0, REC(4), 2 * REC(4));
    fs.closeSync(fd);
    let r = await reopen(dir);
    assertOneWarning(r.warns(), REC(4));
    assert.deepEqual(text(await drain(r.q)), ['job1', 'job2']);
    await r.q.close();

    const fd2 = fs.openSync(lastSeg(dir), 'r+');
    fs.writeSync(fd2, b('X'), 0, 1, 2 * REC(4) - 1); // last payload byte of job2
    fs.closeSync(fd2);
    r = await reopen(dir);
    assertOneWarning(r.warns(), REC(4));
    assert.deepEqual(text(await drain(r.q)), ['job1']);
    await r.q.close();
  });

  it('keeps valid records that follow a corrupt region in the last segment', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 5);
    const fd = fs.openSync(lastSeg(dir), 'r+');
    fs.writeSync(fd, b('XX'), 0, 2, REC(4) + 18); // inside job2's payload
    fs.closeSync(fd);
    const { logger, warns } = fakeLogger();
    const q = await FileQueue.open({ dir, logger });
    assert.equal(warns().length, 1);
    assert.equal((warns()[0]!.obj as { skippedBytes: number }).skippedBytes, REC(4));
    assert.equal((warns()[0]!.obj as { bytes: number }).bytes, 0, 'nothing cut');
    assert.deepEqual(text(await drain(q)), ['job1', 'job3', 'job4', 'job5']);
    await q.close();
  });

  it('copes with an empty last segment and a segment made of garbage only', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 2);
    fs.writeFileSync(path.join(dir, segmentFileName(3)), randomBytes(50));
    const { q, warns } = await reopen(dir);
    assertOneWarning(warns(), 50);
    assert.deepEqual(text(await drain(q)), ['job1', 'job2']);
    assert.equal(await q.append(b('job3')), 3);
    await q.close();
    const again = await reopen(dir);
    assert.deepEqual(text(await drain(again.q)), ['job1', 'job2', 'job3']);
    await again.q.close();
  });
});

describe('recovery of checkpoint and ack log', () => {
  /** 5 records, 1..3 acked (so the low-water mark is 4), closed. */
  async function seedAcked(dir: string): Promise<void> {
    const q = await FileQueue.open({ dir });
    for (let i = 1; i <= 5; i++) await q.append(b(`job${i}`));
    await q.readAsync(5);
    for (const id of [3, 1, 2]) q.ack(id);
    await q.close();
  }

  it('falls back to the ack log when the checkpoint is garbage', async (t) => {
    const dir = tmpDir(t);
    await seedAcked(dir);
    fs.writeFileSync(path.join(dir, 'checkpoint'), randomBytes(40));
    const { q, warns } = await reopen(dir);
    assert.equal(warns().length, 1);
    assert.match(warns()[0]!.msg!, /checkpoint is corrupt \(40 bytes\)/);
    assert.deepEqual(ids(await drain(q)), [4, 5]);
    await q.close();
    const again = await reopen(dir);
    assert.equal(again.warns().length, 0, 'the checkpoint was rewritten');
    await again.q.close();
  });

  it('uses the valid part of an ack log with garbage appended', async (t) => {
    const dir = tmpDir(t);
    await seedAcked(dir);
    fs.appendFileSync(path.join(dir, 'acks.log'), randomBytes(33));
    const { q, warns } = await reopen(dir);
    assert.equal(warns().length, 1);
    assert.match(warns()[0]!.msg!, /ignored 33 damaged bytes/);
    assert.deepEqual(ids(await drain(q)), [4, 5]);
    await q.close();
  });

  it('re-delivers rather than loses when checkpoint and ack log are both gone', async (t) => {
    const dir = tmpDir(t);
    await seedAcked(dir);
    fs.rmSync(path.join(dir, 'checkpoint'));
    fs.writeFileSync(path.join(dir, 'acks.log'), Buffer.alloc(64)); // zeroed
    const { q, warns } = await reopen(dir);
    assert.equal(warns().length, 2, 'missing checkpoint + damaged ack log');
    assert.deepEqual(ids(await drain(q)), [1, 2, 3, 4, 5]);
    assert.equal(await q.append(b('job6')), 6);
    await q.close();
  });

  it('opens with a missing ack log and checkpoint', async (t) => {
    const dir = tmpDir(t);
    await seedAcked(dir);
    fs.rmSync(path.join(dir, 'checkpoint'));
    fs.rmSync(path.join(dir, 'acks.log'));
    const { q } = await reopen(dir);
    assert.deepEqual(ids(await drain(q)), [1, 2, 3, 4, 5]);
    await q.close();
  });

  it('removes leftover temporary files', async (t) => {
    const dir = tmpDir(t);
    await seedAcked(dir);
    fs.writeFileSync(path.join(dir, 'acks.log.tmp'), 'partial');
    const { q, warns } = await reopen(dir);
    assert.equal(warns().length, 0);
    assert.equal(fs.existsSync(path.join(dir, 'acks.log.tmp')), false);
    assert.deepEqual(ids(await drain(q)), [4, 5]);
    await q.close();
  });
});

describe('older segments', () => {
  it('open() scans only the last segment; older ones are read lazily, one buffer at a time', async (t) => {
    const dir = tmpDir(t);
    const payload = Buffer.alloc(84, 'p'); // 100-byte records
    let q = await FileQueue.open({ dir, segmentSize: 200_000 });
    await q.appendMany(Array.from({ length: 5000 }, () => payload)); // 3 segments: 2000 + 2000 + 1000
    await q.close();
    assert.equal(segFiles(dir).length, 3);

    const bytesRead = new Map<string, number>();
    const fdName = new Map<number, string>();
    q = await FileQueue.open({
      dir,
      segmentSize: 200_000,
      readBufferSize: 8192,
      io: {
        open: async (p, flags) => {
          const fd = await nodeIo.open(p, flags);
          fdName.set(fd, path.basename(p));
          return fd;
        },
        read: async (fd, buf, off, len, pos) => {
          const n = await nodeIo.read(fd, buf, off, len, pos);
          const name = fdName.get(fd) ?? '?';
          bytesRead.set(name, (bytesRead.get(name) ?? 0) + n);
          return n;
        },
      },
    });
    await new Promise((r) => setTimeout(r, 50)); // let the open-time prefetch finish
    const [s1, s2, s3] = segFiles(dir);
    const last = bytesRead.get(s3!) ?? 0;
    // scanned completely (records straddling a buffer boundary are read again with the next buffer)
    assert.ok(last >= 100_000 && last < 110_000, `last segment: ${last} bytes read`);
    assert.ok((bytesRead.get(s1!) ?? 0) <= 2 * 8192, `first segment: ${bytesRead.get(s1!)} bytes prefetched`);
    assert.equal(bytesRead.get(s2!) ?? 0, 0, 'the middle segment is not touched');
    assert.equal(q.stats().depth, 5000);
    assert.equal((await drain(q)).length, 5000);
    await q.close();
  });

  it('skips corruption in an older segment while reading, and the lost id does not block progress', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 9, { segmentSize: 3 * REC(4) }); // 3 segments of 3 records
    assert.deepEqual(segFiles(dir), [1, 4, 7].map(segmentFileName));
    // corrupt job5 (the middle record of the second segment)
    const fd = fs.openSync(path.join(dir, segmentFileName(4)), 'r+');
    fs.writeSync(fd, b('!'), 0, 1, REC(4) + 17);
    fs.closeSync(fd);

    const { logger, warns } = fakeLogger();
    const q = await FileQueue.open({ dir, logger, segmentSize: 3 * REC(4) });
    assert.deepEqual(text(await drain(q)), ['job1', 'job2', 'job3', 'job4', 'job6', 'job7', 'job8', 'job9']);
    assert.equal(warns().length, 1);
    assert.match(warns()[0]!.msg!, /skipped 20 corrupt bytes at offset 20 of segment 0+4\.seg/);
    for (const id of [1, 2, 3, 4, 6, 7, 8, 9]) q.ack(id);
    assert.equal(q.stats().depth, 0);
    assert.equal(q.stats().lowWaterMark, 10);
    await q.close();
  });

  it('skips a garbage tail of an older segment and goes on with the next', async (t) => {
    const dir = tmpDir(t);
    await seed(dir, 6, { segmentSize: 3 * REC(4) });
    fs.appendFileSync(path.join(dir, segmentFileName(1)), randomBytes(70));
    const { q, warns } = await reopen(dir, { segmentSize: 3 * REC(4) });
    assert.deepEqual(text(await drain(q)), ['job1', 'job2', 'job3', 'job4', 'job5', 'job6']);
    assert.equal(warns().length, 1);
    assert.match(warns()[0]!.msg!, /last 70 bytes/);
    await q.close();
  });
});
