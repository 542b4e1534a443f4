import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { openLedgerStore, StoppedLedger } from '../../src/ledger/index.js';
import { tempDir } from '../helpers/processes.js';

describe('StoppedLedger (msg show|list without a daemon)', () => {
  it('reads the table with what the journal left over it: changes, receipts, and a receipt kept in the table for a send only journaled', async () => {
    const dir = tempDir();
    const store = openLedgerStore({ dsn: `sqlite:${path.join(dir, 'l.db')}` });
    await store.init();
    try {
      await store.upsert([
        { msgid: 'a', state: 'queued', openid: 'oA', key: 'k', kind: 'push', attempts: 0, queuedAt: 10, at: 10 },
        { msgid: 'b', state: 'sent', openid: 'oB', key: 'k', kind: 'push', attempts: 1, wechatMsgid: '72', sentAt: 20, queuedAt: 11, at: 20 },
        { msgid: 'c', state: 'queued', openid: 'oC', key: 'k', kind: 'send', attempts: 0, queuedAt: 12, at: 12 },
      ]);
      await store.applyReceipts([{ receipt: '73', state: 'failed_user_block', status: 'failed:user block', at: 40 }]);
      const journal = path.join(dir, 'journal');
      fs.mkdirSync(journal);
      // what the daemon journaled and could not write before it stopped (its database was down)
      fs.writeFileSync(
        path.join(journal, '000000000003.jsonl'),
        [
          JSON.stringify({ msgid: 'a', state: 'sent', attempts: 1, wechatMsgid: '71', errcode: 0, errmsg: 'ok', sentAt: 30, at: 30 }),
          JSON.stringify({ receipt: '72', state: 'delivered', status: 'success', at: 35 }),
          JSON.stringify({ msgid: 'c', state: 'sent', attempts: 1, wechatMsgid: '73', errcode: 0, errmsg: 'ok', sentAt: 33, at: 33 }),
          JSON.stringify({ msgid: 'd', state: 'queued', openid: 'oD', key: 'k', kind: 'push', attempts: 0, queuedAt: 13, at: 13 }),
        ].join('\n') + '\n{"msgid":"torn',
      );
      const ledger = new StoppedLedger(store, journal);
      assert.deepEqual([(await ledger.get('a'))?.state, (await ledger.get('a'))?.wechatMsgid], ['sent', '71']);
      assert.deepEqual([(await ledger.get('b'))?.state, (await ledger.get('b'))?.finalAt], ['delivered', 35]);
      assert.deepEqual([(await ledger.get('c'))?.state, (await ledger.get('c'))?.errmsg], ['failed_user_block', 'failed:user block']);
      assert.equal((await ledger.get('d'))?.openid, 'oD');
      assert.equal(await ledger.get('e'), undefined);
      assert.deepEqual((await ledger.list({})).map((r) => [r.msgid, r.state]), [['d', 'queued'], ['c', 'failed_user_block'], ['b', 'delivered'], ['a', 'sent']]);
      assert.deepEqual((await ledger.list({ state: 'delivered' })).map((r) => r.msgid), ['b']);
      // nothing was written or deleted
      assert.ok(fs.existsSync(path.join(journal, '000000000003.jsonl')));
      assert.equal((await store.get('a'))?.state, 'queued');
      // without a journal folder: the table alone
      assert.equal((await new StoppedLedger(store, path.join(dir, 'none')).get('a'))?.state, 'queued');
    } finally {
      await store.close();
    }
  });
});
