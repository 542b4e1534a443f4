/**
 * SharedTokenSource: one WeChat access token for all the daemons of a service, kept in the
 * service's `state` bucket (buckets.ts) under the key `token`. It is the TokenSource of a daemon
 * that runs with others (dispatch/ports.ts); TokenManager stays the one of a daemon alone.
 *
 * WeChat allows one valid token per app: if each daemon fetched its own, every fetch would cut
 * short the others' tokens and the daily token quota would go n times as fast. So the token is
 * fetched once and shared, and every change of the key is a compare-and-set on its revision:
 *
 * - The value is JSON, one of four kinds ({@link SharedTokenValue}): `token` (the token, when it
 *   was obtained and expires, who fetched it), `claim` (a daemon is fetching one), `invalid`
 *   (WeChat rejected the token; only its SHA-256 is kept) or `failed` (the last fetch failed; when
 *   the next one may be tried).
 * - `get()` answers from the last value seen until `marginSeconds` before expiry (capped at half
 *   the token's life, as TokenManager does). A watch on the key brings another daemon's changes
 *   within milliseconds. When no usable token is there, the daemon claims the refresh: `create`
 *   when the key is missing, `update(key, claim, revision)` otherwise. Exactly one claim wins;
 *   the winner fetches from WeChat and writes the token on its claim's revision, the others wait
 *   for the watch to bring it (or, while the old token is still valid, go on using it).
 * - A claim older than `claimStaleMs` belongs to a daemon that died or hangs: the next daemon
 *   that needs a token takes it over (by compare-and-set on the claim's revision, so once).
 * - `invalidate(token)` replaces the value by an `invalid` marker only if the key still holds
 *   that token, on that revision: a late report about an older token changes nothing, and of two
 *   daemons reporting the same token one write wins. The refresh that follows is one claim for
 *   all. If the endpoint hands back the very token just rejected (stable_token does while it is
 *   valid), the claimant asks once more with `force_refresh`.
 * - Backoff is the service's, not the daemon's: a failed fetch leaves a `failed` value with the
 *   time the next attempt may be made (1 s, doubling per consecutive failure, up to 30 s). Until
 *   then every daemon's `get()` rejects at once with that error (or returns the old token while
 *   it is still valid), so a bad secret costs one token request per window for the whole service.
 * - A failure is logged as an error by the daemon whose fetch failed, once per distinct error;
 *   the first success after failures once as a recovery.
 * - Without NATS, `get()` keeps answering from the token it holds while it is valid (past the
 *   margin, after a failed attempt to refresh); once it has expired or was rejected, `get()`
 *   rejects with the reason (the dispatcher retries). No `get()` waits longer than `waitMs`.
 * - Nothing here logs or throws the secret or a token. The token itself is in the bucket, as
 *   readable as the queue's messages to whoever may read the service's streams.
 *
 * Times in the values are wall-clock ms of the daemon that wrote them: clocks of the service's
 * hosts must agree to well within `marginSeconds` and `claimStaleMs` (NTP does).
 */

import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Logger } from 'pino';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { KvWatchInclude, type KV, type KvEntry } from '@nats-io/kv';
import { backoffDelay } from '../backoff.js';
import { TokenError } from '../errors.js';
import type { TokenResult } from '../wechat/client.js';
import { resolveTokenOptions, type TokenManagerOptions } from '../wechat/token-manager.js';

/**
 * TokenManager's options (client, appId, appSecret, endpoint, marginSeconds, now, logger,
 * minBackoffMs, maxBackoffMs: same meanings and defaults; the backoff is shared by the service),
 * and where the token is shared.
 */
