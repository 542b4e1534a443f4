/**
 * Delivery receipts end to end: a real daemon (ledger on, receipts endpoint, webhook), the
 * project's WeChat simulator pushing TEMPLATESENDJOBFINISH to it, and the real store (SQLite,
 * and MariaDB when reachable). The ledger must agree exactly with what the simulator sent and
 * had answered; the simulator's misbehaviours (bad signatures, replays, duplicates, unknown
 * MsgIDs) must change nothing; other requests are forwarded to the app unchanged; every final
 * state reaches the webhook, signed.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { MegaClient } from '../../src/index.js';
import { openLedgerStore, type LedgerStore } from '../../src/ledger/index.js';
import type { MessageRecord } from '../../src/protocol/message-record.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, type SimulatorHandle } from '../helpers/stack.js';
import { WebhookReceiver, orderProblems } from '../helpers/webhook-receiver.js';
import { TEST_WEBHOOK_SECRET } from '../helpers/secrets.js';
import { mysqlAvailable, mysqlTestConfig, mysqlTestConnection, mysqlTestDsn, mysqlTestTarget, uniqueTablePrefix } from '../helpers/mysql.js';
import { freePort } from '../helpers/ports.js';
import {
  FINAL,
  configureSimReceipts,
  control,
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


/** Pushes `pushes` and Sends `sends` messages with msgids, plus a dead Push and a rejected Send. */
async function sendBatch(client: MegaClient, tag: string, pushes: number, sends: number): Promise<void> {
  const answers = await Promise.all([
    ...Array.from({ length: pushes }, (_, i) => client.push(`o${tag}${i}`, 'order', { product: 'p' }, { msgid: `${tag}-p${i}` })),
    ...Array.from({ length: sends }, (_, i) => client.send(`o${tag}S${i}`, 'order', { product: 's' }, { msgid: `${tag}-s${i}` })),
    client.push(`oBAD${tag}1`, 'order', {}, { msgid: `${tag}-dead` }),
  ]);
  assert.ok(answers.every((a) => a.code === 200), JSON.stringify(answers.filter((a) => a.code !== 200)));
  assert.equal((await client.send(`oBAD${tag}2`, 'order', {}, { msgid: `${tag}-rejected` })).code, 400);
}

/** Waits until every accepted message's receipt was answered and the ledger agrees, all `total` rows settled; returns them. */
async function settled(store: LedgerStore, sim: SimulatorHandle, accepted: number, total: number): Promise<{ rows: MessageRecord[]; expected: Map<string, Expected> }> {
  await eventually(async () => (await simReceipts(sim)).stats.answered >= accepted, 20000, `${accepted} receipts answered`);
  await receiptsIdle(sim);
  const { receipts } = await simReceipts(sim);
  assert.deepEqual(receipts.filter((p) => p.outcome !== 'answered').map((p) => `${p.index} ${p.outcome} ${p.httpStatus} ${p.answer} ${p.error}`), []);
  const expected = await expectedFromSimulator(sim);
  assert.equal(expected.size, accepted);
  let problems: string[] = [];
  const rows = await eventually(async () => {
    const r = await store.list({ limit: 1000 });
    problems = ledgerProblems(r, expected);
    // the refused ones too (their rows are written a moment after the client got its answer)
    if (problems.length === 0 && (r.length !== total || r.some((x) => x.state === 'queued'))) problems = [`${r.length} rows, not all settled`];
    return problems.length === 0 ? r : undefined;
  }, 15000, 'the ledger to agree with the simulator').catch(() => undefined);
  assert.deepEqual(problems.slice(0, 10), []);
  return { rows: rows!, expected };
}

/** `query <msgid>` over the protocol answers the same as the table, for every message. */
async function queryAgrees(client: MegaClient, rows: readonly MessageRecord[]): Promise<void> {
  for (const r of rows) assert.deepEqual(await client.query(r.msgid), r, r.msgid);
}

