import { createHash } from 'node:crypto';

/** What the endpoint answered a request (kept to answer WeChat's retry of it the same way). */
export interface CallbackAnswer {
  status: number;
  contentType: string;
  body: Buffer;
}

export type ReplayVerdict =
  /** First time this timestamp and nonce are seen: handle it, then {@link ReplayGuard.settle}. */
  | { kind: 'new' }
  /** WeChat's retry of a request (same body): the first one's answer, never handled twice. */
  | { kind: 'retry'; answer: Promise<CallbackAnswer> }
  /** The same timestamp and nonce with another body: someone replaying a signature. */
  | { kind: 'replay' };

interface Seen {
  digest: string;
  at: number;
}

export interface ReplayGuardOptions {
  /**
   * How long a timestamp + nonce is remembered, in ms: at least the endpoint's timestamp
   * window, after which the request is refused as stale anyway. @defaultValue 310000
   */
  rememberMs?: number;
  /**
   * How long an answer is kept for retries, in ms. WeChat retries three times within about
   * 15 s; after this a retry is still recognised (and not applied again) but answered
   * `success`. @defaultValue 60000
   */
  answerMs?: number;
  /** Most requests remembered; the oldest are forgotten first. @defaultValue 1000000 */
  maxEntries?: number;
}

/**
 * Recognises WeChat's retries and refuses replays. The signature covers the timestamp and the
 * nonce but (in plaintext mode) not the body, so the same signed pair with another body is a
 * forgery; the same pair with the same body is WeChat trying again after 5 s without an answer,
 * and gets the first attempt's answer, waiting for it if it is still being worked on.
 *
 * Memory only: after a restart a retry is handled again, which applies a receipt a second time
 * (harmless: applying one is idempotent).
 */
export class ReplayGuard {
  private readonly seen = new Map<string, Seen>();
  /** Answers by the same key, kept a shorter time (they hold bodies). */
  private readonly answers = new Map<string, { at: number; answer: Promise<CallbackAnswer> }>();
  private readonly rememberMs: number;
  private readonly answerMs: number;
  private readonly maxEntries: number;

  constructor(options: ReplayGuardOptions = {}) {
    this.rememberMs = options.rememberMs ?? 310_000;
    this.answerMs = options.answerMs ?? 60_000;
    this.maxEntries = options.maxEntries ?? 1_000_000;
  }

  get size(): number {
    return this.seen.size;
  }

  check(timestamp: string, nonce: string, body: Buffer, now = Date.now()): ReplayVerdict {
    this.prune(now);
    const key = `${timestamp}\n${nonce}`;
    const digest = createHash('sha256').update(body).digest('base64');
    const old = this.seen.get(key);
    if (!old) {
      this.seen.set(key, { digest, at: now });
      if (this.seen.size > this.maxEntries) this.seen.delete(this.seen.keys().next().value!);
      return { kind: 'new' };
    }
    if (old.digest !== digest) return { kind: 'replay' };
    return { kind: 'retry', answer: this.answers.get(key)?.answer ?? Promise.resolve(SUCCESS) };
  }

  /** The answer (or the promise of it) to the request `check` called new. */
  settle(timestamp: string, nonce: string, answer: Promise<CallbackAnswer>, now = Date.now()): void {
    const key = `${timestamp}\n${nonce}`;
    if (this.seen.has(key)) this.answers.set(key, { at: now, answer });
  }

  /** Both maps are in insertion order, so the expired entries are at the front. */
  private prune(now: number): void {
    for (const [key, entry] of this.seen) {
      if (now - entry.at <= this.rememberMs) break;
      this.seen.delete(key);
    }
    for (const [key, entry] of this.answers) {
      if (now - entry.at <= this.answerMs && this.answers.size <= this.maxEntries) break;
      this.answers.delete(key);
    }
  }
}

/** WeChat's "received, nothing to say". */
export const SUCCESS: CallbackAnswer = { status: 200, contentType: 'text/plain; charset=utf-8', body: Buffer.from('success') };
