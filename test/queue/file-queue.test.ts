import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { QueueClosedError } from '../../src/errors.js';
import { FileQueue, segmentFileName } from '../../src/queue/index.js';
import { drain, fakeLogger, ids, segFiles, sleep, text, tmpDir, waitFor } from './helpers.js';

const b = (s: string): Buffer => Buffer.from(s);

describe('FileQueue basics', () => {
  it('appends, hands out in FIFO order with increasing ids, acks', async (t) => {
    const dir = tmpDir(t);
    const q = await FileQueue.open({ dir });
    const got = await Promise.all(['a', 'b', 'c'].map((s) => q.append(b(s))));
    assert.deepEqual(got, [1, 2, 3]);
    assert.equal(fs.existsSync(path.join(dir, segmentFileName(1))), true);
    const first = await q.readAsync(2);
    assert.deepEqual(ids(first), [1, 2]);
    assert.deepEqual(text(first), ['a', 'b']);
    assert.deepEqual(ids(await q.readAsync(10)), [3]);
    assert.deepEqual(await q.readAsync(10), [], 'each record is handed out once');
    assert.equal(q.stats().inFlight, 3);
    q.ack(2);
    q.ack(2); // repeated ack is ignored
    assert.equal(q.stats().inFlight, 2);
    assert.equal(q.stats().depth, 2);
    assert.deepEqual(await q.appendMany([b('d'), b('e')]), [4, 5]);
    assert.deepEqual(text(await q.readAsync(10)), ['d', 'e']);
    await q.close();
  });

  it("read() is synchronous; 'readable' announces new records (dispatcher style)", async (t) => {
    const q = await FileQueue.open({ dir: tmpDir(t) });
    assert.deepEqual(q.read(10), []);
    const seen: number[] = [];
    const pump = (): void => {
      for (;;) {
        const jobs = q.read(2);
        if (jobs.length === 0) return;
        seen.push(...ids(jobs));
      }
    };
    q.on('readable', pump);
    await q.append(b('x'));
    assert.deepEqual(seen, [1], 'handed out by the time append resolved');
    await Promise.all([q.append(b('y')), q.append(b('z'))]);
    assert.deepEqual(seen, [1, 2, 3]);
    await q.close();
  });

  it("prefetches a backlog after restart in bounded chunks and announces it with 'readable'", async (t) => {
    const dir = tmpDir(t);
    let q = await FileQueue.open({ dir, segmentSize: 2000 });
    await q.appendMany(Array.from({ length: 300 }, (_, i) => b(`job-${String(i + 1).padStart(4, '0')}`)));
    await q.close();

    q = await FileQueue.open({ dir, segmentSize: 2000, readBufferSize: 4096 });
    const seen: number[] = [];
    let maxBatch = 0;
    const pump = (): void => {
      for (;;) {
        const jobs = q.read(1000);
        if (jobs.length === 0) return;
        maxBatch = Math.max(maxBatch, jobs.length);
        seen.push(...ids(jobs));
        for (const j of jobs) q.ack(j.id);
      }
    };
    q.on('readable', pump);
    pump();
    await waitFor(() => seen.length === 300);
    assert.deepEqual(seen, Array.from({ length: 300 }, (_, i) => i + 1));
    assert.ok(maxBatch < 300, `the backlog is not loaded at once (largest read: ${maxBatch})`);
    await waitFor(() => q.stats().segments === 1);
    await q.close();
  });

  it('validates options, naming the option', async (t) => {
    const dir = tmpDir(t);
    await assert.rejects(FileQueue.open({} as never), /"dir"/);
    await assert.rejects(FileQueue.open({ dir, segmentSize: 0 }), /"segmentSize"/);
    await assert.rejects(FileQueue.open({ dir, segmentSize: 1.5 }), /"segmentSize"/);
    await assert.rejects(FileQueue.open({ dir, fsync: 'sometimes' as never }), /"fsync"/);
    const q = await FileQueue.open({ dir, maxPayloadSize: 10 });
    await assert.rejects(q.append(Buffer.alloc(11)), RangeError);
    await assert.rejects(q.append('text' as never), TypeError);
    assert.throws(() => q.ack(1), RangeError, 'an id never handed out');
    await q.close();
  });

  it('rejects use after close with QueueClosedError', async (t) => {
    const q = await FileQueue.open({ dir: tmpDir(t) });
    const pending = q.append(b('before close'));
    await q.close();
    assert.equal(await pending, 1, 'appends accepted before close are flushed');
    await q.close(); // idempotent
    await assert.rejects(q.append(b('x')), QueueClosedError);
    assert.throws(() => q.read(1), QueueClosedError);
    await assert.rejects(q.readAsync(1), QueueClosedError);
    assert.throws(() => q.ack(1), QueueClosedError);
  });

  it('reports stats cheaply', async (t) => {
    const before = Date.now();
    const q = await FileQueue.open({ dir: tmpDir(t) });
    assert.equal(q.stats().depth, 0);
    assert.equal(q.stats().oldestEnqueuedAt, undefined);
    await Promise.all([1, 2, 3, 4].map((i) => q.append(b(`job${i}`))));
    let s = q.stats();
    assert.equal(s.depth, 4);
    assert.equal(s.inFlight, 0);
    assert.equal(s.segments, 1);
    assert.equal(s.bytes, 4 * (16 + 4));
    assert.ok(s.oldestEnqueuedAt! >= before - 1000 && s.oldestEnqueuedAt! <= Date.now());
    await q.readAsync(3);
    q.ack(1);
    s = q.stats();
    assert.equal(s.depth, 3);
    assert.equal(s.inFlight, 2);
    assert.equal(s.lowWaterMark, 2);
    assert.equal(s.nextId, 5);
    q.ack(3);
    q.ack(2);
    await drain(q).then((jobs) => jobs.forEach((j) => q.ack(j.id)));
    assert.equal(q.stats().depth, 0);
    assert.equal(q.stats().oldestEnqueuedAt, undefined);
    await q.close();
  });
});

