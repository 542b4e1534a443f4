/**
 * The subscribe events at the receipts endpoint: a real CallbackServer over a real Ledger
 * (SQLite). `subscribe_msg_sent_event` settles its send like a receipt; popup and settings events
 * keep the user's latest status per template id, in the journal first, then in the table.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { CallbackServer } from '../../src/callback/index.js';
import { Ledger, openLedgerStore, type LedgerStore } from '../../src/ledger/index.js';
import { callbackSignature } from '../../src/wechat/index.js';
import { tempDir } from '../helpers/processes.js';

const TOKEN = 'cbtoken123';
const logger = pino({ level: 'silent' });
let nonceSeq = 0;

function signed(): Record<string, string> {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const nonce = `s${process.pid}x${nonceSeq++}`;
  return { signature: callbackSignature(TOKEN, timestamp, nonce), timestamp, nonce };
}

const head = (openid: string, event: string) =>
  `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[${openid}]]></FromUserName><CreateTime>1620963428</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[${event}]]></Event>`;
const popupXml = (openid: string, list: Array<[string, string]>) =>
  `${head(openid, 'subscribe_msg_popup_event')}<SubscribeMsgPopupEvent>${list
    .map(([t, s]) => `<List><TemplateId><![CDATA[${t}]]></TemplateId><SubscribeStatusString><![CDATA[${s}]]></SubscribeStatusString><PopupScene>2</PopupScene></List>`)
    .join('')}</SubscribeMsgPopupEvent></xml>`;
const changeXml = (openid: string, list: Array<[string, string]>) =>
  `${head(openid, 'subscribe_msg_change_event')}<SubscribeMsgChangeEvent>${list
    .map(([t, s]) => `<List><TemplateId><![CDATA[${t}]]></TemplateId><SubscribeStatusString><![CDATA[${s}]]></SubscribeStatusString></List>`)
    .join('')}</SubscribeMsgChangeEvent></xml>`;
const sentXml = (openid: string, templateId: string, msgid: string, code: number, status: string) =>
  `${head(openid, 'subscribe_msg_sent_event')}<SubscribeMsgSentEvent><List><TemplateId><![CDATA[${templateId}]]></TemplateId><MsgID>${msgid}</MsgID><ErrorCode>${code}</ErrorCode><ErrorStatus><![CDATA[${status}]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>`;

describe('CallbackServer: subscribe events', () => {
  let dir: string;
  let ledger: Ledger;
  let reader: LedgerStore;
  let cb: CallbackServer;
  let base: string;

  async function post(body: string) {
    const res = await request(`${base}/wechat/callback?${new URLSearchParams(signed())}`, { method: 'POST', body, headers: { 'content-type': 'text/xml' } });
    return { status: res.statusCode, body: await res.body.text() };
  }

  before(async () => {
    dir = tempDir();
    const dsn = `sqlite:${path.join(dir, 'ledger.db')}`;
    reader = openLedgerStore({ dsn });
    ledger = Ledger.open({ store: openLedgerStore({ dsn }), journalDir: path.join(dir, 'journal'), fsync: true, logger, retentionDays: 7, flushIntervalMs: 3_600_000 });
    await reader.init();
    cb = new CallbackServer({ host: '127.0.0.1', port: 0, token: TOKEN, appId: 'wx0123456789abcdef', sink: ledger, logger });
    const a = await cb.listen();
    base = `http://127.0.0.1:${a.port}`;
  });

  after(async () => {
    await cb.close();
    await ledger.close();
    await reader.close();
  });

  it('a sent event settles its send like a receipt: ErrorCode 0 delivered, another failed with ErrorStatus and ErrorCode as errmsg', async () => {
    const at = Date.now();
    ledger.queued('sub-ok', 'oSUB1', 'notice', 'push', at);
    ledger.queued('sub-blocked', 'oSUB1', 'notice', 'push', at);
    ledger.queued('sub-fail', 'oSUB1', 'notice', 'push', at);
    ledger.sent('sub-ok', '7001', 1, at);
    ledger.sent('sub-blocked', '7002', 1, at);
    ledger.sent('sub-fail', '7003', 1, at);
    await ledger.commit();
    assert.deepEqual(await post(sentXml('oSUB1', 'tmpl-A', '7001', 0, 'success')), { status: 200, body: 'success' });
    assert.deepEqual(await post(sentXml('oSUB1', 'tmpl-A', '7002', 43101, 'failed:user block')), { status: 200, body: 'success' });
    assert.deepEqual(await post(sentXml('oSUB1', 'tmpl-A', '7003', 20001, 'failed: system failed')), { status: 200, body: 'success' });
    const ok = await ledger.get('sub-ok');
    assert.equal(ok?.state, 'delivered');
    assert.ok(ok.finalAt !== null);
    const blocked = await ledger.get('sub-blocked');
    assert.deepEqual([blocked?.state, blocked?.errmsg], ['failed_user_block', 'failed:user block (ErrorCode 43101)']);
    const failed = await ledger.get('sub-fail');
    assert.deepEqual([failed?.state, failed?.errmsg], ['failed_system', 'failed: system failed (ErrorCode 20001)']);
    assert.equal(cb.stats.receipts, 3);
    // written to the table: the same states
    assert.equal(await ledger.flush(), true);
    assert.deepEqual((await Promise.all(['sub-ok', 'sub-blocked', 'sub-fail'].map((m) => reader.get(m)))).map((r) => r?.state), ['delivered', 'failed_user_block', 'failed_system']);
  });

  it('popup and change events keep the latest status per template id, every List of a popup, from the journal and then the table', async () => {
    const at = Date.now();
    ledger.queued('sub-show', 'oSUB2', 'notice', 'push', at);
    await ledger.commit();
    assert.deepEqual(await post(popupXml('oSUB2', [['tmpl-A', 'accept'], ['tmpl-B', 'reject'], ['tmpl-C', 'accept']])), { status: 200, body: 'success' });
    let shown = await ledger.get('sub-show');
    assert.deepEqual(
      shown?.subscriptions?.map((s) => [s.templateId, s.status, s.event]).sort(),
      [
        ['tmpl-A', 'accept', 'subscribe_msg_popup_event'],
        ['tmpl-B', 'reject', 'subscribe_msg_popup_event'],
        ['tmpl-C', 'accept', 'subscribe_msg_popup_event'],
      ],
    );
    await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(await post(changeXml('oSUB2', [['tmpl-A', 'reject']])), { status: 200, body: 'success' });
    shown = await ledger.get('sub-show');
    assert.deepEqual(shown?.subscriptions?.[0] && [shown.subscriptions[0].templateId, shown.subscriptions[0].status, shown.subscriptions[0].event], ['tmpl-A', 'reject', 'subscribe_msg_change_event']);
    assert.equal(shown?.subscriptions?.length, 3);
    assert.equal(cb.stats.subscriptions, 4);
    // another user's answers are not this message's
    assert.equal((await ledger.get('sub-ok'))?.subscriptions, undefined);

    assert.equal(await ledger.flush(), true);
    const kept = await reader.subscriptionsOf!('oSUB2');
    assert.deepEqual(kept.map((s) => [s.templateId, s.status, s.event]).sort(), [
      ['tmpl-A', 'reject', 'subscribe_msg_change_event'],
      ['tmpl-B', 'reject', 'subscribe_msg_popup_event'],
      ['tmpl-C', 'accept', 'subscribe_msg_popup_event'],
    ]);
    assert.deepEqual((await ledger.get('sub-show'))?.subscriptions, shown?.subscriptions);
    // an older answer replayed (a journal applied again) never takes the status back
    await reader.applySubscriptions!([{ subscription: 'oSUB2', templateId: 'tmpl-A', status: 'accept', event: 'subscribe_msg_popup_event', at: at - 60_000 }]);
    assert.equal((await reader.subscriptionsOf!('oSUB2')).find((s) => s.templateId === 'tmpl-A')?.status, 'reject');
  });

  it('a popup or change event with nothing to record is answered success and records nothing; a sent event without a numeric MsgID is malformed', async () => {
    const before = cb.stats.subscriptions;
    assert.deepEqual(await post(`${head('oSUB3', 'subscribe_msg_popup_event')}<SubscribeMsgPopupEvent></SubscribeMsgPopupEvent></xml>`), { status: 200, body: 'success' });
    assert.deepEqual(await post(popupXml('oSUB3', [['tmpl-A', 'ban']])), { status: 200, body: 'success' });
    assert.deepEqual(await post(changeXml('', [['tmpl-A', 'reject']])), { status: 200, body: 'success' });
    assert.equal(cb.stats.subscriptions, before);
    ledger.queued('sub-3', 'oSUB3', 'notice', 'push', Date.now());
    await ledger.commit();
    assert.equal((await ledger.get('sub-3'))?.subscriptions, undefined);
    assert.equal((await post(`${head('oSUB3', 'subscribe_msg_sent_event')}<SubscribeMsgSentEvent><List><MsgID>x</MsgID></List></SubscribeMsgSentEvent></xml>`)).status, 400);
    assert.equal(cb.stats.refused.malformed, 1);
  });
});
