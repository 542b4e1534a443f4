import type { MessageFilter, MessageRecord, MessageState, SubscriptionStatus } from '../protocol/message-record.js';

/**
 * One state change of one message, as the journal holds it and the store applies it: only the
 * fields the change knows. Applying a change is idempotent and changes of one message merge
 * into one (coalescing), so replaying a journal that the store already partly has is harmless.
 */
export interface LedgerChange {
  msgid: string;
  state: MessageState;
  openid?: string;
  key?: string;
  kind?: 'push' | 'send';
  /** Calls made to WeChat so far; merged with max(), never added, so a replay cannot inflate it. */
  attempts?: number;
  wechatMsgid?: string;
  errcode?: number;
  errmsg?: string;
  queuedAt?: number;
  sentAt?: number;
  finalAt?: number;
  /** When the change happened (ms since the epoch): the row's `updated_at`, what retention looks at. */
  at: number;
}

/** What a TEMPLATESENDJOBFINISH receipt can say about a message. */
export type ReceiptState = 'delivered' | 'failed_user_block' | 'failed_system';

/**
 * A delivery receipt as the journal holds it: keyed by WeChat's msgid (all a receipt knows),
 * the message it is about found by the store. Its first member is `receipt`, never `msgid`, so
 * a scan for a message's changes never mistakes one for a change.
 */
export interface LedgerReceipt {
  /** WeChat's MsgID. */
  receipt: string;
  state: ReceiptState;
  /** WeChat's `Status`, as sent (kept as errmsg of a failure). */
  status: string;
  openid?: string;
  /** When it arrived (ms): the record's final time. */
  at: number;
}

/** WeChat's documented `Status` values, and any other `failed...` as a system failure. */
export function receiptStateOf(status: string): ReceiptState {
  if (status === 'success') return 'delivered';
  if (/user\s*block/i.test(status)) return 'failed_user_block';
  return 'failed_system';
}

/**
 * What a `subscribe_msg_sent_event` says about a send: ErrorCode 0 is a delivery, any other an
 * asynchronous failure, a user's block when ErrorStatus says so (WeChat's own wording, as in a
 * TEMPLATESENDJOBFINISH Status), a system failure otherwise.
 */
export function subscribeSentStateOf(errorCode: string, errorStatus: string): ReceiptState {
  if (/^0*$/.test(errorCode.trim()) && errorCode.trim() !== '') return 'delivered';
  return /block/i.test(errorStatus) ? 'failed_user_block' : 'failed_system';
}

/** The Status a subscribe send's receipt keeps (a failure's errmsg): ErrorStatus with its ErrorCode. */
export function subscribeSentStatus(errorCode: string, errorStatus: string): string {
  if (subscribeSentStateOf(errorCode, errorStatus) === 'delivered') return errorStatus || 'success';
  return `${errorStatus || 'failed'} (ErrorCode ${errorCode.trim()})`;
}

/** The subscribe events that set a user's subscription to a template. */
export const SUBSCRIPTION_EVENTS = ['subscribe_msg_popup_event', 'subscribe_msg_change_event'] as const;
export type SubscriptionEvent = (typeof SUBSCRIPTION_EVENTS)[number];

/**
 * A user's answer for one template (a subscribe popup, or a change in the settings) as the
 * journal holds it: its first member is `subscription` (the openid), so a scan for a message's
 * changes or a receipt never mistakes one for its own.
 */
export interface LedgerSubscription {
  /** The openid. */
  subscription: string;
  templateId: string;
  status: SubscriptionStatus['status'];
  event: SubscriptionEvent;
  /** When it arrived (ms). */
  at: number;
}

/** A subscription in the journal's member order (`subscription` first: see LedgerSubscription). */
export function ledgerSubscription(openid: string, templateId: string, status: 'accept' | 'reject', event: SubscriptionEvent, at: number): LedgerSubscription {
  return { subscription: openid, templateId, status, event, at };
}

/**
 * The latest status per template id of what is given (the stored rows, then the journal's, in
 * the order they happened): a later or equally late one wins, so the journal's own order decides
 * between two of one millisecond. Newest first.
 */
export function latestSubscriptions(subs: Iterable<LedgerSubscription>): SubscriptionStatus[] {
  const by = new Map<string, LedgerSubscription>();
  for (const s of subs) {
    const old = by.get(s.templateId);
    if (!old || s.at >= old.at) by.set(s.templateId, s);
  }
  return [...by.values()]
    .sort((a, b) => b.at - a.at || (a.templateId < b.templateId ? -1 : 1))
    .map((s) => ({ templateId: s.templateId, status: s.status, event: s.event, at: s.at }));
}

/** A record with a receipt applied: the final state, and WeChat's Status as errmsg of a failure. */
export function applyReceipt(record: MessageRecord, r: LedgerReceipt): MessageRecord {
  // the same receipt again (WeChat's retry after a restart): the first one's time stands
  if (record.state === r.state && record.finalAt !== null) return record;
  return { ...record, state: r.state, finalAt: r.at, errmsg: r.state === 'delivered' ? record.errmsg : r.status };
}

/** WeChat's errmsg is short; a daemon reason (a render error) is cut so a row stays small. */
export const ERRMSG_MAX = 512;

/**
 * The `queued` of an accepted message (attempts 0), noted after its append resolved, never
 * takes a message back from a later state it reached meanwhile (or a replay found first).
 */
export function keepsState(newer: LedgerChange, olderState: string, olderWechatMsgid?: string | null): boolean {
  if (newer.state === 'queued' && newer.attempts === 0 && olderState !== 'queued') return true;
  // a receipt applied first (it raced the send's answer, or a replay re-applies the send): the
  // send's `sent` never takes the message back from what WeChat later reported about that send
  return newer.state === 'sent' && RECEIPT_STATES.has(olderState) && newer.wechatMsgid !== undefined && newer.wechatMsgid === olderWechatMsgid;
}

