import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openLedgerStore, type LedgerChange, type LedgerStore } from '../../src/ledger/index.js';
import { tempDir } from '../helpers/processes.js';
import { mysqlAvailable, mysqlTestConnection, mysqlTestTarget } from '../helpers/mysql.js';
import { mysqlLedgerStores } from './mysql-stores.js';

const T0 = 1_700_000_000_000;

const queued = (msgid: string, openid = 'o1', at = T0): LedgerChange => ({ msgid, state: 'queued', openid, key: 'order', kind: 'push', attempts: 0, queuedAt: at, at });

/** The same behaviour on both databases. */
function storeContract(open: () => Promise<LedgerStore>): void {
  it('upserts: a later change keeps what it does not know, attempts keep the maximum', async () => {
    const store = await open();
    await store.upsert([queued('m1'), queued('m2', 'o2')]);
    await store.upsert([{ msgid: 'm1', state: 'queued', attempts: 2, errcode: -1, errmsg: 'system error', at: T0 + 10 }]);
    await store.upsert([{ msgid: 'm1', state: 'sent', attempts: 1, wechatMsgid: '18446744073709551615', errcode: 0, errmsg: 'ok', sentAt: T0 + 20, at: T0 + 20 }]);
    const m1 = await store.get('m1');
    assert.deepEqual(m1, {
      msgid: 'm1', openid: 'o1', key: 'order', kind: 'push', state: 'sent', attempts: 2,
      wechatMsgid: '18446744073709551615', errcode: 0, errmsg: 'ok', queuedAt: T0, sentAt: T0 + 20, finalAt: null,
    });
    // applied again (a journal replayed twice): the same row
    await store.upsert([{ msgid: 'm1', state: 'sent', attempts: 1, wechatMsgid: '18446744073709551615', errcode: 0, errmsg: 'ok', sentAt: T0 + 20, at: T0 + 20 }]);
    assert.deepEqual(await store.get('m1'), m1);
    assert.equal(await store.get('nope'), undefined);
  });

  it('a late first queued never takes a message back from a later state', async () => {
    const store = await open();
    await store.upsert([{ msgid: 'late', state: 'sent', attempts: 1, wechatMsgid: '7', sentAt: T0 + 5, at: T0 + 5 }]);
    await store.upsert([queued('late', 'oLATE')]);
    const r = await store.get('late');
    assert.equal(r?.state, 'sent');
    assert.equal(r?.openid, 'oLATE');
    assert.equal(r?.queuedAt, T0);
  });

  it('writes hundreds of rows in one call and lists by openid, state and time, newest first', async () => {
    const store = await open();
    const many: LedgerChange[] = [];
    for (let i = 0; i < 700; i++) many.push(queued(`bulk${i}`, i % 2 ? 'oODD' : 'oEVEN', T0 + i));
    await store.upsert(many);
    await store.upsert([{ msgid: 'bulk3', state: 'dead', attempts: 1, errcode: 40003, errmsg: 'invalid openid', finalAt: T0 + 1000, at: T0 + 1000 }]);
    const odd = await store.list({ openid: 'oODD', limit: 5 });
    assert.deepEqual(odd.map((r) => r.msgid), ['bulk699', 'bulk697', 'bulk695', 'bulk693', 'bulk691']);
    const dead = await store.list({ state: 'dead' });
    assert.deepEqual(dead.map((r) => [r.msgid, r.errcode, r.errmsg]), [['bulk3', 40003, 'invalid openid']]);
    const since = await store.list({ openid: 'oEVEN', since: T0 + 690, limit: 100 });
    assert.deepEqual(since.map((r) => r.msgid), ['bulk698', 'bulk696', 'bulk694', 'bulk692', 'bulk690']);
  });

  it('a receipt makes its sent message final, and is reported; a failure keeps WeChat\'s Status as errmsg', async () => {
    const store = await open();
    await store.upsert([queued('r1'), queued('r2'), { msgid: 'r1', state: 'sent', attempts: 1, wechatMsgid: '501', errcode: 0, errmsg: 'ok', sentAt: T0 + 1, at: T0 + 1 }]);
    await store.upsert([{ msgid: 'r2', state: 'sent', attempts: 1, wechatMsgid: '502', errcode: 0, errmsg: 'ok', sentAt: T0 + 1, at: T0 + 1 }]);
    const finals = await store.applyReceipts([
      { receipt: '501', state: 'delivered', status: 'success', openid: 'o1', at: T0 + 50 },
      { receipt: '502', state: 'failed_user_block', status: 'failed:user block', openid: 'o1', at: T0 + 60 },
    ]);
    assert.deepEqual(finals.map((r) => [r.msgid, r.state, r.errmsg, r.finalAt]), [['r1', 'delivered', 'ok', T0 + 50], ['r2', 'failed_user_block', 'failed:user block', T0 + 60]]);
    // the send's change applied again (a journal replayed): the receipt's state stays
    await store.upsert([{ msgid: 'r2', state: 'sent', attempts: 1, wechatMsgid: '502', errcode: 0, errmsg: 'ok', sentAt: T0 + 1, at: T0 + 1 }]);
    const r2 = await store.get('r2');
    assert.deepEqual([r2?.state, r2?.errmsg, r2?.finalAt], ['failed_user_block', 'failed:user block', T0 + 60]);
    // the same receipt again, later (WeChat's retry after a restart): the same fact, the first time stands
    const again = await store.applyReceipts([{ receipt: '501', state: 'delivered', status: 'success', openid: 'o1', at: T0 + 5000 }]);
    assert.deepEqual(again.map((r) => [r.msgid, r.state, r.finalAt]), [['r1', 'delivered', T0 + 50]]);
    // a receipt for a message nobody here sent: kept, nothing reported
    assert.deepEqual(await store.applyReceipts([{ receipt: '999', state: 'delivered', status: 'success', at: T0 + 70 }]), []);
  });

  it('a receipt that came before its send was written is applied when the send is, and reported then', async () => {
    const store = await open();
    await store.upsert([queued('early')]);
    assert.deepEqual(await store.applyReceipts([{ receipt: '777', state: 'failed_system', status: 'failed: system failed', at: T0 + 30 }]), []);
    assert.equal((await store.get('early'))?.state, 'queued');
    const finals = await store.upsert([{ msgid: 'early', state: 'sent', attempts: 1, wechatMsgid: '777', errcode: 0, errmsg: 'ok', sentAt: T0 + 20, at: T0 + 40 }]);
    assert.deepEqual(finals.map((r) => [r.msgid, r.state, r.errmsg, r.finalAt, r.sentAt]), [['early', 'failed_system', 'failed: system failed', T0 + 30, T0 + 20]]);
    assert.equal((await store.get('early'))?.state, 'failed_system');
  });

  it('upsert reports the messages it made rejected or dead', async () => {
    const store = await open();
    const finals = await store.upsert([
      queued('f0'),
      { ...queued('f1'), state: 'rejected', attempts: 1, errcode: 40003, errmsg: 'invalid openid', finalAt: T0 + 5 },
      { ...queued('f2'), state: 'dead', attempts: 6, errcode: -1, errmsg: 'system error', finalAt: T0 + 6 },
    ]);
    assert.deepEqual(finals.map((r) => [r.msgid, r.state]).sort(), [['f1', 'rejected'], ['f2', 'dead']]);
  });

  it('purges only rows done with before the cut-off, at most `limit` per call', async () => {
    const store = await open();
    const old: LedgerChange[] = [];
    for (let i = 0; i < 30; i++) old.push({ msgid: `old${i}`, state: 'sent', openid: 'oP', attempts: 1, sentAt: T0, at: T0 });
    old.push({ ...queued('oldq', 'oP'), at: T0 });
    old.push({ msgid: 'fresh', state: 'dead', openid: 'oP', finalAt: T0 + 86_400_000, at: T0 + 86_400_000 });
    await store.upsert(old);
    assert.equal(await store.purge(T0 + 1, 20), 20);
    assert.equal(await store.purge(T0 + 1, 20), 10);
    assert.equal(await store.purge(T0 + 1, 20), 0);
    const left = (await store.list({ openid: 'oP' })).map((r) => r.msgid).sort();
    assert.deepEqual(left, ['fresh', 'oldq']);
  });

  it('retention gets past many queued rows and rows changed lately, a bounded look at a time, and purges what is older behind them', async () => {
    const store = await open();
    const rows: LedgerChange[] = [];
    // written first: messages still queued, and one sent long ago but changed lately (a dlq retry)
    for (let i = 0; i < 1000; i++) rows.push({ ...queued(`stuck${i}`, 'oQ'), at: T0 });
    rows.push({ msgid: 'retried', state: 'sent', openid: 'oS', attempts: 1, queuedAt: T0, at: T0 + 86_400_000 });
    for (let i = 0; i < 50; i++) rows.push({ msgid: `done${i}`, state: 'sent', openid: 'oS', attempts: 1, queuedAt: T0, at: T0 });
    for (let i = 0; i < 50; i++) rows.push({ msgid: `new${i}`, state: 'delivered', openid: 'oS', attempts: 1, queuedAt: T0 + 86_400_000, at: T0 + 86_400_000 });
    await store.upsert(rows);
    let gone = 0;
    for (let call = 0; call < 10 && gone < 50; call++) gone += await store.purge(T0 + 1, 10);
    assert.equal(gone, 50);
    assert.equal(await store.purge(T0 + 1, 10), 0);
    assert.equal((await store.list({ openid: 'oQ', state: 'queued', limit: 1000 })).length, 1000);
    assert.deepEqual((await store.list({ openid: 'oS', limit: 1000 })).map((r) => r.msgid).sort(), ['retried', ...Array.from({ length: 50 }, (_, i) => `new${i}`)].sort());
  });
}

