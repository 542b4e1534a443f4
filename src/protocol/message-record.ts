/**
 * The message ledger's vocabulary: what the daemon knows about every message it accepted, keyed
 * by its msgid — the client's `<msgid>`, or the id the daemon assigned, which is also the
 * `client_msg_id` sent to WeChat. Part of the protocol because the `query` command answers with
 * a MessageRecord as JSON; the ledger (src/ledger/), the control socket, the client and the CLI
 * (`mega <name> msg show|list`) all use these types.
 */

/**
 * - `queued`: accepted and durable in the queue, not sent yet (also while waiting for a retry
 *   or held by a pause);
 * - `sent`: WeChat accepted it (errcode 0), no receipt yet;
 * - `delivered`, `failed_user_block`, `failed_system`: WeChat's TEMPLATESENDJOBFINISH receipt;
 * - `rejected`: WeChat refused it with a permanent errcode (a Send's client got the 400);
 * - `dead`: written to the dead-letter log (a failed Push, or a Send nobody waited for).
 */
export type MessageState = 'queued' | 'sent' | 'delivered' | 'failed_user_block' | 'failed_system' | 'rejected' | 'dead';

export const MESSAGE_STATES: readonly MessageState[] = ['queued', 'sent', 'delivered', 'failed_user_block', 'failed_system', 'rejected', 'dead'];

/** States after which nothing but a receipt can change the record. */
export const FINAL_STATES: readonly MessageState[] = ['delivered', 'failed_user_block', 'failed_system', 'rejected', 'dead'];

/** One message as the ledger records it; times are ms since the epoch. */
export interface MessageRecord {
  msgid: string;
  openid: string;
  /** The template key. */
  key: string;
  /** `push` or `send`. */
  kind: 'push' | 'send';
  state: MessageState;
  /** Calls made to WeChat for it so far. */
  attempts: number;
  /** WeChat's own msgid from its answer, once it accepted the message (what receipts carry). */
  wechatMsgid: string | null;
  errcode: number | null;
  errmsg: string | null;
  queuedAt: number;
  sentAt: number | null;
  /** When it reached a final state. */
  finalAt: number | null;
  /**
   * The openid's latest subscription status per template id (subscribe popup and settings
   * events, newest first), on `msg show` and `query` when the ledger has any. For every template
   * of the openid: the ledger keeps a message's template key, not its WeChat template id.
   */
  subscriptions?: SubscriptionStatus[];
}

/** A user's latest answer for one subscribe template, from WeChat's subscribe events. */
export interface SubscriptionStatus {
  /** WeChat's template id. */
  templateId: string;
  status: 'accept' | 'reject';
  /** `subscribe_msg_popup_event` or `subscribe_msg_change_event`. */
  event: string;
  /** When the daemon got it (ms since the epoch). */
  at: number;
}

/** `mega <name> msg list` and its control request. */
export interface MessageFilter {
  openid?: string;
  state?: MessageState;
  /** Only messages queued at or after this time (ms since the epoch). */
  since?: number;
  /** @defaultValue 50 */
  limit?: number;
}

/** What the query side needs of the ledger. */
export interface LedgerReader {
  get(msgid: string): Promise<MessageRecord | undefined>;
  list(filter: MessageFilter): Promise<MessageRecord[]>;
}
