/**
 * The webhook's request signature, as pure functions a receiver can import (docs/WEBHOOK.md):
 * `X-Mega-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, where `timestamp`
 * is the `X-Mega-Timestamp` header (unix seconds) and `body` the exact bytes received. Signing
 * the timestamp with the body lets a receiver refuse an old request replayed by someone who
 * captured it.
 */

import { createHmac, timingSafeEqual } from 'node:crypto';
import { WebhookArgumentError } from '../errors.js';

export const WEBHOOK_SIGNATURE_HEADER = 'x-mega-signature';
export const WEBHOOK_TIMESTAMP_HEADER = 'x-mega-timestamp';
/** How far (in seconds) a timestamp may be from the receiver's clock, by default. */
export const DEFAULT_SIGNATURE_TOLERANCE_SECONDS = 300;

const SIGNATURE = /^sha256=([0-9a-f]{64})$/;
const TIMESTAMP = /^[0-9]{1,15}$/;

function checkSecret(fn: string, secret: unknown): asserts secret is string {
  // The value is never put in the message: it is the key.
  if (typeof secret !== 'string' || secret === '') {
    throw new WebhookArgumentError(`${fn}: secret must be a non-empty string`);
  }
}

function hmacHex(secret: string, timestamp: string, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(`${timestamp}.`, 'utf8').update(body).digest('hex');
}

function timestampText(fn: string, timestamp: unknown): string {
  if (typeof timestamp === 'number' && Number.isSafeInteger(timestamp) && timestamp >= 0) return String(timestamp);
  if (typeof timestamp === 'string' && TIMESTAMP.test(timestamp)) return timestamp;
  throw new WebhookArgumentError(`${fn}: timestamp must be a non-negative integer of unix seconds`);
}

/**
 * The `X-Mega-Signature` value (`sha256=<64 hex>`) of a request whose `X-Mega-Timestamp` is
 * `timestamp` and whose body is `body` (a string is hashed as UTF-8; pass the raw bytes when you
 * have them). Throws WebhookArgumentError for an empty secret or a timestamp that is not
 * unix seconds.
 */
export function signWebhook(secret: string, timestamp: number | string, body: string | Uint8Array): string {
  checkSecret('signWebhook', secret);
  const ts = timestampText('signWebhook', timestamp);
  if (typeof body !== 'string' && !(body instanceof Uint8Array)) {
    throw new WebhookArgumentError('signWebhook: body must be a string or a Buffer');
  }
  return `sha256=${hmacHex(secret, ts, body)}`;
}

/**
 * Whether a request is authentic and fresh: `header` is the `X-Mega-Signature` of `body` signed
 * with `secret` at `timestamp` (the `X-Mega-Timestamp` header), compared in constant time, and
 * `timestamp` is within `toleranceSeconds` of `nowSeconds`. `timestamp` and `header` may be
 * passed straight from `req.headers` (a missing, repeated or malformed header gives false).
 * Throws WebhookArgumentError only for the receiver's own mistakes: an empty secret, a negative
 * or NaN tolerance.
 *
 * @param toleranceSeconds - `Infinity` turns the freshness check off (replaying stored requests).
 *   @defaultValue 300
 * @param nowSeconds - the receiver's clock. @defaultValue the current unix time
 */
export function verifyWebhookSignature(
  secret: string,
  timestamp: string | number | readonly string[] | undefined,
  body: string | Uint8Array,
  header: string | readonly string[] | undefined,
  toleranceSeconds: number = DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): boolean {
  checkSecret('verifyWebhookSignature', secret);
  if (typeof toleranceSeconds !== 'number' || Number.isNaN(toleranceSeconds) || toleranceSeconds < 0) {
    throw new WebhookArgumentError('verifyWebhookSignature: toleranceSeconds must be a number >= 0 (Infinity: no limit)');
  }
  if (typeof nowSeconds !== 'number' || !Number.isFinite(nowSeconds)) {
    throw new WebhookArgumentError('verifyWebhookSignature: nowSeconds must be a finite number');
  }
  if (typeof body !== 'string' && !(body instanceof Uint8Array)) return false;
  let ts: string;
  if (typeof timestamp === 'number' && Number.isSafeInteger(timestamp) && timestamp >= 0) ts = String(timestamp);
  else if (typeof timestamp === 'string' && TIMESTAMP.test(timestamp)) ts = timestamp;
  else return false;
  if (Math.abs(nowSeconds - Number(ts)) > toleranceSeconds) return false;
  if (typeof header !== 'string') return false;
  const m = SIGNATURE.exec(header.trim().toLowerCase());
  if (!m) return false;
  const expected = Buffer.from(hmacHex(secret, ts, body), 'hex');
  return timingSafeEqual(expected, Buffer.from(m[1]!, 'hex'));
}
