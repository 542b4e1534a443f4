/**
 * The message ledger end to end, on a real daemon and the simulator: every message's row, a
 * kill -9 under load (the ledger agrees with what WeChat received), and a database outage
 * (MariaDB behind a TCP proxy) that neither stops nor slows delivery.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { encodePush, encodeSend } from '../../src/protocol/index.js';
import { openLedgerStore, type LedgerStore } from '../../src/ledger/index.js';
import type { MessageRecord } from '../../src/protocol/message-record.js';
import type { DaemonStatus } from '../../src/server/control-protocol.js';
import { runMega, spawnMega, stopChild, tempDir, writeIni } from '../helpers/processes.js';
import { killHard, startDaemon } from '../helpers/crash.js';
import { RawClient } from '../helpers/client.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { dropTablesWithPrefix, mysqlAvailable, mysqlTestConfig, mysqlTestConnection, mysqlTestTarget, uniqueTablePrefix } from '../helpers/mysql.js';
import { APP_ID, APP_SECRET, baseIni, eventually, startSimulator, startStack, type SimMessage, type SimulatorHandle } from '../helpers/stack.js';

/** The ledger is on by default; said here all the same, so these tests do not depend on the default. */
const LEDGER_ON = { ledger: { enabled: 1 } };

const ORDER = { touser: '${OPENID}', template_id: 'tmpl-order', data: { product: { value: '${product}' } } };

type Received = SimMessage & { msgid?: number };

/** client_msg_id → WeChat's msgid, of every message the simulator accepted. */
async function accepted(sim: SimulatorHandle): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const m of (await sim.messages()) as Received[]) {
    if (m.errcode === 0 && m.client_msg_id && m.msgid !== undefined) out.set(m.client_msg_id, String(m.msgid));
  }
  return out;
}

