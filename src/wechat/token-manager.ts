/**
 * TokenManager: the one access-token cache of the daemon (lives in the main thread; worker
 * threads ask it by message).
 *
 * - `get()` answers from the cache until `marginSeconds` before expiry; then ONE refresh runs and
 *   every concurrent caller waits for it (single flight), so there is never more than one token
 *   request per expiry, whatever the number of workers.
 * - If a refresh fails while the cached token is still valid (inside the margin), callers get
 *   the old token and the failure is logged; otherwise they are rejected with the TokenError.
 * - Backoff after a failure: for `minBackoffMs` (1 s) after the first failed refresh, doubling per
 *   consecutive failure up to `maxBackoffMs` (30 s), `get()` does not call the endpoint again: it
 *   rejects at once with the last TokenError (or returns the still-valid old token). The first
 *   `get()` after the window tries again. A success resets the backoff. So a bad secret or an IP
 *   missing from the whitelist costs at most one token request per backoff window.
 * - Logging: a failure is logged as an error once, and again only when the error changes
 *   (another errcode or message); the retries that fail the same way are debug lines. The first
 *   success after failures is logged once as a recovery. A bad secret thus leaves two lines in
 *   the log, not one every backoff window.
 * - `invalidate(token)` is compare-and-expire: it drops the cached token only if it is still
 *   `token`, so late reports about an old token never discard a newer one. If the endpoint then
 *   hands back the very token just invalidated (stable_token returns the current token while it
 *   is valid), the manager asks once more with `force_refresh`.
 * - Nothing here ever logs or throws the secret or a token.
 */

import { backoffDelay } from '../backoff.js';
import type { Logger } from 'pino';
import { TokenError } from '../errors.js';
import type { WechatClient } from './client.js';

export interface TokenManagerOptions {
  client: WechatClient;
  appId: string;
  appSecret: string;
  /** `stable` = POST /cgi-bin/stable_token, `token` = GET /cgi-bin/token. @defaultValue 'stable' */
  endpoint?: 'stable' | 'token';
  /** Refresh this long before expiry (capped at half the token's lifetime). @defaultValue 300 */
  marginSeconds?: number;
  /** Clock in ms (tests inject one). @defaultValue Date.now */
  now?: () => number;
  logger?: Logger;
  /** First backoff window after a failed refresh. @defaultValue 1000 */
  minBackoffMs?: number;
  /** Largest backoff window. @defaultValue 30000 */
  maxBackoffMs?: number;
}

/** TokenManagerOptions checked, with their defaults: shared by TokenManager and cluster/'s SharedTokenSource. */
export function resolveTokenOptions(o: TokenManagerOptions, owner: string) {
  if (typeof o.appId !== 'string' || o.appId === '') throw new TypeError(`${owner} option appId must be a non-empty string`);
  if (typeof o.appSecret !== 'string' || o.appSecret === '') throw new TypeError(`${owner} option appSecret must be a non-empty string`);
  const endpoint = o.endpoint ?? 'stable';
  if (endpoint !== 'stable' && endpoint !== 'token') throw new TypeError(`${owner} option endpoint must be 'stable' or 'token'`);
  const margin = o.marginSeconds ?? 300;
  if (typeof margin !== 'number' || !Number.isFinite(margin) || margin < 0) throw new TypeError(`${owner} option marginSeconds must be a non-negative number`);
  const minBackoffMs = o.minBackoffMs ?? 1000;
  const maxBackoffMs = o.maxBackoffMs ?? 30_000;
  if (!(minBackoffMs >= 0) || !(maxBackoffMs >= minBackoffMs)) throw new TypeError(`${owner} options need 0 <= minBackoffMs <= maxBackoffMs`);
  return {
    client: o.client,
    appId: o.appId,
    appSecret: o.appSecret,
    endpoint: endpoint as 'stable' | 'token',
    marginMs: margin * 1000,
    now: o.now ?? Date.now,
    logger: o.logger,
    minBackoffMs,
    maxBackoffMs,
  };
}

export class TokenManager {
  private readonly client: WechatClient;
  private readonly appId: string;
  private readonly appSecret: string;
  private readonly endpoint: 'stable' | 'token';
  private readonly marginMs: number;
  private readonly now: () => number;
  private readonly logger: Logger | undefined;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  private token: string | undefined;
  private obtainedAt = 0;
  private expiresAt = 0;
  private refreshAt = 0;
  private inflight: Promise<string> | undefined;
  private lastInvalidated: string | undefined;
  private failures = 0;
  private retryAfter = 0;
  private _fetches = 0;
  private _lastError: TokenError | undefined;
  /** The failure last logged as an error since the last success (errcode and message). */
  private loggedFailure: string | undefined;

