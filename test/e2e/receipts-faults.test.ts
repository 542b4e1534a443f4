/**
 * Delivery receipts through two 30-second outages, each on its own simulator and daemon (the two
 * run at the same time to keep the wall time down): the webhook's receiver is down (every final
 * state still arrives, none out of order), and the ledger's MariaDB is down behind a TCP proxy
 * (delivery goes on, receipts are still answered `success` from the local journal, and the
 * ledger catches up to agree exactly with the simulator).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { MegaClient } from '../../src/index.js';
import { openLedgerStore, type LedgerStore } from '../../src/ledger/index.js';
import type { MessageRecord } from '../../src/protocol/message-record.js';
import { spawnMega, stopChild, tempDir, writeIni } from '../helpers/processes.js';
import { sleep } from '../helpers/crash.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { freePort } from '../helpers/ports.js';
import { TEST_WEBHOOK_SECRET, TEST_WECHAT_TOKEN } from '../helpers/secrets.js';
import { mysqlAvailable, mysqlTestConfig, mysqlTestConnection, mysqlTestTarget, uniqueTablePrefix } from '../helpers/mysql.js';
import { APP_ID, APP_SECRET, baseIni, eventually, startSimulator, type SimulatorHandle } from '../helpers/stack.js';
import { WebhookReceiver, orderProblems } from '../helpers/webhook-receiver.js';
import {
  CALLBACK_PATH,
  FINAL,
  STATE_OF_STATUS,
  configureSimReceipts,
  countStates,
  daemonStatus,
  expectedFromSimulator,
  factId,
  ledgerProblems,
  receiptsIdle,
  simReceipts,
  startReceiptsStack,
  type Expected,
  ORDER,
  BAD,
} from '../helpers/receipts-stack.js';

const OUTAGE_MS = 30_000;

/** `n` Pushes with msgids `<tag>-<i>`, plus (when `bad`) one Push WeChat refuses for good. */
async function pushRound(client: MegaClient, tag: string, n: number, bad = false): Promise<void> {
  const answers = await Promise.all([
    ...Array.from({ length: n }, (_, i) => client.push(`o${tag}x${i}`, 'order', { product: 'p' }, { msgid: `${tag}-${i}` })),
    ...(bad ? [client.push(`oBAD${tag}`, 'order', {}, { msgid: `${tag}-dead` })] : []),
  ]);
  assert.ok(answers.every((a) => a.code === 200));
}

/** Waits until the ledger agrees exactly with the simulator, once it accepted `accepted` messages; returns the rows and what was expected. */
async function agreement(store: LedgerStore, sim: SimulatorHandle, accepted: number, timeoutMs: number): Promise<{ rows: MessageRecord[]; expected: Map<string, Expected> }> {
  // every message at WeChat first: a receipt is scheduled only once its send is accepted
  await eventually(async () => (await expectedFromSimulator(sim)).size === accepted, 15000, `${accepted} sends accepted`);
  await receiptsIdle(sim);
  const expected = await expectedFromSimulator(sim);
  let problems: string[] = ['not read yet'];
  let rows: MessageRecord[] = [];
  await eventually(async () => {
    await store.init().catch(() => undefined);
    rows = await store.list({ limit: 1000 }).catch(() => []);
    problems = ledgerProblems(rows, expected);
    return problems.length === 0;
  }, timeoutMs, 'the ledger to agree with the simulator').catch(() => undefined);
  assert.deepEqual(problems.slice(0, 10), []);
  return { rows, expected };
}

const available = await mysqlAvailable();

