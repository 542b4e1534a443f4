/**
 * The Dispatcher's decisions, against fakes (test/dispatch/fakes.ts): an in-memory JobQueue, a
 * pool whose outcomes the test gives, a token source, and a clock advanced by hand. Nothing
 * sleeps: every delay is a timer on the fake clock.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Dispatcher, type DispatcherOptions, type Settlement } from '../../src/dispatch/dispatcher.js';
import { TokenError } from '../../src/errors.js';
import { OutcomeKind } from '../../src/jobs/outcome.js';
import { encodeJobRecord } from '../../src/jobs/record.js';
import { TokenManager } from '../../src/wechat/token-manager.js';
import type { WechatClient } from '../../src/wechat/client.js';
import { FakeClock, FakeDeadLetters, FakePool, FakeQueue, FakeTokens, settle } from './fakes.js';

const job = (n: number, replyKey?: string): Buffer =>
  encodeJobRecord({ kind: replyKey ? 'send' : 'push', openid: `o${n}`, key: 'hello', clientMsgId: `m${n}`, replyKey, body: Buffer.from(`{"n":${n}}`), at: 0 });
const jobs = (from: number, to: number): Buffer[] => Array.from({ length: to - from + 1 }, (_, i) => job(from + i));

interface Setup {
  clock: FakeClock;
  queue: FakeQueue;
  pool: FakePool;
  tokens: FakeTokens;
  deadLetters: FakeDeadLetters;
  dispatcher: Dispatcher;
  settled: Settlement[];
  logs: Array<{ level: number; msg: string }>;
}

async function setup(capacity: number, options: Partial<DispatcherOptions> = {}, queued: Buffer[] = []): Promise<Setup> {
  const clock = new FakeClock();
  const queue = new FakeQueue(() => clock.now(), (ms, cb) => clock.setTimer(ms, cb));
  const pool = new FakePool(capacity, clock);
  const tokens = new FakeTokens();
  const deadLetters = new FakeDeadLetters();
  const logs: Setup['logs'] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Setup['logs'][number]) });
  const dispatcher = new Dispatcher({ queue, pool, tokens, deadLetters, logger, clock, random: () => 0.5, retryBaseMs: 1000, retryMax: 3, ...options });
  const settled: Settlement[] = [];
  dispatcher.on('settled', (s) => settled.push(s));
  queue.add(...queued);
  dispatcher.start();
  await settle();
  return { clock, queue, pool, tokens, deadLetters, dispatcher, settled, logs };
}

const running = (pool: FakePool): number[] => [...pool.running.keys()].sort((a, b) => a - b);

describe('Dispatcher (fakes, fake clock)', () => {
  it('delivered: acknowledged; jobs go in FIFO order, as many as the pool has room for', async () => {
    const { queue, pool, dispatcher } = await setup(2, {}, jobs(1, 3));
    assert.deepEqual(pool.runs.map((r) => [r.ids, r.token]), [[[1, 2], 'tok-1']]);
    let drained = 0;
    dispatcher.on('drained', () => drained++);
    pool.answer({ id: 1, kind: OutcomeKind.Ok }, { id: 2, kind: OutcomeKind.Ok });
    await settle();
    assert.deepEqual(queue.calls, ['ack 1', 'ack 2']);
    assert.equal(drained, 1, "'drained': no job taken is left running or waiting");
    assert.deepEqual(running(pool), [3]);
    pool.answerAll(OutcomeKind.Ok);
    await settle();
    assert.equal(queue.stats().depth, 0);
    assert.equal(drained, 2);
    assert.equal(dispatcher.stats().sent, 3);
    assert.equal(dispatcher.stats().failed, 0);
  });

  it('errcode -1, 5xx, timeouts: held, retried with exponential backoff and jitter up to retry_max, then dead-lettered', async () => {
    const draws = [0, 1, 0.25];
    const { clock, queue, pool, deadLetters, dispatcher } = await setup(1, { retryCapMs: 3000, random: () => draws.shift()! }, [job(1)]);
    const failures = [
      { errcode: -1, errmsg: 'system error', delay: 500 }, // exp 1000, jitter 0 -> half of it
      { reason: 'HTTP 502', delay: 2000 }, // exp 2000, jitter 1 -> all of it
      { reason: 'timed out after 5000 ms', delay: 1875 }, // exp 4000 capped at 3000, jitter 0.25
    ];
    for (const [i, { delay, ...fields }] of failures.entries()) {
      pool.answer({ id: 1, kind: OutcomeKind.Retry, ...fields });
      await settle();
      assert.ok(queue.isHeld(1), `attempt ${i + 1}: held in the queue while it waits`);
      assert.equal(dispatcher.stats().retriesPending, 1);
      assert.deepEqual(clock.pending(), [delay], `attempt ${i + 1}: one timer, ${delay} ms`);
      await clock.advance(delay - 1);
      assert.equal(pool.inFlight, 0, 'not before its delay');
      await clock.advance(1);
      assert.deepEqual(running(pool), [1], `sent again after ${delay} ms`);
      assert.equal(queue.isHeld(1), false);
    }
    pool.answer({ id: 1, kind: OutcomeKind.Retry, reason: 'HTTP 503' });
    await settle();
    assert.equal(deadLetters.entries.length, 1, 'retry_max = 3: the fourth failure is final');
    const dead = deadLetters.entries[0]!;
    assert.deepEqual([dead.id, dead.openid, dead.key, dead.clientMsgId, dead.errcode, dead.attempts], [1, 'o1', 'hello', 'm1', -1, 4]);
    assert.match(dead.errmsg, /gave up after 4 attempts: HTTP 503/);
    assert.equal(dead.time, new Date(clock.now()).toISOString(), 'stamped by the clock');
    assert.equal(queue.has(1), false, 'acknowledged once recorded');
    assert.deepEqual(clock.pending(), []);
    assert.deepEqual(dispatcher.stats().failedByErrcode, { '-1': 1 });
  });

  it('a job waiting to retry goes before new ones, and the jobs taken are bounded by hold_factor', async () => {
    const { clock, queue, pool, dispatcher } = await setup(1, { holdFactor: 2 }, jobs(1, 4));
    pool.answer({ id: 1, kind: OutcomeKind.Retry, errcode: -1 });
    await settle();
    assert.deepEqual(running(pool), [2], 'the next job goes while job 1 waits');
    pool.answer({ id: 2, kind: OutcomeKind.Retry, errcode: -1 });
    await settle();
    assert.equal(pool.inFlight, 0, 'two jobs waiting = 2 x capacity: no third is taken');
    assert.equal(queue.stats().inFlight, 2);
    assert.equal(dispatcher.stats().retriesPending, 2);
    await clock.advance(750);
    assert.deepEqual(pool.sentIds(), [1, 2, 1]);
    pool.answerAll(OutcomeKind.Ok);
    await settle();
    assert.deepEqual(pool.sentIds(), [1, 2, 1, 2], 'job 2 is back before job 3, never taken yet');
    pool.answerAll(OutcomeKind.Ok);
    await settle();
    assert.deepEqual(pool.sentIds(), [1, 2, 1, 2, 3]);
    assert.equal(queue.stats().depth, 2);
  });

  it('43117 (too frequent for this user): only that message waits; the others go on', async () => {
    const { clock, pool, dispatcher } = await setup(2, {}, jobs(1, 4));
    pool.answer({ id: 1, kind: OutcomeKind.Retry, errcode: 43117, errmsg: 'too frequent' }, { id: 2, kind: OutcomeKind.Ok });
    await settle();
    assert.deepEqual(running(pool), [3, 4], 'no pause');
    assert.equal(dispatcher.stats().paused, null);
    pool.answerAll(OutcomeKind.Ok);
    await clock.advance(750);
    assert.deepEqual(running(pool), [1]);
  });

  it('a permanent errcode is dead-lettered once, never retried; a Send waited for is answered instead', async () => {
    const { clock, queue, pool, deadLetters, dispatcher, settled } = await setup(2, { isAwaited: (key) => key === 'r2' }, [job(1), job(2, 'r2')]);
    const failed = { kind: OutcomeKind.Failed, errcode: 40003, errmsg: 'invalid openid', raw: '{"errcode":40003,"errmsg":"invalid openid"}' };
    pool.answer({ id: 1, ...failed, openid: 'o1' }, { id: 2, ...failed, openid: 'o2', replyKey: 'r2' });
    await clock.advance(3_600_000);
    assert.deepEqual(pool.sentIds(), [1, 2], 'each sent once');
    assert.deepEqual(deadLetters.entries.map((d) => [d.id, d.errcode, d.attempts]), [[1, 40003, 1]]);
    assert.deepEqual(queue.calls, ['ack 1', 'ack 2']);
    assert.deepEqual(settled.map((s) => JSON.parse(s.message) as unknown), [{ errcode: 40003, errmsg: 'invalid openid', openid: 'o2' }]);
    assert.deepEqual(dispatcher.stats().failedByErrcode, { '40003': 2 });
  });

  it('a dead letter that cannot be written: the job is not acknowledged, stays held, and is not sent again', async () => {
    const { clock, queue, pool, deadLetters } = await setup(1, {}, jobs(1, 2));
    deadLetters.failing = true;
    pool.answer({ id: 1, kind: OutcomeKind.Failed, errcode: 40003 });
    await settle();
    assert.ok(queue.has(1) && queue.isHeld(1));
    assert.deepEqual(running(pool), [2]);
    pool.answerAll(OutcomeKind.Ok);
    await clock.advance(60_000);
    assert.deepEqual(pool.sentIds(), [1, 2]);
  });

  it('token rejected: the job retries once with a new token; one refetch for all; a late report about an old token expires nothing', async () => {
    const { queue, pool, tokens, deadLetters } = await setup(4, {}, jobs(1, 4));
    assert.deepEqual(running(pool), [1, 2, 3, 4]);
    pool.answer({ id: 1, kind: OutcomeKind.TokenRejected, errcode: 40001 }, { id: 2, kind: OutcomeKind.TokenRejected, errcode: 40001 });
    await settle();
    assert.deepEqual(tokens.invalidated, ['tok-1', 'tok-1'], 'the token each job was sent with');
    assert.equal(tokens.fetches, 2, 'one new token for both');
    assert.deepEqual(pool.runs.slice(1), [{ ids: [1, 2], token: 'tok-2', at: pool.runs[0]!.at }], 'retried at once, with the new token');

    pool.answer({ id: 3, kind: OutcomeKind.TokenRejected, errcode: 40001 }); // sent with tok-1, reported late
    await settle();
    assert.equal(tokens.current, 'tok-2', 'tok-2 is not expired by a report about tok-1');
    assert.equal(tokens.fetches, 2);
    assert.deepEqual(pool.runs.at(-1)!.ids, [3]);
    assert.equal(pool.runs.at(-1)!.token, 'tok-2');

    pool.answer({ id: 1, kind: OutcomeKind.TokenRejected, errcode: 40001, errmsg: 'invalid credential' }); // again, with tok-2
    await settle();
    assert.deepEqual(deadLetters.entries.map((d) => [d.id, d.errcode, d.attempts]), [[1, 40001, 2]], 'retried once only');
    assert.equal(queue.has(1), false);
    assert.equal(tokens.current, undefined, 'tok-2 expired: the next get fetches tok-3');
  });

  it('token rejected, with the real TokenManager: three rejections of one token cost one token request', async () => {
    let issued = 0;
    const client = { fetchToken: () => Promise.resolve({ accessToken: `real-${++issued}`, expiresIn: 7200 }) } as unknown as WechatClient;
    const clock = new FakeClock();
    const tokens = new TokenManager({ client, appId: 'wx-test', appSecret: 'test-secret-not-real', now: () => clock.now() });
    const queue = new FakeQueue(() => clock.now());
    const pool = new FakePool(3, clock);
    const dispatcher = new Dispatcher({ queue, pool, tokens, deadLetters: new FakeDeadLetters(), logger: pino({ level: 'silent' }), clock });
    queue.add(...jobs(1, 3));
    dispatcher.start();
    await settle();
    assert.equal(issued, 1);
    pool.answerAll(OutcomeKind.TokenRejected, { errcode: 40001 });
    await settle();
    assert.equal(issued, 2);
    assert.deepEqual(pool.runs.map((r) => r.token), ['real-1', 'real-2']);
    assert.deepEqual(pool.runs[1]!.ids, [1, 2, 3]);
  });

  it('no token: dispatch waits without taking a job, says why in stats, and resumes when a token comes', async () => {
    const { clock, queue, pool, tokens, dispatcher, logs } = await setup(2, {}, []);
    tokens.failing = new TokenError('invalid appsecret', 40125);
    queue.add(...jobs(1, 3));
    await settle();
    assert.equal(pool.runs.length, 0);
    assert.deepEqual(queue.stats(), { depth: 3, inFlight: 0, held: 0, deferred: 0, oldestEnqueuedAt: clock.now() }, 'no job spent');
    const paused = dispatcher.stats().paused;
    assert.equal(paused?.reason, 'token');
    assert.equal(paused?.since, new Date(clock.now()).toISOString());
    assert.equal(dispatcher.stats().tokenError, 'invalid appsecret');
    assert.deepEqual(clock.pending(), [1000], 'asks again after retry_base_ms');
    const gets = tokens.gets;
    await clock.advance(3000);
    assert.equal(tokens.gets, gets + 3, 'one ask per retry_base_ms');
    assert.equal(pool.runs.length, 0);
    assert.equal(logs.filter((l) => /no access token/.test(l.msg)).length, 1, 'said once');
    tokens.failing = undefined;
    await clock.advance(1000);
    assert.deepEqual(running(pool), [1, 2]);
    assert.equal(dispatcher.stats().paused, null);
    assert.equal(dispatcher.stats().tokenError, undefined);
  });

  it('45009: dispatch stops at once, every job is kept, one probe per quota_retry_interval; a probe answered resumes', async () => {
    const { clock, queue, pool, dispatcher } = await setup(2, { quotaRetryIntervalMs: 60_000 }, jobs(1, 6));
    pool.answer({ id: 1, kind: OutcomeKind.Quota, errcode: 45009, errmsg: 'reach max api daily quota limit' });
    await settle();
    assert.equal(dispatcher.stats().paused?.reason, 'quota');
    assert.equal(pool.inFlight, 1, 'nothing new goes');
    pool.answer({ id: 2, kind: OutcomeKind.Quota, errcode: 45009 });
    await settle();
    assert.equal(pool.inFlight, 0);
    assert.equal(queue.stats().depth, 6, 'every job kept');
    assert.equal(queue.stats().held, 2, 'the two that met the quota are held');
    assert.deepEqual(clock.pending(), [60_000]);

    for (let probe = 1; probe <= 2; probe++) {
      await clock.advance(59_999);
      assert.equal(pool.inFlight, 0, `probe ${probe}: not before the interval`);
      await clock.advance(1);
      assert.deepEqual(running(pool), [1], `probe ${probe}: one message, the first kept`);
      pool.answer({ id: 1, kind: OutcomeKind.Quota, errcode: 45009 });
      await settle();
      assert.equal(pool.inFlight, 0);
    }
    assert.equal(pool.runs.filter((r) => r.ids.length === 1).length, 2, 'one probe per interval');
    await clock.advance(60_000);
    pool.answer({ id: 1, kind: OutcomeKind.Ok });
    await settle();
    assert.equal(dispatcher.stats().paused, null);
    assert.deepEqual(running(pool), [2, 3], 'the kept job first, then the queue in order');
    assert.equal(queue.stats().held, 0);
    assert.equal(dispatcher.stats().sent, 1);
  });

  it('45009: resume() ends the pause at once; a job whose retry delay ends during a pause waits for it', async () => {
    const { clock, queue, pool, dispatcher } = await setup(2, { quotaRetryIntervalMs: 600_000 }, jobs(1, 4));
    assert.equal(dispatcher.resume(), false, 'nothing to resume');
    pool.answer({ id: 1, kind: OutcomeKind.Retry, errcode: -1 }, { id: 2, kind: OutcomeKind.Quota, errcode: 45009 });
    await settle();
    assert.equal(dispatcher.stats().retriesPending, 2, 'job 1 deferred, job 2 kept by the pause');
    await clock.advance(750); // job 1's retry delay
    assert.equal(pool.inFlight, 0, 'paused: the retried job waits too');
    assert.ok(!queue.isHeld(1) && queue.isHeld(2), 'job 1 back in the queue, not read during the pause; job 2 kept');
    assert.equal(dispatcher.stats().retriesPending, 1);
    assert.equal(dispatcher.resume(), true);
    await settle();
    assert.deepEqual(running(pool), [1, 2], 'at once, in queue order');
    assert.deepEqual(clock.pending(), [], 'the probe timer is gone');
    assert.equal(dispatcher.stats().paused, null);
  });

  it('45009 with a service pause: announced to the other daemons; a daemon that is not the prober does not probe; the service ends it', async () => {
    const calls: string[] = [];
    let prober = false;
    const servicePause = {
      announce: (state: { reason: string }) => void calls.push(`announce ${state.reason}`),
      clear: () => void calls.push('clear'),
      isProber: () => prober,
    };
    const { clock, pool, dispatcher } = await setup(1, { quotaRetryIntervalMs: 60_000, servicePause }, jobs(1, 3));
    pool.answer({ id: 1, kind: OutcomeKind.Quota, errcode: 45009 });
    await settle();
    assert.deepEqual(calls, ['announce quota']);
    await clock.advance(60_000);
    assert.equal(pool.inFlight, 0, 'another daemon probes');
    prober = true; // the prober left: this one is the leader now
    await clock.advance(60_000);
    assert.deepEqual(running(pool), [1], 'it probes from the next interval on');
    pool.answer({ id: 1, kind: OutcomeKind.Ok });
    await settle();
    assert.deepEqual(calls, ['announce quota', 'clear'], 'its answered probe resumes the service');
    assert.equal(dispatcher.stats().paused, null);
  });

  it('pauseForService / resumeForService: a pause seen by another daemon holds this one, and ends without being told back', async () => {
    const calls: string[] = [];
    const servicePause = { announce: () => void calls.push('announce'), clear: () => void calls.push('clear'), isProber: () => false };
    const { pool, dispatcher } = await setup(1, { quotaRetryIntervalMs: 60_000, servicePause }, jobs(1, 3));
    pool.answer({ id: 1, kind: OutcomeKind.Ok });
    dispatcher.pauseForService({ reason: 'quota', since: '2026-12-02T00:00:00.000Z', detail: 'seen elsewhere' });
    await settle();
    assert.equal(pool.inFlight, 0, 'nothing new goes');
    assert.equal(dispatcher.stats().paused?.since, '2026-12-02T00:00:00.000Z');
    dispatcher.resumeForService();
    await settle();
    assert.deepEqual(running(pool), [2]);
    assert.deepEqual(calls, [], 'neither announced nor cleared back');
    dispatcher.pauseForService({ reason: 'quota', since: '2026-12-02T00:00:00.000Z', detail: 'again' });
    assert.equal(dispatcher.resume(), true);
    assert.deepEqual(calls, ['clear'], '`resume` on this daemon resumes the service');
  });

  it('setRateLimit: a new share of the service-wide rate applies at once', async () => {
    const { clock, pool, dispatcher } = await setup(100, { rateLimit: 10 }, jobs(1, 40));
    const start = clock.now();
    for (let i = 0; i < 10; i++) {
      await clock.advance(100);
      pool.answerAll(OutcomeKind.Ok);
    }
    const before = pool.runs.reduce((n, r) => n + r.ids.length, 0);
    dispatcher.setRateLimit(20);
    for (let i = 0; i < 10; i++) {
      await clock.advance(100);
      pool.answerAll(OutcomeKind.Ok);
    }
    const after = pool.runs.reduce((n, r) => n + r.ids.length, 0) - before;
    assert.ok(before >= 10 && before <= 12, `${before} in the first second at 10/s (from ${start})`);
    assert.ok(after >= 19 && after <= 22, `${after} in the next second at 20/s`);
  });

  it('unreachable: paused likewise, probing after retry_base_ms, doubling; a 45009 answer turns it into a quota pause', async () => {
    const { clock, pool, dispatcher } = await setup(1, { quotaRetryIntervalMs: 600_000 }, jobs(1, 2));
    pool.answer({ id: 1, kind: OutcomeKind.Unreachable, reason: 'connect ECONNREFUSED' });
    await settle();
    assert.equal(dispatcher.stats().paused?.reason, 'unreachable');
    for (const wait of [1000, 2000, 4000]) {
      assert.deepEqual(clock.pending(), [wait]);
      await clock.advance(wait);
      assert.deepEqual(running(pool), [1]);
      pool.answer({ id: 1, kind: OutcomeKind.Unreachable, reason: 'connect ECONNREFUSED' });
      await settle();
    }
    await clock.advance(8000);
    pool.answer({ id: 1, kind: OutcomeKind.Quota, errcode: 45009 });
    await settle();
    assert.equal(dispatcher.stats().paused?.reason, 'quota');
    assert.deepEqual(clock.pending(), [600_000]);
  });

  it('rate_limit: messages leave evenly spaced, never in a burst', async () => {
    const { clock, pool } = await setup(100, { rateLimit: 10 }, jobs(1, 30));
    const start = clock.now();
    for (let i = 0; i < 20; i++) {
      await clock.advance(50);
      pool.answerAll(OutcomeKind.Ok);
    }
    const times = pool.runs.map((r) => r.at - start);
    assert.deepEqual(
      times,
      Array.from({ length: 11 }, (_, i) => i * 100),
      '10 per second: one every 100 ms',
    );
    assert.ok(pool.runs.every((r) => r.ids.length === 1));
  });

  it('stop(): no new job, timers cancelled; waits for running calls, up to its timeout; the rest stays queued', async () => {
    const { clock, queue, pool, dispatcher } = await setup(2, {}, jobs(1, 5));
    pool.answer({ id: 1, kind: OutcomeKind.Retry, errcode: -1 });
    await settle();
    assert.deepEqual(running(pool), [2, 3]);
    let stopped = false;
    const stopping = dispatcher.stop(5000).then(() => (stopped = true));
    await settle();
    assert.deepEqual(clock.pending(), [750, 5000], "job 1's retry delay is the queue's (closing it ends it), and the stop's timeout");
    pool.answer({ id: 2, kind: OutcomeKind.Ok });
    await settle();
    assert.equal(stopped, false, 'job 3 still runs');
    assert.deepEqual(running(pool), [3], 'nothing new is sent');
    pool.answer({ id: 3, kind: OutcomeKind.Retry, errcode: -1 });
    await stopping;
    assert.deepEqual(clock.pending(), [750], 'a retry after stop() is not deferred: it comes again after the next start');
    assert.ok(!queue.calls.includes('defer 3 750'));
    assert.deepEqual(queue.calls.filter((c) => c.startsWith('ack')), ['ack 2']);
    assert.equal(queue.stats().depth, 4, 'jobs 1, 3, 4, 5 stay queued for the next start');

    const second = await setup(1, {}, jobs(1, 1));
    let done = false;
    void second.dispatcher.stop(5000).then(() => (done = true));
    await second.clock.advance(4999);
    assert.equal(done, false);
    await second.clock.advance(1);
    assert.equal(done, true, 'gives up waiting after timeoutMs');
  });
});
