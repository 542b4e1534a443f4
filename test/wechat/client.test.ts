import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WechatClient } from '../../src/wechat/client.js';
import { WechatSimulator } from '../../src/simulator/index.js';
import { classifyErrcode, OutcomeKind } from '../../src/jobs/outcome.js';
import { ConfigError, TokenError, WechatTransportError } from '../../src/errors.js';
import { APP_ID, APP_SECRET, msg } from './helpers.js';

/** Every string an error could leak through: message, stack, and its causes. */
function errorText(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < 5 && e instanceof Error; i++) {
    parts.push(e.message, e.stack ?? '', JSON.stringify(e));
    e = e.cause;
  }
  return parts.join('\n');
}

describe('WechatClient options', () => {
  test('apiBase must be an http(s) URL; the message names the option', () => {
    for (const bad of ['', 'not a url', 'ftp://example.com', 'http://x/?a=1']) {
      assert.throws(
        () => new WechatClient({ apiBase: bad }),
        (err: unknown) => err instanceof ConfigError && /apiBase/.test(err.message),
        bad,
      );
    }
    assert.throws(() => new WechatClient({ apiBase: 'http://x', connections: 0 }), /connections/);
    assert.throws(() => new WechatClient({ apiBase: 'http://x', timeoutMs: -1 }), /timeoutMs/);
    assert.throws(() => new WechatClient({ apiBase: 'http://x', pipelining: 1.5 }), /pipelining/);
    const c = new WechatClient({ apiBase: 'https://api.weixin.qq.com/' });
    assert.equal(c.apiBase, 'https://api.weixin.qq.com');
    void c.close();
  });
});