describe('ledger store on SQLite', () => {
  const stores: LedgerStore[] = [];
  after(async () => {
    for (const s of stores) await s.close();
  });
  const dir = tempDir();
  let n = 0;
  storeContract(async () => {
    const s = openLedgerStore({ dsn: `sqlite:${path.join(dir, `l${n++}.db`)}` });
    stores.push(s);
    await s.init();
    return s;
  });

  it('creates mega_message with its indexes, and init is idempotent', async () => {
    const file = path.join(dir, 'idx.db');
    const s = openLedgerStore({ dsn: `sqlite:${file}`, tablePrefix: 'x_' });
    await s.init();
    await s.init();
    await s.close();
    const db = new Database(file, { readonly: true });
    const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'x_message' AND sql IS NOT NULL").all() as Array<{ name: string }>;
    db.close();
    assert.deepEqual(indexes.map((i) => i.name).sort(), ['x_message_openid_queued', 'x_message_wechat_msgid']);
  });

  it("an earlier version's indexes become this one's at init (no updated_at index, WeChat's msgid only where there is one), rows kept", async () => {
    const file = path.join(dir, 'old.db');
    const old = new Database(file);
    old.exec(`CREATE TABLE mega_message (msgid TEXT NOT NULL PRIMARY KEY, openid TEXT NOT NULL DEFAULT '', tmpl_key TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, wechat_msgid TEXT, errcode INTEGER, errmsg TEXT,
  queued_at INTEGER NOT NULL DEFAULT 0, sent_at INTEGER, final_at INTEGER, updated_at INTEGER NOT NULL);
CREATE INDEX mega_message_wechat_msgid ON mega_message (wechat_msgid);
CREATE INDEX mega_message_openid_queued ON mega_message (openid, queued_at);
CREATE INDEX mega_message_updated ON mega_message (updated_at);
INSERT INTO mega_message (msgid, openid, state, attempts, wechat_msgid, queued_at, updated_at) VALUES ('o1', 'oO', 'sent', 1, '4242', 5, 6), ('o2', 'oO', 'queued', 0, NULL, 7, 7);`);
    old.close();
    const s = openLedgerStore({ dsn: `sqlite:${file}` });
    await s.init();
    assert.deepEqual(
      (await s.applyReceipts([{ receipt: '4242', state: 'delivered', status: 'success', at: 9 }])).map((r) => [r.msgid, r.state]),
      [['o1', 'delivered']],
    );
    assert.equal((await s.get('o2'))?.state, 'queued');
    await s.close();
    const db = new Database(file, { readonly: true });
    const indexes = db.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'mega_message' AND sql IS NOT NULL ORDER BY name").all() as Array<{ name: string; sql: string }>;
    const plan = db.prepare('EXPLAIN QUERY PLAN SELECT * FROM mega_message WHERE wechat_msgid = ?').all('4242') as Array<{ detail: string }>;
    db.close();
    assert.deepEqual(indexes.map((i) => i.name), ['mega_message_openid_queued', 'mega_message_wechat_msgid']);
    assert.match(indexes[1]!.sql, /WHERE wechat_msgid IS NOT NULL/);
    assert.match(plan.map((p) => p.detail).join(' '), /USING INDEX mega_message_wechat_msgid/);
  });
});

const available = await mysqlAvailable();

describe('ledger store on MySQL', { skip: available ? false : `MySQL not reachable at ${mysqlTestTarget}` }, () => {
  const mysql = mysqlLedgerStores();
  after(() => mysql.cleanup());
  storeContract(() => mysql.open());

  it('creates the table with the primary key and the three indexes', async () => {
    const s = await mysql.open();
    const db = await mysqlTestConnection();
    const [rows] = await db.query(`SHOW INDEX FROM \`${mysql.prefixOf(s)}message\``);
    await db.end();
    const names = [...new Set((rows as Array<{ Key_name: string }>).map((r) => r.Key_name))].sort();
    assert.deepEqual(names, ['PRIMARY', 'openid_queued', 'updated', 'wechat_msgid']);
  });
});
