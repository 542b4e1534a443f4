import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { WechatSimulator } from '../../src/simulator/index.js';
import { APP_ID, APP_SECRET, getToken, http, msg, send, sleep } from '../wechat/helpers.js';

describe('WechatSimulator', () => {
  let sim: WechatSimulator;
  let token: string;

  before(async () => {
    sim = await WechatSimulator.start({});
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(async () => {
    sim.reset();
    token = await getToken(sim);
  });

  test('url and port describe a listening server on 127.0.0.1', () => {
    assert.ok(sim.port > 0);
    assert.equal(sim.url, `http://127.0.0.1:${sim.port}`);
  });

  test('GET /cgi-bin/token answers a token, bad appid/secret/grant_type answer errcodes', async () => {
    const ok = await http(sim.url, 'GET', `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=${APP_SECRET}`);
    assert.equal(ok.status, 200);
    assert.deepEqual(Object.keys(ok.json).sort(), ['access_token', 'expires_in']);
    assert.equal(ok.json.expires_in, 7200);
    assert.match(ok.json.access_token, /^[A-Za-z0-9_-]{32,}$/);

    const badSecret = await http(sim.url, 'GET', `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=nope`);
    assert.equal(badSecret.json.errcode, 40125);
    assert.match(badSecret.json.errmsg, /^invalid appsecret/);
    const badApp = await http(sim.url, 'GET', `/cgi-bin/token?grant_type=client_credential&appid=wxbad&secret=${APP_SECRET}`);
    assert.equal(badApp.json.errcode, 40013);
    const badGrant = await http(sim.url, 'GET', `/cgi-bin/token?appid=${APP_ID}&secret=${APP_SECRET}`);
    assert.equal(badGrant.json.errcode, 40002);
  });

  test('/cgi-bin/token issues a new token each call; the previous one stays usable', async () => {
    const t2 = await getToken(sim);
    assert.notEqual(t2, token);
    assert.equal((await send(sim, token, msg('o-old'))).json.errcode, 0);
    assert.equal((await send(sim, t2, msg('o-new'))).json.errcode, 0);
  });

  test('POST /cgi-bin/stable_token returns the current token while valid; force_refresh revokes it', async () => {
    const body = { grant_type: 'client_credential', appid: APP_ID, secret: APP_SECRET };
    const a = await http(sim.url, 'POST', '/cgi-bin/stable_token', body);
    assert.equal(a.json.access_token, token);
    assert.ok(a.json.expires_in > 7000 && a.json.expires_in <= 7200);
    const b = await http(sim.url, 'POST', '/cgi-bin/stable_token', { ...body, force_refresh: true });
    assert.notEqual(b.json.access_token, token);
    assert.equal(b.json.expires_in, 7200);
    assert.equal((await send(sim, token, msg('o1'))).json.errcode, 40001);
    assert.equal((await send(sim, b.json.access_token, msg('o1'))).json.errcode, 0);

    const bad = await http(sim.url, 'POST', '/cgi-bin/stable_token', { ...body, secret: 'wrong' });
    assert.equal(bad.json.errcode, 40125);
    const notJson = await http(sim.url, 'POST', '/cgi-bin/stable_token', '{oops');
    assert.equal(notJson.json.errcode, 47001);
    assert.equal(sim.stats().tokenRequests, 5); // beforeEach + 4 here
  });

  test('send answers {errcode:0, errmsg:"ok", msgid} and records the message', async () => {
    const r = await send(sim, token, msg('o-1', { client_msg_id: 'c-1' }));
    assert.equal(r.status, 200);
    assert.deepEqual(Object.keys(r.json), ['errcode', 'errmsg', 'msgid']);
    assert.equal(r.json.errcode, 0);
    assert.equal(r.json.errmsg, 'ok');
    assert.equal(typeof r.json.msgid, 'number');
    const [m] = sim.messages();
    assert.ok(m);
    assert.equal(m.index, 0);
    assert.equal(m.touser, 'o-1');
    assert.equal(m.template_id, 'tmpl-1');
    assert.equal(m.client_msg_id, 'c-1');
    assert.deepEqual(m.data, { first: { value: 'hello' } });
    assert.deepEqual(m.body, msg('o-1', { client_msg_id: 'c-1' }));
    assert.equal(m.errcode, 0);
    assert.equal(m.msgid, r.json.msgid);
    assert.equal(m.duplicate, false);
    assert.ok(Math.abs(m.receivedAt - Date.now()) < 5000);
  });

  test('send validation: token missing/unknown 40001, not JSON 47001, no touser 40003, no template_id 40037', async () => {
    const noToken = await send(sim, null, msg('o'));
    assert.equal(noToken.json.errcode, 40001);
    assert.equal(noToken.json.errmsg, 'invalid credential, access_token is invalid or not latest');
    assert.equal((await send(sim, 'not-a-token', msg('o'))).json.errcode, 40001);
    const notJson = await send(sim, token, '{"touser": ');
    assert.equal(notJson.json.errcode, 47001);
    assert.equal(notJson.json.errmsg, 'data format error');
    assert.equal((await send(sim, token, { template_id: 't' })).json.errcode, 40003);
    assert.equal((await send(sim, token, { touser: 'o' })).json.errcode, 40037);
    const s = sim.stats();
    assert.equal(s.sendRequests, 5);
    assert.equal(s.delivered, 0);
    assert.deepEqual(s.byErrcode, { '40001': 2, '47001': 1, '40003': 1, '40037': 1 });
    assert.equal(sim.messages()[2]?.body, '{"touser": ');
  });

  test('repeat client_msg_id: answered ok with the same msgid, counted as duplicate, delivered once', async () => {
    const a = await send(sim, token, msg('o-d', { client_msg_id: 'same' }));
    const b = await send(sim, token, msg('o-d', { client_msg_id: 'same' }));
    const c = await send(sim, token, msg('o-d', { client_msg_id: 'other' }));
    const d = await send(sim, token, msg('o-d')); // no client_msg_id: never a duplicate
    const e = await send(sim, token, msg('o-d'));
    assert.equal(b.json.errcode, 0);
    assert.equal(b.json.msgid, a.json.msgid);
    assert.notEqual(c.json.msgid, a.json.msgid);
    assert.notEqual(d.json.msgid, e.json.msgid);
    const s = sim.stats();
    assert.equal(s.delivered, 4);
    assert.equal(s.duplicates, 1);
    assert.deepEqual(
      sim.messages().map((m) => m.duplicate),
      [false, true, false, false, false],
    );
  });

  test('a client_msg_id whose first attempt failed is delivered on retry', async () => {
    sim.configure({ errcodeBurst: { errcode: -1, count: 1 } });
    const a = await send(sim, token, msg('o', { client_msg_id: 'retry-me' }));
    assert.equal(a.json.errcode, -1);
    assert.equal(a.json.errmsg, 'system error');
    const b = await send(sim, token, msg('o', { client_msg_id: 'retry-me' }));
    assert.equal(b.json.errcode, 0);
    assert.equal(sim.stats().duplicates, 0);
    assert.equal(sim.stats().delivered, 1);
  });

  test('fault failOpenids: matching openids get the permanent errcode', async () => {
    sim.configure({ failOpenids: [{ pattern: '^blocked-', errcode: 43004 }, { pattern: 'x$', errcode: 40003, errmsg: 'custom' }] });
    const a = await send(sim, token, msg('blocked-1'));
    assert.deepEqual(a.json, { errcode: 43004, errmsg: 'require subscribe' });
    assert.deepEqual((await send(sim, token, msg('userx'))).json, { errcode: 40003, errmsg: 'custom' });
    assert.equal((await send(sim, token, msg('fine'))).json.errcode, 0);
    assert.equal(sim.stats().delivered, 1);
  });

  test('fault errcodeBurst: exactly the next N sends answer the errcode', async () => {
    sim.configure({ errcodeBurst: { errcode: -1, count: 2 } });
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push((await send(sim, token, msg(`o${i}`))).json.errcode);
    assert.deepEqual(codes, [-1, -1, 0, 0]);
  });

  test('fault http5xxBurst: the next N sends answer the HTTP status with a non-JSON body', async () => {
    sim.configure({ http5xxBurst: { status: 502, count: 1 } });
    const a = await send(sim, token, msg('o'));
    assert.equal(a.status, 502);
    assert.equal(a.json, undefined);
    const b = await send(sim, token, msg('o'));
    assert.equal(b.status, 200);
    assert.equal(b.json.errcode, 0);
    assert.equal(sim.stats().http5xx, 1);
    assert.equal(sim.messages()[0]?.status, 502);
    assert.equal(sim.messages()[0]?.errcode, null);
  });

  test('fault hangBurst: the next N sends never answer; in-flight is released when the client gives up', async () => {
    sim.configure({ hangBurst: { count: 1 } });
    const t0 = Date.now();
    await assert.rejects(send(sim, token, msg('o-hang'), 150), (err: Error) => err.name === 'TimeoutError' || /abort/i.test(err.message));
    assert.ok(Date.now() - t0 >= 140);
    assert.equal((await send(sim, token, msg('o'))).json.errcode, 0);
    const s = sim.stats();
    assert.equal(s.hung, 1);
    assert.equal(sim.messages()[0]?.status, 0);
    for (let i = 0; i < 50 && sim.stats().inFlight !== 0; i++) await sleep(10);
    assert.equal(sim.stats().inFlight, 0);
  });

  test('fault quotaAfter: after N deliveries every send answers 45009', async () => {
    sim.configure({ quotaAfter: 2 });
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push((await send(sim, token, msg(`o${i}`))).json);
    assert.deepEqual(
      codes.map((c) => c.errcode),
      [0, 0, 45009, 45009],
    );
    assert.equal(codes[2].errmsg, 'reach max api daily quota limit');
    sim.configure({ quotaAfter: null });
    assert.equal((await send(sim, token, msg('o'))).json.errcode, 0);
  });

  test('fault expireTokenNow: issued tokens answer 42001 once; a new token works', async () => {
    sim.configure({ expireTokenNow: true });
    const r = await send(sim, token, msg('o'));
    assert.equal(r.json.errcode, 42001);
    assert.equal(sim.config().expireTokenNow, false);
    const fresh = await http(sim.url, 'POST', '/cgi-bin/stable_token', {
      grant_type: 'client_credential',
      appid: APP_ID,
      secret: APP_SECRET,
    });
    assert.notEqual(fresh.json.access_token, token);
    assert.equal((await send(sim, fresh.json.access_token, msg('o'))).json.errcode, 0);
  });

  test('fault tokenErrcode: both token endpoints answer it', async () => {
    sim.configure({ tokenErrcode: 40164 });
    const a = await http(sim.url, 'GET', `/cgi-bin/token?grant_type=client_credential&appid=${APP_ID}&secret=${APP_SECRET}`);
    assert.equal(a.json.errcode, 40164);
    const b = await http(sim.url, 'POST', '/cgi-bin/stable_token', { grant_type: 'client_credential', appid: APP_ID, secret: APP_SECRET });
    assert.equal(b.json.errcode, 40164);
    assert.match(b.json.errmsg, /whitelist/);
  });

  test('fault latencyMs delays answers; concurrent sends show up in inFlight/maxInFlight', async () => {
    // long enough that all 20 overlap even on a loaded machine
    sim.configure({ latencyMs: 400 });
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => send(sim, token, msg(`o${i}`))));
    const took = Date.now() - t0;
    assert.ok(took >= 395, `took ${took} ms`);
    assert.ok(took < 4000, `took ${took} ms: answered in parallel, not one after another (8 s)`);
    assert.ok(answers.every((a) => a.json.errcode === 0));
    const s = sim.stats();
    assert.equal(s.maxInFlight, 20);
    assert.equal(s.inFlight, 0);
  });

  test('quota/get answers the quota shape; daily_limit is configurable', async () => {
    await send(sim, token, msg('o'));
    const q = await http(sim.url, 'POST', `/cgi-bin/openapi/quota/get?access_token=${token}`, {
      cgi_path: '/cgi-bin/message/template/send',
    });
    assert.deepEqual(q.json, { errcode: 0, errmsg: 'ok', quota: { daily_limit: 100000, used: 1, remain: 99999 } });
    sim.configure({ dailyLimit: 1 });
    const q2 = await http(sim.url, 'POST', `/cgi-bin/openapi/quota/get?access_token=${token}`, {
      cgi_path: '/cgi-bin/message/template/send',
    });
    assert.deepEqual(q2.json.quota, { daily_limit: 1, used: 1, remain: 0 });
    assert.equal((await send(sim, token, msg('o'))).json.errcode, 45009);
    const noTok = await http(sim.url, 'POST', '/cgi-bin/openapi/quota/get', { cgi_path: '/cgi-bin/message/template/send' });
    assert.equal(noTok.json.errcode, 40001);
    const noPath = await http(sim.url, 'POST', `/cgi-bin/openapi/quota/get?access_token=${token}`, {});
    assert.equal(noPath.json.errcode, 40097);
  });

  test('control endpoints: messages?since, stats, config, reset', async () => {
    for (let i = 0; i < 3; i++) await send(sim, token, msg(`o${i}`, { client_msg_id: `m${i}` }));
    const all = await http(sim.url, 'GET', '/_sim/messages');
    assert.equal(all.json.next, 3);
    assert.deepEqual(
      all.json.messages.map((m: { touser: string }) => m.touser),
      ['o0', 'o1', 'o2'],
    );
    const tail = await http(sim.url, 'GET', '/_sim/messages?since=2');
    assert.equal(tail.json.messages.length, 1);
    assert.equal(tail.json.messages[0].index, 2);
    assert.equal((await http(sim.url, 'GET', '/_sim/messages?since=-1')).status, 400);

    const stats = await http(sim.url, 'GET', '/_sim/stats');
    for (const k of ['tokenRequests', 'sendRequests', 'delivered', 'duplicates', 'byErrcode', 'inFlight', 'maxInFlight']) {
      assert.ok(k in stats.json, k);
    }
    assert.equal(stats.json.delivered, 3);
    assert.deepEqual(stats.json.byErrcode, { '0': 3 });

    const cfg = await http(sim.url, 'POST', '/_sim/config', { errcodeBurst: { errcode: -1, count: 1 }, latencyMs: 1 });
    assert.equal(cfg.status, 200);
    assert.deepEqual(cfg.json.errcodeBurst, { errcode: -1, count: 1 });
    assert.equal((await send(sim, token, msg('o'))).json.errcode, -1);
    const bad = await http(sim.url, 'POST', '/_sim/config', { bogus: 1 });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error, /bogus/);
    const badRe = await http(sim.url, 'POST', '/_sim/config', { failOpenids: [{ pattern: '(', errcode: 1 }] });
    assert.equal(badRe.status, 400);
    assert.equal((await http(sim.url, 'POST', '/_sim/config', 'not json')).status, 400);
    assert.throws(() => sim.configure({ latencyMs: -5 }), /latencyMs/);

    const reset = await http(sim.url, 'POST', '/_sim/reset', {});
    assert.deepEqual(reset.json, { ok: true });
    assert.equal(sim.messages().length, 0);
    assert.equal(sim.stats().sendRequests, 0);
    assert.equal(sim.config().latencyMs, 0);
    // tokens survive a reset; client_msg_id memory does not
    const again = await send(sim, token, msg('o0', { client_msg_id: 'm0' }));
    assert.equal(again.json.errcode, 0);
    assert.equal(sim.stats().duplicates, 0);
    assert.equal((await http(sim.url, 'GET', '/_sim/nope')).status, 404);
  });

  test('recordBodies false keeps the ids but not the bodies', async () => {
    const s2 = await WechatSimulator.start({ recordBodies: false });
    try {
      const t = await getToken(s2);
      await send(s2, t, msg('o', { client_msg_id: 'x' }));
      const [m] = s2.messages();
      assert.equal(m?.touser, 'o');
      assert.equal(m?.client_msg_id, 'x');
      assert.equal(m?.body, undefined);
      assert.equal(m?.data, undefined);
    } finally {
      await s2.close();
    }
  });
});

