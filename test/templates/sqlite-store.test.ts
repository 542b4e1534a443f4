import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openTemplateStore } from '../../src/templates/store.js';
import { ConfigError, TemplateStoreError } from '../../src/errors.js';

/** The seed README's DDL, minus the COMMENT clauses SQLite does not parse. */
const SEED_DDL = `CREATE TABLE \`mega_wechat_template\` (
  \`tmpl_key\` char(32) NOT NULL,
  \`title\` varchar(100) NOT NULL DEFAULT '',
  \`template\` text NOT NULL,
  \`created_at\` int(11) NOT NULL DEFAULT '0',
  \`updated_at\` int(11) NOT NULL DEFAULT '0',
  PRIMARY KEY (\`tmpl_key\`)
)`;

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mega-sqlite-store-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function tableSql(file: string, table: string): string | undefined {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?").get(table) as { sql: string } | undefined)?.sql;
  } finally {
    db.close();
  }
}

describe('SQLite template store', () => {
  it('creates the parent directory, the table (default prefix mega_) and uses WAL', async () => {
    const file = join(dir, 'nested', 'deeper', 'a.db');
    const store = openTemplateStore({ dsn: `sqlite:${file}` });
    assert.equal(store.kind, 'sqlite');
    assert.equal(store.table, 'mega_wechat_template');
    assert.equal(store.location, `sqlite ${file}`);
    assert.equal(existsSync(file), false, 'no I/O before init()');
    await store.init();
    await store.init(); // idempotent
    await store.close();
    const sql = tableSql(file, 'mega_wechat_template');
    assert.ok(sql, 'table created');
    assert.match(sql, /tmpl_key char\(32\) NOT NULL PRIMARY KEY/);
    const db = new Database(file, { readonly: true });
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.close();
  });

  it('puts, gets, lists in key order, updates and removes rows', async () => {
    const store = openTemplateStore({ dsn: `sqlite:${join(dir, 'crud.db')}`, tablePrefix: 'x_' });
    await store.init();
    try {
      assert.equal(await store.get('k1'), undefined);
      const t0 = Math.floor(Date.now() / 1000);
      await store.put({ key: 'k2', title: '标题二', template: '{"touser":"${OPENID}"}' });
      await store.put({ key: 'k1', template: '{"a":"元"}' });
      await store.put({ key: 'K0', template: '{}' });
      const t1 = Math.floor(Date.now() / 1000);

      const k2 = await store.get('k2');
      assert.ok(k2);
      assert.equal(k2.key, 'k2');
      assert.equal(k2.title, '标题二');
      assert.equal(k2.template, '{"touser":"${OPENID}"}');
      assert.ok(k2.createdAt >= t0 && k2.createdAt <= t1);
      assert.equal(k2.updatedAt, k2.createdAt);
      const k1 = await store.get('k1');
      assert.deepEqual({ ...k1, createdAt: 0, updatedAt: 0 }, { key: 'k1', title: '', template: '{"a":"元"}', createdAt: 0, updatedAt: 0, kind: 'template' });
      assert.ok(k1!.createdAt >= t0 && k1!.createdAt <= t1);
      // SQLite compares keys exactly.
      assert.equal(await store.get('K1'), undefined);

      assert.deepEqual((await store.list()).map((r) => r.key), ['K0', 'k1', 'k2']);
      assert.deepEqual((await store.list(2)).map((r) => r.key), ['K0', 'k1']);
      assert.deepEqual(await store.list(0), []);

      // An update without a title keeps the title and created_at.
      await store.put({ key: 'k2', template: '{"v":2}' });
      const k2b = await store.get('k2');
      assert.deepEqual({ ...k2b, updatedAt: 0 }, { ...k2, template: '{"v":2}', updatedAt: 0 });
      await store.put({ key: 'k2', title: '', template: '{"v":3}' });
      assert.equal((await store.get('k2'))!.title, '');

      assert.equal(await store.remove('k2'), true);
      assert.equal(await store.remove('k2'), false);
      assert.equal(await store.get('k2'), undefined);
      assert.deepEqual((await store.list()).map((r) => r.key), ['K0', 'k1']);

      // kinds: given on insert, kept by an update without one, changed by one with one, refused when unknown
      await store.put({ key: 'sub', template: '{}', kind: 'miniprogram' });
      await store.put({ key: 'sub', title: 't', template: '{"v":1}' });
      assert.equal((await store.get('sub'))!.kind, 'miniprogram');
      await store.put({ key: 'sub', template: '{}', kind: 'subscribe' });
      assert.equal((await store.get('sub'))!.kind, 'subscribe');
      await assert.rejects(store.put({ key: 'x', template: '{}', kind: 'sms' as never }), RangeError);
    } finally {
      await store.close();
    }
  });

  it('binds keys as parameters', async () => {
    const store = openTemplateStore({ dsn: 'sqlite::memory:' });
    await store.init();
    try {
      const evil = "x' OR '1'='1";
      await store.put({ key: 'real', template: '{}' });
      assert.equal(await store.get(evil), undefined);
      assert.equal(await store.remove(evil), false);
      await store.put({ key: evil, template: '{"e":1}' });
      assert.equal((await store.get(evil))!.template, '{"e":1}');
      assert.deepEqual((await store.list()).map((r) => r.key), ['real', evil].sort());
    } finally {
      await store.close();
    }
  });

  it('uses an existing table made with the seed DDL, adding the kind column with its default (rows intact)', async () => {
    const file = join(dir, 'seed.db');
    const db = new Database(file);
    db.exec(SEED_DDL);
    db.prepare('INSERT INTO mega_wechat_template VALUES (?, ?, ?, ?, ?)').run('order_paid', '购买成功', '{"touser":"${OPENID}"}', 1464000000, 1464000001);
    db.prepare('INSERT INTO mega_wechat_template (tmpl_key, template) VALUES (?, ?)').run('bare', '{}');
    db.close();
    const before = tableSql(file, 'mega_wechat_template');

    const store = openTemplateStore({ dsn: `sqlite:${file}` });
    await store.init();
    try {
      assert.deepEqual(await store.list(), [
        { key: 'bare', title: '', template: '{}', createdAt: 0, updatedAt: 0, kind: 'template' },
        { key: 'order_paid', title: '购买成功', template: '{"touser":"${OPENID}"}', createdAt: 1464000000, updatedAt: 1464000001, kind: 'template' },
      ]);
      // the kind column was added with its default; a kind can now be set, and is kept by an update without one
      await store.put({ key: 'bare', template: '{}', kind: 'subscribe' });
      await store.put({ key: 'bare', template: '{"v":2}' });
      assert.equal((await store.get('bare'))!.kind, 'subscribe');
      await store.put({ key: 'order_paid', template: '{"v":2}' });
      const row = await store.get('order_paid');
      assert.equal(row!.createdAt, 1464000000);
      assert.ok(row!.updatedAt > 1464000001);
    } finally {
      await store.close();
    }
    const after = tableSql(file, 'mega_wechat_template')!;
    for (const line of before!.split('\n').slice(1, -1)) assert.ok(after.includes(line.trim().replace(/,$/, '')), `kept: ${line}\n${after}`);
    assert.match(after, /kind varchar\(16\) NOT NULL DEFAULT 'template'/);
    // a second open (another daemon, a restart) finds the column and adds nothing
    const again = openTemplateStore({ dsn: `sqlite:${file}` });
    await again.init();
    await again.close();
    assert.equal(tableSql(file, 'mega_wechat_template'), after);
  });

  it('works with a hand-made table without a primary key', async () => {
    const file = join(dir, 'nopk.db');
    const db = new Database(file);
    db.exec('CREATE TABLE mega_wechat_template (tmpl_key TEXT, title TEXT, template TEXT, created_at INT, updated_at INT)');
    db.close();
    const store = openTemplateStore({ dsn: `sqlite:${file}` });
    await store.init();
    try {
      await store.put({ key: 'a', template: '{"v":1}' });
      await store.put({ key: 'a', template: '{"v":2}' });
      assert.deepEqual((await store.list()).map((r) => [r.key, r.template]), [['a', '{"v":2}']]);
    } finally {
      await store.close();
    }
  });

  it('fails init with TemplateStoreError when an existing table lacks a column', async () => {
    const file = join(dir, 'broken.db');
    const db = new Database(file);
    db.exec('CREATE TABLE mega_wechat_template (tmpl_key TEXT PRIMARY KEY, template TEXT)');
    db.close();
    const store = openTemplateStore({ dsn: `sqlite:${file}` });
    await assert.rejects(store.init(), (err: unknown) => {
      assert.ok(err instanceof TemplateStoreError);
      assert.equal(err.code, 'MEGA_ERR_TEMPLATE_STORE');
      assert.match(err.message, new RegExp(`^sqlite ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: open: no such column: title`));
      return true;
    });
    await store.close();
  });

  it('resolves a relative sqlite: path against baseDir', async () => {
    const store = openTemplateStore({ dsn: 'sqlite:rel/sub/r.db', baseDir: dir, tablePrefix: '' });
    assert.equal(store.location, `sqlite ${join(dir, 'rel', 'sub', 'r.db')}`);
    assert.equal(store.table, 'wechat_template');
    await store.init();
    await store.put({ key: 'k', template: '{}' });
    await store.close();
    assert.ok(tableSql(join(dir, 'rel', 'sub', 'r.db'), 'wechat_template'));
  });

  it('fails with TemplateStoreError when the file cannot be opened', async () => {
    const store = openTemplateStore({ dsn: `sqlite:${join(dir, 'rel')}` }); // a directory
    await assert.rejects(store.init(), (err: unknown) => err instanceof TemplateStoreError && err.message.startsWith(`sqlite ${join(dir, 'rel')}: open: `));
  });

  it('refuses use before init and after close', async () => {
    const store = openTemplateStore({ dsn: 'sqlite::memory:' });
    await assert.rejects(store.get('k'), { name: 'TemplateStoreError', message: 'sqlite :memory:: store is not initialised; call init() first' });
    await store.init();
    await store.close();
    await store.close(); // idempotent
    await assert.rejects(store.get('k'), { name: 'TemplateStoreError', message: 'sqlite :memory:: store is closed' });
    await assert.rejects(store.list(), TemplateStoreError);
    await assert.rejects(store.put({ key: 'k', template: '{}' }), TemplateStoreError);
    await assert.rejects(store.remove('k'), TemplateStoreError);
    await assert.rejects(store.init(), TemplateStoreError);
  });

  it('validates options and put arguments', async () => {
    const bad = (tablePrefix: string) => () => openTemplateStore({ dsn: 'sqlite::memory:', tablePrefix });
    assert.throws(bad('mega-'), (err: unknown) => err instanceof ConfigError && /\[pdo\] table_prefix/.test(err.message));
    assert.throws(bad('x`; DROP TABLE y; --'), ConfigError);
    assert.throws(bad('a'.repeat(50)), /too long: 65 characters/);
    assert.doesNotThrow(bad('a'.repeat(49)));
    assert.throws(() => openTemplateStore({ dsn: 'oracle:x' }), ConfigError);

    const store = openTemplateStore({ dsn: 'sqlite::memory:' });
    await store.init();
    try {
      await assert.rejects(store.put({ key: '', template: '{}' }), RangeError);
      await assert.rejects(store.put({ key: 'k'.repeat(33), template: '{}' }), /row.key must be 1-32 characters/);
      await store.put({ key: '键'.repeat(32), template: '{}' }); // characters, not bytes
      await assert.rejects(store.put({ key: 'k', title: 't'.repeat(101), template: '{}' }), /row.title must be at most 100/);
      await assert.rejects(store.list(-1), RangeError);
      await assert.rejects(store.list(1.5), RangeError);
    } finally {
      await store.close();
    }
  });
});
