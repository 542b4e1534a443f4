import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Connection, RowDataPacket } from 'mysql2/promise';
import { openTemplateStore, type TemplateStore } from '../../src/templates/store.js';
import { TemplateStoreError } from '../../src/errors.js';
import {
  mysqlAvailable,
  mysqlTestConfig,
  mysqlTestConnection,
  mysqlTestDsn,
  mysqlTestTarget,
  uniqueTablePrefix,
} from '../helpers/mysql.js';

/** The seed README's DDL, exactly (table name aside). */
const seedDdl = (table: string): string => `CREATE TABLE \`${table}\` (
  \`tmpl_key\` char(32) NOT NULL COMMENT '模板key',
  \`title\` varchar(100) NOT NULL DEFAULT '' COMMENT '模板标题',
  \`template\` text NOT NULL COMMENT '模板内容',
  \`created_at\` int(11) NOT NULL DEFAULT '0',
  \`updated_at\` int(11) NOT NULL DEFAULT '0',
  PRIMARY KEY (\`tmpl_key\`)
)`;

const available = await mysqlAvailable();
const skip = available ? false : `MySQL not reachable at ${mysqlTestTarget}`;

describe('MySQL template store', { skip }, () => {
  const prefix = uniqueTablePrefix();
  const tables: string[] = [];
  let admin: Connection;

  function storeFor(tablePrefix: string): TemplateStore {
    tables.push(`${tablePrefix}wechat_template`);
    return openTemplateStore({
      dsn: mysqlTestDsn,
      username: mysqlTestConfig.user,
      password: mysqlTestConfig.password,
      tablePrefix,
    });
  }

  async function showCreate(table: string): Promise<string | undefined> {
    const [rows] = await admin.query<RowDataPacket[]>(
      'SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?',
      [table],
    );
    if (Number(rows[0]!.n) === 0) return undefined;
    const [create] = await admin.query<RowDataPacket[]>(`SHOW CREATE TABLE \`${table}\``);
    return create[0]!['Create Table'] as string;
  }

  before(async () => {
    admin = await mysqlTestConnection();
  });

  after(async () => {
    for (const t of tables) await admin.query(`DROP TABLE IF EXISTS \`${t}\``);
    await admin.end();
  });

  it('creates the table with the seed schema, utf8mb4', async () => {
    const store = storeFor(`${prefix}a_`);
    assert.equal(store.kind, 'mysql');
    assert.equal(store.location, `mysql ${mysqlTestConfig.host}:${mysqlTestConfig.port}/${mysqlTestConfig.database}`);
    assert.equal(await showCreate(`${prefix}a_wechat_template`), undefined);
    await store.init();
    await store.init(); // idempotent
    await store.close();
    const ddl = await showCreate(`${prefix}a_wechat_template`);
    assert.ok(ddl);
    assert.match(ddl, /`tmpl_key` char\(32\) NOT NULL COMMENT '模板key'/);
    assert.match(ddl, /`title` varchar\(100\) NOT NULL DEFAULT ''/);
    assert.match(ddl, /`template` text NOT NULL/);
    assert.match(ddl, /`created_at` int\(11\) NOT NULL DEFAULT '?0'?/);
    assert.match(ddl, /PRIMARY KEY \(`tmpl_key`\)/);
    assert.match(ddl, /CHARSET=utf8mb4/);
  });

  it('puts, gets, lists in key order, updates and removes rows, UTF-8 intact', async () => {
    const store = storeFor(`${prefix}b_`);
    await store.init();
    try {
      assert.equal(await store.get('k1'), undefined);
      const t0 = Math.floor(Date.now() / 1000);
      await store.put({ key: 'k2', title: '标题二', template: '{"v":"恭喜你购买成功！😀"}' });
      await store.put({ key: 'k1', template: '{"a":"元"}' });
      await store.put({ key: 'k0', template: '{}' });
      const t1 = Math.floor(Date.now() / 1000);

      const k2 = await store.get('k2');
      assert.ok(k2);
      assert.equal(k2.key, 'k2');
      assert.equal(k2.title, '标题二');
      assert.equal(k2.template, '{"v":"恭喜你购买成功！😀"}');
      assert.ok(k2.createdAt >= t0 && k2.createdAt <= t1, `${k2.createdAt} in [${t0}, ${t1}]`);
      assert.equal(k2.updatedAt, k2.createdAt);
      assert.deepEqual({ ...(await store.get('k1')), createdAt: 0, updatedAt: 0 }, { key: 'k1', title: '', template: '{"a":"元"}', createdAt: 0, updatedAt: 0, kind: 'template' });

      assert.deepEqual((await store.list()).map((r) => r.key), ['k0', 'k1', 'k2']);
      assert.deepEqual((await store.list(2)).map((r) => r.key), ['k0', 'k1']);
      assert.deepEqual(await store.list(0), []);

      await store.put({ key: 'k2', template: '{"v":2}' });
      const k2b = await store.get('k2');
      assert.deepEqual({ ...k2b, updatedAt: 0 }, { ...k2, template: '{"v":2}', updatedAt: 0 });
      await store.put({ key: 'k2', title: 'new', template: '{"v":3}' });
      assert.equal((await store.get('k2'))!.title, 'new');

      assert.equal(await store.remove('k2'), true);
      assert.equal(await store.remove('k2'), false);
      assert.equal(await store.get('k2'), undefined);
      assert.deepEqual((await store.list()).map((r) => r.key), ['k0', 'k1']);

      const evil = "x' OR '1'='1";
      assert.equal(await store.get(evil), undefined);
      await store.put({ key: evil, template: '{"e":1}' });
      assert.equal((await store.get(evil))!.template, '{"e":1}');
      assert.equal(await store.remove(evil), true);
    } finally {
      await store.close();
    }
  });

  it('matches keys by the column collation: case-insensitive, trailing spaces ignored', async () => {
    // Not fought: this is how the original's MySQL table behaved too.
    const store = storeFor(`${prefix}c_`);
    await store.init();
    try {
      await store.put({ key: 'abc', template: '{}' });
      assert.equal((await store.get('ABC'))?.key, 'abc');
      assert.equal((await store.get('abc '))?.key, 'abc');
      await store.put({ key: 'ABC', template: '{"v":2}' }); // the same row
      assert.deepEqual((await store.list()).map((r) => [r.key, r.template]), [['abc', '{"v":2}']]);
    } finally {
      await store.close();
    }
  });

  it('uses an existing table made with the seed DDL, adding the kind column with its default (rows intact)', async () => {
    const table = `${prefix}seed_wechat_template`;
    tables.push(table);
    await admin.query(seedDdl(table));
    await admin.query(`INSERT INTO \`${table}\` VALUES ('order_paid', '购买成功', '{"touser":"\${OPENID}"}', 1464000000, 1464000001)`);
    await admin.query(`INSERT INTO \`${table}\` (tmpl_key, template) VALUES ('bare', '{}')`);
    const before = await showCreate(table);

    const store = storeFor(`${prefix}seed_`);
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
    const after = (await showCreate(table))!;
    assert.notEqual(after, before);
    assert.match(after, /`kind` varchar\(16\) NOT NULL DEFAULT 'template'/);
    // two daemons opening the old table at once: one adds the column, the other finds it (or loses the race quietly)
    await admin.query(`ALTER TABLE \`${table}\` DROP COLUMN kind`);
    const [a, b] = [storeFor(`${prefix}seed_`), storeFor(`${prefix}seed_`)];
    await Promise.all([a.init(), b.init()]);
    assert.equal((await a.get('order_paid'))!.kind, 'template');
    await Promise.all([a.close(), b.close()]);
  });

  it('fails init when an existing table lacks a column', async () => {
    const table = `${prefix}bad_wechat_template`;
    tables.push(table);
    await admin.query(`CREATE TABLE \`${table}\` (tmpl_key char(32) PRIMARY KEY, template text)`);
    const store = storeFor(`${prefix}bad_`);
    await assert.rejects(store.init(), (err: unknown) => {
      assert.ok(err instanceof TemplateStoreError);
      assert.match(err.message, new RegExp(`^mysql .*: check table ${table}: Unknown column 'title'`));
      return true;
    });
    await store.close();
  });

  it('refuses use after close', async () => {
    const store = storeFor(`${prefix}d_`);
    await store.init();
    await store.close();
    await store.close();
    await assert.rejects(store.get('k'), (err: unknown) => err instanceof TemplateStoreError && /store is closed$/.test(err.message));
  });

  it('fails init with TemplateStoreError when the server is unreachable, never showing the password', async () => {
    const password = 'S3cret-Pa55word';
    const store = openTemplateStore({
      dsn: `mysql:host=127.0.0.1;port=1;dbname=${mysqlTestConfig.database}`,
      username: 'root',
      password,
    });
    const started = Date.now();
    await assert.rejects(store.init(), (err: unknown) => {
      assert.ok(err instanceof TemplateStoreError);
      assert.equal(err.code, 'MEGA_ERR_TEMPLATE_STORE');
      assert.equal(err.message, `mysql 127.0.0.1:1/${mysqlTestConfig.database}: init: connect ECONNREFUSED 127.0.0.1:1`);
      assert.ok(!err.message.includes(password));
      assert.ok(!String(err.stack).includes(password));
      return true;
    });
    assert.ok(Date.now() - started < 5000);
    await store.close();
  });

  it('reports a wrong password without showing it', async () => {
    const password = 'Wrong-Pa55word-xyz';
    const store = openTemplateStore({ dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: password });
    await assert.rejects(store.init(), (err: unknown) => {
      assert.ok(err instanceof TemplateStoreError);
      assert.match(err.message, /^mysql .*: init: Access denied for user/);
      assert.ok(!err.message.includes(password));
      return true;
    });
    await store.close();
  });

  it('scrubs the password even if a driver message were to contain it', async () => {
    // A password equal to the user name makes the server's "Access denied for user '...'" contain it.
    const store = openTemplateStore({ dsn: mysqlTestDsn, username: 'megapw', password: 'megapw' });
    await assert.rejects(store.init(), (err: unknown) => {
      assert.ok(err instanceof TemplateStoreError);
      assert.match(err.message, /^mysql .*: init: Access denied for user '\*\*\*'@/);
      assert.ok(!err.message.includes('megapw'), err.message);
      assert.equal(err.cause, undefined);
      return true;
    });
    await store.close();
  });
});