export interface SharedTokenSourceOptions extends TokenManagerOptions {
  /** The service's `state` bucket (`openServiceBuckets(nc, …).state`). */
  state: KV;
  /** The key of the token in `state`. @defaultValue 'token' */
  key?: string;
  /**
   * This daemon's name in the values it writes (`by`), for the logs of the others. Unique per
   * daemon. @defaultValue `<hostname>-<pid>-<8 random hex digits>`
   */
  member?: string;
  /**
   * A claim this old (ms) is abandoned and may be taken over. Longer than a token request may
   * take (the client's timeoutMs per step); the claimant renews its claim before a second,
   * forced request. @defaultValue 15000
   */
  claimStaleMs?: number;
  /**
   * The longest a `get()` waits (ms), for another daemon's refresh or for NATS. Longer than
   * `claimStaleMs`, so that a waiter can take over an abandoned claim. @defaultValue 20000
   */
  waitMs?: number;
}

/** A token as shared in the bucket. */
export interface SharedTokenEntry {
  kind: 'token';
  token: string;
  /** ms since the epoch, when the request that got it started. */
  obtainedAt: number;
  /** ms since the epoch: obtainedAt + expires_in. */
  expiresAt: number;
  /** The member that fetched it. */
  by: string;
}

/** What the `token` key holds (JSON). */
export type SharedTokenValue =
  | SharedTokenEntry
  | {
      /** `by` is fetching a token since `at` (ms since the epoch). */
      kind: 'claim';
      by: string;
      at: number;
      /** The token being replaced, while still valid: the others use it meanwhile. */
      prev?: SharedTokenEntry;
      /** SHA-256 (hex) of the token WeChat rejected, when that is why a token is fetched. */
      invalid?: string;
      /** Consecutive failed fetches before this claim (the shared backoff). */
      failures?: number;
    }
  | {
      /** `by` reported at `at` that WeChat rejected the token whose SHA-256 (hex) is `digest`. */
      kind: 'invalid';
      by: string;
      at: number;
      digest: string;
    }
  | {
      /** `by`'s fetch failed at `at`; nobody fetches again before `retryAt`. */
      kind: 'failed';
      by: string;
      at: number;
      retryAt: number;
      failures: number;
      errcode?: number;
      /** The TokenError's message (the client keeps the secret out of it). */
      error: string;
      prev?: SharedTokenEntry;
      invalid?: string;
    };

type ClaimValue = Extract<SharedTokenValue, { kind: 'claim' }>;
type FailedValue = Extract<SharedTokenValue, { kind: 'failed' }>;

/** The key as last seen: its revision (0 = never written) and value (undefined = none, deleted or unreadable). */
interface Seen {
  revision: number;
  value: SharedTokenValue | undefined;
}

const digestOf = (token: string): string => createHash('sha256').update(token).digest('hex');

const isConflict = (err: unknown): boolean =>
  err instanceof JetStreamApiError &&
  (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);

function parseValue(e: KvEntry): SharedTokenValue | undefined {
  if (e.operation !== 'PUT') return undefined;
  try {
    const v = e.json<SharedTokenValue>();
    if (v === null || typeof v !== 'object') return undefined;
    if (v.kind === 'token' && typeof v.token === 'string' && typeof v.expiresAt === 'number' && typeof v.obtainedAt === 'number') return v;
    if ((v.kind === 'claim' || v.kind === 'invalid' || v.kind === 'failed') && typeof v.at === 'number') return v;
  } catch {
    // not JSON: treated as no value, overwritten by the next claim
  }
  return undefined;
}

export class SharedTokenSource {
  private readonly kv: KV;
  private readonly key: string;
  private readonly member: string;
  private readonly client: TokenManagerOptions['client'];
  private readonly appId: string;
  private readonly appSecret: string;
  private readonly endpoint: 'stable' | 'token';
  private readonly marginMs: number;
  private readonly now: () => number;
  private readonly logger: Logger | undefined;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly claimStaleMs: number;
  private readonly waitMs: number;

  private seen: Seen | undefined;
  /** The latest token value seen (also while a claim or a failure is in the key). */
  private known: SharedTokenEntry | undefined;
  /** A token WeChat rejected (reported here or by another daemon): never handed out again. */
  private rejected: string | undefined;
  private inflight: Promise<string> | undefined;
  /** This daemon's own claim being fetched and published. */
  private refreshing: Promise<string> | undefined;
  private invalidating: Promise<void> | undefined;
  private watcher: { stop(): void } | undefined;
  private watching: Promise<void> | undefined;
  /** When the last watch was started (Date.now()): a get() restarts a lost watch at most once a second. */
  private watchTriedAt = 0;
  private readonly waiters = new Set<() => void>();
  private closed = false;
  private _fetches = 0;
  private _lastError: TokenError | undefined;
  private loggedFailure: string | undefined;

