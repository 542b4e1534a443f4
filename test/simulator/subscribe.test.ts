/**
 * The simulator's subscribe endpoints (an Official Account's `subscribe/bizsend`, a mini program's
 * `subscribe/send`), the template lists, the refused list and the subscribe events, all over real
 * HTTP against an in-process simulator; the events are received by a real node:http server.
 */
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { WechatSimulator } from '../../src/simulator/index.js';
import { decryptCallbackMessage, verifyCallbackSignature, verifyMessageSignature } from '../../src/wechat/callback-crypto.js';
import { checkSubscribeData } from '../../src/wechat/subscribe-rules.js';
import { getToken, http, msg, send, type Answer } from '../wechat/helpers.js';

const BIZSEND = '/cgi-bin/message/subscribe/bizsend';
const MP_SEND = '/cgi-bin/message/subscribe/send';
const TOKEN = 'subscribe_token_7';
const AES_KEY = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';

function post(sim: WechatSimulator, path: string, token: string | null, body: unknown): Promise<Answer> {
  const q = token === null ? '' : `?access_token=${encodeURIComponent(token)}`;
  return http(sim.url, 'POST', `${path}${q}`, body);
}

function sub(touser: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { touser, template_id: 'sub-tmpl-1', data: { thing1: { value: '咖啡' }, amount2: { value: '12.50' } }, ...extra };
}

