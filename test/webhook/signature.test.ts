import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { signWebhook, verifyWebhookSignature, WebhookArgumentError } from '../../src/webhook/index.js';

const SECRET = 'whsec-unit-0123456789';
const BODY = '{"events":[{"id":"m1:delivered:1700000000001","msgid":"m1"}]}';
const TS = 1_700_000_000;

/** The signature computed the way docs/WEBHOOK.md tells a receiver to, independently of the module. */
const expected = (secret: string, ts: number | string, body: string): string =>
  `sha256=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`;

describe('signWebhook', () => {
  it('is sha256=<hex HMAC-SHA256(secret, timestamp "." body)>, the same for a string and its bytes', () => {
    const sig = signWebhook(SECRET, TS, BODY);
    assert.match(sig, /^sha256=[0-9a-f]{64}$/);
    assert.equal(sig, expected(SECRET, TS, BODY));
    assert.equal(signWebhook(SECRET, String(TS), Buffer.from(BODY)), sig);
    assert.equal(signWebhook(SECRET, 'ü'.length, 'ü'), expected(SECRET, 1, 'ü'), 'a string body is hashed as UTF-8');
  });

  it('depends on the secret, the timestamp and every byte of the body', () => {
    const sig = signWebhook(SECRET, TS, BODY);
    assert.notEqual(signWebhook(`${SECRET}x`, TS, BODY), sig);
    assert.notEqual(signWebhook(SECRET, TS + 1, BODY), sig);
    assert.notEqual(signWebhook(SECRET, TS, BODY.replace('m1"', 'm2"')), sig);
  });

  it('refuses an empty secret and a timestamp that is not unix seconds, without echoing the secret', () => {
    assert.throws(() => signWebhook('', TS, BODY), (e: unknown) => e instanceof WebhookArgumentError && e.code === 'MEGA_ERR_WEBHOOK_ARG' && /secret/.test(e.message));
    for (const ts of [-1, 1.5, Number.NaN, '12a', '', '1e9']) {
      assert.throws(
        () => signWebhook(SECRET, ts, BODY),
        (e: unknown) => e instanceof WebhookArgumentError && /timestamp/.test(e.message) && !e.message.includes(SECRET),
        `timestamp ${String(ts)}`,
      );
    }
  });
});

describe('verifyWebhookSignature', () => {
  const header = expected(SECRET, TS, BODY);

  it('accepts the right signature within the tolerance, with header values as node gives them', () => {
    assert.equal(verifyWebhookSignature(SECRET, String(TS), BODY, header, 300, TS), true);
    assert.equal(verifyWebhookSignature(SECRET, TS, Buffer.from(BODY), header, 300, TS + 300), true);
    assert.equal(verifyWebhookSignature(SECRET, String(TS), BODY, header.toUpperCase().replace('SHA256=', 'sha256='), 300, TS - 300), true);
    assert.equal(verifyWebhookSignature(SECRET, String(TS), BODY, header, Infinity, TS + 10 ** 9), true, 'Infinity: no freshness check');
    assert.equal(verifyWebhookSignature(SECRET, String(TS), BODY, signWebhook(SECRET, TS, BODY)), false, 'default now: a 2023 timestamp is stale');
    const now = Math.floor(Date.now() / 1000);
    assert.equal(verifyWebhookSignature(SECRET, String(now), BODY, signWebhook(SECRET, now, BODY)), true, 'default now and tolerance');
  });

  it('refuses a wrong secret, a changed body or timestamp, a stale or future timestamp', () => {
    assert.equal(verifyWebhookSignature(`${SECRET}x`, String(TS), BODY, header, 300, TS), false);
    assert.equal(verifyWebhookSignature(SECRET, String(TS), `${BODY} `, header, 300, TS), false);
    assert.equal(verifyWebhookSignature(SECRET, String(TS + 1), BODY, header, 300, TS), false);
    assert.equal(verifyWebhookSignature(SECRET, String(TS), BODY, header, 300, TS + 301), false);
    assert.equal(verifyWebhookSignature(SECRET, String(TS), BODY, header, 300, TS - 301), false);
  });

  it('refuses missing, repeated or malformed headers instead of throwing', () => {
    const bad: [unknown, unknown][] = [
      [undefined, header],
      [[String(TS), String(TS)], header],
      ['1.7e9', header],
      [String(TS), undefined],
      [String(TS), [header, header]],
      [String(TS), header.slice('sha256='.length)],
      [String(TS), `sha1=${header.slice('sha256='.length)}`],
      [String(TS), header.slice(0, -2)],
      [String(TS), `${header}00`],
      [String(TS), ''],
    ];
    for (const [ts, h] of bad) {
      assert.equal(verifyWebhookSignature(SECRET, ts as string, BODY, h as string, 300, TS), false, `${String(ts)} / ${String(h)}`);
    }
  });

  it('throws for the receiver’s own mistakes: empty secret, bad tolerance', () => {
    assert.throws(() => verifyWebhookSignature('', String(TS), BODY, header), WebhookArgumentError);
    assert.throws(() => verifyWebhookSignature(SECRET, String(TS), BODY, header, -1), /toleranceSeconds/);
    assert.throws(() => verifyWebhookSignature(SECRET, String(TS), BODY, header, Number.NaN), /toleranceSeconds/);
  });
});
