/**
 * Delivery receipts across a kill -9 of the daemon: during a storm of receipts (every receipt
 * the simulator had answered `success` must be in the ledger after the restart, and the ledger
 * must agree exactly with the simulator once the unanswered ones came again, as WeChat sends
 * them again), and during webhook delivery to a slow receiver (every final state reaches the
 * receiver, those it had not got before the kill after the restart).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MegaClient } from '../../src/index.js';
import { openLedgerStore } from '../../src/ledger/index.js';
import { stopChild } from '../helpers/processes.js';
import { Ledger, Pusher, SimRecord, killHard, startDaemon } from '../helpers/crash.js';
import { TEST_WEBHOOK_SECRET } from '../helpers/secrets.js';
import { APP_ID, APP_SECRET, eventually, startSimulator } from '../helpers/stack.js';
import { WebhookReceiver, orderProblems } from '../helpers/webhook-receiver.js';
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
  repushUnanswered,
  simReceipts,
  startReceiptsStack,
  ORDER,
  BAD,
} from '../helpers/receipts-stack.js';


describe('delivery receipts across a kill -9', { concurrency: 2 }, () => {
  it('(b) kill -9 during a storm of receipts, restart: every receipt answered success is in the ledger, which agrees exactly with the simulator', async (t) => {
    const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    t.after(() => sim.stop());
    const stack = await startReceiptsStack({ simulator: sim, templates: { order: ORDER } });
    t.after(() => stack.stop());
    await configureSimReceipts(sim, stack.callbackUrl, { userBlockShare: 0.2, systemFailedShare: 0.2, seed: 13, delayMs: 0 });

    const pushes = new Ledger();
    let n = 0;
    const pushers = await Promise.all(
      [0, 1].map(() => Pusher.start({ port: stack.port, key: 'order', budget: 450, window: 40, ledger: pushes, life: 0, next: () => ({ openid: `oB${n}`, msgid: `b-${n++}`, vars: { product: 'p' } }) })),
    );
    await eventually(async () => (await simReceipts(sim)).stats.answered >= 200, 30000, '200 receipts answered');
    await killHard(stack.daemon);
    await Promise.all(pushers.map((p) => p.done));
    const atKill = (await simReceipts(sim)).receipts.filter((p) => p.outcome === 'answered').length;
    assert.ok(atKill >= 200);
    // the receipts pushed at the dead daemon run out of attempts
    await receiptsIdle(sim);

    const restarted = await startDaemon(stack.configDir, stack.name);
    t.after(() => stopChild(restarted.child));
    const record = new SimRecord(sim);
    await eventually(async () => {
      await record.refresh();
      const delivered = record.deliveredOpenids();
      return [...pushes.acknowledgedOpenids()].every((o) => delivered.has(o));
    }, 30000, 'every acknowledged push delivered');
    // and whatever else the queue held, so that no new receipt comes after the ones pushed again
    await eventually(async () => {
      const s = await daemonStatus(stack.configDir);
      return s.queue.depth === 0 && s.queue.inFlight === 0 && s.running === 0;
    }, 30000, 'an empty queue');
    await receiptsIdle(sim);
    const again = await repushUnanswered(sim);

    const expected = await expectedFromSimulator(sim);
    assert.ok(expected.size >= 200 && [...expected.values()].every((e) => e.state !== 'sent'));
    const answered = (await simReceipts(sim)).receipts.filter((p) => p.outcome === 'answered' && p.answer === 'success');
    assert.ok(answered.length >= expected.size);
    const store = openLedgerStore({ dsn: `sqlite:${stack.dbFile}`, tablePrefix: 'mega_' });
    t.after(() => store.close());
    await store.init();
    let problems: string[] = [];
    await eventually(async () => {
      problems = ledgerProblems(await store.list({ limit: 1000 }), expected);
      return problems.length === 0;
    }, 15000, 'the ledger to agree with the simulator').catch(() => undefined);
    assert.deepEqual(problems.slice(0, 10), []);
    t.diagnostic(`pushed ${pushes.counts().total}, accepted ${expected.size}, receipts answered at the kill ${atKill}, pushed again ${again}, states ${JSON.stringify(countStates(expected))}`);
  });

  it('(c) kill -9 during webhook delivery to a slow receiver, restart: every final state reaches the receiver, the rest after the restart', async (t) => {
    const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    t.after(() => sim.stop());
    await sim.post('/_sim/config', { failOpenids: BAD });
    const hook = await WebhookReceiver.start(TEST_WEBHOOK_SECRET);
    t.after(() => hook.close());
    hook.delayMs = 300;
    const stack = await startReceiptsStack({ simulator: sim, webhookUrl: hook.url, templates: { order: ORDER }, ini: { receipt: { webhook_batch: 5 } } });
    t.after(() => stack.stop());
    await configureSimReceipts(sim, stack.callbackUrl, { userBlockShare: 0.2, systemFailedShare: 0.2, seed: 17 });
    const client = await MegaClient.connect({ port: stack.port });
    t.after(() => client.close());

    const answers = await Promise.all([
      ...Array.from({ length: 80 }, (_, i) => client.push(`oC${i}`, 'order', { product: 'p' }, { msgid: `c-${i}` })),
      ...Array.from({ length: 5 }, (_, i) => client.push(`oBADc${i}`, 'order', {}, { msgid: `c-dead-${i}` })),
    ]);
    assert.ok(answers.every((a) => a.code === 200));
    await eventually(() => hook.accepted().length >= 3, 20000, 'the first batches at the receiver');
    const before = await daemonStatus(stack.configDir);
    assert.ok((before.webhook?.backlog ?? 0) > 10, JSON.stringify(before.webhook));
    await killHard(stack.daemon);
    const seenBeforeKill = hook.ids();
    const batchesBeforeKill = hook.batches.length;
    hook.delayMs = 0;
    await receiptsIdle(sim);

    const restarted = await startDaemon(stack.configDir, stack.name);
    t.after(() => stopChild(restarted.child));
    await eventually(async () => (await expectedFromSimulator(sim)).size === 80, 15000, '80 sends accepted');
    await receiptsIdle(sim);
    await repushUnanswered(sim);
    const expected = await expectedFromSimulator(sim);
    const store = openLedgerStore({ dsn: `sqlite:${stack.dbFile}`, tablePrefix: 'mega_' });
    t.after(() => store.close());
    await store.init();
    let problems: string[] = [];
    const rows = await eventually(async () => {
      const r = await store.list({ limit: 1000 });
      problems = ledgerProblems(r, expected);
      return problems.length === 0 && r.filter((x) => x.state === 'dead').length === 5 ? r : undefined;
    }, 20000, 'the ledger to agree with the simulator').catch(() => undefined);
    assert.deepEqual(problems.slice(0, 10), []);
    const finals = rows!.filter((r) => FINAL.includes(r.state));
    assert.equal(finals.length, 85);
    await eventually(() => {
      const ids = hook.ids();
      return finals.every((r) => ids.has(factId(r)));
    }, 30000, 'every final state at the receiver');
    const afterRestart = new Set(hook.accepted().filter((b) => b.seq >= batchesBeforeKill).flatMap((b) => b.events.map((e) => e.id)));
    const left = finals.filter((r) => !seenBeforeKill.has(factId(r)));
    assert.ok(left.length > 0);
    assert.deepEqual(left.filter((r) => !afterRestart.has(factId(r))).map(factId), []);
    assert.ok(hook.batches.every((b) => b.signatureOk));
    assert.deepEqual(orderProblems(hook.events()), []);
    t.diagnostic(`final states ${finals.length}, at the receiver before the kill ${seenBeforeKill.size}, batches ${hook.batches.length}`);
  });

  it('a receipt WeChat sends again after a restart (it got no answer) is the same fact: its finalAt and webhook id do not change', async (t) => {
    const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    t.after(() => sim.stop());
    const hook = await WebhookReceiver.start(TEST_WEBHOOK_SECRET);
    t.after(() => hook.close());
    const stack = await startReceiptsStack({ simulator: sim, webhookUrl: hook.url, templates: { order: ORDER } });
    t.after(() => stack.stop());
    await configureSimReceipts(sim, stack.callbackUrl);
    const store = openLedgerStore({ dsn: `sqlite:${stack.dbFile}`, tablePrefix: 'mega_' });
    t.after(() => store.close());
    const client = await MegaClient.connect({ port: stack.port });
    t.after(() => client.close());

    assert.equal((await client.push('oAgain', 'order', { product: 'p' }, { msgid: 'again-1' })).code, 200);
    await receiptsIdle(sim);
    await store.init();
    const first = await eventually(async () => {
      const r = await store.get('again-1');
      return r?.state === 'delivered' ? r : undefined;
    }, 15000, 'again-1 delivered');
    await eventually(() => hook.ids().has(factId(first)), 15000, 'its event at the webhook');
    const receipt = (await simReceipts(sim)).receipts.find((p) => p.kind === 'receipt')!;

    // a restart forgets which (timestamp, nonce) were answered; WeChat's retry is the same request byte for byte
    await client.close();
    await stopChild(stack.daemon);
    const restarted = await startDaemon(stack.configDir, stack.name);
    t.after(() => stopChild(restarted.child));
    const retry = await control(sim, 'duplicate', { of: receipt.index });
    assert.deepEqual([retry.httpStatus, retry.answer], [200, 'success']);

    // a barrier: a later message, final in the table and at the webhook after the retry was handled
    const client2 = await MegaClient.connect({ port: restarted.port });
    t.after(() => client2.close());
    assert.equal((await client2.push('oAfter', 'order', { product: 'p' }, { msgid: 'again-2' })).code, 200);
    await receiptsIdle(sim);
    const marker = await eventually(async () => {
      const r = await store.get('again-2');
      return r?.state === 'delivered' ? r : undefined;
    }, 15000, 'again-2 delivered');
    await eventually(() => hook.ids().has(factId(marker)), 15000, 'the barrier at the webhook');
    const now = await store.get('again-1');
    assert.deepEqual([now?.state, now?.finalAt], ['delivered', first.finalAt]);
    assert.deepEqual([...new Set(hook.events().filter((e) => e.msgid === 'again-1').map((e) => e.id))], [factId(first)]);
  });
});
