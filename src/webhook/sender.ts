/**
 * WebhookSender: POSTs the final states of messages to the backend, at least once and in order
 * (docs/WEBHOOK.md). Events go first into an outbox on local disk (a FileQueue), and leave it
 * only when the receiver answered 2xx to the request that carried them; one request is in flight
 * at a time, from the head of the outbox, so the receiver sees a message's states in the order
 * they were enqueued, whatever failures and restarts happen in between.
 */

import { Client } from 'undici';
import { backoffDelay } from '../backoff.js';
import type { MessageRecord } from '../protocol/index.js';
import { FileQueue, type QueueJob } from '../queue/index.js';
import { WebhookArgumentError, WebhookStateError } from '../errors.js';
import { toWebhookEvent } from './event.js';
import { validateWebhookOptions, type ResolvedWebhookOptions, type WebhookOptions } from './options.js';
import { signWebhook } from './signature.js';

/** Version 1 of the body format; a receiver may log it to know what sent the request. */
export const WEBHOOK_USER_AGENT = 'mega-wechat-webhook/1';

export interface WebhookStatus {
  /** Events durable in the outbox and not acknowledged by the receiver (the batch in flight included). */
  backlog: number;
  /** Events the receiver acknowledged (2xx) since start(). */
  delivered: number;
  /** Since when (ms since the epoch) the receiver keeps failing; null while it answers 2xx. */
  failingSince: number | null;
  /** Failed requests since the last 2xx. */
  consecutiveFailures: number;
  /** What the last failed request got (`HTTP 500: ...`, a timeout, a connection error); never the secret or the URL's query. */
  lastError: string | null;
  /** When that was (ms since the epoch). */
  lastErrorAt: number | null;
  /** When the receiver last answered 2xx (ms since the epoch). */
  lastSuccessAt: number | null;
}

type Attempt = { ok: true } | { ok: false; error: string };

const OPEN = Buffer.from('{"events":[');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']}');
const SNIPPET = 200;
/** Segments of the outbox: small, so a delivered backlog gives its disk space back soon. */
const OUTBOX_SEGMENT_BYTES = 4 * 1024 * 1024;
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

/** The first string `code` on err or its causes (undici wraps socket errors). */
function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e !== null && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = e instanceof AggregateError && e.errors.length > 0 ? e.errors[0] : (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The start of an answer's body, for lastError: bounded, on one line. */
async function snippet(body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= SNIPPET) break; // leaving the loop destroys the rest of the body
    }
  } catch {
    // what arrived is enough
  }
  const text = Buffer.concat(chunks).toString('utf8').replace(/\s+/g, ' ').trim();
  return text.length > SNIPPET ? `${text.slice(0, SNIPPET)}...` : text;
}

export class WebhookSender {
  private readonly opts: ResolvedWebhookOptions;
  private readonly client: Client;
  private readonly path: string;
  private queue: FileQueue | null = null;
  private startPromise: Promise<void> | null = null;
  private closePromise: Promise<void> | null = null;
  private closing = false;
  private loop: Promise<void> | null = null;
  /** Set by 'readable' so a signal that comes while reading is not lost. */
  private signalled = false;
  private wake: (() => void) | null = null;
  private inFlight: AbortController | null = null;
  private cancelSleep: (() => void) | null = null;

  private delivered = 0;
  private failingSince: number | null = null;
  private consecutiveFailures = 0;
  private lastError: string | null = null;
  private lastErrorAt: number | null = null;
  private lastSuccessAt: number | null = null;

  /** Validates the options (WebhookArgumentError names the bad one); nothing is opened until start(). */
  constructor(options: WebhookOptions) {
    this.opts = validateWebhookOptions(options);
    const t = this.opts.timeoutMs;
    this.path = `${this.opts.url.pathname}${this.opts.url.search}`;
    this.client = new Client(this.opts.url.origin, { connectTimeout: t, headersTimeout: t, bodyTimeout: t });
  }