/** A server URL that records every request and answers `success`. */
class Receiver {
  readonly got: { url: string; query: URLSearchParams; body: string }[] = [];
  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<Receiver> {
    let r: Receiver | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const url = req.url ?? '';
        r!.got.push({ url, query: new URL(url, 'http://x').searchParams, body: Buffer.concat(chunks).toString('utf8') });
        res.end('success');
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    r = new Receiver(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}/wechat/callback`);
    return r;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }
}

describe('simulator subscribe endpoints', () => {
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

  test('bizsend and subscribe/send answer {errcode:0, errmsg:"ok", msgid}; the record tells the three endpoints apart', async () => {
    const biz = await post(sim, BIZSEND, token, sub('oBiz', { page: 'https://example.com/order/1', miniprogram: { appid: 'wxmini', pagepath: 'pages/order?id=1' } }));
    assert.equal(biz.status, 200);
    assert.deepEqual(Object.keys(biz.json), ['errcode', 'errmsg', 'msgid']);
    assert.equal(biz.json.errcode, 0);
    assert.equal(biz.json.errmsg, 'ok');
    const mp = await post(sim, MP_SEND, token, sub('oMini', { page: 'pages/index?foo=bar', miniprogram_state: 'trial', lang: 'en_US' }));
    assert.deepEqual(mp.json, { errcode: 0, errmsg: 'ok', msgid: mp.json.msgid });
    const tpl = await send(sim, token, msg('oTpl'));
    assert.equal(tpl.json.errcode, 0);
    assert.equal(new Set([biz.json.msgid, mp.json.msgid, tpl.json.msgid]).size, 3);

    const [a, b, c] = sim.messages();
    assert.deepEqual(
      [a?.kind, b?.kind, c?.kind],
      ['subscribe', 'miniprogram', 'template'],
    );
    assert.equal(a!.touser, 'oBiz');
    assert.equal(a!.template_id, 'sub-tmpl-1');
    assert.deepEqual(a!.data, { thing1: { value: '咖啡' }, amount2: { value: '12.50' } });
    assert.deepEqual((a!.body as Record<string, unknown>)['miniprogram'], { appid: 'wxmini', pagepath: 'pages/order?id=1' });
    assert.equal(a!.msgid, biz.json.msgid);
    assert.equal(a!.errcode, 0);
    assert.equal(b!.msgid, mp.json.msgid);
    assert.equal((b!.body as Record<string, unknown>)['lang'], 'en_US');

    const viaHttp = await http(sim.url, 'GET', '/_sim/messages');
    assert.deepEqual(
      viaHttp.json.messages.map((m: { kind: string }) => m.kind),
      ['subscribe', 'miniprogram', 'template'],
    );
    const s = sim.stats();
    assert.equal(s.sendRequests, 3);
    assert.equal(s.delivered, 3);
    assert.deepEqual(s.byKind, {
      template: { requests: 1, ok: 1, delivered: 1 },
      subscribe: { requests: 1, ok: 1, delivered: 1 },
      miniprogram: { requests: 1, ok: 1, delivered: 1 },
    });
  });

  test('token errors as on template/send: missing or unknown 40001, expired 42001', async () => {
    for (const path of [BIZSEND, MP_SEND]) {
      const none = await post(sim, path, null, sub('o1'));
      assert.deepEqual(none.json, { errcode: 40001, errmsg: 'invalid credential, access_token is invalid or not latest' });
      assert.equal((await post(sim, path, 'not-a-token', sub('o1'))).json.errcode, 40001);
    }
    sim.configure({ expireTokenNow: true });
    for (const path of [BIZSEND, MP_SEND]) {
      assert.deepEqual((await post(sim, path, token, sub('o1'))).json, { errcode: 42001, errmsg: 'access_token expired' });
    }
    assert.equal(sim.stats().delivered, 0);
    assert.deepEqual(sim.stats().byErrcode, { '40001': 4, '42001': 2 });
  });

  test('a wrong method answers 405', async () => {
    assert.equal((await http(sim.url, 'GET', `${BIZSEND}?access_token=${token}`)).status, 405);
    assert.equal((await http(sim.url, 'GET', `${MP_SEND}?access_token=${token}`)).status, 405);
  });

  test('missing or malformed fields: not JSON 47001, touser 40003, template_id 40037, data 47001', async () => {
    for (const path of [BIZSEND, MP_SEND]) {
      const cases: [unknown, number][] = [
        ['{"touser": ', 47001],
        [[sub('o')], 47001],
        [{ template_id: 't', data: { thing1: { value: 'x' } } }, 40003],
        [{ touser: '', template_id: 't', data: { thing1: { value: 'x' } } }, 40003],
        [{ touser: 'o', data: { thing1: { value: 'x' } } }, 40037],
        [{ touser: 'o', template_id: 't' }, 47001],
        [{ touser: 'o', template_id: 't', data: 'thing1=x' }, 47001],
        [{ touser: 'o', template_id: 't', data: [] }, 47001],
        [{ touser: 'o', template_id: 't', data: {} }, 47001],
        [{ touser: 'o', template_id: 't', data: { thing1: 'x' } }, 47001],
        [{ touser: 'o', template_id: 't', data: { thing1: { color: '#000' } } }, 47001],
        [sub('o', { page: 42 }), 47001],
      ];
      for (const [body, errcode] of cases) {
        const a = await post(sim, path, token, body);
        assert.equal(a.json.errcode, errcode, `${path} ${JSON.stringify(body)}`);
        if (errcode === 47001) assert.equal(a.json.errmsg, 'data format error');
      }
    }
    const badMp = await post(sim, BIZSEND, token, sub('o', { miniprogram: { pagepath: 'pages/x' } }));
    assert.equal(badMp.json.errcode, 47001);
    assert.equal((await post(sim, BIZSEND, token, sub('o', { miniprogram: 'wxmini' }))).json.errcode, 47001);
    assert.equal(sim.stats().delivered, 0);
    assert.equal(sim.messages()[0]?.body, '{"touser": ');
  });

  test('miniprogram_state and lang outside the allowed values answer 47003 naming the field', async () => {
    for (const state of ['developer', 'trial', 'formal']) {
      assert.equal((await post(sim, MP_SEND, token, sub('o', { miniprogram_state: state }))).json.errcode, 0);
    }
    for (const lang of ['zh_CN', 'en_US', 'zh_HK', 'zh_TW']) {
      assert.equal((await post(sim, MP_SEND, token, sub('o', { lang }))).json.errcode, 0);
    }
    assert.deepEqual((await post(sim, MP_SEND, token, sub('o', { miniprogram_state: 'release' }))).json, {
      errcode: 47003,
      errmsg: 'argument invalid! miniprogram_state invalid',
    });
    assert.deepEqual((await post(sim, MP_SEND, token, sub('o', { lang: 'fr_FR' }))).json, {
      errcode: 47003,
      errmsg: 'argument invalid! lang invalid',
    });
    assert.equal((await post(sim, BIZSEND, token, sub('o', { lang: 'en' }))).json.errcode, 47003);
  });

  test('a data value breaking its type rule (src/wechat/subscribe-rules.ts) answers 47003 naming the field', async () => {
    const long = 'x'.repeat(21);
    assert.equal(checkSubscribeData({ thing1: { value: long } }).length, 1); // the rule this test leans on
    for (const path of [BIZSEND, MP_SEND]) {
      const a = await post(sim, path, token, sub('o', { data: { thing1: { value: long }, amount2: { value: '12.50' } } }));
      assert.deepEqual(a.json, { errcode: 47003, errmsg: 'argument invalid! data.thing1.value invalid' });
      const e = await post(sim, path, token, sub('o', { data: { thing1: { value: '咖啡' }, amount2: { value: '' } } }));
      assert.deepEqual(e.json, { errcode: 47003, errmsg: 'argument invalid! data.amount2.value is empty' });
    }
    // The first broken entry is named, in the body's key order.
    const two = await post(sim, MP_SEND, token, sub('o', { data: { time3: { value: 'noon' }, thing1: { value: long } } }));
    assert.equal(checkSubscribeData({ time3: { value: 'noon' } }).length, 1);
    assert.equal(two.json.errmsg, 'argument invalid! data.time3.value invalid');
    // template/send has no typed data.
    assert.equal((await send(sim, token, { ...msg('o'), data: { thing1: { value: long } } })).json.errcode, 0);
    assert.equal(sim.stats().byKind.subscribe.delivered + sim.stats().byKind.miniprogram.delivered, 0);
  });

  test('refusedOpenids: a subscribe send to a matching openid answers 43101; template/send is not affected', async () => {
    const set = await http(sim.url, 'POST', '/_sim/config', { refusedOpenids: ['^oREF', 'x$'] });
    assert.equal(set.status, 200);
    assert.deepEqual(set.json.refusedOpenids, ['^oREF', 'x$']);
    for (const path of [BIZSEND, MP_SEND]) {
      assert.deepEqual((await post(sim, path, token, sub('oREF-1'))).json, { errcode: 43101, errmsg: 'user refuse to accept the msg' });
      assert.equal((await post(sim, path, token, sub('userx'))).json.errcode, 43101);
      assert.equal((await post(sim, path, token, sub('oFine'))).json.errcode, 0);
    }
    assert.equal((await send(sim, token, msg('oREF-1'))).json.errcode, 0);
    assert.equal(sim.stats().byErrcode['43101'], 4);

    for (const bad of [{ refusedOpenids: '^oREF' }, { refusedOpenids: [1] }, { refusedOpenids: ['('] }]) {
      const r = await http(sim.url, 'POST', '/_sim/config', bad);
      assert.equal(r.status, 400);
      assert.match(r.json.error, /refusedOpenids/);
    }
    assert.deepEqual(sim.config().refusedOpenids, ['^oREF', 'x$']);
    sim.reset();
    assert.deepEqual(sim.config().refusedOpenids, []);
  });

  test('the faults of template/send apply: failOpenids, errcodeBurst, http5xxBurst; no client_msg_id de-duplication', async () => {
    sim.configure({ failOpenids: [{ pattern: '^oBAD', errcode: 43004 }], errcodeBurst: { errcode: -1, count: 1 } });
    assert.deepEqual((await post(sim, BIZSEND, token, sub('oBAD1'))).json, { errcode: -1, errmsg: 'system error' });
    assert.deepEqual((await post(sim, BIZSEND, token, sub('oBAD1'))).json, { errcode: 43004, errmsg: 'require subscribe' });
    assert.equal((await post(sim, MP_SEND, token, sub('oBAD2'))).json.errcode, 43004);
    sim.configure({ http5xxBurst: { status: 502, count: 1 } });
    const five = await post(sim, MP_SEND, token, sub('o'));
    assert.equal(five.status, 502);
    assert.equal(sim.messages().at(-1)!.errcode, null);

    const a = await post(sim, MP_SEND, token, sub('oSame', { client_msg_id: 'c1' }));
    const b = await post(sim, MP_SEND, token, sub('oSame', { client_msg_id: 'c1' }));
    assert.notEqual(a.json.msgid, b.json.msgid);
    assert.equal(sim.stats().duplicates, 0);
    assert.equal(sim.stats().byKind.miniprogram.delivered, 2);
  });

  test('latencyMs delays the subscribe answers too', async () => {
    sim.configure({ latencyMs: 150 });
    const t0 = Date.now();
    assert.equal((await post(sim, BIZSEND, token, sub('o'))).json.errcode, 0);
    assert.ok(Date.now() - t0 >= 140);
  });

  test('each endpoint has its own daily quota, and quota/get reports it per cgi_path', async () => {
    sim.configure({ dailyLimit: 2 });
    assert.equal((await post(sim, BIZSEND, token, sub('o1'))).json.errcode, 0);
    assert.equal((await post(sim, BIZSEND, token, sub('o2'))).json.errcode, 0);
    assert.equal((await post(sim, BIZSEND, token, sub('o3'))).json.errcode, 45009);
    assert.equal((await post(sim, MP_SEND, token, sub('o4'))).json.errcode, 0);
    assert.equal((await send(sim, token, msg('o5'))).json.errcode, 0);
    const quota = async (cgi_path: string): Promise<unknown> =>
      (await http(sim.url, 'POST', `/cgi-bin/openapi/quota/get?access_token=${token}`, { cgi_path })).json.quota;
    assert.deepEqual(await quota(BIZSEND), { daily_limit: 2, used: 2, remain: 0 });
    assert.deepEqual(await quota(MP_SEND), { daily_limit: 2, used: 1, remain: 1 });
    assert.deepEqual(await quota('/cgi-bin/message/template/send'), { daily_limit: 2, used: 1, remain: 1 });
  });
});

describe('simulator template lists', () => {
  let sim: WechatSimulator;
  let token: string;
  const privateTemplates = [
    {
      template_id: 'iPk5sOIt5X_flOVKn5GrTFpncEYTojx6ddbt8WYoV5s',
      title: '领取奖金提醒',
      primary_industry: 'IT科技',
      deputy_industry: '互联网|电子商务',
      content: '{{first.DATA}}\n商品：{{keyword1.DATA}}\n{{remark.DATA}}',
      example: '您已提交领奖申请\n商品：咖啡\n请留意后续通知',
    },
  ];
  const subscribeTemplates = [
    { priTmplId: 'sub-tmpl-1', title: '订单通知', content: '商品名称:{{thing1.DATA}}\n金额:{{amount2.DATA}}\n', example: '商品名称:咖啡\n金额:12.50元\n', type: 2 },
    { priTmplId: 'sub-tmpl-2', title: '服务提醒', content: '内容:{{thing1.DATA}}\n', example: '内容:检修\n', type: 3 },
  ];

  before(async () => {
    sim = await WechatSimulator.start({ subscribeTemplates: [subscribeTemplates[0]!] as never });
  });
  after(async () => {
    await sim.close();
  });
  beforeEach(async () => {
    sim.reset();
    token = await getToken(sim);
  });

  test('get_all_private_template answers {template_list}; empty by default', async () => {
    const empty = await http(sim.url, 'GET', `/cgi-bin/template/get_all_private_template?access_token=${token}`);
    assert.deepEqual(empty.json, { template_list: [] });
    const set = await http(sim.url, 'POST', '/_sim/config', { privateTemplates });
    assert.equal(set.status, 200);
    const full = await http(sim.url, 'GET', `/cgi-bin/template/get_all_private_template?access_token=${token}`);
    assert.equal(full.status, 200);
    assert.deepEqual(full.json, { template_list: privateTemplates });
    assert.equal(sim.stats().templateListRequests, 2);
  });

  test('wxaapi/newtmpl/gettemplate answers {errcode:0, errmsg:"ok", data}; the start option is what reset restores', async () => {
    const start = await http(sim.url, 'GET', `/wxaapi/newtmpl/gettemplate?access_token=${token}`);
    assert.deepEqual(start.json, { errcode: 0, errmsg: 'ok', data: [subscribeTemplates[0]] });
    sim.configure({ subscribeTemplates: subscribeTemplates as never });
    const both = await http(sim.url, 'GET', `/wxaapi/newtmpl/gettemplate?access_token=${token}`);
    assert.deepEqual(both.json, { errcode: 0, errmsg: 'ok', data: subscribeTemplates });
    sim.configure({ subscribeTemplates: [] });
    assert.deepEqual((await http(sim.url, 'GET', `/wxaapi/newtmpl/gettemplate?access_token=${token}`)).json.data, []);
  });

  test('token errors as on the sends; wrong method 405', async () => {
    for (const path of ['/cgi-bin/template/get_all_private_template', '/wxaapi/newtmpl/gettemplate']) {
      assert.equal((await http(sim.url, 'GET', path)).json.errcode, 40001);
      assert.equal((await http(sim.url, 'GET', `${path}?access_token=nope`)).json.errcode, 40001);
      assert.equal((await http(sim.url, 'POST', `${path}?access_token=${token}`, {})).status, 405);
    }
    sim.configure({ expireTokenNow: true });
    assert.equal((await http(sim.url, 'GET', `/wxaapi/newtmpl/gettemplate?access_token=${token}`)).json.errcode, 42001);
  });

  test('bad template lists answer 400 naming the entry and change nothing', async () => {
    const bad: [unknown, RegExp][] = [
      [{ privateTemplates: {} }, /privateTemplates must be an array/],
      [{ privateTemplates: [{ ...privateTemplates[0], title: 3 }] }, /privateTemplates\[0\]\.title must be a string/],
      [{ privateTemplates: [{ ...privateTemplates[0], color: 'red' }] }, /privateTemplates\[0\] has an unknown field "color"/],
      [{ subscribeTemplates: [{ ...subscribeTemplates[0], type: 1 }] }, /subscribeTemplates\[0\]\.type/],
      [{ subscribeTemplates: [{ ...subscribeTemplates[0], priTmplId: undefined }] }, /subscribeTemplates\[0\]\.priTmplId must be a string/],
    ];
    for (const [patch, re] of bad) {
      const r = await http(sim.url, 'POST', '/_sim/config', patch);
      assert.equal(r.status, 400);
      assert.match(r.json.error, re);
    }
    assert.deepEqual(sim.config().privateTemplates, []);
    assert.deepEqual(sim.config().subscribeTemplates, [subscribeTemplates[0]]);
    await assert.rejects(WechatSimulator.start({ privateTemplates: [{}] as never }), /privateTemplates\[0\]/);
  });
});

describe('simulator subscribe events', () => {
  let sim: WechatSimulator;
  let rx: Receiver;
  let token: string;

  before(async () => {
    sim = await WechatSimulator.start({ receipts: { token: TOKEN } });
    rx = await Receiver.start();
  });
  after(async () => {
    await sim.close();
    await rx.close();
  });
  beforeEach(async () => {
    sim.reset();
    sim.configure({ receipts: { url: rx.url } });
    rx.got.length = 0;
    token = await getToken(sim);
  });

  test('an accepted subscribe send pushes one signed subscribe_msg_sent_event; a refused one none', async () => {
    sim.configure({ refusedOpenids: ['^oREF'] });
    const a = await post(sim, BIZSEND, token, sub('oUserA'));
    const b = await post(sim, MP_SEND, token, sub('oUserB', { template_id: 'sub-tmpl-2' }));
    assert.equal((await post(sim, MP_SEND, token, sub('oREF'))).json.errcode, 43101);
    const t = await send(sim, token, msg('oUserC'));
    assert.equal(await sim.receipts.idle(5000), true);

    assert.equal(rx.got.length, 3);
    const recs = sim.receipts.receipts();
    assert.deepEqual(
      recs.map((r) => [r.kind, r.trigger, r.msgid, r.openid, r.outcome]),
      [
        ['subscribe-sent', 'delivery', a.json.msgid, 'oUserA', 'answered'],
        ['subscribe-sent', 'delivery', b.json.msgid, 'oUserB', 'answered'],
        ['receipt', 'delivery', t.json.msgid, 'oUserC', 'answered'],
      ],
    );
    const sent = sim.messages();
    for (const [i, ans, openid, tmpl] of [
      [0, a, 'oUserA', 'sub-tmpl-1'],
      [1, b, 'oUserB', 'sub-tmpl-2'],
    ] as const) {
      const got = rx.got[i]!;
      assert.equal(verifyCallbackSignature(TOKEN, got.query.get('timestamp')!, got.query.get('nonce')!, got.query.get('signature')!), true);
      assert.equal(got.query.get('openid'), openid);
      assert.equal(
        got.body,
        `<xml><ToUserName><![CDATA[gh_simulator]]></ToUserName><FromUserName><![CDATA[${openid}]]></FromUserName>` +
          `<CreateTime>${Math.floor(sent[i]!.receivedAt / 1000)}</CreateTime><MsgType><![CDATA[event]]></MsgType>` +
          `<Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List><TemplateId><![CDATA[${tmpl}]]></TemplateId>` +
          `<MsgID>${ans.json.msgid}</MsgID><ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>`,
      );
      assert.equal(recs[i]!.xml, got.body);
      assert.equal(recs[i]!.status, null);
      assert.equal(recs[i]!.acceptedAt, sent[i]!.receivedAt);
    }
    // The template receipts' controls stay about template messages.
    const bad = await http(sim.url, 'POST', '/_sim/receipts/push', { msgid: a.json.msgid });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error, /was not given out/);
  });

  test('no receipts URL: no event, the send is answered as usual', async () => {
    sim.configure({ receipts: { url: null } });
    assert.equal((await post(sim, BIZSEND, token, sub('oUserA'))).json.errcode, 0);
    assert.equal(await sim.receipts.idle(5000), true);
    assert.equal(sim.receipts.receipts().length, 0);
    assert.equal(rx.got.length, 0);
  });

  test('POST /_sim/receipts/subscribe-popup pushes a subscribe_msg_popup_event for an openid', async () => {
    const r = await http(sim.url, 'POST', '/_sim/receipts/subscribe-popup', {
      openid: 'oPop',
      list: [
        { templateId: 'sub-tmpl-1', status: 'accept' },
        { templateId: 'sub-tmpl-2', status: 'reject' },
      ],
      popupScene: 2,
    });
    assert.equal(r.status, 200);
    const rec = r.json.receipt;
    assert.equal(rec.kind, 'subscribe-popup');
    assert.equal(rec.trigger, 'control');
    assert.equal(rec.openid, 'oPop');
    assert.equal(rec.outcome, 'answered');
    assert.equal(rx.got.length, 1);
    const ts = rx.got[0]!.query.get('timestamp')!;
    assert.equal(
      rx.got[0]!.body,
      `<xml><ToUserName><![CDATA[gh_simulator]]></ToUserName><FromUserName><![CDATA[oPop]]></FromUserName>` +
        `<CreateTime>${ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event>` +
        `<SubscribeMsgPopupEvent>` +
        `<List><TemplateId><![CDATA[sub-tmpl-1]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>` +
        `<List><TemplateId><![CDATA[sub-tmpl-2]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene></List>` +
        `</SubscribeMsgPopupEvent></xml>`,
    );
  });

  test('POST /_sim/receipts/subscribe-change pushes a subscribe_msg_change_event (reject by default), in safe mode too', async () => {
    sim.configure({ receipts: { encodingAesKey: AES_KEY } });
    const r = await http(sim.url, 'POST', '/_sim/receipts/subscribe-change', { openid: 'oChg', list: [{ templateId: 'sub-tmpl-1' }] });
    assert.equal(r.status, 200);
    assert.equal(r.json.receipt.kind, 'subscribe-change');
    assert.equal(r.json.receipt.encrypted, true);
    const got = rx.got[0]!;
    const encrypt = /<Encrypt><!\[CDATA\[([^\]]*)\]\]><\/Encrypt>/.exec(got.body)?.[1] ?? '';
    assert.equal(verifyMessageSignature(TOKEN, got.query.get('timestamp')!, got.query.get('nonce')!, encrypt, got.query.get('msg_signature')!), true);
    const xml = decryptCallbackMessage(AES_KEY, encrypt).message;
    assert.equal(xml, r.json.receipt.xml);
    assert.match(
      xml,
      /<Event><!\[CDATA\[subscribe_msg_change_event\]\]><\/Event><SubscribeMsgChangeEvent><List><TemplateId><!\[CDATA\[sub-tmpl-1\]\]><\/TemplateId><SubscribeStatusString><!\[CDATA\[reject\]\]><\/SubscribeStatusString><\/List><\/SubscribeMsgChangeEvent><\/xml>$/,
    );
  });

  test('bad popup or change input answers 400 and sends nothing', async () => {
    const cases: [string, unknown, RegExp][] = [
      ['subscribe-popup', { list: [{ templateId: 't', status: 'accept' }] }, /openid/],
      ['subscribe-popup', { openid: 'o', list: [] }, /list must be a non-empty array/],
      ['subscribe-popup', { openid: 'o', list: [{ templateId: 't' }] }, /list\[0\]\.status/],
      ['subscribe-popup', { openid: 'o', list: [{ templateId: 't', status: 'yes' }] }, /list\[0\]\.status/],
      ['subscribe-popup', { openid: 'o', list: [{ templateId: 't', status: 'accept' }], popupScene: -1 }, /popupScene/],
      ['subscribe-change', { openid: 'o', list: [{ status: 'reject' }] }, /list\[0\]\.templateId/],
      ['subscribe-change', { openid: 'o', list: [{ templateId: 't' }], popupScene: 1 }, /unknown field "popupScene"/],
    ];
    for (const [name, body, re] of cases) {
      const r = await http(sim.url, 'POST', `/_sim/receipts/${name}`, body);
      assert.equal(r.status, 400, `${name} ${JSON.stringify(body)}`);
      assert.match(r.json.error, re);
    }
    sim.configure({ receipts: { url: null } });
    const noUrl = await http(sim.url, 'POST', '/_sim/receipts/subscribe-change', { openid: 'o', list: [{ templateId: 't' }] });
    assert.equal(noUrl.status, 400);
    assert.equal(rx.got.length, 0);
  });
});