describe('FileQueue restart', () => {
  it('resumes with exactly the un-acked records, in order, after out-of-order acks', async (t) => {
    const dir = tmpDir(t);
    let q = await FileQueue.open({ dir });
    for (let i = 1; i <= 10; i++) await q.append(b(`job${i}`));
    assert.equal((await q.readAsync(10)).length, 10);
    for (const id of [1, 3, 2, 7, 10]) q.ack(id);
    await q.close();

    q = await FileQueue.open({ dir });
    assert.equal(q.stats().depth, 5);
    const again = await drain(q);
    assert.deepEqual(ids(again), [4, 5, 6, 8, 9]);
    assert.deepEqual(text(again), ['job4', 'job5', 'job6', 'job8', 'job9']);
    q.ack(8);
    q.ack(4);
    assert.equal(await q.append(b('job11')), 11, 'ids continue after a restart');
    await q.close();

    q = await FileQueue.open({ dir });
    assert.deepEqual(ids(await drain(q)), [5, 6, 9, 11]);
    await q.close();
  });

  it('keeps every resolved append when dropped without close (same process)', async (t) => {
    const dir = tmpDir(t);
    const q1 = await FileQueue.open({ dir });
    await Promise.all([1, 2, 3, 4, 5].map((i) => q1.append(b(`job${i}`))));
    await q1.readAsync(5);
    q1.ack(2);
    q1.ack(5);
    await waitFor(() => fs.statSync(path.join(dir, 'acks.log')).size > 16 + 8);
    await sleep(20);
    // q1 is dropped here: no close()
    const q2 = await FileQueue.open({ dir });
    assert.deepEqual(text(await drain(q2)), ['job1', 'job3', 'job4']);
    assert.equal(await q2.append(b('job6')), 6);
    await q2.close();
  });

  it('keeps every resolved append when the process is killed with SIGKILL', async (t) => {
    const dir = tmpDir(t);
    const moduleUrl = new URL('../../src/queue/index.js', import.meta.url).href;
    const code = `
      const { FileQueue } = await import(${JSON.stringify(moduleUrl)});
      const q = await FileQueue.open({ dir: ${JSON.stringify(dir)} });
      let n = 0;
      const worker = async () => {
        for (;;) {
          const id = await q.append(Buffer.from('job-' + n++));
          process.stdout.write(id + '\\n');
        }
      };
      for (let i = 0; i < 32; i++) void worker();
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    const reported: number[] = [];
    let buf = '';
    const exited = new Promise((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', () => reject(new Error('child exited early')));
      child.stdout.on('data', (chunk: Buffer) => {
        buf += chunk.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) reported.push(Number(l));
        if (reported.length >= 2000) resolve();
      });
    });
    child.kill('SIGKILL');
    await exited;

    const { logger, warns } = fakeLogger();
    const q = await FileQueue.open({ dir, logger });
    const jobs = await drain(q);
    const byId = new Map(jobs.map((j) => [j.id, j.payload.toString()]));
    for (const id of reported) assert.equal(byId.get(id), `job-${id - 1}`, `resolved id ${id} survived intact`);
    for (let i = 1; i < jobs.length; i++) assert.ok(jobs[i]!.id > jobs[i - 1]!.id);
    assert.ok(warns().length <= 1, 'at most one warning (a torn tail)');
    await q.close();
  });
});

describe('FileQueue segments', () => {
  it('rolls segments at segmentSize and deletes consumed ones', async (t) => {
    const dir = tmpDir(t);
    const payload = (i: number): Buffer => b(`${String(i).padStart(2, '0')}`.padEnd(30, '.'));
    let q = await FileQueue.open({ dir, segmentSize: 100 }); // 46-byte records: 2 per segment
    for (let i = 1; i <= 10; i++) await q.append(payload(i));
    assert.deepEqual(segFiles(dir), [1, 3, 5, 7, 9].map(segmentFileName));
    assert.equal(q.stats().segments, 5);
    assert.equal(q.stats().bytes, 10 * 46);
    for (const f of segFiles(dir)) assert.equal(fs.statSync(path.join(dir, f)).size, 92);

    const jobs = await q.readAsync(5);
    for (const id of [2, 1, 4, 3]) q.ack(id);
    // stats count a segment gone when its deletion starts; the file goes a moment later
    await waitFor(() => q.stats().segments === 3 && segFiles(dir).length === 3);
    assert.deepEqual(segFiles(dir), [5, 7, 9].map(segmentFileName));
    assert.equal(q.stats().bytes, 6 * 46);
    assert.equal(jobs.length, 5);
    await q.close();

    q = await FileQueue.open({ dir, segmentSize: 100 });
    const rest = await drain(q);
    assert.deepEqual(ids(rest), [5, 6, 7, 8, 9, 10]);
    assert.deepEqual(text(rest)[0], payload(5).toString());
    for (const j of rest) q.ack(j.id);
    await waitFor(() => q.stats().segments === 1 && segFiles(dir).length === 1);
    assert.deepEqual(segFiles(dir), [segmentFileName(9)], 'the active segment stays');
    assert.equal(await q.append(payload(11)), 11);
    await waitFor(() => segFiles(dir).length === 2);
    await q.close();
  });

  it('reads a large backlog from disk in bounded chunks', async (t) => {
    const dir = tmpDir(t);
    let q = await FileQueue.open({ dir, segmentSize: 64 * 1024 });
    const big = Buffer.alloc(10_000, 'B'); // bigger than the 4 KiB read buffer used below
    const payloads: Buffer[] = [];
    for (let i = 0; i < 2000; i++) payloads.push(i % 500 === 7 ? big : b(`job-${i}`));
    await q.appendMany(payloads);
    await q.close();

    q = await FileQueue.open({ dir, segmentSize: 64 * 1024, readBufferSize: 4096, hotCacheBytes: 0 });
    const got: Buffer[] = [];
    for (;;) {
      const jobs = await q.readAsync(97);
      if (jobs.length === 0) break;
      got.push(...jobs.map((j) => j.payload));
      for (const j of jobs) q.ack(j.id);
    }
    assert.equal(got.length, 2000);
    assert.ok(got.every((p, i) => p.equals(payloads[i]!)));
    // new appends while caught up still come through (hot cache disabled: read back from disk)
    await q.append(b('late'));
    assert.deepEqual(text(await q.readAsync(5)), ['late']);
    await q.close();
  });

  it('serves a consumer that is behind from disk, then catches up', async (t) => {
    const q = await FileQueue.open({ dir: tmpDir(t), hotCacheBytes: 200 });
    await Promise.all(Array.from({ length: 50 }, (_, i) => q.append(b(`job-${i}`))));
    const first = await q.readAsync(10); // not caught up at first: these come from disk
    await Promise.all(Array.from({ length: 50 }, (_, i) => q.append(b(`job-${50 + i}`))));
    const rest = await drain(q, 7);
    assert.deepEqual(ids([...first, ...rest]), Array.from({ length: 100 }, (_, i) => i + 1));
    await q.append(b('hot'));
    assert.deepEqual(text(await q.readAsync(1)), ['hot']);
    await q.close();
  });

  it('compacts the ack log and keeps acks across restarts', async (t) => {
    const dir = tmpDir(t);
    let q = await FileQueue.open({ dir, ackLogMaxBytes: 256 });
    await q.appendMany(Array.from({ length: 300 }, (_, i) => b(`j${i}`)));
    const jobs = await drain(q);
    // ack everything except 297 and 300, in small bursts (one ack-log batch each)
    for (const j of jobs) {
      if (j.id !== 297 && j.id !== 300) q.ack(j.id);
      if (j.id % 10 === 0) await sleep(1);
    }
    await waitFor(() => q.stats().lowWaterMark === 297);
    await sleep(30);
    // without compaction the acks would take about 3 KB; under load batches grow larger and
    // compaction only runs before a batch, so allow for the batch written after the last one
    assert.ok(fs.statSync(path.join(dir, 'acks.log')).size < 1500, 'ack log was compacted');
    await q.close();
    q = await FileQueue.open({ dir });
    assert.deepEqual(ids(await drain(q)), [297, 300]);
    await q.close();
  });
});

describe('FileQueue group commit', () => {
  it('10,000 concurrent appends need far fewer fsyncs than appends', async (t) => {
    const q = await FileQueue.open({ dir: tmpDir(t) });
    const payload = Buffer.alloc(200, 'x');
    const got = await Promise.all(Array.from({ length: 10_000 }, () => q.append(payload)));
    assert.deepEqual(got.slice(0, 3), [1, 2, 3]);
    assert.equal(new Set(got).size, 10_000);
    const { syncs } = q.stats();
    assert.ok(syncs >= 1 && syncs <= 100, `syncs = ${syncs}`);
    assert.equal((await drain(q)).length, 10_000);
    await q.close();
  });

  it("with fsync 'none' makes no fdatasync for appends", async (t) => {
    const dir = tmpDir(t);
    let q = await FileQueue.open({ dir, fsync: 'none' });
    for (let i = 0; i < 20; i++) await q.append(b(`n${i}`));
    assert.equal(q.stats().syncs, 0);
    await q.close();
    q = await FileQueue.open({ dir, fsync: 'none' });
    assert.equal((await drain(q)).length, 20);
    await q.close();
  });
});