/** Every final row's fact reached the webhook, signed, with the row's fields. */
async function webhookAgrees(hook: WebhookReceiver, rows: readonly MessageRecord[]): Promise<void> {
  const finals = rows.filter((r) => FINAL.includes(r.state));
  await eventually(() => {
    const ids = hook.ids();
    return finals.every((r) => ids.has(factId(r)));
  }, 20000, `${finals.length} final states at the webhook`);
  assert.ok(hook.batches.length > 0 && hook.batches.every((b) => b.signatureOk && b.contentType === 'application/json' && /^mega-wechat-webhook\//.test(b.userAgent ?? '')));
  const events = new Map(hook.events().map((e) => [e.id, e]));
  for (const r of finals) {
    const e = events.get(factId(r))!;
    assert.deepEqual([e.msgid, e.state, e.openid, e.kind, e.wechatMsgid, e.errcode, e.finalAt], [r.msgid, r.state, r.openid, r.kind, r.wechatMsgid, r.errcode, r.finalAt]);
  }
  assert.deepEqual(orderProblems(hook.events()), []);
}

describe('delivery receipts end to end (SQLite)', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  for (const safe of [false, true]) {
    it(`${safe ? 'safe' : 'plaintext'} mode: the ledger and query agree with every receipt, the webhook gets every final state, the simulator's misbehaviours change nothing`, async (t) => {
      await sim.post('/_sim/reset', {});
      await sim.post('/_sim/config', { failOpenids: BAD });
      const hook = await WebhookReceiver.start(TEST_WEBHOOK_SECRET);
      t.after(() => hook.close());
      const stack = await startReceiptsStack({ simulator: sim, safe, webhookUrl: hook.url, templates: { order: ORDER } });
      t.after(() => stack.stop());
      await configureSimReceipts(sim, stack.callbackUrl, { safe, userBlockShare: 0.25, systemFailedShare: 0.25, seed: safe ? 11 : 7 });
      const store = openLedgerStore({ dsn: `sqlite:${stack.dbFile}`, tablePrefix: 'mega_' });
      t.after(() => store.close());
      const client = await MegaClient.connect({ port: stack.port });
      t.after(() => client.close());
      await sendBatch(client, safe ? 'S' : 'P', 30, 10);
      await store.init();
      const { rows, expected } = await settled(store, sim, 40, 42);
      const counts = countStates(expected);
      assert.ok(counts.delivered! > 0 && counts.failed_user_block! > 0 && counts.failed_system! > 0, JSON.stringify(counts));
      const tag = safe ? 'S' : 'P';
      const by = new Map(rows.map((r) => [r.msgid, r]));
      assert.deepEqual([by.get(`${tag}-dead`)?.state, by.get(`${tag}-rejected`)?.state], ['dead', 'rejected']);
      assert.equal(rows.length, 42);
      assert.ok((await simReceipts(sim)).receipts.every((p) => p.encrypted === safe));
      await queryAgrees(client, rows);
      await webhookAgrees(hook, rows);
      const hookIdsBefore = hook.ids();

      // misbehaviours: each aimed at a message whose row must not change
      const target = rows.find((r) => r.state === 'delivered')!;
      const wechat = Number(target.wechatMsgid);
      const last = (await simReceipts(sim)).receipts.at(-1)!;
      const bad = await control(sim, 'bad-signature', { msgid: wechat, status: 'failed:user block' });
      assert.deepEqual([bad.httpStatus, bad.outcome], [401, 'rejected']);
      if (safe) {
        const badMsg = await control(sim, 'bad-signature', { msgid: wechat, status: 'failed:user block', which: 'msg_signature' });
        assert.deepEqual([badMsg.httpStatus, badMsg.outcome], [401, 'rejected']);
      }
      const replay = await control(sim, 'replay', { of: last.index });
      assert.deepEqual([replay.httpStatus, replay.outcome], [401, 'rejected']);
      const dup = await control(sim, 'duplicate', { of: last.index });
      assert.deepEqual([dup.httpStatus, dup.answer, dup.outcome], [200, 'success', 'answered']);
      const unknown = await control(sim, 'unknown-msgid', { status: 'failed: system failed' });
      assert.deepEqual([unknown.httpStatus, unknown.answer], [200, 'success']);

      // a barrier: one more message, whose receipt is journaled after all of the above
      assert.equal((await client.push(`o${tag}marker`, 'order', { product: 'm' }, { msgid: `${tag}-marker` })).code, 200);
      await receiptsIdle(sim);
      const marker = await eventually(async () => {
        const r = await store.get(`${tag}-marker`);
        return r && FINAL.includes(r.state) ? r : undefined;
      }, 15000, 'the marker final');
      await eventually(() => hook.ids().has(factId(marker)), 15000, 'the marker at the webhook');
      const now = (await store.list({ limit: 1000 })).filter((r) => r.msgid !== `${tag}-marker`);
      assert.deepEqual(now.sort(byMsgid), [...rows].sort(byMsgid));
      assert.equal((await store.list({ limit: 1000 })).filter((r) => r.wechatMsgid === String(unknown.msgid)).length, 0);
      assert.deepEqual([...hook.ids()].filter((id) => !hookIdsBefore.has(id)), [factId(marker)]);

      const s = await daemonStatus(stack.configDir);
      const answered = (await simReceipts(sim)).receipts.filter((p) => (p.kind === 'receipt' || p.kind === 'unknown-msgid') && p.outcome === 'answered');
      assert.equal(s.callback?.receipts, answered.length);
      assert.deepEqual([s.callback?.refused.signature, s.callback?.refused.replay, s.callback?.listen.port], [safe ? 2 : 1, 1, stack.callbackPort]);
      assert.equal(s.webhook?.backlog, 0);
      assert.equal(s.webhook?.lastError, null);
      assert.equal(s.ledger?.error, null);
    });
  }

  it('forwarding: a user message reaches the app unchanged and its answer comes back byte for byte; with forward_receipts receipts reach it too, once recorded', async (t) => {
    await sim.post('/_sim/reset', {});
    const app = await Upstream.start();
    t.after(() => app.close());
    const stack = await startReceiptsStack({
      simulator: sim,
      templates: { order: ORDER },
      ini: { callback: { forward_url: `${app.url}/app?team=1`, forward_receipts: 1 } },
    });
    t.after(() => stack.stop());
    await configureSimReceipts(sim, stack.callbackUrl);
    const client = await MegaClient.connect({ port: stack.port });
    t.after(() => client.close());
    const text = '<xml><ToUserName><![CDATA[gh_simulator]]></ToUserName><FromUserName><![CDATA[oFan1]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 ]]]]><![CDATA[> & <b>]]></Content><MsgId>1234567890123456</MsgId></xml>';
    const raw = await control(sim, 'raw', { query: { openid: 'oFan1' }, body: text });
    assert.equal(app.requests.length, 1);
    const got = app.requests[0]!;
    const sent = new URL(raw.url);
    assert.equal(got.method, 'POST');
    assert.equal(got.url, `/app?team=1&${sent.search.slice(1)}`);
    assert.equal(got.body.toString('utf8'), raw.body);
    assert.equal(got.contentType, 'text/xml');
    assert.deepEqual([raw.httpStatus, raw.answer], [200, Upstream.REPLY]);

    // the GET check is the daemon's own
    const echo = await control(sim, 'raw', { method: 'GET', query: { echostr: 'echo-77' } });
    assert.deepEqual([echo.httpStatus, echo.answer, app.requests.length], [200, 'echo-77', 1]);

    assert.equal((await client.push('oFwd1', 'order', { product: 'p' }, { msgid: 'fwd-1' })).code, 200);
    await eventually(() => app.requests.length === 2, 15000, 'the receipt at the app');
    await receiptsIdle(sim);
    const receipt = (await simReceipts(sim)).receipts.find((p) => p.kind === 'receipt')!;
    assert.equal(app.requests[1]!.body.toString('utf8'), receipt.body);
    assert.deepEqual([receipt.httpStatus, receipt.answer], [200, 'success']);
    const row = await client.query('fwd-1');
    assert.deepEqual([row?.state, row?.wechatMsgid], ['delivered', String(receipt.msgid)]);
    const s = await daemonStatus(stack.configDir);
    assert.deepEqual([s.callback?.forwarded, s.callback?.forwardFailures, s.callback?.receipts], [2, 0, 1]);
  });
});

const available = await mysqlAvailable();

describe('delivery receipts end to end (MariaDB store)', { skip: available ? false : `MySQL not reachable at ${mysqlTestTarget}` }, () => {
  const prefix = uniqueTablePrefix();
  after(async () => {
    const db = await mysqlTestConnection();
    for (const t of ['message', 'receipt', 'wechat_template']) await db.query(`DROP TABLE IF EXISTS \`${prefix}${t}\``);
    await db.end();
  });

  it('the ledger in MariaDB agrees with every receipt, and so does query', async (t) => {
    const db = await mysqlTestConnection();
    await db.query(`CREATE TABLE \`${prefix}wechat_template\` (tmpl_key char(32) NOT NULL PRIMARY KEY, title varchar(100) NOT NULL DEFAULT '', template text NOT NULL, created_at int NOT NULL DEFAULT 0, updated_at int NOT NULL DEFAULT 0)`);
    await db.query(`INSERT INTO \`${prefix}wechat_template\` (tmpl_key, title, template) VALUES ('order', 'order', ?)`, [JSON.stringify(ORDER)]);
    await db.end();
    const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    t.after(() => sim.stop());
    await sim.post('/_sim/config', { failOpenids: BAD });
    const stack = await startReceiptsStack({
      simulator: sim,
      ini: { pdo: { dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, table_prefix: prefix } },
    });
    t.after(() => stack.stop());
    await configureSimReceipts(sim, stack.callbackUrl, { userBlockShare: 0.3, systemFailedShare: 0.3, seed: 5 });
    const store = openLedgerStore({ dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, tablePrefix: prefix });
    t.after(() => store.close());
    const client = await MegaClient.connect({ port: stack.port });
    t.after(() => client.close());
    await sendBatch(client, 'M', 25, 5);
    await store.init();
    const { rows, expected } = await settled(store, sim, 30, 32);
    const counts = countStates(expected);
    assert.ok(counts.delivered! > 0 && counts.failed_user_block! > 0 && counts.failed_system! > 0, JSON.stringify(counts));
    assert.equal(rows.length, 32);
    await queryAgrees(client, rows);
  });
});

function byMsgid(a: MessageRecord, b: MessageRecord): number {
  return a.msgid < b.msgid ? -1 : a.msgid > b.msgid ? 1 : 0;
}

/** The team's own WeChat app behind `forward_url`: records what it gets, answers a fixed reply. */
class Upstream {
  static readonly REPLY = '<xml><ToUserName><![CDATA[oFan1]]></ToUserName><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[收到 ✓]]></Content></xml>';
  readonly requests: Array<{ method: string; url: string; contentType: string | undefined; body: Buffer }> = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<Upstream> {
    const port = await freePort();
    let up: Upstream | undefined;
    const server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      up!.requests.push({ method: req.method ?? '', url: req.url ?? '', contentType: req.headers['content-type'], body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'application/xml; charset=utf-8' }).end(Upstream.REPLY);
    });
    up = new Upstream(server);
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    return up;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