async function status(configDir: string): Promise<DaemonStatus> {
  const r = await runMega(['wechat', 'status', '--json', '--config-dir', configDir]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as DaemonStatus;
}

/** Every accepted message has a `sent` row with the msgid WeChat gave it; returns the problems. */
async function disagreements(store: LedgerStore, sim: SimulatorHandle): Promise<string[]> {
  const problems: string[] = [];
  for (const [msgid, wechat] of await accepted(sim)) {
    const row = await store.get(msgid);
    if (!row) problems.push(`${msgid}: no row`);
    else if (row.state !== 'sent' || row.wechatMsgid !== wechat) problems.push(`${msgid}: ${row.state} ${row.wechatMsgid} (WeChat: ${wechat})`);
  }
  return problems;
}

describe('message ledger end to end', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  it('records sent with WeChat msgid, dead for a Push and rejected for a Send refused for good, and counts retries', async () => {
    await sim.post('/_sim/reset', {});
    await sim.post('/_sim/config', {
      failOpenids: [
        { pattern: '^oBAD', errcode: 40003, errmsg: 'invalid openid' },
        { pattern: '^oFLAKY', errcode: -1, errmsg: 'system error' },
      ],
    });
    const stack = await startStack({ simulator: sim, templates: { order: ORDER }, ini: LEDGER_ON });
    const store = openLedgerStore({ dsn: `sqlite:${stack.dbFile}` });
    try {
      const client = await stack.connect();
      for (let i = 0; i < 20; i++) assert.equal((await client.request(encodePush(i, `oOK${i}`, 'order', { product: 'p' }, `ok-${i}`), i)).code, 200);
      assert.equal((await client.request(encodePush(100, 'oNOID', 'order', { product: 'p' }), 100)).code, 200);
      const send = await client.request(encodeSend(101, 'oSEND', 'order', { product: 'p' }, 'send-ok'), 101);
      assert.equal(send.code, 200);
      assert.equal((await client.request(encodePush(102, 'oBAD1', 'order', {}, 'bad-push'), 102)).code, 200);
      assert.equal((await client.request(encodeSend(103, 'oBAD2', 'order', {}, 'bad-send'), 103)).code, 400);
      assert.equal((await client.request(encodePush(104, 'oFLAKY', 'order', {}, 'flaky'), 104)).code, 200);
      await store.init();

      const wechat = await eventually(async () => {
        const a = await accepted(sim);
        return a.size === 22 ? a : undefined;
      }, 15000, '22 accepted messages');
      const rows = await eventually(async () => {
        const r = await store.list({ limit: 100 });
        return r.length === 25 && r.every((x) => x.state !== 'queued' || x.msgid === 'flaky') && r.find((x) => x.msgid === 'flaky')?.state === 'dead' ? r : undefined;
      }, 15000, 'every row settled');
      const by = new Map(rows.map((r) => [r.msgid, r]));
      for (let i = 0; i < 20; i++) {
        const r = by.get(`ok-${i}`)!;
        assert.deepEqual([r.state, r.openid, r.key, r.kind, r.attempts, r.wechatMsgid], ['sent', `oOK${i}`, 'order', 'push', 1, wechat.get(`ok-${i}`)]);
        assert.ok(r.queuedAt > 0 && r.sentAt! >= r.queuedAt && r.finalAt === null);
      }
      const assigned = rows.find((r) => r.openid === 'oNOID')!;
      assert.match(assigned.msgid, /^mw/);
      assert.equal(assigned.wechatMsgid, wechat.get(assigned.msgid));
      assert.deepEqual(pick(by.get('send-ok')!), ['sent', 'send', 1, 0, wechat.get('send-ok')]);
      assert.deepEqual(pick(by.get('bad-push')!), ['dead', 'push', 1, 40003, null]);
      assert.deepEqual(pick(by.get('bad-send')!), ['rejected', 'send', 1, 40003, null]);
      // retry_max = 3: four calls, then the dead-letter log
      assert.deepEqual(pick(by.get('flaky')!), ['dead', 'push', 4, -1, null]);
      assert.ok(by.get('bad-push')!.finalAt! > 0);

      const s = await status(stack.configDir);
      assert.equal(s.ledger?.error, null);
      client.close();
    } finally {
      await store.close();
      await stack.stop();
      await sim.post('/_sim/config', { failOpenids: [] });
    }
  });

  it('kill -9 under load, then restart: every message WeChat accepted has its sent row with WeChat msgid', async () => {
    await sim.post('/_sim/reset', {});
    await sim.post('/_sim/config', { latencyMs: 20 });
    const stack = await startStack({ simulator: sim, templates: { order: ORDER }, ini: LEDGER_ON });
    const store = openLedgerStore({ dsn: `sqlite:${stack.dbFile}` });
    let restarted: Awaited<ReturnType<typeof startDaemon>> | undefined;
    try {
      const client = await stack.connect();
      const acked: string[] = [];
      let stop = false;
      const pushing = (async () => {
        for (let b = 0; !stop; b++) {
          const batch = Array.from({ length: 100 }, (_, i) => b * 100 + i);
          const results = await Promise.allSettled(batch.map((n) => client.request(encodePush(n, `oK${n}`, 'order', { product: 'p' }, `k-${n}`), n, 5000)));
          results.forEach((r, i) => {
            if (r.status === 'fulfilled' && r.value.code === 200) acked.push(`k-${batch[i]}`);
          });
          if (results.some((r) => r.status === 'rejected')) return;
        }
      })();
      // kill once deliveries are flowing
      await eventually(async () => (await accepted(sim)).size >= 300, 15000, 'deliveries under way');
      await killHard(stack.daemon);
      stop = true;
      await pushing;
      assert.ok(acked.length >= 300);

      restarted = await startDaemon(stack.configDir, stack.name);
      await store.init();
      // every acknowledged Push is delivered after the restart, and the ledger agrees with WeChat
      await eventually(async () => {
        const a = await accepted(sim);
        return acked.every((m) => a.has(m));
      }, 30000, 'every acknowledged push delivered');
      const problems = await eventually(async () => {
        const p = await disagreements(store, sim);
        return p.length === 0 ? [] : undefined;
      }, 15000, 'the ledger to agree with the simulator').catch(async () => disagreements(store, sim));
      assert.deepEqual(problems.slice(0, 10), []);
      client.close();
    } finally {
      await store.close();
      if (restarted) await stopChild(restarted.child);
      await stack.stop();
      await sim.post('/_sim/config', { latencyMs: 0 });
    }
  });
});

