import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { WechatClient } from '../../src/wechat/client.js';
import { TokenManager } from '../../src/wechat/token-manager.js';
import { WechatSimulator } from '../../src/simulator/index.js';
import { TokenError } from '../../src/errors.js';
import { APP_ID, APP_SECRET, msg } from './helpers.js';

function captureLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) });
  return { logger, lines };
}

describe('TokenManager', () => {
  let sim: WechatSimulator;
  let client: WechatClient;
  let clock: number;
  const now = (): number => clock;

  before(async () => {
    sim = await WechatSimulator.start({});
    client = new WechatClient({ apiBase: sim.url, timeoutMs: 2000 });
  });
  after(async () => {
    await client.close();
    await sim.close();
  });
  beforeEach(() => {
    sim.reset();
    clock = 1_000_000;
  });

  test('200 concurrent get() cause exactly one token request', async () => {
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, now });
    const tokens = await Promise.all(Array.from({ length: 200 }, () => tm.get()));
    assert.equal(new Set(tokens).size, 1);
    assert.equal(sim.stats().tokenRequests, 1);
    assert.equal(tm.fetches, 1);
    // later calls are served from the cache
    assert.equal(await tm.get(), tokens[0]);
    assert.equal(sim.stats().tokenRequests, 1);
    assert.equal((await client.sendTemplate(tokens[0]!, msg('o'))).errcode, 0);
    clock += 1234;
    assert.equal(tm.tokenAgeMs, 1234);
  });

  test('refreshes marginSeconds before expiry, once, with an injected clock', async () => {
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, endpoint: 'token', marginSeconds: 300, now });
    const a = await tm.get();
    clock += (7200 - 300) * 1000 - 1; // 1 ms before the refresh point
    assert.equal(await tm.get(), a);
    assert.equal(tm.fetches, 1);
    clock += 1; // refresh point reached
    const burst = await Promise.all(Array.from({ length: 50 }, () => tm.get()));
    assert.equal(new Set(burst).size, 1);
    assert.notEqual(burst[0], a);
    assert.equal(tm.fetches, 2);
    assert.equal(sim.stats().tokenRequests, 2);
    assert.equal(tm.tokenAgeMs, 0);
  });

  test('invalidate(old) after a refresh does not drop the new token', async () => {
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, endpoint: 'token', now });
    const a = await tm.get();
    tm.invalidate(a);
    const b = await tm.get();
    assert.notEqual(b, a);
    assert.equal(tm.fetches, 2);
    tm.invalidate(a); // late report about the old token
    tm.invalidate('something-else');
    assert.equal(await tm.get(), b);
    assert.equal(tm.fetches, 2);
    assert.equal(sim.stats().tokenRequests, 2);
  });

  test('invalidate with stable_token: the same token coming back triggers one force_refresh', async () => {
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, now });
    const a = await tm.get();
    tm.invalidate(a);
    const b = await Promise.all([tm.get(), tm.get(), tm.get()]);
    assert.equal(new Set(b).size, 1);
    assert.notEqual(b[0], a);
    assert.equal(tm.fetches, 3); // first get, stable (same token back), forced
    assert.equal((await client.sendTemplate(b[0]!, msg('o'))).errcode, 0);
    assert.equal((await client.sendTemplate(a, msg('o'))).errcode, 40001);
  });

  test('after the simulator expires the token (42001), invalidate + get yields a working token', async () => {
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, now });
    const a = await tm.get();
    sim.configure({ expireTokenNow: true });
    const r = await client.sendTemplate(a, msg('o'));
    assert.equal(r.errcode, 42001);
    tm.invalidate(a);
    const b = await tm.get();
    assert.notEqual(b, a);
    assert.equal((await client.sendTemplate(b, msg('o'))).errcode, 0);
    assert.equal(tm.fetches, 2);
  });

  test('a failed refresh rejects all waiters with one request, logs once without the secret, backs off', async () => {
    const { logger, lines } = captureLogger();
    const secret = 'WRONG-secret-do-not-log';
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: secret, now, logger, minBackoffMs: 1000, maxBackoffMs: 4000 });
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => tm.get()));
    assert.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof TokenError && r.reason.errcode === 40125));
    assert.equal(sim.stats().tokenRequests, 1);
    assert.equal(lines.length, 1);
    assert.ok(!lines.join('').includes(secret));
    assert.ok(tm.lastError instanceof TokenError);
    assert.ok(!tm.lastError.message.includes(secret));

    // inside the backoff window: rejected at once, no request
    clock += 999;
    await assert.rejects(tm.get(), TokenError);
    assert.equal(tm.fetches, 1);
    // after it: one new attempt; the next window is twice as long
    clock += 1;
    await assert.rejects(tm.get(), TokenError);
    assert.equal(tm.fetches, 2);
    clock += 1999;
    await assert.rejects(tm.get(), TokenError);
    assert.equal(tm.fetches, 2);
    clock += 1;
    await assert.rejects(tm.get(), TokenError);
    assert.equal(tm.fetches, 3);
    assert.equal(sim.stats().tokenRequests, 3);
    assert.ok(!lines.join('').includes(secret));
  });

  test('recovers after a failure once the endpoint works again; the backoff resets', async () => {
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, now, minBackoffMs: 500 });
    sim.configure({ tokenErrcode: 40164 });
    await assert.rejects(tm.get(), (e: unknown) => e instanceof TokenError && e.errcode === 40164);
    sim.configure({ tokenErrcode: null });
    await assert.rejects(tm.get(), TokenError); // still backing off
    clock += 500;
    const t = await tm.get();
    assert.equal(typeof t, 'string');
    assert.equal(tm.lastError, undefined);
    assert.equal(tm.fetches, 2);
  });

  test('a refused secret is logged as an error once per distinct error, its recovery once', async () => {
    const { logger, lines } = captureLogger();
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, now, logger, minBackoffMs: 1000, maxBackoffMs: 1000 });
    const levels = (): Array<{ level: number; msg: string }> => lines.map((l) => JSON.parse(l) as { level: number; msg: string });
    const errors = (): string[] => levels().filter((l) => l.level >= 50).map((l) => l.msg);
    sim.configure({ tokenErrcode: 40125 });
    for (let i = 0; i < 4; i++) {
      await assert.rejects(tm.get(), (e: unknown) => e instanceof TokenError && e.errcode === 40125);
      clock += 1000;
    }
    assert.equal(tm.fetches, 4);
    assert.equal(errors().length, 1, 'four failures of the same kind: one error line');
    assert.match(errors()[0]!, /40125/);
    assert.equal(levels().filter((l) => l.level === 20 && /refresh failed again/.test(l.msg)).length, 3, 'the repeats are debug lines');

    sim.configure({ tokenErrcode: 40164 }); // another failure: logged again, once
    for (let i = 0; i < 2; i++) {
      await assert.rejects(tm.get(), (e: unknown) => e instanceof TokenError && e.errcode === 40164);
      clock += 1000;
    }
    assert.equal(errors().length, 2);
    assert.match(errors()[1]!, /40164/);

    sim.configure({ tokenErrcode: null });
    await tm.get();
    const recovered = levels().filter((l) => /obtained again/.test(l.msg));
    assert.deepEqual(
      recovered.map((l) => [l.level, l.msg]),
      [[30, 'access token obtained again after 6 failed attempt(s)']],
    );
    assert.equal(errors().length, 2);

    sim.configure({ tokenErrcode: 40125 }); // after a success the same failure is news again
    clock += 7200 * 1000;
    await assert.rejects(tm.get(), TokenError);
    assert.equal(errors().length, 3);
  });

  test('a failed refresh inside the margin keeps serving the still-valid token', async () => {
    const { logger, lines } = captureLogger();
    const tm = new TokenManager({ client, appId: APP_ID, appSecret: APP_SECRET, now, logger, endpoint: 'token' });
    const a = await tm.get();
    clock += (7200 - 100) * 1000; // inside the 300 s margin, still valid
    sim.configure({ tokenErrcode: -1 });
    assert.equal(await tm.get(), a);
    assert.equal(tm.fetches, 2);
    assert.ok(tm.lastError instanceof TokenError);
    assert.equal(await tm.get(), a); // backing off: no new request
    assert.equal(tm.fetches, 2);
    assert.equal(lines.filter((l) => l.includes('refresh failed')).length, 1);
    clock += 100 * 1000; // expired now and the endpoint still fails
    await assert.rejects(tm.get(), TokenError);
  });

  test('rejects bad options', () => {
    assert.throws(() => new TokenManager({ client, appId: '', appSecret: 's' }), /appId/);
    assert.throws(() => new TokenManager({ client, appId: 'a', appSecret: '' }), /appSecret/);
    assert.throws(() => new TokenManager({ client, appId: 'a', appSecret: 's', marginSeconds: -1 }), /marginSeconds/);
  });
});
