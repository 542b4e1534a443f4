/**
 * The daemon with its templates in the real MariaDB: an existing table made with the seed's
 * exact DDL is used as is, and TSet picks up a row edited behind the daemon's back.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import type { Connection } from 'mysql2/promise';
import { encodeSend, encodeTset } from '../../src/protocol/index.js';
import { dropTablesWithPrefix, mysqlAvailable, mysqlTestConfig, mysqlTestConnection, mysqlTestDsn, mysqlTestTarget, uniqueTablePrefix } from '../helpers/mysql.js';
import { spawnMega, stopChild, tempDir, writeIni } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, baseIni, startSimulator, type SimulatorHandle } from '../helpers/stack.js';
import { RawClient } from '../helpers/client.js';

const available = await mysqlAvailable();

describe('daemon with the MySQL template store', { skip: available ? false : `MySQL not reachable at ${mysqlTestTarget}` }, () => {
  const prefix = uniqueTablePrefix();
  const table = `${prefix}wechat_template`;
  let db: Connection;
  let sim: SimulatorHandle;
  let daemon: Awaited<ReturnType<typeof spawnMega>>;
  let port: number;

  before(async () => {
    db = await mysqlTestConnection();
    // the seed README's DDL, comments included
    await db.query(`CREATE TABLE \`${table}\` (
      \`tmpl_key\` char(32) NOT NULL COMMENT '模板key',
      \`title\` varchar(100) NOT NULL DEFAULT '' COMMENT '模板标题',
      \`template\` text NOT NULL COMMENT '模板内容',
      \`created_at\` int(11) NOT NULL DEFAULT '0',
      \`updated_at\` int(11) NOT NULL DEFAULT '0',
      PRIMARY KEY (\`tmpl_key\`)
    ) DEFAULT CHARSET=utf8mb4`);
    await db.query(`INSERT INTO \`${table}\` (tmpl_key, title, template) VALUES (?, ?, ?)`, [
      'paid',
      '支付成功',
      JSON.stringify({ touser: '${OPENID}', template_id: 'tmpl-mysql', data: { first: { value: '已支付 ${amount}' } } }),
    ]);
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    const dir = tempDir();
    const ini = baseIni(dir, path.join(dir, 'unused.db'), sim.url);
    ini.pdo = { dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, table_prefix: prefix };
    writeIni(path.join(dir, 'config'), 'wechat', ini);
    daemon = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', path.join(dir, 'config')], /listening on [^:\s]+:(\d+)/);
    port = Number(daemon.match[1]);
  });

  after(async () => {
    if (daemon) await stopChild(daemon.child);
    await sim?.stop();
    await db?.end();
    await dropTablesWithPrefix(prefix);
  });

  it('sends with a template read from MySQL, and TSet reloads an edited row', async () => {
    const client = await RawClient.connect(port);
    const first = await client.request(encodeSend(1, 'oMY1', 'paid', { amount: '10元' }), 1);
    assert.equal(first.code, 200, first.message.toString());
    let messages = await sim.messages();
    assert.equal(messages.find((m) => m.touser === 'oMY1')?.data?.first?.value, '已支付 10元');

    await db.query(`UPDATE \`${table}\` SET template = ?, updated_at = UNIX_TIMESTAMP() WHERE tmpl_key = 'paid'`, [
      JSON.stringify({ template_id: 'tmpl-mysql', data: { first: { value: '新版 ${amount}' } } }),
    ]);
    assert.equal((await client.request(encodeTset(2, 'paid'), 2)).code, 200);
    assert.equal((await client.request(encodeSend(3, 'oMY2', 'paid', { amount: '20元' }), 3)).code, 200);
    messages = await sim.messages();
    assert.equal(messages.find((m) => m.touser === 'oMY2')?.data?.first?.value, '新版 20元');
    client.close();
  });

  it('the existing table was used as is (not altered)', async () => {
    const [rows] = await db.query(`SHOW CREATE TABLE \`${table}\``);
    const ddl = (rows as Array<Record<string, string>>)[0]!['Create Table']!;
    assert.match(ddl, /COMMENT '模板key'/);
  });
});
