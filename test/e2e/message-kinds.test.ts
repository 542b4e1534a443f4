/**
 * The three kinds of message end to end (issue 15): template rows, Official Account subscription
 * notifications (bizsend) and mini-program subscribe messages, each to its own endpoint of the
 * simulator, from a SQLite store and from MariaDB (an old table without the `kind` column,
 * which the daemon adds). Typed subscribe values are checked before queuing; 43101 is permanent.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { encodePush, encodeSend, encodeTset } from '../../src/protocol/index.js';
import { openTemplateStore, type TemplatePut } from '../../src/templates/index.js';
import { dropTablesWithPrefix, mysqlAvailable, mysqlTestConfig, mysqlTestConnection, mysqlTestDsn, mysqlTestTarget, uniqueTablePrefix } from '../helpers/mysql.js';
import { spawnMega, stopChild, tempDir, writeIni } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, baseIni, eventually, startSimulator, type SimMessage, type SimulatorHandle } from '../helpers/stack.js';
import { RawClient } from '../helpers/client.js';

const ROWS: TemplatePut[] = [
  {
    key: 'classic',
    kind: 'template',
    template: JSON.stringify({ touser: '${OPENID}', template_id: 'tmpl-classic', data: { first: { value: 'hi', color: '#173177' }, keyword1: { value: '${name}' }, remark: { value: 'bye' } } }),
  },
  {
    key: 'notice',
    kind: 'subscribe',
    template: JSON.stringify({ template_id: 'sub-notice', page: 'https://example.com/order', data: { thing1: { value: '${item}' }, time2: { value: '${at}' } } }),
  },
  {
    key: 'mini',
    kind: 'miniprogram',
    template: JSON.stringify({ template_id: 'mini-tmpl', page: 'pages/order/index?id=${id}', miniprogram_state: 'formal', lang: 'zh_CN', data: { phrase1: { value: '${state}' }, amount2: { value: '${amount}' } } }),
  },
];

type Sim = SimMessage & { kind?: string };

function kindsSuite(label: string, store: () => Promise<{ pdo: Record<string, string>; cleanup?: () => Promise<void> }>, skip: string | false = false): void {
  describe(`message kinds end to end, ${label}`, { skip }, () => {
    let sim: SimulatorHandle;
    let daemon: Awaited<ReturnType<typeof spawnMega>>;
    let port: number;
    let logFile: string;
    let configDir: string;
    let cleanup: (() => Promise<void>) | undefined;

    const messagesFor = (openid: string): Promise<Sim[]> =>
      eventually(async () => {
        const found = ((await sim.messages()) as Sim[]).filter((m) => m.touser === openid);
        return found.length > 0 ? found : undefined;
      }, 10000, `a message for ${openid}`);

    before(async () => {
      sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
      await sim.post('/_sim/config', { refusedOpenids: ['^oREFUSED'] });
      const dir = tempDir();
      configDir = path.join(dir, 'config');
      logFile = path.join(dir, 'logs', 'mega.log');
      const s = await store();
      cleanup = s.cleanup;
      const ini = baseIni(dir, path.join(dir, 'kinds.db'), sim.url);
      ini.pdo = { ...ini.pdo, ...s.pdo };
      ini.wechat!.retry_max = 0;
      writeIni(configDir, 'wechat', ini);
      const rows = openTemplateStore({ dsn: String(ini.pdo!.dsn), username: s.pdo.username, password: s.pdo.password, tablePrefix: String(ini.pdo!.table_prefix), baseDir: configDir });
      await rows.init();
      for (const r of ROWS) await rows.put(r);
      await rows.close();
      daemon = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', configDir], /listening on [^:\s]+:(\d+)/);
      port = Number(daemon.match[1]);
    });

    after(async () => {
      if (daemon) await stopChild(daemon.child);
      await sim?.stop();
      await cleanup?.();
    });

    it('sends each kind to its endpoint, with the body WeChat documents for it', async () => {
      const client = await RawClient.connect(port);
      assert.equal((await client.request(encodePush(1, 'oCLASSIC', 'classic', { name: 'Ann' }, 'c-1'), 1)).code, 200);
      assert.equal((await client.request(encodePush(2, 'oNOTICE', 'notice', { item: '快递已到', at: '2026-12-03 15:01' }, 'n-1'), 2)).code, 200);
      const sent = await client.request(encodeSend(3, 'oMINI', 'mini', { id: 42, state: '配送中', amount: '¥12.50' }), 3);
      assert.equal(sent.code, 200, sent.message.toString());
      assert.equal(JSON.parse(sent.message.toString()).errcode, 0);
      client.close();

      const [classic] = await messagesFor('oCLASSIC');
      assert.equal(classic!.kind, 'template');
      assert.equal(classic!.client_msg_id, 'c-1');
      const [notice] = await messagesFor('oNOTICE');
      assert.equal(notice!.kind, 'subscribe');
      assert.equal(notice!.template_id, 'sub-notice');
      assert.deepEqual(notice!.data, { thing1: { value: '快递已到' }, time2: { value: '2026-12-03 15:01' } });
      assert.equal(notice!.client_msg_id, undefined, 'bizsend takes no client_msg_id');
      const [mini] = await messagesFor('oMINI');
      assert.equal(mini!.kind, 'miniprogram');
      assert.equal(mini!.body?.page, 'pages/order/index?id=42');
      assert.equal(mini!.body?.miniprogram_state, 'formal');
      assert.equal(mini!.body?.lang, 'zh_CN');
      assert.equal(mini!.client_msg_id, undefined);
    });

    it('answers 400 naming the field and the rule when a subscribe value breaks its type, and queues nothing', async () => {
      const before = (await sim.messages()).length;
      const client = await RawClient.connect(port);
      const long = await client.request(encodePush(10, 'oLONG', 'notice', { item: '这是一个非常非常长的快递通知标题超过二十个字', at: '15:01' }), 10);
      assert.equal(long.code, 400);
      assert.match(long.message.toString(), /data\.thing1: .* breaks thing's rule: at most 20 characters/);
      const time = await client.request(encodePush(11, 'oTIME', 'notice', { item: 'ok', at: 'tomorrow' }), 11);
      assert.equal(time.code, 400);
      assert.match(time.message.toString(), /data\.time2/);
      const phrase = await client.request(encodeSend(12, 'oPHRASE', 'mini', { id: 1, state: 'shipped', amount: '1元' }), 12);
      assert.equal(phrase.code, 400);
      assert.match(phrase.message.toString(), /data\.phrase1: .* breaks phrase's rule/);
      // at the limit: accepted
      const twenty = await client.request(encodePush(13, 'oTWENTY', 'notice', { item: '一二三四五六七八九十一二三四五六七八九十', at: '15:01' }), 13);
      assert.equal(twenty.code, 200, twenty.message.toString());
      client.close();
      await messagesFor('oTWENTY');
      assert.equal((await sim.messages()).length, before + 1, 'only the valid one reached WeChat');
    });

    it('treats 43101 (the user refused the subscription) as permanent: a Send hears it, a Push is dead-lettered with it', async () => {
      const client = await RawClient.connect(port);
      const sent = await client.request(encodeSend(20, 'oREFUSED1', 'notice', { item: 'ok', at: '15:01' }), 20);
      assert.equal(sent.code, 400);
      assert.equal(JSON.parse(sent.message.toString()).errcode, 43101);
      assert.equal((await client.request(encodePush(21, 'oREFUSED2', 'mini', { id: 1, state: '已发货', amount: '¥1' }), 21)).code, 200);
      client.close();
      const letters = await eventually(async () => {
        const r = await spawnMega(['wechat', 'dlq', 'list', '--config-dir', configDir], /oREFUSED2[^\n]*\n/).catch(() => undefined);
        return r?.output();
      }, 15000, 'the dead letter');
      assert.match(letters, /oREFUSED2.*43101/);
      const attempts = ((await sim.messages()) as Sim[]).filter((m) => m.touser === 'oREFUSED2');
      assert.equal(attempts.length, 1, 'not retried');
    });

    it('warns at TSet when a template message still uses first, remark or color', async () => {
      const client = await RawClient.connect(port);
      assert.equal((await client.request(encodeTset(30, 'classic'), 30)).code, 200);
      client.close();
      const line = await eventually(() => readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('fields WeChat no longer shows')), 5000, 'the warning');
      assert.match(line, /data\.first/);
      assert.match(line, /data\.remark/);
      assert.match(line, /data\.first\.color/);
    });
  });
}

kindsSuite('SQLite', async () => ({ pdo: {} }));

const mysql = await mysqlAvailable();
kindsSuite(
  'MariaDB, an old table without the kind column',
  async () => {
    const prefix = uniqueTablePrefix();
    const table = `${prefix}wechat_template`;
    const db = await mysqlTestConnection();
    // the original's table: the daemon adds `kind` on its first start
    await db.query(`CREATE TABLE \`${table}\` (
      \`tmpl_key\` char(32) NOT NULL, \`title\` varchar(100) NOT NULL DEFAULT '', \`template\` text NOT NULL,
      \`created_at\` int(11) NOT NULL DEFAULT '0', \`updated_at\` int(11) NOT NULL DEFAULT '0', PRIMARY KEY (\`tmpl_key\`)
    ) DEFAULT CHARSET=utf8mb4`);
    return {
      pdo: { dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, table_prefix: prefix },
      cleanup: async () => {
        await db.end();
        // the daemon's ledger tables live in the same database, under the same prefix
        await dropTablesWithPrefix(prefix);
      },
    };
  },
  mysql ? false : `MySQL not reachable at ${mysqlTestTarget}`,
);
