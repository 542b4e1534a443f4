import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { LoginLimiter, SESSION_COOKIE, sessionCookie, SessionStore } from '../../src/http/sessions.js';

const withCookie = (cookie: string | undefined): IncomingMessage => ({ headers: cookie === undefined ? {} : { cookie } }) as IncomingMessage;

describe('SessionStore', () => {
  it('finds a session by its cookie among others, until it expires', () => {
    let now = 0;
    const store = new SessionStore({ ttlMs: 1000, now: () => now });
    const s = store.create();
    assert.notEqual(s.id, s.csrf);
    assert.ok(s.id.length >= 40 && s.csrf.length >= 40, 'random 32-byte tokens');
    assert.equal(store.fromRequest(withCookie(`theme=dark; ${SESSION_COOKIE}=${s.id}; x=1`))?.id, s.id);
    assert.equal(store.fromRequest(withCookie(`${SESSION_COOKIE}=${s.id}x`)), undefined);
    assert.equal(store.fromRequest(withCookie(undefined)), undefined);
    now = 999;
    assert.ok(store.fromRequest(withCookie(`${SESSION_COOKIE}=${s.id}`)));
    now = 1000;
    assert.equal(store.fromRequest(withCookie(`${SESSION_COOKIE}=${s.id}`)), undefined);
  });

  it('keeps at most maxSessions, dropping the oldest; delete ends one', () => {
    const store = new SessionStore({ maxSessions: 2 });
    const a = store.create();
    const b = store.create();
    const c = store.create();
    assert.equal(store.fromRequest(withCookie(`${SESSION_COOKIE}=${a.id}`)), undefined);
    assert.ok(store.fromRequest(withCookie(`${SESSION_COOKIE}=${b.id}`)));
    store.delete(c.id);
    assert.equal(store.fromRequest(withCookie(`${SESSION_COOKIE}=${c.id}`)), undefined);
  });

  it('writes the cookie HttpOnly, SameSite=Strict, expiring, Secure over TLS', () => {
    assert.equal(sessionCookie('abc', 60, false), `${SESSION_COOKIE}=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60`);
    assert.match(sessionCookie('abc', 60, true), /; Secure$/);
  });
});

describe('LoginLimiter', () => {
  it('lets an address fail 5 times a minute, then says how long to wait; a success clears it', () => {
    let now = 0;
    const l = new LoginLimiter(5, 50, 60_000, () => now);
    for (let i = 0; i < 5; i++) {
      assert.equal(l.retryAfter('1.2.3.4'), 0);
      l.failed('1.2.3.4');
    }
    now = 20_000;
    assert.equal(l.retryAfter('1.2.3.4'), 40);
    assert.equal(l.retryAfter('5.6.7.8'), 0, 'another address is not held');
    now = 60_000;
    assert.equal(l.retryAfter('1.2.3.4'), 0, 'the window ended');
    l.failed('1.2.3.4');
    l.succeeded('1.2.3.4');
    assert.equal(l.retryAfter('1.2.3.4'), 0);
  });

  it('holds everyone once too many addresses failed together', () => {
    let now = 0;
    const l = new LoginLimiter(5, 10, 60_000, () => now);
    for (let i = 0; i < 10; i++) l.failed(`10.0.0.${i}`);
    now = 1000;
    assert.equal(l.retryAfter('10.0.0.200'), 59);
  });
});
