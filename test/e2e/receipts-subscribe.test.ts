/**
 * Subscribe events end to end: a real daemon (ledger on, `[callback] listen`) and the project's
 * WeChat simulator pushing real signed events to it. The `subscribe_msg_sent_event` of an
 * accepted subscription notification marks it delivered; one with a non-zero ErrorCode marks it
 * failed; the user's popup and settings answers are kept and shown by `mega <name> msg show`,
 * from the running daemon and, stopped, from its table and journal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MegaClient } from '../../src/index.js';
import type { MessageRecord } from '../../src/protocol/message-record.js';
import { openTemplateStore } from '../../src/templates/index.js';
import { runMega } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, type SimulatorHandle } from '../helpers/stack.js';
import { configureSimReceipts, control, daemonStatus, receiptsIdle, startReceiptsStack } from '../helpers/receipts-stack.js';

const NOTICE = { template_id: 'sub-notice', page: 'https://example.com/order', data: { thing1: { value: '${item}' }, time2: { value: '${at}' } } };
const VALUES = { item: '快递已到', at: '2026-12-03 15:01' };

/** The plaintext `subscribe_msg_sent_event` of a failed delivery, as WeChat writes it. */
function failedSentXml(openid: string, msgid: string): string {
  return (
    `<xml><ToUserName><![CDATA[gh_sim]]></ToUserName><FromUserName><![CDATA[${openid}]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime>` +
    `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List>` +
    `<TemplateId><![CDATA[${NOTICE.template_id}]]></TemplateId><MsgID>${msgid}</MsgID><ErrorCode>43101</ErrorCode>` +
    `<ErrorStatus><![CDATA[failed:user block]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>`
  );
}

describe('subscribe events end to end (SQLite)', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  for (const safe of [false, true]) {
    it(`${safe ? 'safe' : 'plaintext'} mode: sent events settle subscribe sends, popup and change answers are shown by msg show`, async (t) => {
      await sim.post('/_sim/reset', {});
      const stack = await startReceiptsStack({ simulator: sim, safe, templates: {} });
      let stopped = false;
      t.after(() => (stopped ? undefined : stack.stop()));
      const rows = openTemplateStore({ dsn: `sqlite:${stack.dbFile}`, tablePrefix: 'mega_' });
      await rows.init();
      await rows.put({ key: 'notice', kind: 'subscribe', template: JSON.stringify(NOTICE) });
      await rows.close();
      const client = await MegaClient.connect({ port: stack.port });
      t.after(() => client.close());
      assert.equal((await client.tset('notice')).code, 200);

      const show = async (msgid: string): Promise<MessageRecord> => {
        const r = await runMega([stack.name, 'msg', 'show', msgid, '--json', '--config-dir', stack.configDir]);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout) as MessageRecord;
      };
      const showUntil = (msgid: string, ok: (r: MessageRecord) => boolean, what: string): Promise<MessageRecord> =>
        eventually(async () => {
          const r = await show(msgid);
          return ok(r) ? r : undefined;
        }, 15000, `${msgid}: ${what}`);

      // sent before the simulator pushes anything: no sent event of its own, the failed one comes from the test
      const tag = safe ? 'S' : 'P';
      assert.equal((await client.send(`oSubFail${tag}`, 'notice', VALUES, { msgid: `subfail-${tag}` })).code, 200);
      const unsettled = await showUntil(`subfail-${tag}`, (r) => r.state === 'sent' && r.wechatMsgid !== null, 'sent');

      await configureSimReceipts(sim, stack.callbackUrl, { safe });
      assert.equal((await client.send(`oSubOk${tag}`, 'notice', VALUES, { msgid: `subok-${tag}` })).code, 200);
      await receiptsIdle(sim);
      const delivered = await showUntil(`subok-${tag}`, (r) => r.state === 'delivered', 'delivered by its subscribe_msg_sent_event');
      assert.ok(delivered.finalAt !== null && delivered.wechatMsgid !== null);

      const failed = await control(sim, 'raw', { body: failedSentXml(`oSubFail${tag}`, unsettled.wechatMsgid!), query: { openid: `oSubFail${tag}` } });
      assert.deepEqual([failed.outcome, failed.httpStatus, failed.answer], ['answered', 200, 'success']);
      const blocked = await showUntil(`subfail-${tag}`, (r) => r.state !== 'sent', 'failed');
      assert.deepEqual([blocked.state, blocked.errmsg], ['failed_user_block', 'failed:user block (ErrorCode 43101)']);

      const popup = await control(sim, 'subscribe-popup', {
        openid: `oSubOk${tag}`,
        list: [
          { templateId: 'sub-notice', status: 'accept' },
          { templateId: 'sub-other', status: 'reject' },
        ],
      });
      assert.deepEqual([popup.outcome, popup.answer], ['answered', 'success']);
      const accepted = await show(`subok-${tag}`);
      assert.deepEqual(
        accepted.subscriptions?.map((s) => [s.templateId, s.status, s.event]).sort(),
        [
          ['sub-notice', 'accept', 'subscribe_msg_popup_event'],
          ['sub-other', 'reject', 'subscribe_msg_popup_event'],
        ],
      );
      assert.equal((await show(`subfail-${tag}`)).subscriptions, undefined, "another user's answers");

      await new Promise((r) => setTimeout(r, 5));
      const change = await control(sim, 'subscribe-change', { openid: `oSubOk${tag}`, list: [{ templateId: 'sub-notice' }] });
      assert.deepEqual([change.outcome, change.answer], ['answered', 'success']);
      const text = await runMega([stack.name, 'msg', 'show', `subok-${tag}`, '--config-dir', stack.configDir]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /state:\s+delivered/);
      assert.match(text.stdout, new RegExp(`subscriptions of oSubOk${tag}`));
      assert.match(text.stdout, /sub-notice\treject\tsubscribe_msg_change_event/);
      assert.match(text.stdout, /sub-other\treject\tsubscribe_msg_popup_event/);

      const status = (await daemonStatus(stack.configDir, stack.name)).callback;
      assert.deepEqual([status?.receipts, status?.subscriptions], [2, 3]);

      // stopped: the table and what the journal holds over it say the same
      const before = await show(`subok-${tag}`);
      await client.close();
      await stack.stop();
      stopped = true;
      const after = await show(`subok-${tag}`);
      assert.deepEqual(after, before);
      assert.equal((await show(`subfail-${tag}`)).state, 'failed_user_block');
    });
  }
});