describe('delivery receipts through 30-second outages', { concurrency: 2 }, () => {
  it('(a) the webhook receiver is down for 30 s, then up: every final state arrives, signed, in order per msgid, as the simulator says', async (t) => {
    const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    t.after(() => sim.stop());
    await sim.post('/_sim/config', { failOpenids: BAD });
    const hook = await WebhookReceiver.start(TEST_WEBHOOK_SECRET);
    t.after(() => hook.close());
    const stack = await startReceiptsStack({ simulator: sim, webhookUrl: hook.url, templates: { order: ORDER } });
    t.after(() => stack.stop());
    await configureSimReceipts(sim, stack.callbackUrl, { userBlockShare: 0.2, systemFailedShare: 0.2, seed: 3 });
    const store = openLedgerStore({ dsn: `sqlite:${stack.dbFile}`, tablePrefix: 'mega_' });
    t.after(() => store.close());
    const client = await MegaClient.connect({ port: stack.port });
    t.after(() => client.close());
    await pushRound(client, 'a0', 10, true);
    await eventually(() => hook.events().length >= 11, 15000, 'the first events at the webhook');

    await hook.set('down');
    const downAt = Date.now();
    // final states keep coming during the whole outage
    let pushed = 10;
    for (let round = 1; Date.now() - downAt < OUTAGE_MS; round++) {
      await pushRound(client, `a${round}`, 10, round % 3 === 0);
      pushed += 10;
      await sleep(2000);
    }
    const during = await daemonStatus(stack.configDir);
    assert.ok(during.webhook && during.webhook.backlog > 0 && during.webhook.failingSince !== null, JSON.stringify(during.webhook));
    assert.match(during.webhook.lastError ?? '', /ECONNREFUSED/);
    const arrivedBefore = hook.batches.length;
    await hook.set('up');

    await store.init();
    const { rows, expected } = await agreement(store, sim, pushed, 20000);
    const counts = countStates(expected);
    assert.ok(counts.delivered! > 0 && counts.failed_user_block! > 0 && counts.failed_system! > 0, JSON.stringify(counts));
    const finals = rows.filter((r) => FINAL.includes(r.state));
    assert.ok(finals.length >= 160);
    await eventually(() => {
      const ids = hook.ids();
      return finals.every((r) => ids.has(factId(r)));
    }, 60000, `${finals.length} final states at the webhook`);
    assert.ok(hook.batches.length > arrivedBefore);
    assert.ok(hook.batches.every((b) => b.signatureOk));
    assert.deepEqual(orderProblems(hook.events()), []);
    // each event states what the simulator (or, for dead ones, WeChat's refusal) made of its message
    const stateOf = new Map(rows.map((r) => [r.msgid, r.state]));
    for (const [msgid, e] of expected) stateOf.set(msgid, e.state);
    const wrong = hook.events().filter((e) => stateOf.get(e.msgid) !== e.state || (e.state !== 'dead' && e.wechatMsgid !== expected.get(e.msgid)?.wechatMsgid));
    assert.deepEqual(wrong.map((e) => e.id).slice(0, 10), []);
    const s = await eventually(async () => {
      const st = await daemonStatus(stack.configDir);
      return st.webhook?.backlog === 0 ? st : undefined;
    }, 10000, 'an empty outbox');
    assert.deepEqual([s.webhook?.failingSince, s.webhook?.consecutiveFailures], [null, 0]);
  });

  it('(d) MariaDB down for 30 s under load: delivery goes on, receipts are answered success, the ledger catches up and agrees', { skip: available ? false : `MySQL not reachable at ${mysqlTestTarget}` }, async (t) => {
    const prefix = uniqueTablePrefix();
    t.after(async () => {
      const db = await mysqlTestConnection();
      for (const table of ['message', 'receipt', 'wechat_template']) await db.query(`DROP TABLE IF EXISTS \`${prefix}${table}\``);
      await db.end();
    });
    const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    t.after(() => sim.stop());
    const proxy = new TcpProxy(mysqlTestConfig.host, mysqlTestConfig.port);
    t.after(() => proxy.down());
    await proxy.up();
    const db = await mysqlTestConnection();
    await db.query(`CREATE TABLE \`${prefix}wechat_template\` (tmpl_key char(32) NOT NULL PRIMARY KEY, title varchar(100) NOT NULL DEFAULT '', template text NOT NULL, created_at int NOT NULL DEFAULT 0, updated_at int NOT NULL DEFAULT 0)`);
    await db.query(`INSERT INTO \`${prefix}wechat_template\` (tmpl_key, title, template) VALUES ('order', 'order', ?)`, [JSON.stringify(ORDER)]);
    await db.end();
    const dir = tempDir();
    const callbackPort = await freePort();
    const ini = baseIni(dir, path.join(dir, 'unused.db'), sim.url);
    ini.pdo = { dsn: `mysql:host=127.0.0.1;port=${proxy.port};dbname=${mysqlTestConfig.database}`, username: mysqlTestConfig.user, password: mysqlTestConfig.password, table_prefix: prefix };
    ini.ledger = { enabled: 1 };
    ini.wechat = { ...ini.wechat, token: TEST_WECHAT_TOKEN };
    ini.callback = { listen: `127.0.0.1:${callbackPort}` };
    const configDir = path.join(dir, 'config');
    writeIni(configDir, 'wechat', ini);
    const daemon = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', configDir], /listening on [^:\s]+:(\d+)/);
    t.after(() => stopChild(daemon.child));
    await configureSimReceipts(sim, `http://127.0.0.1:${callbackPort}${CALLBACK_PATH}`, { userBlockShare: 0.2, systemFailedShare: 0.2, seed: 9 });
    const reader = openLedgerStore({ dsn: `mysql:host=${mysqlTestConfig.host};port=${mysqlTestConfig.port};dbname=${mysqlTestConfig.database}`, username: mysqlTestConfig.user, password: mysqlTestConfig.password, tablePrefix: prefix });
    t.after(() => reader.close());
    const client = await MegaClient.connect({ port: Number(daemon.match[1]) });
    t.after(() => client.close());
    await pushRound(client, 'd0', 20);
    await reader.init();
    await agreement(reader, sim, 20, 15000);

    await proxy.down();
    const downAt = Date.now();
    const answeredBefore = (await simReceipts(sim)).stats.answered;
    const acceptedBefore = (await expectedFromSimulator(sim)).size;
    let pushed = acceptedBefore;
    for (let round = 1; Date.now() - downAt < OUTAGE_MS; round++) {
      await pushRound(client, `d${round}`, 15);
      pushed += 15;
      await sleep(1500);
    }
    // delivered and answered while the database was away
    await eventually(async () => (await expectedFromSimulator(sim)).size === pushed, 15000, `${pushed} sends accepted`);
    await receiptsIdle(sim);
    const duringReceipts = await simReceipts(sim);
    const accepted = pushed;
    assert.ok(accepted - acceptedBefore >= 150, `${accepted - acceptedBefore} sends during the outage`);
    assert.equal(duringReceipts.stats.answered - answeredBefore, accepted - acceptedBefore);
    assert.deepEqual(duringReceipts.receipts.filter((p) => p.outcome !== 'answered' || p.answer !== 'success').map((p) => p.index), []);
    const during = await daemonStatus(configDir);
    assert.ok(during.ledger && during.ledger.error !== null && during.ledger.backlog > 0, JSON.stringify(during.ledger));
    // what the daemon answers meanwhile comes from its journal
    const late = duringReceipts.receipts.at(-1)!;
    const fromJournal = await client.query(late.client_msg_id!);
    assert.deepEqual([fromJournal?.state, fromJournal?.wechatMsgid], [STATE_OF_STATUS[late.status!], String(late.msgid)]);

    await proxy.up();
    await eventually(async () => {
      const s = await daemonStatus(configDir);
      return s.ledger?.error === null && s.ledger.backlog === 0;
    }, 60000, 'the ledger to catch up');
    const { rows } = await agreement(reader, sim, accepted, 20000);
    assert.equal(rows.length, accepted);
  });
});
