import { ERRCODE, isTokenErrcode } from '../wechat/errcodes.js';

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
  /** The WeChat API could not be reached at all (connection refused or dropped). */
  Unreachable = 'unreachable',
}

/**
 * errcodes the daemon gives a job that never reached WeChat because it cannot be built
 * (docs/PROTOCOL.md). Negative like WeChat's -1 "system error" but never equal to it, so a
 * dead letter or a Send answer reads like WeChat's own `{errcode, errmsg}`; both are permanent.
 */
export const DaemonErrcode = {
  /** The job's template key is no longer cached: deleted from the table and dropped by TSet, or lost across a restart. */
  TEMPLATE_NOT_FOUND: -2,
  /** The template could not be filled with the job's variables (see TemplateRenderError). */
  RENDER_FAILED: -3,
} as const;

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
  /** The job's openid and template key: on every outcome but a delivered Push. */
  openid?: string;
  key?: string;
  /** Reply key of a Send job waiting on this process. */
  replyKey?: string;
  /** The job's client_msg_id (its msgid in the ledger): on every outcome the worker reports. */
  msgid?: string;
  /** WeChat's msgid from an errcode 0 answer, its exact digits (they may exceed 2^53). */
  wechatMsgid?: string;
  /** How long the WeChat call took, ms, timed in the worker thread; absent when no call was made. */
  ms?: number;
}

const MSGID_RE = /"msgid"\s*:\s*"?(\d+)/;

/** WeChat's msgid in its answer, as written (a regex on the raw JSON: a number may not survive JSON.parse). */
export function wechatMsgidOf(raw: string): string | undefined {
  return MSGID_RE.exec(raw)?.[1];
}

/**
 * docs/RELIABILITY.md: 0 delivered; 40001/40014/42001 refresh the token and retry once; -1 retry with
 * backoff; 43117 (too frequent for this openid) retry that message later, with backoff;
 * 45009 stop dispatching and keep the job; anything else fails for good.
 */
export function classifyErrcode(errcode: number): OutcomeKind {
  if (errcode === ERRCODE.OK) return OutcomeKind.Ok;
  if (isTokenErrcode(errcode)) return OutcomeKind.TokenRejected;
  if (errcode === ERRCODE.SYSTEM_ERROR || errcode === ERRCODE.TOO_FREQUENT_FOR_USER) return OutcomeKind.Retry;
  if (errcode === ERRCODE.DAILY_QUOTA_REACHED) return OutcomeKind.Quota;
  return OutcomeKind.Failed;
}