  constructor(o: TokenManagerOptions) {
    const r = resolveTokenOptions(o, 'TokenManager');
    this.client = r.client;
    this.appId = r.appId;
    this.appSecret = r.appSecret;
    this.endpoint = r.endpoint;
    this.marginMs = r.marginMs;
    this.now = r.now;
    this.logger = r.logger;
    this.minBackoffMs = r.minBackoffMs;
    this.maxBackoffMs = r.maxBackoffMs;
  }

  /** Token requests made so far (successful or not). */
  get fetches(): number {
    return this._fetches;
  }

  /** The error of the last failed refresh; cleared by a successful one. */
  get lastError(): TokenError | undefined {
    return this._lastError;
  }

  /** How long ago the cached token was obtained; undefined when none is cached. */
  get tokenAgeMs(): number | undefined {
    return this.token === undefined ? undefined : this.now() - this.obtainedAt;
  }

  /** When the cached token expires (ms since the epoch: obtained + expires_in); undefined when none is cached. */
  get tokenExpiresAt(): number | undefined {
    return this.token === undefined ? undefined : this.expiresAt;
  }

  /** A valid access token: the cached one, or the result of the (single) refresh in progress. */
  get(): Promise<string> {
    const now = this.now();
    const token = this.token;
    if (token !== undefined && now < this.refreshAt) return Promise.resolve(token);
    if (this.inflight !== undefined) return this.inflight;
    if (now < this.retryAfter) {
      if (token !== undefined && now < this.expiresAt) return Promise.resolve(token);
      return Promise.reject(this._lastError ?? new TokenError('access token refresh is backing off'));
    }
    const p = this.refresh().finally(() => {
      if (this.inflight === p) this.inflight = undefined;
    });
    this.inflight = p;
    return p;
  }

  /**
   * Compare-and-expire: forget the cached token if it is still `token` (WeChat answered
   * 40001/40014/42001 with it). A no-op when the cache already moved on.
   */
  invalidate(token: string): void {
    if (this.token !== undefined && this.token === token) {
      this.token = undefined;
      this.expiresAt = 0;
      this.refreshAt = 0;
      this.lastInvalidated = token;
      this.logger?.info({ tokenAgeMs: this.now() - this.obtainedAt }, 'access token invalidated by WeChat answer');
    }
  }

  private async refresh(): Promise<string> {
    const startedAt = this.now();
    try {
      let r = await this.fetch(false);
      if (this.lastInvalidated !== undefined && r.accessToken === this.lastInvalidated) {
        // The endpoint handed back the token WeChat just rejected: force a new one (once).
        r = await this.fetch(true);
      }
      this.store(r.accessToken, r.expiresIn, startedAt);
      const failedAttempts = this.failures;
      this.failures = 0;
      this.retryAfter = 0;
      this._lastError = undefined;
      this.loggedFailure = undefined;
      this.lastInvalidated = undefined;
      const fields = { expiresIn: r.expiresIn, endpoint: this.endpoint, fetches: this._fetches };
      if (failedAttempts > 0) this.logger?.info({ ...fields, failedAttempts }, `access token obtained again after ${failedAttempts} failed attempt(s)`);
      else this.logger?.info(fields, 'access token refreshed');
      return r.accessToken;
    } catch (err) {
      const e = err instanceof TokenError ? err : new TokenError('access token refresh failed', undefined, { cause: err });
      this._lastError = e;
      this.failures++;
      // No jitter: one refresh at a time per daemon, nothing to spread.
      const backoff = backoffDelay(this.failures - 1, { baseMs: this.minBackoffMs, maxMs: this.maxBackoffMs, jitter: false });
      this.retryAfter = this.now() + backoff;
      const now = this.now();
      const stillValid = this.token !== undefined && now < this.expiresAt;
      const fields = { errcode: e.errcode, failures: this.failures, retryInMs: backoff, usingOldToken: stillValid, endpoint: this.endpoint };
      const failure = `${e.errcode ?? ''} ${e.message}`;
      if (failure !== this.loggedFailure) {
        this.loggedFailure = failure;
        this.logger?.error(fields, `access token refresh failed: ${e.message} (retried with backoff; logged again only if the error changes)`);
      } else {
        this.logger?.debug(fields, `access token refresh failed again: ${e.message}`);
      }
      if (stillValid) return this.token as string;
      throw e;
    }
  }

  private fetch(force: boolean): ReturnType<WechatClient['fetchToken']> {
    this._fetches++;
    return this.client.fetchToken(this.endpoint, this.appId, this.appSecret, force);
  }

  private store(token: string, expiresIn: number, startedAt: number): void {
    const lifeMs = expiresIn * 1000;
    // Never refresh earlier than half-way through the token's life (guards against a short
    // expires_in re-triggering a refresh at once).
    const margin = Math.min(this.marginMs, lifeMs / 2);
    this.token = token;
    this.obtainedAt = startedAt;
    this.expiresAt = startedAt + lifeMs;
    this.refreshAt = this.expiresAt - margin;
  }
}