describe('WechatSimulator lifecycle and options', () => {
  test('tokens expire after tokenTtlSeconds (42001)', async () => {
    const sim = await WechatSimulator.start({ tokenTtlSeconds: 0.5 });
    try {
      const t = await getToken(sim);
      assert.equal((await send(sim, t, msg('o'))).json.errcode, 0);
      await sleep(700);
      assert.equal((await send(sim, t, msg('o'))).json.errcode, 42001);
    } finally {
      await sim.close();
    }
  });

  test('the client_msg_id window is honoured (dedupeWindowSeconds)', async () => {
    const sim = await WechatSimulator.start({ dedupeWindowSeconds: 0.5 });
    try {
      const t = await getToken(sim);
      await send(sim, t, msg('o', { client_msg_id: 'w' }));
      assert.equal((await send(sim, t, msg('o', { client_msg_id: 'w' }))).json.errcode, 0);
      assert.equal(sim.stats().duplicates, 1);
      await sleep(700);
      await send(sim, t, msg('o', { client_msg_id: 'w' }));
      assert.equal(sim.stats().duplicates, 1);
      assert.equal(sim.stats().delivered, 2);
    } finally {
      await sim.close();
    }
  });

  test('faults and credentials can be given as start options; invalid options reject', async () => {
    const sim = await WechatSimulator.start({ appId: 'wxA', appSecret: 'secretA', errcodeBurst: { errcode: 45009, count: 1 } });
    try {
      const tok = await http(sim.url, 'GET', '/cgi-bin/token?grant_type=client_credential&appid=wxA&secret=secretA');
      assert.equal(typeof tok.json.access_token, 'string');
      assert.equal((await send(sim, tok.json.access_token, msg('o'))).json.errcode, 45009);
      // reset restores the start options, burst included
      sim.reset();
      assert.equal((await send(sim, tok.json.access_token, msg('o'))).json.errcode, 45009);
      assert.equal((await send(sim, tok.json.access_token, msg('o'))).json.errcode, 0);
    } finally {
      await sim.close();
    }
    await assert.rejects(WechatSimulator.start({ latencyMs: -1 }), /latencyMs/);
    await assert.rejects(WechatSimulator.start({ tokenTtlSeconds: 0 }), /tokenTtlSeconds/);
  });

  test('close() resolves promptly even with hung requests, and is idempotent', async () => {
    const sim = await WechatSimulator.start({ hangBurst: { count: 5 } });
    const t = await getToken(sim);
    const pending = Promise.allSettled([send(sim, t, msg('a'), 5000), send(sim, t, msg('b'), 5000)]);
    for (let i = 0; i < 100 && sim.stats().hung < 2; i++) await sleep(5);
    assert.equal(sim.stats().hung, 2);
    const t0 = Date.now();
    await sim.close();
    await sim.close();
    const results = await pending;
    assert.ok(Date.now() - t0 < 1000);
    assert.ok(results.every((r) => r.status === 'rejected'));
  });
});
