/**
 * The behaviour every JobQueue implementation must show (src/queue/job-queue.ts), as a shared
 * suite in the manner of aedes-persistence: an implementation's test file calls
 * `jobQueueContract('MyQueue', () => MyQueue.open(...))`. This module defines no tests itself.
 */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { afterEach, describe, it } from 'node:test';
import { QueueClosedError } from '../../src/errors.js';
import type { JobQueue, QueueJob } from '../../src/queue/index.js';

export interface ContractOptions {
  /**
   * Open the queue again after `closed` was closed (same storage), for the restart tests;
   * they are skipped without it.
   */
  reopen?: (closed: JobQueue) => Promise<JobQueue>;
}

const b = (s: string): Buffer => Buffer.from(s);
const ids = (jobs: QueueJob[]): number[] => jobs.map((j) => j.id);
const text = (jobs: QueueJob[]): string[] => jobs.map((j) => j.payload.toString());

/** Read until `n` jobs were handed out, waiting for 'readable' between reads (never more than `n`). */
async function readN(q: JobQueue, n: number): Promise<QueueJob[]> {
  const out: QueueJob[] = [];
  for (;;) {
    out.push(...q.read(n - out.length));
    if (out.length === n) return out;
    // read() is synchronous, so no 'readable' can fire between it and this subscription
    await once(q as unknown as NodeJS.EventEmitter, 'readable');
  }
}

function nextReadable(q: JobQueue): Promise<void> {
  return new Promise((resolve) => {
    const on = (): void => {
      q.off('readable', on);
      resolve();
    };
    q.on('readable', on);
  });
}

