/**
 * Subscription events in the ledger: the pure parts (lists of repeated elements, the states a
 * sent event gives, the latest status, the journal line) and the store's subscription table.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { latestSubscriptions, ledgerSubscription, openLedgerStore, subscribeSentStateOf, subscribeSentStatus, type LedgerStore } from '../../src/ledger/index.js';
import { tempDir } from '../helpers/processes.js';
import { mysqlAvailable, mysqlTestTarget } from '../helpers/mysql.js';
import { mysqlLedgerStores } from './mysql-stores.js';
import { parseJournal } from '../../src/ledger/journal.js';
import { parseCallbackXml, repeatedFields, textField, type CallbackFields } from '../../src/wechat/callback-xml.js';

describe('subscription events: pure logic', () => {
  it('repeatedFields gives every <List> in order; the field itself stays the first', () => {
    const f = parseCallbackXml('<xml><E><List><T>a</T></List><List><T>b</T></List><List><T>c</T></List></E><One><T>x</T></One></xml>');
    const e = f['E'] as CallbackFields;
    assert.deepEqual(repeatedFields(e, 'List').map((l) => textField(l as CallbackFields, 'T')), ['a', 'b', 'c']);
    assert.equal(textField(e['List'] as CallbackFields, 'T'), 'a');
    assert.deepEqual(repeatedFields(f['One'] as CallbackFields, 'T'), ['x']);
    assert.deepEqual(repeatedFields(e, 'Missing'), []);
  });

  it('a sent event: ErrorCode 0 is delivered; a block is failed_user_block; anything else failed_system', () => {
    assert.equal(subscribeSentStateOf('0', 'success'), 'delivered');
    assert.equal(subscribeSentStateOf(' 0 ', ''), 'delivered');
    assert.equal(subscribeSentStateOf('43101', 'failed:user block'), 'failed_user_block');
    assert.equal(subscribeSentStateOf('20001', 'failed: system failed'), 'failed_system');
    assert.equal(subscribeSentStateOf('', ''), 'failed_system');
    assert.equal(subscribeSentStatus('0', 'success'), 'success');
    assert.equal(subscribeSentStatus('20001', ''), 'failed (ErrorCode 20001)');
  });

  it('latestSubscriptions keeps the latest per template id (the later one of a tie), newest first', () => {
    const s = latestSubscriptions([
      ledgerSubscription('o', 'A', 'accept', 'subscribe_msg_popup_event', 10),
      ledgerSubscription('o', 'B', 'accept', 'subscribe_msg_popup_event', 20),
      ledgerSubscription('o', 'A', 'reject', 'subscribe_msg_change_event', 30),
      ledgerSubscription('o', 'B', 'reject', 'subscribe_msg_change_event', 5),
      ledgerSubscription('o', 'C', 'accept', 'subscribe_msg_popup_event', 20),
      ledgerSubscription('o', 'C', 'reject', 'subscribe_msg_popup_event', 20),
    ]);
    assert.deepEqual(s, [
      { templateId: 'A', status: 'reject', event: 'subscribe_msg_change_event', at: 30 },
      { templateId: 'B', status: 'accept', event: 'subscribe_msg_popup_event', at: 20 },
      { templateId: 'C', status: 'reject', event: 'subscribe_msg_popup_event', at: 20 },
    ]);
  });

  it('a journal subscription line goes to its own callback, neither a change nor a receipt', () => {
    const sub = ledgerSubscription('oX', 'T1', 'accept', 'subscribe_msg_popup_event', 123);
    assert.equal(Object.keys(sub)[0], 'subscription');
    const text = `${JSON.stringify(sub)}\n${JSON.stringify({ receipt: '1', state: 'delivered', status: 'success', at: 1 })}\n`;
    const seen: string[] = [];
    const torn = parseJournal(
      text,
      () => seen.push('change'),
      () => seen.push('receipt'),
      (s) => seen.push(`sub ${s.subscription} ${s.templateId} ${s.status}`),
    );
    assert.equal(torn, 0);
    assert.deepEqual(seen, ['sub oX T1 accept', 'receipt']);
    // a reader that does not ask for them skips them, and goes on
    const plain: string[] = [];
    assert.equal(parseJournal(text, () => plain.push('c'), () => plain.push('r')), 0);
    assert.deepEqual(plain, ['r']);
  });
});

/** The subscription table of a store: latest per openid and template id, a replay of an older one ignored. */
function subscriptionContract(open: () => Promise<LedgerStore>): void {
  it('keeps the latest status per openid and template id; an older one changes nothing; init again is harmless', async () => {
    const s = await open();
    await s.applySubscriptions!([
      ledgerSubscription('oA', 'T1', 'accept', 'subscribe_msg_popup_event', 100),
      ledgerSubscription('oA', 'T2', 'accept', 'subscribe_msg_popup_event', 100),
      ledgerSubscription('oB', 'T1', 'reject', 'subscribe_msg_popup_event', 100),
      ledgerSubscription('oA', 'T1', 'reject', 'subscribe_msg_change_event', 200),
    ]);
    await s.applySubscriptions!([ledgerSubscription('oA', 'T2', 'reject', 'subscribe_msg_change_event', 50)]);
    await s.init();
    const rows = (await s.subscriptionsOf!('oA')).sort((a, b) => (a.templateId < b.templateId ? -1 : 1));
    assert.deepEqual(rows, [
      { subscription: 'oA', templateId: 'T1', status: 'reject', event: 'subscribe_msg_change_event', at: 200 },
      { subscription: 'oA', templateId: 'T2', status: 'accept', event: 'subscribe_msg_popup_event', at: 100 },
    ]);
    assert.deepEqual((await s.subscriptionsOf!('oB')).map((x) => x.status), ['reject']);
    assert.deepEqual(await s.subscriptionsOf!('oNone'), []);
  });
}

describe('subscription table on SQLite', () => {
  const stores: LedgerStore[] = [];
  after(async () => {
    for (const s of stores) await s.close();
  });
  subscriptionContract(async () => {
    const s = openLedgerStore({ dsn: `sqlite:${path.join(tempDir(), 'l.db')}` });
    stores.push(s);
    await s.init();
    return s;
  });
});

const available = await mysqlAvailable();

describe('subscription table on MySQL', { skip: available ? false : `MySQL not reachable at ${mysqlTestTarget}` }, () => {
  const mysql = mysqlLedgerStores();
  after(() => mysql.cleanup());
  subscriptionContract(() => mysql.open());
});
