/**
 * What became of one WeChat call, as a task worker reports it to the dispatcher.
 * The worker only classifies; every decision that needs shared state (token refresh,
 * retry timing, pausing on quota, acknowledging the queue) is taken on the main thread.
 */
export enum OutcomeKind {
  /** errcode 0: delivered. */
  Ok = 'ok',
  /** WeChat refused the message for good (or the job can never be rendered). */
  Failed = 'failed',
  /** Worth another attempt later: errcode -1, HTTP 5xx, timeout, connection error. */
  Retry = 'retry',
  /** The access token used was rejected (40001 / 40014 / 42001). */
  TokenRejected = 'token',
  /** 45009: the account's daily quota is used up. */
  Quota = 'quota',
}

export interface JobOutcome {
  id: number;
  kind: OutcomeKind;
  /** WeChat's errcode, when WeChat answered. */
  errcode?: number;
  errmsg?: string;
  /** WeChat's JSON exactly as received (Send replies carry it). */
  raw?: string;
  /** For TokenRejected: the token that failed, for compare-and-expire. */
  token?: string;
  /** For transport failures: what went wrong, without secrets. */
  reason?: string;
  openid: string;
  key: string;
  /** Reply key of a Send job waiting on this process. */
  replyKey?: string;
}

const TOKEN_ERRCODES = new Set([40001, 40014, 42001]);
const RETRY_ERRCODES = new Set([-1]);
export const QUOTA_ERRCODE = 45009;

export function classifyErrcode(errcode: number): OutcomeKind {
  if (errcode === 0) return OutcomeKind.Ok;
  if (TOKEN_ERRCODES.has(errcode)) return OutcomeKind.TokenRejected;
  if (RETRY_ERRCODES.has(errcode)) return OutcomeKind.Retry;
  if (errcode === QUOTA_ERRCODE) return OutcomeKind.Quota;
  return OutcomeKind.Failed;
}
