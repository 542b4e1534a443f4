/** The options of {@link WebhookSender}, their defaults and their validation. */

import path from 'node:path';
import type { Logger } from 'pino';
import type { FsyncMode } from '../queue/index.js';
import { WebhookArgumentError } from '../errors.js';

export interface WebhookOptions {
  /**
   * Where the events are POSTed: an `http:` or `https:` URL, with a path and a query if needed
   * (`[receipt] webhook_url`). No `user:password@`: authenticate with `secret`. Only its origin
   * and path ever appear in a log line.
   */
  url: string;
  /**
   * The HMAC-SHA256 key of `X-Mega-Signature` (`[receipt] webhook_secret`, env
   * `MEGA_WEBHOOK_SECRET`). Empty: requests are sent without a signature header.
   * @defaultValue '' (unsigned)
   */
  secret?: string;
  /**
   * The outbox folder (created if missing): a FileQueue of the events not yet acknowledged by
   * the receiver. One sender per folder.
   */
  dir: string;
  /**
   * `'always'`: `enqueue` resolves once the events are fdatasync'ed; `'none'`: once written (a
   * process crash loses nothing, a power loss may lose the last ones).
   * @defaultValue 'always'
   */
  fsync?: FsyncMode;
  /**
   * Most events in one request (`[receipt] webhook_batch`), 1 to 1000.
   * @defaultValue 100
   */
  batch?: number;
  /**
   * Longest wait for one request, from connecting to the end of the answer, in ms; past it the
   * request is aborted and retried.
   * @defaultValue 10000
   */
  timeoutMs?: number;
  /**
   * Delay before the first retry of a failed batch, in ms; it doubles per failure (with jitter).
   * @defaultValue 1000
   */
  retryBaseMs?: number;
  /**
   * Longest delay between retries, in ms; at least `retryBaseMs`.
   * @defaultValue 60000
   */
  retryMaxMs?: number;
  /**
   * One warning when the receiver starts failing, one info line when it answers 2xx again; the
   * outbox logs its own open. Never a line per retry, never the secret.
   */
  logger?: Logger;
}

export interface ResolvedWebhookOptions {
  url: URL;
  /** Origin and path, for logs: no query (it may carry a token). */
  logUrl: string;
  secret: string;
  dir: string;
  fsync: FsyncMode;
  batch: number;
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  logger: Logger | undefined;
}

const HOUR_MS = 3_600_000;

function fail(message: string): never {
  throw new WebhookArgumentError(`WebhookSender option ${message}`);
}

function int(name: string, value: unknown, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    fail(`"${name}" must be an integer from ${min} to ${max}, got ${typeof value === 'number' ? String(value) : typeof value}`);
  }
  return value;
}

export function validateWebhookOptions(o: WebhookOptions): ResolvedWebhookOptions {
  if (o === null || typeof o !== 'object') throw new WebhookArgumentError('WebhookSender options must be an object');
  if (typeof o.url !== 'string' || o.url === '') fail('"url" must be an http(s) URL, got an empty value');
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    // The text is not echoed: a URL may carry a token in its query.
    fail('"url" must be an http(s) URL, got an unparsable value');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(`"url" must be an http(s) URL, got protocol "${url.protocol}"`);
  if (url.username !== '' || url.password !== '') fail('"url" must not carry user:password@ (authenticate with "secret")');
  if (url.hash !== '') fail('"url" must not carry a #fragment');
  const secret = o.secret ?? '';
  if (typeof secret !== 'string') fail('"secret" must be a string');
  if (typeof o.dir !== 'string' || o.dir === '') fail('"dir" must be a non-empty string (the outbox folder)');
  const fsync = o.fsync ?? 'always';
  if (fsync !== 'always' && fsync !== 'none') fail(`"fsync" must be 'always' or 'none', got ${JSON.stringify(String(fsync))}`);
  const batch = int('batch', o.batch, 100, 1, 1000);
  const timeoutMs = int('timeoutMs', o.timeoutMs, 10_000, 1, HOUR_MS);
  const retryBaseMs = int('retryBaseMs', o.retryBaseMs, 1000, 1, HOUR_MS);
  const retryMaxMs = int('retryMaxMs', o.retryMaxMs, 60_000, 1, HOUR_MS);
  if (retryMaxMs < retryBaseMs) fail(`"retryMaxMs" (${retryMaxMs}) must be at least "retryBaseMs" (${retryBaseMs})`);
  if (o.logger !== undefined && (o.logger === null || typeof o.logger.warn !== 'function' || typeof o.logger.info !== 'function')) {
    fail('"logger" must be a pino logger');
  }
  return {
    url,
    logUrl: `${url.origin}${url.pathname}${url.search === '' ? '' : '?…'}`,
    secret,
    dir: path.resolve(o.dir),
    fsync,
    batch,
    timeoutMs,
    retryBaseMs,
    retryMaxMs,
    logger: o.logger,
  };
}
