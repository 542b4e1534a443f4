/**
 * What the webhook sends for one message: its ledger record in a final state, plus an `id` that
 * names the fact (this message reached this state at this time), so a receiver can drop the
 * repeats that at-least-once delivery brings.
 */

import { FINAL_STATES, type MessageRecord, type MessageState } from '../protocol/index.js';
import { WebhookArgumentError } from '../errors.js';

/** The states a webhook event can carry: the final ones. */
export type WebhookEventState = Extract<MessageState, 'delivered' | 'failed_user_block' | 'failed_system' | 'rejected' | 'dead'>;

/** One element of the body's `events` array. Times are ms since the epoch. */
export interface WebhookEvent {
  /**
   * `${msgid}:${state}:${finalAt}`: the same for every delivery of the same fact, also when the
   * ledger replays it after a crash and it is enqueued again. The dedup key of a receiver.
   */
  id: string;
  msgid: string;
  openid: string;
  /** The template key. */
  key: string;
  kind: 'push' | 'send';
  state: WebhookEventState;
  attempts: number;
  wechatMsgid: string | null;
  errcode: number | null;
  errmsg: string | null;
  queuedAt: number;
  sentAt: number | null;
  finalAt: number;
}

/** The body of every request: `{"events":[...]}`, oldest first. */
export interface WebhookBody {
  events: WebhookEvent[];
}

/** The dedup id of the fact `record` states. */
export function webhookEventId(record: Pick<MessageRecord, 'msgid' | 'state' | 'finalAt'>): string {
  return `${record.msgid}:${record.state}:${String(record.finalAt)}`;
}

/**
 * The event for `record`, with only the fields of a MessageRecord (extra properties of the object
 * are not sent). Throws WebhookArgumentError when it is not a final record: the id needs a msgid,
 * a final state and its time. `where` names the record in the message (e.g. `records[3]`).
 */
export function toWebhookEvent(record: MessageRecord, where = 'record'): WebhookEvent {
  if (record === null || typeof record !== 'object') throw new WebhookArgumentError(`${where} must be a MessageRecord object`);
  if (typeof record.msgid !== 'string' || record.msgid === '') throw new WebhookArgumentError(`${where}.msgid must be a non-empty string`);
  if (!FINAL_STATES.includes(record.state)) {
    throw new WebhookArgumentError(`${where}.state must be a final state (${FINAL_STATES.join(', ')}), got ${JSON.stringify(String(record.state))}`);
  }
  if (typeof record.finalAt !== 'number' || !Number.isFinite(record.finalAt)) {
    throw new WebhookArgumentError(`${where}.finalAt must be a number (ms since the epoch) for a final state`);
  }
  return {
    id: webhookEventId(record),
    msgid: record.msgid,
    openid: record.openid,
    key: record.key,
    kind: record.kind,
    state: record.state as WebhookEventState,
    attempts: record.attempts,
    wechatMsgid: record.wechatMsgid,
    errcode: record.errcode,
    errmsg: record.errmsg,
    queuedAt: record.queuedAt,
    sentAt: record.sentAt,
    finalAt: record.finalAt,
  };
}