  /**
   * Opens the outbox (recovering what a previous run left unacknowledged) and starts delivering.
   * Idempotent. Rejects with the queue's error if the folder cannot be opened, or with
   * WebhookStateError if close() was called meanwhile.
   */
  start(): Promise<void> {
    if (!this.startPromise) this.startPromise = this.doStart();
    return this.startPromise;
  }

  /**
   * Appends the events of `records` (final states only) to the outbox, in order: they will be
   * delivered after everything enqueued before. Resolves once they are durable (see `fsync`);
   * rejects with WebhookArgumentError for a record that is not final (nothing of the call is
   * enqueued then), WebhookStateError before start() has resolved or after close(), or the
   * queue's QueueWriteError when the disk refused (some of the call's events may have been
   * written: enqueueing them again is safe, their ids are the same).
   */
  enqueue(records: readonly MessageRecord[]): Promise<void> {
    if (this.closing) return Promise.reject(new WebhookStateError('webhook sender is closed'));
    if (!this.queue) return Promise.reject(new WebhookStateError('webhook sender is not started: await start() first'));
    if (!Array.isArray(records)) return Promise.reject(new WebhookArgumentError('enqueue: records must be an array of MessageRecords'));
    let payloads: Buffer[];
    try {
      payloads = records.map((r: MessageRecord, i) => Buffer.from(JSON.stringify(toWebhookEvent(r, `enqueue: records[${i}]`)), 'utf8'));
    } catch (err) {
      return Promise.reject(err);
    }
    if (payloads.length === 0) return Promise.resolve();
    // Synchronously, before any await: the ids (the delivery order) follow the order of calls.
    return this.queue.appendMany(payloads).then(() => undefined);
  }

  /** Counters, no I/O. */
  status(): WebhookStatus {
    return {
      backlog: this.queue?.stats().depth ?? 0,
      delivered: this.delivered,
      failingSince: this.failingSince,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt,
      lastSuccessAt: this.lastSuccessAt,
    };
  }

  /**
   * Stops promptly: aborts the request in flight (its batch stays in the outbox and is sent
   * again after the next start), finishes the appends already accepted, closes the outbox.
   * Idempotent.
   */
  close(): Promise<void> {
    if (!this.closePromise) this.closePromise = this.doClose();
    return this.closePromise;
  }

  // ------------------------------------------------------------------ internals

  private async doStart(): Promise<void> {
    if (this.closing) throw new WebhookStateError('webhook sender is closed');
    const queue = await FileQueue.open({
      dir: this.opts.dir,
      fsync: this.opts.fsync,
      segmentSize: OUTBOX_SEGMENT_BYTES,
      ...(this.opts.logger ? { logger: this.opts.logger } : {}),
    });
    this.queue = queue;
    // close() waits for this start before closing the queue, so it is never left open.
    if (this.closing) throw new WebhookStateError('webhook sender was closed while starting');
    queue.on('readable', this.onReadable);
    this.loop = this.run(queue);
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    this.inFlight?.abort();
    this.cancelSleep?.();
    this.onReadable();
    if (this.startPromise) await this.startPromise.catch(() => undefined);
    if (this.loop) await this.loop;
    if (this.queue) {
      this.queue.off('readable', this.onReadable);
      await this.queue.close();
    }
    await this.client.destroy();
  }

  private readonly onReadable = (): void => {
    this.signalled = true;
    const wake = this.wake;
    this.wake = null;
    wake?.();
  };

  private async run(queue: FileQueue): Promise<void> {
    try {
      while (!this.closing) {
        const jobs = await this.nextBatch(queue);
        if (jobs.length > 0) await this.deliver(queue, jobs);
      }
    } catch (err) {
      // Only a bug gets here (the queue retries its own read errors); the events stay in the
      // outbox for the next start.
      this.opts.logger?.error({ err }, 'webhook: delivery stopped');
      this.lastError = `delivery stopped: ${err instanceof Error ? err.message : String(err)}`;
      this.lastErrorAt = Date.now();
    }
  }

