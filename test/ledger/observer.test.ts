/**
 * The dispatcher's OutcomeObserver hook, as the ledger relies on it: every fate is told, and a
 * settled job is acknowledged only once beforeAck resolved (the dispatcher on the fakes of
 * test/dispatch/fakes.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Dispatcher } from '../../src/dispatch/dispatcher.js';
import type { JobFate } from '../../src/dispatch/ports.js';
import { OutcomeKind } from '../../src/jobs/outcome.js';
import { encodeJobRecord } from '../../src/jobs/record.js';
import { FakeClock, FakeDeadLetters, FakePool, FakeQueue, FakeTokens, settle } from '../dispatch/fakes.js';

const job = (n: number, replyKey?: string): Buffer =>
  encodeJobRecord({ kind: replyKey ? 'send' : 'push', openid: `o${n}`, key: 'hello', clientMsgId: `m${n}`, replyKey, body: Buffer.from('{}'), at: 0 });

describe('Dispatcher with an OutcomeObserver', () => {
  it('tells sent, dead, rejected and retry, and acks only after beforeAck resolved; stop() waits for those acks', async () => {
    const clock = new FakeClock();
    const queue = new FakeQueue(() => clock.now());
    const pool = new FakePool(4, clock);
    const heard: JobFate[][] = [];
    let release!: () => void;
    const observer = {
      beforeAck(fates: readonly JobFate[]) {
        heard.push([...fates]);
        return new Promise<void>((resolve) => (release = resolve));
      },
    };
    const dispatcher = new Dispatcher({
      queue, pool, tokens: new FakeTokens(), deadLetters: new FakeDeadLetters(), logger: pino({ level: 'silent' }), clock,
      random: () => 0.5, retryBaseMs: 1000, retryMax: 3, observer, isAwaited: (k) => k === 'waiting',
    });
    const settled: string[] = [];
    dispatcher.on('settled', (s) => settled.push(s.outcome.replyKey ?? ''));
    queue.add(job(1), job(2), job(3, 'waiting'), job(4));
    dispatcher.start();
    await settle();
    pool.answer(
      { id: 1, kind: OutcomeKind.Ok, msgid: 'm1', wechatMsgid: '9001' },
      { id: 2, kind: OutcomeKind.Failed, errcode: 40003, errmsg: 'invalid openid', openid: 'o2', key: 'hello', msgid: 'm2' },
      { id: 3, kind: OutcomeKind.Failed, errcode: 40003, errmsg: 'invalid openid', openid: 'o3', key: 'hello', replyKey: 'waiting', msgid: 'm3' },
      { id: 4, kind: OutcomeKind.Retry, errcode: -1, errmsg: 'system error', openid: 'o4', key: 'hello', msgid: 'm4' },
    );
    await settle();
    assert.deepEqual(
      heard[0]!.map((f) => [f.outcome.id, f.fate, f.sends, f.outcome.wechatMsgid ?? null]),
      [[4, 'retry', 1, null], [1, 'sent', 1, '9001'], [2, 'dead', 1, null], [3, 'rejected', 1, null]],
    );
    // the Send's client is answered at once; the queue hears nothing until the observer has them
    assert.deepEqual(settled, ['waiting']);
    assert.ok(!queue.calls.some((c) => c.startsWith('ack')), queue.calls.join(','));
    const stopped = dispatcher.stop(1000);
    let done = false;
    void stopped.then(() => (done = true));
    await settle();
    assert.equal(done, false, 'stop() waits for the acks held back');
    release();
    await stopped;
    assert.deepEqual(queue.calls.filter((c) => c.startsWith('ack')), ['ack 1', 'ack 2', 'ack 3']);
  });
});

describe('Dispatcher with a failing OutcomeObserver', () => {
  for (const [what, beforeAck] of [
    ['rejects', () => Promise.reject(new Error('journal: ENOSPC'))],
    ['throws', () => {
      throw new Error('closed');
    }],
  ] as const) {
    it(`an observer that ${what} neither crashes the daemon nor keeps the jobs: they are acked and the failure logged`, async () => {
      const clock = new FakeClock();
      const queue = new FakeQueue(() => clock.now());
      const pool = new FakePool(4, clock);
      const logged: string[] = [];
      const logger = pino({ level: 'error' }, { write: (line: string) => void logged.push(line) });
      const dispatcher = new Dispatcher({
        queue, pool, tokens: new FakeTokens(), deadLetters: new FakeDeadLetters(), logger, clock,
        random: () => 0.5, observer: { beforeAck }, isAwaited: () => false,
      });
      queue.add(job(1), job(2));
      dispatcher.start();
      await settle();
      pool.answer({ id: 1, kind: OutcomeKind.Ok, msgid: 'm1', wechatMsgid: '1' }, { id: 2, kind: OutcomeKind.Ok, msgid: 'm2', wechatMsgid: '2' });
      await settle();
      assert.deepEqual(queue.calls.filter((c) => c.startsWith('ack')), ['ack 1', 'ack 2']);
      assert.equal(logged.length, 1);
      assert.match(logged[0]!, /the outcome observer failed; the jobs are acknowledged all the same/);
      await dispatcher.stop(1000);
    });
  }
});
