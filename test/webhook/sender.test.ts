import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { MessageRecord } from '../../src/protocol/index.js';
import {
  verifyWebhookSignature,
  WEBHOOK_USER_AGENT,
  WebhookArgumentError,
  WebhookSender,
  WebhookStateError,
  type WebhookOptions,
} from '../../src/webhook/index.js';
import { freePort } from '../helpers/ports.js';
import { TEST_APP_SECRET } from '../helpers/secrets.js';
import { idOf, Receiver, record, recordingLogger, tmpDir, waitFor } from './helpers.js';

// A secret test/run.ts scans every output and file for: a leak fails the run.
const SECRET = TEST_APP_SECRET;
const FAST = { retryBaseMs: 10, retryMaxMs: 40, fsync: 'none' } as const;
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

async function started(options: WebhookOptions, t: { after: (fn: () => Promise<void>) => void }): Promise<WebhookSender> {
  const s = new WebhookSender(options);
  t.after(() => s.close());
  await s.start();
  return s;
}

describe('WebhookSender delivery', () => {
  it('sends batches of at most `batch` events, in order, signed, with the documented headers and body', async (t) => {
    const dir = tmpDir(t);
    const down = `http://127.0.0.1:${await freePort()}/hooks/mega`;
    const recs = range(0, 25).map((i) => record(i, i % 5 === 0 ? 'rejected' : 'delivered'));
    // First on a receiver that is down, so the whole backlog is on disk when the real one is used.
    const first = await started({ url: down, dir, secret: SECRET, batch: 10, ...FAST }, t);
    await first.enqueue(recs);
    await first.close();

    const rx = await Receiver.start();
    t.after(() => rx.stop());
    const s = await started({ url: `${rx.url}?tenant=7`, dir, secret: SECRET, batch: 10, ...FAST }, t);
    await waitFor(() => s.status().backlog === 0 && rx.requests.length === 3, 5000, 'delivery');
    assert.deepEqual(
      rx.requests.map((q) => q.events.length),
      [10, 10, 5],
    );
    assert.deepEqual(rx.acceptedIds(), recs.map(idOf));
    const ev = rx.requests[0]!.events[0]!;
    assert.deepEqual(ev, { id: 'm0:rejected:1700000000000', ...recs[0]! });
    assert.deepEqual(Object.keys(JSON.parse(rx.requests[0]!.body.toString())), ['events']);

    for (const q of rx.requests) {
      assert.equal(q.headers['content-type'], 'application/json');
      assert.equal(q.headers['user-agent'], WEBHOOK_USER_AGENT);
      assert.match(WEBHOOK_USER_AGENT, /mega-wechat/);
      const ts = q.headers['x-mega-timestamp'];
      assert.match(String(ts), /^\d+$/);
      assert.equal(verifyWebhookSignature(SECRET, ts, q.body, q.headers['x-mega-signature']), true);
      // The plain node:crypto way of docs/WEBHOOK.md agrees.
      const mac = createHmac('sha256', SECRET).update(`${String(ts)}.`).update(q.body).digest();
      const given = Buffer.from(String(q.headers['x-mega-signature']).replace(/^sha256=/, ''), 'hex');
      assert.equal(given.length === mac.length && timingSafeEqual(given, mac), true);
      assert.equal(verifyWebhookSignature(`${SECRET}-other`, ts, q.body, q.headers['x-mega-signature']), false);
    }
    const st = s.status();
    assert.equal(st.delivered, 25);
    assert.equal(st.failingSince, null);
    assert.equal(typeof st.lastSuccessAt, 'number');
  });

  it('without a secret, sends no signature header', async (t) => {
    const rx = await Receiver.start();
    t.after(() => rx.stop());
    const s = await started({ url: rx.url, dir: tmpDir(t), ...FAST }, t);
    await s.enqueue([record(1)]);
    await waitFor(() => s.status().delivered === 1);
    assert.equal(rx.requests[0]!.headers['x-mega-signature'], undefined);
    assert.match(String(rx.requests[0]!.headers['x-mega-timestamp']), /^\d+$/);
  });

  it('retries the same batch after 500s and a timeout; every event arrives, in order; one warning, one recovery line', async (t) => {
    const replies = [500, 503, 'hang', 500] as const;
    const rx = await Receiver.start((n) => replies[n] ?? 200);
    t.after(() => rx.stop());
    const log = recordingLogger();
    const s = await started({ url: rx.url, dir: tmpDir(t), secret: SECRET, batch: 7, timeoutMs: 300, logger: log.logger, ...FAST }, t);
    const recs = range(0, 40).map((i) => record(i));
    // Concurrent calls: the order of the calls is the order of delivery.
    await Promise.all([0, 10, 20, 30].map((from) => s.enqueue(recs.slice(from, from + 10))));
    await waitFor(() => s.status().delivered === 40, 8000, 'delivery');

    assert.deepEqual(rx.acceptedIds(), recs.map(idOf), 'each event once among the 2xx answers, in enqueue order');
    const firstAccepted = rx.accepted()[0]!.body;
    for (const q of rx.requests.slice(0, 4)) assert.deepEqual(q.body, firstAccepted, 'a failed batch is retried as it was');
    const seen = rx.requests.flatMap((q) => q.events.map((e) => Number(e.msgid.slice(1))));
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! >= seen[i - 1]! || seen[i] === 0, 'never a later event before an earlier one');

    const st = s.status();
    assert.equal(st.backlog, 0);
    assert.equal(st.failingSince, null);
    assert.equal(st.consecutiveFailures, 0);
    assert.match(String(st.lastError), /HTTP 500: no thanks 500/);
    assert.equal(typeof st.lastErrorAt, 'number');

    const warns = log.at('warn');
    assert.equal(warns.length, 1, 'one warning for the whole outage');
    assert.match(JSON.stringify(warns[0]!.obj), /HTTP 500/);
    const recovered = log.calls.filter((c) => c.msg?.includes('2xx again'));
    assert.equal(recovered.length, 1);
    assert.equal(recovered[0]!.level, 'info');
    assert.equal((recovered[0]!.obj as { failures: number }).failures, 4);
    assert.equal(JSON.stringify(log.calls).includes(SECRET), false);
  });

  it('keeps retrying while the receiver is down (port closed), delivers everything in order once it is up', async (t) => {
    const port = await freePort();
    const log = recordingLogger();
    const s = await started({ url: `http://127.0.0.1:${port}/hooks/mega?token=q-secret-1`, dir: tmpDir(t), secret: SECRET, batch: 4, logger: log.logger, ...FAST }, t);
    // One message's states in order: rejected at first, then a later fact about it.
    const recs = [...range(0, 10).map((i) => record(i)), record(3, 'dead', 1_800_000_000_000), ...range(10, 15).map((i) => record(i))];
    await s.enqueue(recs.slice(0, 5));
    await waitFor(() => s.status().consecutiveFailures >= 3, 5000, 'failures');
    await s.enqueue(recs.slice(5));
    const down = s.status();
    assert.equal(down.backlog, recs.length);
    assert.equal(typeof down.failingSince, 'number');
    assert.match(String(down.lastError), /request failed \(ECONNREFUSED\)/);
    assert.equal(down.lastSuccessAt, null);

    const rx = await Receiver.start(() => 200, port);
    t.after(() => rx.stop());
    await waitFor(() => s.status().backlog === 0, 5000, 'delivery');
    assert.deepEqual(rx.acceptedIds(), recs.map(idOf));
    assert.equal(rx.requests.length, rx.accepted().length);
    assert.equal(rx.requests.every((q) => q.events.length <= 4), true);
    assert.equal(log.at('warn').length, 1);
    const logged = JSON.stringify(log.calls);
    assert.equal(logged.includes('q-secret-1'), false, 'the URL query is not logged');
    assert.equal(logged.includes(SECRET), false);
  });
});

