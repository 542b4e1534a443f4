/** What a MegaClient hands back: results, WeChat's answer inside them, and its events. */

import { MESSAGE_STATES, ResultCode, type MessageRecord, type MessageState, type Result } from '../protocol/index.js';

/** WeChat's answer, carried in the message of a Send result. */
export interface MegaWechatAnswer {
  errcode: number;
  errmsg: string;
  /** WeChat's message id (when accepted). */
  msgid?: number | string;
  /** Added by the daemon when WeChat refused the message. */
  openid?: string;
}

/** The daemon's answer. A non-200 code is an answer too: the promise resolves with it. */
export interface MegaResult {
  /** 200 ok, 400 bad request or WeChat's refusal, 401, 413, 500, 503 (see {@link ResultCode}). */
  code: number;
  /** `code === 200`. */
  ok: boolean;
  /** The result's message as text; empty for a successful Push or TSet. */
  message: string;
  /** The message parsed, when it is WeChat's JSON (Send results). */
  wechat?: MegaWechatAnswer;
}

/** The events a MegaClient emits. */
export interface MegaClientEvents {
  /** A connection is ready (connected, TLS done, auth accepted). Emitted again after each reconnection. */
  connect: [];
  /** A ready connection was lost; `reason` says why when known. */
  disconnect: [reason: Error | undefined];
  /**
   * A connection attempt failed, the connection failed, or the server sent something undecodable.
   * Emitted only when there is a listener (an unhandled 'error' never crashes the process); the
   * requests concerned are rejected anyway.
   */
  error: [err: Error];
}

export type RequestKind = 'push' | 'send' | 'tset' | 'query';

export function toMegaResult(kind: RequestKind, result: Result): MegaResult {
  const message = result.message.toString('utf8');
  const out: MegaResult = { code: result.code, ok: result.code === ResultCode.OK, message };
  if (kind === 'send') {
    const wechat = parseWechat(message);
    if (wechat) out.wechat = wechat;
  }
  return out;
}

/** `text` parsed, when it is a JSON object; undefined for anything else (the daemon's text messages included). */
function jsonObject(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** WeChat's JSON answer, when `message` is one (an object with a numeric errcode). */
export function parseWechat(message: string): MegaWechatAnswer | undefined {
  if (!message.startsWith('{')) return undefined;
  const v = jsonObject(message);
  if (v === undefined || typeof v.errcode !== 'number') return undefined;
  const out: MegaWechatAnswer = { errcode: v.errcode, errmsg: typeof v.errmsg === 'string' ? v.errmsg : String(v.errmsg ?? '') };
  if (typeof v.msgid === 'number' || typeof v.msgid === 'string') out.msgid = v.msgid;
  if (typeof v.openid === 'string') out.openid = v.openid;
  return out;
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const intOrNull = (v: unknown): boolean => v === null || isInt(v);
const textOrNull = (v: unknown): boolean => v === null || typeof v === 'string';

/**
 * The message record of a `query` answer (200), checked member by member, with only the members
 * a MessageRecord has; undefined when the text is not one.
 */
export function parseMessageRecord(message: string): MessageRecord | undefined {
  const v = jsonObject(message);
  if (v === undefined) return undefined;
  const ok =
    typeof v.msgid === 'string' &&
    typeof v.openid === 'string' &&
    typeof v.key === 'string' &&
    (v.kind === 'push' || v.kind === 'send') &&
    MESSAGE_STATES.includes(v.state as MessageState) &&
    isInt(v.attempts) &&
    textOrNull(v.wechatMsgid) &&
    intOrNull(v.errcode) &&
    textOrNull(v.errmsg) &&
    isInt(v.queuedAt) &&
    intOrNull(v.sentAt) &&
    intOrNull(v.finalAt);
  if (!ok) return undefined;
  return {
    msgid: v.msgid as string,
    openid: v.openid as string,
    key: v.key as string,
    kind: v.kind as MessageRecord['kind'],
    state: v.state as MessageState,
    attempts: v.attempts as number,
    wechatMsgid: v.wechatMsgid as string | null,
    errcode: v.errcode as number | null,
    errmsg: v.errmsg as string | null,
    queuedAt: v.queuedAt as number,
    sentAt: v.sentAt as number | null,
    finalAt: v.finalAt as number | null,
  };
}