  /** The next events from the head of the outbox; [] when closing. */
  private async nextBatch(queue: FileQueue): Promise<QueueJob[]> {
    for (;;) {
      if (this.closing) return [];
      this.signalled = false;
      const jobs = await queue.readAsync(this.opts.batch);
      if (jobs.length > 0) return jobs;
      if (this.signalled || this.closing) continue;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Posts `jobs` until the receiver answers 2xx (then acknowledges them) or close() is called. */
  private async deliver(queue: FileQueue, jobs: QueueJob[]): Promise<void> {
    const parts: Buffer[] = [OPEN];
    jobs.forEach((j, i) => {
      if (i > 0) parts.push(COMMA);
      parts.push(j.payload);
    });
    parts.push(CLOSE);
    const body = Buffer.concat(parts);
    for (let attempt = 0; ; attempt++) {
      if (this.closing) return;
      const result = await this.post(body);
      if (result.ok) {
        for (const j of jobs) queue.ack(j.id);
        this.succeeded(jobs.length);
        return;
      }
      if (this.closing) return; // aborted by close(): not the receiver's failure
      this.failed(result.error);
      await this.sleep(backoffDelay(attempt, { baseMs: this.opts.retryBaseMs, maxMs: this.opts.retryMaxMs }));
    }
  }

  private succeeded(events: number): void {
    const now = Date.now();
    this.delivered += events;
    this.lastSuccessAt = now;
    if (this.failingSince !== null) {
      this.opts.logger?.info(
        { url: this.opts.logUrl, failedForMs: now - this.failingSince, failures: this.consecutiveFailures },
        'webhook: receiver answers 2xx again',
      );
    }
    this.failingSince = null;
    this.consecutiveFailures = 0;
  }

  private failed(error: string): void {
    const now = Date.now();
    this.lastError = error;
    this.lastErrorAt = now;
    this.consecutiveFailures++;
    if (this.failingSince !== null) return;
    this.failingSince = now;
    this.opts.logger?.warn(
      { url: this.opts.logUrl, error, backlog: this.status().backlog },
      'webhook: receiver failing; retrying the same batch with backoff until it answers 2xx',
    );
  }

  /** One request; never rejects. */
  private async post(body: Buffer): Promise<Attempt> {
    const timestamp = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': WEBHOOK_USER_AGENT,
      'x-mega-timestamp': String(timestamp),
    };
    // Signed per attempt: a retry after a long outage must still pass the receiver's tolerance.
    if (this.opts.secret !== '') headers['x-mega-signature'] = signWebhook(this.opts.secret, timestamp, body);
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, this.opts.timeoutMs);
    this.inFlight = ac;
    try {
      const res = await this.client.request({ method: 'POST', path: this.path, headers, body, signal: ac.signal });
      if (res.statusCode >= 200 && res.statusCode <= 299) {
        // The status is the receiver's word; the rest of the answer does not matter.
        await res.body.dump().catch(() => undefined);
        return { ok: true };
      }
      const text = await snippet(res.body);
      return { ok: false, error: `receiver answered HTTP ${res.statusCode}${text === '' ? '' : `: ${text}`}` };
    } catch (err) {
      const code = errorCode(err);
      if (timedOut || (code !== undefined && TIMEOUT_CODES.has(code))) {
        return { ok: false, error: `no answer within ${this.opts.timeoutMs} ms` };
      }
      // undici's messages can hold the address; the code alone says what happened.
      return { ok: false, error: `request failed (${code ?? (err instanceof Error ? err.name : 'error')})` };
    } finally {
      clearTimeout(timer);
      this.inFlight = null;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.cancelSleep = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.cancelSleep = done;
    });
  }
}