describe('WebhookSender across restarts', () => {
  it('keeps undelivered events on close and delivers them after a new start', async (t) => {
    const dir = tmpDir(t);
    const rx = await Receiver.start(() => 503);
    t.after(() => rx.stop());
    const a = await started({ url: rx.url, dir, secret: SECRET, ...FAST }, t);
    const recs = range(0, 12).map((i) => record(i, 'failed_user_block'));
    await a.enqueue(recs);
    await waitFor(() => rx.requests.length >= 2, 5000, 'attempts');
    await a.close();
    await assert.rejects(a.enqueue([record(99)]), (e: unknown) => e instanceof WebhookStateError && e.code === 'MEGA_ERR_WEBHOOK_STATE');
    assert.equal(rx.accepted().length, 0);

    rx.reply = () => 204;
    const b = await started({ url: rx.url, dir, secret: SECRET, ...FAST }, t);
    await waitFor(() => b.status().delivered === 12, 5000, 'delivery');
    assert.deepEqual(rx.acceptedIds(), recs.map(idOf));
    await b.close();

    // Acknowledged events are gone for good: a third start sends nothing.
    const before = rx.requests.length;
    const c = await started({ url: rx.url, dir, secret: SECRET, ...FAST }, t);
    await c.enqueue([record(100)]);
    await waitFor(() => c.status().delivered === 1);
    assert.deepEqual(rx.requests.slice(before).flatMap((q) => q.events.map((e) => e.id)), [idOf(record(100))]);
  });

  it('a stop in the middle of a request (no answer, no ack) delivers that batch again, same ids, first', async (t) => {
    const dir = tmpDir(t);
    const rx = await Receiver.start(() => 'hang');
    t.after(() => rx.stop());
    const a = await started({ url: rx.url, dir, batch: 5, timeoutMs: 60_000, ...FAST }, t);
    const recs = range(0, 8).map((i) => record(i));
    await a.enqueue(recs);
    await waitFor(() => rx.requests.length === 1, 5000, 'the first request');
    await a.close(); // aborts the request the receiver got but never answered
    assert.deepEqual(
      rx.requests[0]!.events.map((e) => e.id),
      recs.slice(0, 5).map(idOf),
    );

    rx.reply = () => 200;
    const b = await started({ url: rx.url, dir, batch: 5, ...FAST }, t);
    await waitFor(() => b.status().delivered === 8, 5000, 'redelivery');
    assert.deepEqual(rx.acceptedIds(), recs.map(idOf));
  });

  it('what enqueue resolved survives a kill -9 of the process', async (t) => {
    const dir = tmpDir(t);
    const down = `http://127.0.0.1:${await freePort()}/hooks/mega`;
    const child = spawn(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), 'enqueue-child.js'), dir, down, '30'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.after(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    await waitFor(() => out.includes('durable'), 10_000, 'the child to enqueue');
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;

    const rx = await Receiver.start();
    t.after(() => rx.stop());
    const s = await started({ url: rx.url, dir, ...FAST }, t);
    await waitFor(() => s.status().delivered === 30, 5000, 'delivery');
    assert.deepEqual(rx.acceptedIds(), range(0, 30).map((i) => idOf(record(i))));
  });
});