/** Every call must return a new, empty queue. A test that does not end within 10 s fails. */
export function jobQueueContract(name: string, open: () => Promise<JobQueue>, options: ContractOptions = {}): void {
  const opened: JobQueue[] = [];
  const fresh = async (): Promise<JobQueue> => {
    const q = await open();
    opened.push(q);
    return q;
  };
  const T = { timeout: 10_000 };

  describe(`JobQueue contract: ${name}`, () => {
    afterEach(async () => {
      for (const q of opened.splice(0)) await q.close();
    });

    it('append resolves with increasing ids; read hands each job out once, in order', T, async () => {
      const q = await fresh();
      assert.deepEqual(q.read(10), [], 'an empty queue has nothing ready');
      const first = await q.append(b('a'));
      const rest = await Promise.all([q.append(b('b')), q.append(b('c'))]);
      const many = await q.appendMany([b('d'), b('e')]);
      const all = [first, ...rest, ...many];
      for (let i = 1; i < all.length; i++) assert.ok(all[i]! > all[i - 1]!, `ids increase: ${all.join(', ')}`);
      const jobs = await readN(q, 5);
      assert.deepEqual(ids(jobs), all);
      assert.deepEqual(text(jobs), ['a', 'b', 'c', 'd', 'e']);
      assert.deepEqual(q.read(10), [], 'each job is handed out once');
      assert.equal(q.stats().depth, 5);
      assert.equal(q.stats().inFlight, 5);
    });

    it("'readable' announces jobs appended while the consumer waits", T, async () => {
      const q = await fresh();
      assert.deepEqual(q.read(1), []);
      const signalled = nextReadable(q);
      const id = await q.append(b('x'));
      await signalled;
      assert.deepEqual(ids(await readN(q, 1)), [id]);
    });

    it('ack: any order, repeated acks ignored; depth and inFlight follow', T, async () => {
      const q = await fresh();
      const got = await q.appendMany([b('1'), b('2'), b('3')]);
      await readN(q, 3);
      q.ack(got[2]!);
      q.ack(got[0]!);
      q.ack(got[0]!);
      assert.equal(q.stats().depth, 1);
      assert.equal(q.stats().inFlight, 1);
      q.ack(got[1]!);
      assert.equal(q.stats().depth, 0);
      assert.equal(q.stats().inFlight, 0);
      assert.deepEqual(q.read(10), []);
      assert.throws(() => q.ack(got[2]! + 1), RangeError, 'an id never handed out');
    });

    it('hold keeps a job out of circulation; release puts it back at the front of the line', T, async () => {
      const q = await fresh();
      const [j1, j2, j3, j4] = await q.appendMany([b('1'), b('2'), b('3'), b('4')]);
      assert.deepEqual(ids(await readN(q, 2)), [j1, j2]);
      q.hold(j1!);
      q.hold(j1!); // holding a held job does nothing
      assert.equal(q.stats().held, 1);
      assert.equal(q.stats().inFlight, 2, 'a held job is still in flight');
      assert.equal(q.stats().depth, 4, 'and still queued');
      assert.deepEqual(ids(await readN(q, 2)), [j3, j4], 'a held job is not handed out again');
      assert.deepEqual(q.read(10), []);

      let calledDuringRelease = false;
      const spy = (): void => {
        calledDuringRelease = true;
      };
      q.on('readable', spy);
      const signalled = nextReadable(q);
      q.release(j1!);
      q.off('readable', spy);
      assert.equal(calledDuringRelease, false, "'readable' is not emitted from within release()");
      await signalled;
      assert.equal(q.stats().held, 0);
      assert.equal(q.stats().inFlight, 3);
      assert.deepEqual(text(await readN(q, 1)), ['1'], 'the released job comes again, payload intact');

      // released jobs come before jobs never handed out, in id order
      const j5 = await q.append(b('5'));
      q.release(j4!);
      q.hold(j2!);
      q.release(j2!); // a held job can be released directly
      q.release(j3!);
      assert.deepEqual(ids(await readN(q, 4)), [j2, j3, j4, j5]);
      assert.equal(q.stats().inFlight, 5);
    });

    it('defer hands the job out again once its delay passed, counting its deferrals; an ack ends it', T, async () => {
      const q = await fresh();
      const [j1, j2] = await q.appendMany([b('1'), b('2')]);
      assert.deepEqual(ids(await readN(q, 2)), [j1, j2]);
      const deferredAt = Date.now();
      q.defer(j1!, 300);
      assert.equal(q.stats().deferred, 1);
      assert.deepEqual(q.read(10), [], 'not before its delay');
      const [again] = await readN(q, 1);
      assert.equal(again!.id, j1);
      assert.equal(text([again!])[0], '1', 'payload intact');
      assert.equal(again!.deferrals, 1);
      assert.ok(Date.now() - deferredAt >= 250, `back after ${Date.now() - deferredAt} ms`);
      assert.equal(q.stats().deferred, 0);
      q.defer(j1!, 50);
      const [third] = await readN(q, 1);
      assert.equal(third!.deferrals, 2, 'counted again');
      q.ack(j1!);
      q.ack(j2!);
      assert.equal(q.stats().depth, 0);
      q.defer(j1!, 10); // an acknowledged job: nothing
      await new Promise((r) => setTimeout(r, 60));
      assert.deepEqual(q.read(10), []);
      assert.throws(() => q.defer(999_999, 10), RangeError);
    });

    it('a held or released job can be acknowledged; hold and release check the id', T, async () => {
      const q = await fresh();
      const [j1, j2, j3] = await q.appendMany([b('1'), b('2'), b('3')]);
      await readN(q, 2);
      q.hold(j1!);
      q.ack(j1!);
      assert.equal(q.stats().held, 0);
      q.release(j2!);
      q.ack(j2!);
      assert.equal(q.stats().depth, 1);
      assert.deepEqual(ids(await readN(q, 1)), [j3], 'an acknowledged released job is not handed out');
      assert.deepEqual(q.read(10), []);
      q.hold(j1!); // acknowledged: nothing to do
      q.release(j1!);
      assert.equal(q.stats().held, 0);
      assert.deepEqual(q.read(10), []);
      assert.throws(() => q.hold(j3! + 1), RangeError, 'hold: never handed out');
      assert.throws(() => q.release(j3! + 1), RangeError, 'release: never handed out');
      q.release(j3!);
      assert.throws(() => q.hold(j3!), RangeError, 'hold: released and not read again');
      q.release(j3!); // releasing twice does nothing
      assert.deepEqual(ids(await readN(q, 1)), [j3]);
      assert.deepEqual(q.read(10), [], 'released twice, handed out once');
    });

    it('stats: depth and the enqueue time of the oldest job', T, async () => {
      const q = await fresh();
      assert.equal(q.stats().depth, 0);
      assert.equal(q.stats().oldestEnqueuedAt, undefined);
      const before = Date.now();
      const [j1, j2] = await q.appendMany([b('1'), b('2')]);
      const s = q.stats();
      assert.equal(s.depth, 2);
      assert.equal(s.held, 0);
      assert.ok(s.oldestEnqueuedAt !== undefined && s.oldestEnqueuedAt >= before - 1000 && s.oldestEnqueuedAt <= Date.now());
      await readN(q, 2);
      q.ack(j1!);
      q.ack(j2!);
      assert.equal(q.stats().depth, 0);
      assert.equal(q.stats().oldestEnqueuedAt, undefined);
    });

    it('close finishes accepted appends; afterwards every method throws QueueClosedError', T, async () => {
      const q = await fresh();
      const [j1] = await q.appendMany([b('1')]);
      await readN(q, 1);
      const pending = q.append(b('accepted before close'));
      await q.close();
      assert.ok((await pending) > j1!, 'an append accepted before close() is made durable');
      await q.close(); // idempotent
      await assert.rejects(q.append(b('x')), QueueClosedError);
      await assert.rejects(q.appendMany([b('x')]), QueueClosedError);
      assert.throws(() => q.read(1), QueueClosedError);
      assert.throws(() => q.ack(j1!), QueueClosedError);
      assert.throws(() => q.hold(j1!), QueueClosedError);
      assert.throws(() => q.release(j1!), QueueClosedError);
    });

    const reopen = options.reopen;
    it('after a restart: unacknowledged jobs (held ones too) come again, acknowledged ones do not, ids are not reused', { ...T, skip: !reopen }, async () => {
      let q = await fresh();
      const got = await q.appendMany(['1', '2', '3', '4', '5'].map(b));
      await readN(q, 5);
      q.ack(got[1]!);
      q.ack(got[3]!);
      q.hold(got[2]!);
      q.release(got[4]!);
      await q.close();
      q = await reopen!(q);
      opened.push(q);
      assert.equal(q.stats().depth, 3);
      const again = await readN(q, 3);
      assert.deepEqual(ids(again), [got[0], got[2], got[4]]);
      assert.deepEqual(text(again), ['1', '3', '5']);
      assert.deepEqual(q.read(10), []);
      assert.ok((await q.append(b('6'))) > got[4]!);
    });
  });
}