const RECEIPT_STATES: ReadonlySet<string> = new Set(['delivered', 'failed_user_block', 'failed_system']);

/**
 * `newer` applied over `older`: every field it knows wins, attempts keep the larger count.
 * Field by field, into an object of one fixed shape: the store thread merges every change it
 * reads back, and a generic key loop made that the costliest step of a write.
 */
export function mergeChange(older: LedgerChange, newer: LedgerChange): LedgerChange {
  return {
    msgid: older.msgid,
    state: keepsState(newer, older.state, older.wechatMsgid) ? older.state : newer.state,
    openid: newer.openid ?? older.openid,
    key: newer.key ?? older.key,
    kind: newer.kind ?? older.kind,
    attempts:
      older.attempts === undefined ? newer.attempts : newer.attempts === undefined ? older.attempts : Math.max(older.attempts, newer.attempts),
    wechatMsgid: newer.wechatMsgid ?? older.wechatMsgid,
    errcode: newer.errcode ?? older.errcode,
    errmsg: newer.errmsg ?? older.errmsg,
    queuedAt: newer.queuedAt ?? older.queuedAt,
    sentAt: newer.sentAt ?? older.sentAt,
    finalAt: newer.finalAt ?? older.finalAt,
    at: Math.max(newer.at, older.at),
  };
}

/**
 * mergeChange() into `older` itself: for the store's thread, which owns the changes it parses
 * and would otherwise make one more object per change it reads back.
 */
export function mergeInto(older: LedgerChange, newer: LedgerChange): void {
  if (!keepsState(newer, older.state, older.wechatMsgid)) older.state = newer.state;
  older.openid = newer.openid ?? older.openid;
  older.key = newer.key ?? older.key;
  older.kind = newer.kind ?? older.kind;
  if (older.attempts === undefined || (newer.attempts !== undefined && newer.attempts > older.attempts)) older.attempts = newer.attempts;
  older.wechatMsgid = newer.wechatMsgid ?? older.wechatMsgid;
  older.errcode = newer.errcode ?? older.errcode;
  older.errmsg = newer.errmsg ?? older.errmsg;
  older.queuedAt = newer.queuedAt ?? older.queuedAt;
  older.sentAt = newer.sentAt ?? older.sentAt;
  older.finalAt = newer.finalAt ?? older.finalAt;
  if (newer.at > older.at) older.at = newer.at;
}

/** A record from a change alone (nothing stored yet): what it does not know is empty. */
export function recordOf(c: LedgerChange): MessageRecord {
  return {
    msgid: c.msgid,
    openid: c.openid ?? '',
    key: c.key ?? '',
    kind: c.kind ?? 'push',
    state: c.state,
    attempts: c.attempts ?? 0,
    wechatMsgid: c.wechatMsgid ?? null,
    errcode: c.errcode ?? null,
    errmsg: c.errmsg ?? null,
    queuedAt: c.queuedAt ?? 0,
    sentAt: c.sentAt ?? null,
    finalAt: c.finalAt ?? null,
  };
}

/** A stored record with changes not written yet applied over it. */
export function applyChange(record: MessageRecord | undefined, c: LedgerChange): MessageRecord {
  if (!record) return recordOf(c);
  if (c.state === 'sent' && keepsState(c, record.state, record.wechatMsgid)) return { ...record, attempts: Math.max(record.attempts, c.attempts ?? 0) };
  return {
    msgid: record.msgid,
    openid: c.openid || record.openid,
    key: c.key || record.key,
    kind: c.kind ?? record.kind,
    state: keepsState(c, record.state, record.wechatMsgid) ? record.state : c.state,
    attempts: Math.max(record.attempts, c.attempts ?? 0),
    wechatMsgid: c.wechatMsgid ?? record.wechatMsgid,
    errcode: c.errcode ?? record.errcode,
    errmsg: c.errmsg ?? record.errmsg,
    queuedAt: c.queuedAt || record.queuedAt,
    sentAt: c.sentAt ?? record.sentAt,
    finalAt: c.finalAt ?? record.finalAt,
  };
}

/** Changes merged per message, in the order given (the journal's). */
export function coalesce(changes: Iterable<LedgerChange>, into = new Map<string, LedgerChange>()): Map<string, LedgerChange> {
  for (const c of changes) {
    const old = into.get(c.msgid);
    into.set(c.msgid, old ? mergeChange(old, c) : c);
  }
  return into;
}

/** Receipts by WeChat's msgid, each list in the order given. */
export function receiptsByWechatMsgid(receipts: Iterable<LedgerReceipt>, into = new Map<string, LedgerReceipt[]>()): Map<string, LedgerReceipt[]> {
  for (const r of receipts) {
    const all = into.get(r.receipt);
    if (all) all.push(r);
    else into.set(r.receipt, [r]);
  }
  return into;
}

/** A record with the receipts of its WeChat msgid applied over it, in order. */
export function withReceipts(record: MessageRecord, byWechatMsgid: ReadonlyMap<string, readonly LedgerReceipt[]>): MessageRecord {
  let r = record;
  for (const receipt of (r.wechatMsgid === null ? undefined : byWechatMsgid.get(r.wechatMsgid)) ?? []) r = applyReceipt(r, receipt);
  return r;
}

/** Whether a record fits a `msg list` filter (its limit aside). */
export function fitsFilter(r: MessageRecord, filter: MessageFilter): boolean {
  return (
    (filter.openid === undefined || r.openid === filter.openid) &&
    (filter.state === undefined || r.state === filter.state) &&
    (filter.since === undefined || r.queuedAt >= filter.since)
  );
}