describe('WebhookSender arguments', () => {
  const base: WebhookOptions = { url: 'http://127.0.0.1:9/x', dir: '/tmp/unused-webhook-outbox' };
  const bad: [string, Partial<WebhookOptions> | Record<string, unknown>][] = [
    ['url', { url: '' }],
    ['url', { url: 'not a url token=abc' }],
    ['url', { url: 'ftp://example.com/x' }],
    ['url', { url: 'https://user:pw@example.com/x' }],
    ['secret', { secret: 42 }],
    ['dir', { dir: '' }],
    ['fsync', { fsync: 'sometimes' }],
    ['batch', { batch: 0 }],
    ['batch', { batch: 1001 }],
    ['batch', { batch: 2.5 }],
    ['timeoutMs', { timeoutMs: 0 }],
    ['retryBaseMs', { retryBaseMs: -1 }],
    ['retryMaxMs', { retryMaxMs: 'soon' }],
    ['retryMaxMs', { retryBaseMs: 500, retryMaxMs: 100 }],
    ['logger', { logger: {} }],
  ];
  for (const [name, over] of bad) {
    it(`refuses a bad "${name}" (${JSON.stringify(over)}) with a WebhookArgumentError naming it`, () => {
      assert.throws(
        () => new WebhookSender({ ...base, ...over } as WebhookOptions),
        (e: unknown) => e instanceof WebhookArgumentError && e.code === 'MEGA_ERR_WEBHOOK_ARG' && e.message.includes(`"${name}"`) && !e.message.includes('abc') && !e.message.includes(':pw@'),
      );
    });
  }

  it('accepts the limits', async () => {
    for (const batch of [1, 1000]) await new WebhookSender({ ...base, batch, url: 'https://example.com/h?k=1' }).close();
  });

  it('enqueue refuses records that are not final (nothing of the call is enqueued), and calls before start', async (t) => {
    const rx = await Receiver.start();
    t.after(() => rx.stop());
    const s = new WebhookSender({ url: rx.url, dir: tmpDir(t), ...FAST });
    t.after(() => s.close());
    await assert.rejects(s.enqueue([record(1)]), (e: unknown) => e instanceof WebhookStateError && /start\(\)/.test(e.message));
    await s.start();
    const sent = { ...record(2), state: 'sent', finalAt: null } as MessageRecord;
    await assert.rejects(s.enqueue([record(1), sent]), (e: unknown) => e instanceof WebhookArgumentError && /records\[1\]\.state/.test(e.message));
    await assert.rejects(s.enqueue([{ ...record(3), finalAt: null }]), /records\[0\]\.finalAt/);
    await assert.rejects(s.enqueue([{ ...record(3), msgid: '' }]), /records\[0\]\.msgid/);
    await assert.rejects(s.enqueue('m1' as unknown as MessageRecord[]), WebhookArgumentError);
    await s.enqueue([]);
    await s.enqueue([record(4)]);
    await waitFor(() => s.status().delivered === 1);
    assert.deepEqual(rx.acceptedIds(), [idOf(record(4))]);
  });
});