  constructor(o: SharedTokenSourceOptions) {
    const r = resolveTokenOptions(o, 'SharedTokenSource');
    if (o.state === undefined || o.state === null) throw new TypeError('SharedTokenSource option state must be a KV bucket');
    const stale = o.claimStaleMs ?? 15_000;
    if (!(stale > 0)) throw new TypeError('SharedTokenSource option claimStaleMs must be a positive number');
    const wait = o.waitMs ?? 20_000;
    if (!(wait > 0)) throw new TypeError('SharedTokenSource option waitMs must be a positive number');
    this.kv = o.state;
    this.key = o.key ?? 'token';
    this.member = o.member ?? `${os.hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
    this.client = r.client;
    this.appId = r.appId;
    this.appSecret = r.appSecret;
    this.endpoint = r.endpoint;
    this.marginMs = r.marginMs;
    this.now = r.now;
    this.logger = r.logger;
    this.minBackoffMs = r.minBackoffMs;
    this.maxBackoffMs = r.maxBackoffMs;
    this.claimStaleMs = stale;
    this.waitMs = wait;
  }

  /** WeChat token requests made by this daemon (successful or not). */
  get fetches(): number {
    return this._fetches;
  }

  /** The error of the last failed fetch this daemon made or found in the bucket; cleared by a token. */
  get lastError(): TokenError | undefined {
    return this._lastError;
  }

  /** When the token this daemon holds expires (ms since the epoch); undefined when none. */
  get tokenExpiresAt(): number | undefined {
    const k = this.known;
    return k === undefined || k.token === this.rejected ? undefined : k.expiresAt;
  }

  /** How long ago the token this daemon holds was obtained (by whichever daemon); undefined when none. */
  get tokenAgeMs(): number | undefined {
    const k = this.known;
    return k === undefined || k.token === this.rejected ? undefined : this.now() - k.obtainedAt;
  }

  /**
   * A token believed valid: the one held while usable, else the service's refresh (this
   * daemon's or another's). Concurrent callers share one promise; rejects with a TokenError
   * (never the secret or a token) when none can be had within `waitMs`.
   */
  get(): Promise<string> {
    if (this.closed) return Promise.reject(new TokenError('shared access token source is closed'));
    const v = this.seen?.value;
    if (v?.kind === 'token' && this.usable(v)) {
      // The watch ended (NATS went away): start another in the background, answer meanwhile.
      if (this.watcher === undefined && this.watching === undefined && Date.now() - this.watchTriedAt >= 1000) {
        this.ensureWatch().catch(() => undefined);
      }
      return Promise.resolve(v.token);
    }
    if (this.inflight !== undefined) return this.inflight;
    const p = this.acquireWithin().finally(() => {
      if (this.inflight === p) this.inflight = undefined;
    });
    this.inflight = p;
    return p;
  }

  /**
   * WeChat rejected `token` (40001/40014/42001). If it is the token held, it is never handed out
   * again, and if the bucket still holds it (same revision), it is replaced by an `invalid`
   * marker so that every daemon drops it and one fetches the next. Otherwise a no-op.
   */
  invalidate(token: string): void {
    if (this.closed || token === '' || this.known?.token !== token || this.rejected === token) return;
    this.rejected = token;
    this.logger?.info({ tokenAgeMs: this.now() - this.known.obtainedAt }, 'access token invalidated by WeChat answer');
    const seen = this.seen;
    if (seen?.value?.kind !== 'token' || seen.value.token !== token) return;
    const marker: SharedTokenValue = { kind: 'invalid', by: this.member, at: this.now(), digest: digestOf(token) };
    const p: Promise<void> = this.kv
      .update(this.key, JSON.stringify(marker), seen.revision)
      .then(
        (rev) => this.apply(rev, marker),
        (err: unknown) => {
          // A conflict: another daemon reported it first, or the token was already replaced.
          if (!isConflict(err)) this.logger?.warn({ reason: this.reason(err) }, 'could not share that the access token was rejected');
        },
      )
      .finally(() => {
        if (this.invalidating === p) this.invalidating = undefined;
      });
    this.invalidating = p;
  }

  /** Stops the watch and fails waiting get()s; waits for this daemon's fetch in progress to be published. The connection stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    this.watcher = undefined;
    this.wake();
    await Promise.allSettled([this.refreshing, this.invalidating, this.watching]);
  }

  private usable(v: SharedTokenEntry): boolean {
    return v.token !== this.rejected && this.now() < this.refreshAt(v);
  }

  /** Same refresh point as TokenManager: marginSeconds before expiry, never before half the life. */
  private refreshAt(v: SharedTokenEntry): number {
    return v.expiresAt - Math.min(this.marginMs, (v.expiresAt - v.obtainedAt) / 2);
  }

  /** A token still valid (not only usable) to go on with while another daemon refreshes or the service backs off. */
  private fallback(prev: SharedTokenEntry | undefined): string | undefined {
    const now = this.now();
    for (const t of [prev, this.known]) {
      if (t !== undefined && t.token !== this.rejected && now < t.expiresAt) return t.token;
    }
    return undefined;
  }

  private async acquireWithin(): Promise<string> {
    const acquired = this.acquire();
    acquired.catch(() => undefined); // it may settle after the timeout below
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const v = this.seen?.value;
        const why = v?.kind === 'claim' && v.by !== this.member ? `the refresh claimed by ${v.by} did not finish` : 'the shared token store (NATS) did not answer';
        reject(new TokenError(`no access token within ${this.waitMs} ms: ${why}`));
      }, this.waitMs);
    });
    try {
      return await Promise.race([acquired, timeout]);
    } catch (err) {
      // NATS away (or a refresh that never comes) while the token held is inside its margin:
      // it is still valid, use it as TokenManager does when a refresh fails.
      const old = this.closed ? undefined : this.fallback(undefined);
      if (old === undefined) throw err;
      this.logger?.warn({ reason: this.reason(err) }, 'access token not refreshed; using the one held until it expires');
      return old;
    } finally {
      clearTimeout(timer);
    }
  }

  private async acquire(): Promise<string> {
    if (this.invalidating !== undefined) await this.invalidating;
    await this.ensureWatch();
    for (;;) {
      if (this.closed) throw new TokenError('shared access token source is closed');
      if (this.refreshing !== undefined) return await this.refreshing;
      const seen = this.seen as Seen;
      const v = seen.value;
      const now = this.now();
      if (v?.kind === 'token' && this.usable(v)) {
        this._lastError = undefined;
        return v.token;
      }
      if (v?.kind === 'claim' && v.by !== this.member && now - v.at < this.claimStaleMs) {
        const old = this.fallback(v.prev);
        if (old !== undefined) return old;
        await this.waitForChange(Math.max(10, v.at + this.claimStaleMs - now));
        continue;
      }
      if (v?.kind === 'failed' && now < v.retryAt) {
        const old = this.fallback(v.prev);
        if (old !== undefined) return old;
        this._lastError = new TokenError(v.error, v.errcode);
        throw this._lastError;
      }
      // Nobody holds a usable token nor is getting one: claim the refresh.
      const claim = this.claimOver(v, now);
      let rev: number;
      try {
        rev = seen.revision === 0 ? await this.kv.create(this.key, JSON.stringify(claim)) : await this.kv.update(this.key, JSON.stringify(claim), seen.revision);
      } catch (err) {
        if (!isConflict(err)) throw this.storeError(err);
        await this.reload(); // another daemon wrote first: see what
        continue;
      }
      if (v?.kind === 'claim' && v.by !== this.member) this.logger?.warn({ by: v.by, claimAgeMs: now - v.at }, 'took over an abandoned access token refresh');
      this.apply(rev, claim);
      const p = this.refresh(rev, claim).finally(() => {
        if (this.refreshing === p) this.refreshing = undefined;
      });
      this.refreshing = p;
      return await p;
    }
  }

  /** The claim replacing `v`, carrying what the fetch must know: the still-valid token, the rejected one, the failures so far. */
  private claimOver(v: SharedTokenValue | undefined, now: number): ClaimValue {
    const claim: ClaimValue = { kind: 'claim', by: this.member, at: now };
    if (v?.kind === 'token') {
      if (v.token === this.rejected) claim.invalid = digestOf(v.token);
      else if (now < v.expiresAt) claim.prev = v;
    } else if (v?.kind === 'invalid') {
      claim.invalid = v.digest;
    } else if (v?.kind === 'claim' || v?.kind === 'failed') {
      if (v.prev !== undefined) claim.prev = v.prev;
      if (v.invalid !== undefined) claim.invalid = v.invalid;
      if (v.failures !== undefined) claim.failures = v.failures;
    }
    return claim;
  }

  /** Fetches from WeChat on the claim of revision `rev` and publishes the outcome on it. */
  private async refresh(rev: number, claim: ClaimValue): Promise<string> {
    const startedAt = this.now();
    let r: TokenResult;
    try {
      r = await this.fetch(false);
      if (claim.invalid !== undefined && digestOf(r.accessToken) === claim.invalid) {
        // The endpoint handed back the token WeChat just rejected: force a new one (once),
        // renewing the claim first so the second request does not make it look abandoned.
        const renewed: ClaimValue = { ...claim, at: this.now() };
        try {
          rev = await this.kv.update(this.key, JSON.stringify(renewed), rev);
          this.apply(rev, renewed);
        } catch (err) {
          this.logger?.warn({ reason: this.reason(err) }, 'could not renew the access token refresh claim; forcing a new token anyway');
        }
        r = await this.fetch(true);
      }
    } catch (err) {
      return this.failed(rev, claim, err);
    }
    const value: SharedTokenEntry = { kind: 'token', token: r.accessToken, obtainedAt: startedAt, expiresAt: startedAt + r.expiresIn * 1000, by: this.member };
    const failedAttempts = claim.failures ?? 0;
    this._lastError = undefined;
    this.loggedFailure = undefined;
    const fields = { expiresIn: r.expiresIn, endpoint: this.endpoint, fetches: this._fetches };
    if (failedAttempts > 0) this.logger?.info({ ...fields, failedAttempts }, `access token obtained again after ${failedAttempts} failed attempt(s)`);
    else this.logger?.info(fields, 'access token refreshed');
    try {
      this.apply(await this.kv.update(this.key, JSON.stringify(value), rev), value);
    } catch (err) {
      // Taken over (we were slower than claimStaleMs) or NATS went away: the token is fresh,
      // this call uses it; the next ones go by what the bucket holds.
      const reason = isConflict(err) ? 'the claim was taken over by another daemon' : this.reason(err);
      this.logger?.warn({ reason }, 'could not share the new access token');
      this.known = value;
    }
    return r.accessToken;
  }

  private async failed(rev: number, claim: ClaimValue, err: unknown): Promise<string> {
    const e = err instanceof TokenError ? err : new TokenError('access token refresh failed', undefined, { cause: err });
    this._lastError = e;
    const failures = (claim.failures ?? 0) + 1;
    // No jitter: one fetch at a time for the whole service, nothing to spread.
    const backoff = backoffDelay(failures - 1, { baseMs: this.minBackoffMs, maxMs: this.maxBackoffMs, jitter: false });
    const now = this.now();
    const value: FailedValue = { kind: 'failed', by: this.member, at: now, retryAt: now + backoff, failures, error: e.message };
    if (e.errcode !== undefined) value.errcode = e.errcode;
    if (claim.prev !== undefined) value.prev = claim.prev;
    if (claim.invalid !== undefined) value.invalid = claim.invalid;
    try {
      this.apply(await this.kv.update(this.key, JSON.stringify(value), rev), value);
    } catch {
      // Claim taken over or NATS gone: the next get() finds out what the bucket holds.
    }
    const old = this.fallback(claim.prev);
    const fields = { errcode: e.errcode, failures, retryInMs: backoff, usingOldToken: old !== undefined, endpoint: this.endpoint };
    const failure = `${e.errcode ?? ''} ${e.message}`;
    if (failure !== this.loggedFailure) {
      this.loggedFailure = failure;
      this.logger?.error(fields, `access token refresh failed: ${e.message} (retried with backoff; logged again only if the error changes)`);
    } else {
      this.logger?.debug(fields, `access token refresh failed again: ${e.message}`);
    }
    if (old !== undefined) return old;
    throw e;
  }

  private fetch(force: boolean): Promise<TokenResult> {
    this._fetches++;
    return this.client.fetchToken(this.endpoint, this.appId, this.appSecret, force);
  }

  /** Starts the watch on the key (if not running) and reads its current value. */
  private ensureWatch(): Promise<void> {
    if (this.watcher !== undefined && this.seen !== undefined) return Promise.resolve();
    if (this.watching === undefined) this.watchTriedAt = Date.now();
    const p = (this.watching ??= this.startWatch().finally(() => {
      if (this.watching === p) this.watching = undefined;
    }));
    return p;
  }

  private async startWatch(): Promise<void> {
    let it: Awaited<ReturnType<KV['watch']>> | undefined;
    let entry: KvEntry | null;
    try {
      // Updates only, then a read: nothing written after the watch began is missed.
      it = await this.kv.watch({ key: this.key, include: KvWatchInclude.UpdatesOnly });
      entry = await this.kv.get(this.key);
    } catch (err) {
      it?.stop();
      throw this.storeError(err);
    }
    if (this.closed) {
      it.stop();
      throw new TokenError('shared access token source is closed');
    }
    this.watcher = it;
    this.applyEntry(entry);
    const watched = it;
    void (async () => {
      try {
        for await (const e of watched) this.applyEntry(e);
      } catch (err) {
        this.logger?.debug({ reason: this.reason(err) }, 'access token watch failed');
      } finally {
        if (this.watcher === watched) {
          this.watcher = undefined;
          if (!this.closed) this.logger?.info('access token watch ended; restarted when needed');
        }
      }
    })();
  }

  private async reload(): Promise<void> {
    let entry: KvEntry | null;
    try {
      entry = await this.kv.get(this.key);
    } catch (err) {
      throw this.storeError(err);
    }
    this.applyEntry(entry);
  }

  private applyEntry(e: KvEntry | null): void {
    if (e === null) {
      if (this.seen === undefined) this.seen = { revision: 0, value: undefined };
      return;
    }
    this.apply(e.revision, parseValue(e));
  }

  /** Records the key's value at `revision` unless a newer one was seen (the watch and our own writes race). */
  private apply(revision: number, value: SharedTokenValue | undefined): void {
    if (this.seen !== undefined && revision <= this.seen.revision) return;
    this.seen = { revision, value };
    if (value?.kind === 'token') {
      this.known = value;
      this._lastError = undefined;
      if (value.by !== this.member) this.logger?.debug({ by: value.by, revision }, 'access token refreshed by another daemon');
    } else if (value?.kind === 'invalid' && this.known !== undefined && this.rejected !== this.known.token && digestOf(this.known.token) === value.digest) {
      this.rejected = this.known.token;
      if (value.by !== this.member) this.logger?.debug({ by: value.by }, 'access token rejected by WeChat, reported by another daemon');
    }
    this.wake();
  }

  private waitForChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private reason(err: unknown): string {
    return err instanceof Error ? err.message : String(err);
  }

  private storeError(err: unknown): TokenError {
    if (err instanceof TokenError) return err;
    return new TokenError(`shared access token store (NATS) unreachable: ${this.reason(err)}`, undefined, { cause: err });
  }
}
