/**
 * MegaClient's request table alone, without a socket: the window, answers, timeouts, the
 * opaques it hands out, and what a teardown asks of it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BadRequestError, MegaClientTimeoutError, MegaRequestTooLargeError } from '../../src/errors.js';
import { decodeFrame, encodePush, encodeSend, type Result } from '../../src/protocol/index.js';
import { RequestTable, type RequestTableHooks } from '../../src/client/requests.js';

function table(window: number, hooks: Partial<RequestTableHooks> = {}): RequestTable {
  return new RequestTable(window, {
    waitingFor: () => ({ what: 'connection to test', lastError: undefined }),
    slotFreed: () => undefined,
    tooManyAbandoned: () => undefined,
    ...hooks,
  });
}

function answer(opaque: number, code = 200, message = ''): Result {
  return { opaque, code, message: Buffer.from(message) };
}

const push = (t: RequestTable, openid: string, timeoutMs = 5000) =>
  t.add('push', `push ${openid} k`, timeoutMs, 1 << 20, (opaque) => encodePush(opaque, openid, 'k'));

const opaquesOf = (frames: Buffer[]) => frames.map((f) => decodeFrame(f).opaque);

describe('RequestTable', () => {
  it('hands out at most `window` requests, oldest first, and more as answers come', async () => {
    const t = table(2);
    const answers = ['a', 'b', 'c', 'd', 'e'].map((id) => push(t, `o${id}`));
    assert.deepEqual([t.inFlight, t.queued], [0, 5]);
    assert.deepEqual(opaquesOf(t.takeSendable()), [1, 2]);
    assert.deepEqual(t.takeSendable(), [], 'the window is full');
    assert.deepEqual(t.answer(answer(2)), { what: 'push ob k' });
    assert.deepEqual(opaquesOf(t.takeSendable()), [3]);
    for (const o of [1, 3]) t.answer(answer(o));
    assert.deepEqual(opaquesOf(t.takeSendable()), [4, 5]);
    for (const o of [4, 5]) t.answer(answer(o, 400, 'template key not exists'));
    assert.equal(t.idle, true);
    const results = await Promise.all(answers);
    assert.deepEqual(results.map((r) => r.code), [200, 200, 200, 400, 400]);
    assert.deepEqual(results[4], { code: 400, ok: false, message: 'template key not exists' });
  });

  it('an answer for an opaque not written (unknown, or still queued) is not taken', async () => {
    const t = table(1);
    const pending = [push(t, 'o1'), push(t, 'o2')];
    t.takeSendable();
    assert.equal(t.answer(answer(2)), undefined, 'opaque 2 is still queued');
    assert.equal(t.answer(answer(99)), undefined);
    assert.deepEqual([t.inFlight, t.queued], [1, 1]);
    t.failSent(() => new Error('gone'));
    t.failQueued(() => new Error('gone'));
    for (const p of pending) await assert.rejects(p, /gone/);
  });

  it("a Send's answer carries WeChat's JSON parsed", async () => {
    const t = table(1);
    const r = t.add('send', 'send o1 k', 5000, 1 << 20, (opaque) => encodeSend(opaque, 'o1', 'k'));
    t.takeSendable();
    t.answer(answer(1, 400, '{"errcode":43004,"errmsg":"require subscribe","openid":"o1"}'));
    assert.deepEqual((await r).wechat, { errcode: 43004, errmsg: 'require subscribe', openid: 'o1' });
  });

  it('a written request that times out frees its slot and keeps its opaque until its late answer', async () => {
    let freed = 0;
    const t = table(1, { slotFreed: () => freed++ });
    const slow = push(t, 'oslow', 20);
    t.takeSendable();
    await assert.rejects(slow, (e: unknown) => e instanceof MegaClientTimeoutError && e.sent && /no answer within 20 ms; its fate is unknown/.test(e.message));
    assert.deepEqual([freed, t.inFlight], [1, 0]);
    const next = push(t, 'onext');
    assert.deepEqual(opaquesOf(t.takeSendable()), [2], 'opaque 1 is still reserved');
    assert.equal(t.answer(answer(1)), 'late');
    t.answer(answer(2));
    assert.equal((await next).code, 200);
  });

  it('a queued request that times out says what it waited for and the last connection error; it was never sent', async () => {
    const t = table(1, { waitingFor: () => ({ what: 'connection to 127.0.0.1:1', lastError: new Error('connect ECONNREFUSED') }) });
    await assert.rejects(
      push(t, 'o1', 20),
      (e: unknown) =>
        e instanceof MegaClientTimeoutError && !e.sent && e.message === 'push o1 k: no connection to 127.0.0.1:1 within 20 ms (last error: connect ECONNREFUSED); not sent',
    );
    assert.deepEqual(t.takeSendable(), []);
  });

  it('failSent and failQueued reject each kind with its own error; whenIdle resolves then', async () => {
    const t = table(1);
    const sent = push(t, 'o1');
    const queued = push(t, 'o2');
    t.takeSendable();
    const idle = t.whenIdle(60_000);
    t.failSent((what) => new Error(`${what}: sent`));
    t.failQueued((what) => new Error(`${what}: not sent`));
    await assert.rejects(sent, /^Error: push o1 k: sent$/);
    await assert.rejects(queued, /^Error: push o2 k: not sent$/);
    await idle;
    assert.equal(t.idle, true);
  });

  it('a reserved opaque (the auth frame) is not a request: requests get other numbers, and its answer is not taken', async () => {
    const t = table(4);
    assert.equal(t.reserveOpaque(), 1);
    const pending = push(t, 'o1');
    assert.deepEqual(opaquesOf(t.takeSendable()), [2]);
    assert.equal(t.answer(answer(1)), undefined);
    assert.equal(t.inFlight, 1);
    t.releaseOpaque(1);
    t.failSent(() => new Error('gone'));
    await assert.rejects(pending, /gone/);
  });

  it('a frame over maxFrameLength is refused before anything is queued', () => {
    const t = table(1);
    assert.throws(
      () => t.add('push', 'push o1 k', 5000, 64, (opaque) => encodePush(opaque, 'o1', 'k', { v: 'x'.repeat(100) })),
      (e: unknown) => e instanceof MegaRequestTooLargeError && e instanceof BadRequestError && e.frameLength > 100 && e.maxFrameLength === 64,
    );
    assert.equal(t.queued, 0);
  });
});