describe('WechatClient against the simulator', () => {
  let sim: WechatSimulator;
  let client: WechatClient;
  let token: string;

  before(async () => {
    sim = await WechatSimulator.start({});
    client = new WechatClient({ apiBase: sim.url, timeoutMs: 2000, connections: 8 });
  });
  after(async () => {
    await client.close();
    await sim.close();
  });
  beforeEach(async () => {
    sim.reset();
    token = (await client.fetchToken('stable', APP_ID, APP_SECRET)).accessToken;
  });

  test('fetchToken via stable_token and via token', async () => {
    const a = await client.fetchToken('stable', APP_ID, APP_SECRET);
    assert.equal(a.accessToken, token);
    assert.ok(a.expiresIn > 7000);
    const b = await client.fetchToken('token', APP_ID, APP_SECRET);
    assert.notEqual(b.accessToken, token);
    assert.equal(b.expiresIn, 7200);
    const c = await client.fetchToken('stable', APP_ID, APP_SECRET, true);
    assert.notEqual(c.accessToken, b.accessToken);
  });

  test('sendTemplate success: errcode 0, msgid, raw JSON text as received', async () => {
    const r = await client.sendTemplate(token, msg('o-1', { client_msg_id: 'c1' }));
    assert.equal(r.errcode, 0);
    assert.equal(r.errmsg, 'ok');
    assert.equal(typeof r.msgid, 'number');
    assert.equal(r.raw, `{"errcode":0,"errmsg":"ok","msgid":${r.msgid}}`);
    const r2 = await client.sendTemplate(token, JSON.stringify(msg('o-2')));
    assert.equal(r2.errcode, 0);
    assert.equal(sim.messages()[1]?.touser, 'o-2');
    assert.equal(sim.stats().delivered, 2);
  });

  test('WeChat errcodes resolve (not throw) with WeChat errcode and raw kept', async () => {
    const r = await client.sendTemplate('stale-token', msg('o'));
    assert.equal(r.errcode, 40001);
    assert.equal(classifyErrcode(r.errcode), OutcomeKind.TokenRejected);
    assert.deepEqual(JSON.parse(r.raw), { errcode: 40001, errmsg: r.errmsg });
    assert.equal(r.msgid, undefined);
    sim.configure({ failOpenids: [{ pattern: '^x', errcode: 43004 }] });
    const p = await client.sendTemplate(token, msg('x1'));
    assert.equal(p.errcode, 43004);
    assert.equal(classifyErrcode(p.errcode), OutcomeKind.Failed);
    sim.configure({ errcodeBurst: { errcode: -1, count: 1 } });
    assert.equal(classifyErrcode((await client.sendTemplate(token, msg('o'))).errcode), OutcomeKind.Retry);
    sim.configure({ quotaAfter: 0 });
    assert.equal(classifyErrcode((await client.sendTemplate(token, msg('o'))).errcode), OutcomeKind.Quota);
  });

  test('HTTP 5xx → WechatTransportError kind http, status, retryable; token redacted', async () => {
    sim.configure({ http5xxBurst: { status: 503, count: 1 } });
    const err = await client.sendTemplate(token, msg('o')).then(
      () => assert.fail('should reject'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof WechatTransportError);
    assert.equal(err.code, 'MEGA_ERR_WECHAT_TRANSPORT');
    assert.equal(err.kind, 'http');
    assert.equal(err.status, 503);
    assert.equal(err.retryable, true);
    assert.match(err.message, /access_token=\*\*\*/);
    assert.ok(!errorText(err).includes(token), 'token leaked into the error');
    // the pool still works after the error
    assert.equal((await client.sendTemplate(token, msg('o'))).errcode, 0);
  });

  test('timeout (hangBurst) → WechatTransportError kind timeout after ~timeoutMs', async () => {
    const quick = new WechatClient({ apiBase: sim.url, timeoutMs: 150 });
    try {
      sim.configure({ hangBurst: { count: 1 } });
      const t0 = Date.now();
      const err = await quick.sendTemplate(token, msg('o')).then(
        () => assert.fail('should reject'),
        (e: unknown) => e,
      );
      const took = Date.now() - t0;
      assert.ok(err instanceof WechatTransportError);
      assert.equal(err.kind, 'timeout');
      assert.equal(err.retryable, true);
      assert.ok(took >= 140 && took < 1500, `took ${took} ms`);
      assert.ok(!errorText(err).includes(token));
      assert.equal((await quick.sendTemplate(token, msg('o'))).errcode, 0);
    } finally {
      await quick.close();
    }
  });

  test('quota() parses the quota answer', async () => {
    await client.sendTemplate(token, msg('o'));
    const q = await client.quota(token, '/cgi-bin/message/template/send');
    assert.equal(q.errcode, 0);
    assert.deepEqual(q.quota, { dailyLimit: 100000, used: 1, remain: 99999 });
    const bad = await client.quota('nope');
    assert.equal(bad.errcode, 40001);
    assert.equal(bad.quota, undefined);
  });

  test('token endpoint errors → TokenError with errcode, never the secret', async () => {
    for (const kind of ['stable', 'token'] as const) {
      const err = await client.fetchToken(kind, APP_ID, 'the-WRONG-secret-value').then(
        () => assert.fail('should reject'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof TokenError);
      assert.equal(err.code, 'MEGA_ERR_TOKEN');
      assert.equal(err.errcode, 40125);
      assert.match(err.message, /^token endpoint answered 40125 invalid appsecret/);
      assert.ok(!errorText(err).includes('the-WRONG-secret-value'));
    }
    const badApp = await client.fetchToken('stable', 'wxnope', APP_SECRET).catch((e: unknown) => e);
    assert.ok(badApp instanceof TokenError && badApp.errcode === 40013);
    sim.configure({ tokenErrcode: 40164 });
    const ip = await client.fetchToken('token', APP_ID, APP_SECRET).catch((e: unknown) => e);
    assert.ok(ip instanceof TokenError && ip.errcode === 40164);
    assert.ok(!errorText(ip).includes(APP_SECRET));
  });
});

describe('WechatClient transport failures', () => {
  test('connection refused → WechatTransportError kind connection; TokenError without the secret', async () => {
    const sim = await WechatSimulator.start({});
    const url = sim.url;
    await sim.close();
    const client = new WechatClient({ apiBase: url, timeoutMs: 2000 });
    try {
      const err = await client.sendTemplate('tok-SECRET-123', msg('o')).catch((e: unknown) => e);
      assert.ok(err instanceof WechatTransportError);
      assert.equal(err.kind, 'connection');
      assert.equal(err.retryable, true);
      assert.match(err.message, /ECONNREFUSED/);
      assert.ok(!errorText(err).includes('tok-SECRET-123'));

      // GET /cgi-bin/token carries the secret in its URL: it must not leak through the error.
      const tErr = await client.fetchToken('token', APP_ID, 'SECRET-in-url-999').catch((e: unknown) => e);
      assert.ok(tErr instanceof TokenError);
      assert.equal(tErr.errcode, undefined);
      assert.match(tErr.message, /^token endpoint unreachable/);
      assert.ok(!errorText(tErr).includes('SECRET-in-url-999'));
    } finally {
      await client.close();
    }
  });

  test('non-JSON 200, JSON without errcode, and HTTP 404 are transport errors; retryable only when it may help', async () => {
    const server: Server = createServer((req, res) => {
      req.resume();
      if (req.url?.startsWith('/html')) {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>captive portal</html>');
      } else if (req.url?.startsWith('/noerr')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":1}');
      } else {
        res.writeHead(404).end('not here');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const clients = ['html', 'noerr', 'missing'].map((p) => new WechatClient({ apiBase: `http://127.0.0.1:${port}/${p}` }));
    try {
      const [html, noerr, missing] = await Promise.all(clients.map((c) => c.sendTemplate('tok', msg('o')).catch((e: unknown) => e)));
      assert.ok(html instanceof WechatTransportError && html.kind === 'invalid_response' && html.retryable);
      assert.ok(noerr instanceof WechatTransportError && noerr.kind === 'invalid_response');
      assert.ok(missing instanceof WechatTransportError && missing.kind === 'http');
      assert.equal(missing.status, 404);
      assert.equal(missing.retryable, false);
      const tok = await clients[0]!.fetchToken('stable', APP_ID, APP_SECRET).catch((e: unknown) => e);
      assert.ok(tok instanceof TokenError && /non-JSON/.test(tok.message));
      const tok404 = await clients[2]!.fetchToken('stable', APP_ID, APP_SECRET).catch((e: unknown) => e);
      assert.ok(tok404 instanceof TokenError && /HTTP 404/.test(tok404.message));
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  test('destroy() rejects pending requests as kind closed', async () => {
    const sim = await WechatSimulator.start({ hangBurst: { count: 1 } });
    const client = new WechatClient({ apiBase: sim.url, timeoutMs: 5000 });
    try {
      const pending = client.sendTemplate('t', msg('o')).catch((e: unknown) => e);
      for (let i = 0; i < 100 && sim.stats().hung < 1; i++) await new Promise((r) => setTimeout(r, 5));
      const t0 = Date.now();
      await client.destroy();
      const err = await pending;
      assert.ok(Date.now() - t0 < 1000);
      assert.ok(err instanceof WechatTransportError);
      assert.equal(err.kind, 'closed');
    } finally {
      await sim.close();
    }
  });

  test('requests after close() fail as kind closed', async () => {
    const sim = await WechatSimulator.start({});
    const client = new WechatClient({ apiBase: sim.url });
    try {
      await client.close();
      await client.close(); // idempotent
      const err = await client.sendTemplate('t', msg('o')).catch((e: unknown) => e);
      assert.ok(err instanceof WechatTransportError);
      assert.equal(err.kind, 'closed');
    } finally {
      await sim.close();
    }
  });
});
