/**
 * The one exponential backoff of the project: the dispatcher's retry of a job (`[wechat]
 * retry_base_ms`), MegaClient's reconnection, the task runner's pause after a lost connection,
 * and the token manager's wait after a failed refresh all compute their delays here.
 */

export interface BackoffOptions {
  /** The delay of attempt 0, in ms. */
  baseMs: number;
  /** No delay is longer than this, in ms. */
  maxMs: number;
  /**
   * "Equal jitter": the delay is drawn between half and all of the exponential value, so that
   * many failures at the same moment (a lost connection fails a whole window) do not all come
   * back at the same moment. Off where a single actor waits and nothing can pile up.
   * @defaultValue true
   */
  jitter?: boolean;
}

/**
 * The delay before retry number `attempt` (0 for the first retry): `baseMs × 2^attempt`,
 * capped at `maxMs`, then jittered. Never below 0; attempts past 30 count as 30.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.min(options.maxMs, options.baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  if (options.jitter === false) return exp;
  return Math.round(exp / 2 + (random() * exp) / 2);
}