function pick(r: MessageRecord): unknown[] {
  return [r.state, r.kind, r.attempts, r.errcode, r.state === 'sent' ? r.wechatMsgid : null];
}

const available = await mysqlAvailable();

describe('message ledger with the database down (MariaDB behind a proxy)', { skip: available ? false : `MySQL not reachable at ${mysqlTestTarget}` }, () => {
  const prefix = uniqueTablePrefix();
  let sim: SimulatorHandle;
  let proxy: TcpProxy;
  after(async () => {
    await sim?.stop();
    await proxy?.down();
    await dropTablesWithPrefix(prefix);
  });

  it('delivery goes on while the database is down, status shows the backlog, and the ledger catches up', async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    proxy = new TcpProxy(mysqlTestConfig.host, mysqlTestConfig.port);
    await proxy.up();
    const dsn = `mysql:host=127.0.0.1;port=${proxy.port};dbname=${mysqlTestConfig.database}`;
    const pdo = { dsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, table_prefix: prefix };
    // the template table, filled before start (the daemon loads it once)
    const db = await mysqlTestConnection();
    await db.query(`CREATE TABLE \`${prefix}wechat_template\` (tmpl_key char(32) NOT NULL PRIMARY KEY, title varchar(100) NOT NULL DEFAULT '', template text NOT NULL, created_at int NOT NULL DEFAULT 0, updated_at int NOT NULL DEFAULT 0)`);
    await db.query(`INSERT INTO \`${prefix}wechat_template\` (tmpl_key, title, template) VALUES ('order', 'order', ?)`, [JSON.stringify(ORDER)]);
    await db.end();
    const dir = tempDir();
    const ini = baseIni(dir, path.join(dir, 'unused.db'), sim.url);
    ini.pdo = pdo;
    ini.ledger = LEDGER_ON.ledger;
    const configDir = path.join(dir, 'config');
    writeIni(configDir, 'wechat', ini);
    const daemon = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', configDir], /listening on [^:\s]+:(\d+)/);
    const reader = openLedgerStore({ dsn: `mysql:host=${mysqlTestConfig.host};port=${mysqlTestConfig.port};dbname=${mysqlTestConfig.database}`, username: mysqlTestConfig.user, password: mysqlTestConfig.password, tablePrefix: prefix });
    try {
      const client = await RawClient.connect(Number(daemon.match[1]));
      const push = async (from: number, n: number) => {
        const results = await Promise.all(Array.from({ length: n }, (_, i) => client.request(encodePush(from + i, `oD${from + i}`, 'order', { product: 'p' }, `db-${from + i}`), from + i)));
        assert.ok(results.every((r) => r.code === 200));
      };
      await push(0, 50);
      await reader.init();
      await eventually(async () => (await reader.list({ state: 'sent', limit: 1000 })).length === 50, 15000, 'the first 50 sent rows');

      await proxy.down();
      await push(1000, 300);
      // delivered while the database is away
      await eventually(async () => {
        const a = await accepted(sim);
        return Array.from({ length: 300 }, (_, i) => `db-${1000 + i}`).every((m) => a.has(m));
      }, 20000, 'delivery during the outage');
      const during = await eventually(async () => {
        const s = await status(configDir);
        return s.ledger && s.ledger.backlog >= 300 && s.ledger.error ? s : undefined;
      }, 20000, 'the backlog in status');
      assert.ok(during.sent >= 350);
      assert.equal(await reader.get('db-1000'), undefined);

      await proxy.up();
      await eventually(async () => {
        const s = await status(configDir);
        return s.ledger?.error === null && s.ledger.backlog < 300;
      }, 60000, 'the ledger to catch up');
      const rows = await eventually(async () => {
        const r = await reader.list({ state: 'sent', limit: 1000 });
        return r.length === 350 ? r : undefined;
      }, 30000, 'all 350 rows sent');
      const wechat = await accepted(sim);
      for (const r of rows) assert.equal(r.wechatMsgid, wechat.get(r.msgid), r.msgid);
      client.close();
    } finally {
      await reader.close();
      await stopChild(daemon.child);
    }
  });
});
