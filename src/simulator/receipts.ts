/**
 * The simulator's side of WeChat's server-URL protocol: after it accepted a template message,
 * WeChat POSTs a `TEMPLATESENDJOBFINISH` event (the delivery receipt) to the account's server URL,
 * signed, in safe mode encrypted, and retried with the same timestamp, nonce and body when it gets
 * no answer in time. The pusher does the same, records every push exactly (the record the
 * daemon's ledger is compared against), and offers the misbehaviours a receiver must survive:
 * bad signatures, replays, duplicates, unknown MsgIDs, and arbitrary signed requests. For the
 * subscribe endpoints it pushes `subscribe_msg_sent_event` after an accepted send, and on request
 * the user's `subscribe_msg_popup_event` and `subscribe_msg_change_event`.
 * Formats: docs/CALLBACK.md; settings, endpoints and record: docs/SIMULATOR.md.
 */
import { randomInt } from 'node:crypto';
import { Agent, request } from 'undici';
import { callbackSignature, encryptCallbackMessage, messageSignature, parseEncodingAesKey } from '../wechat/callback-crypto.js';
import { isReceiptStatus, mergeReceiptsConfig, RECEIPT_STATUSES, type ReceiptsConfig, type ReceiptStatus } from './receipts-config.js';

/** A message the simulator accepted (errcode 0, not a duplicate), as the pusher needs it. */
export interface DeliveredMessage {
  msgid: number;
  openid: string;
  client_msg_id: string | null;
  /** When the simulator accepted it, ms since the epoch (the receipt's CreateTime). */
  acceptedAt: number;
}

export type ReceiptPushKind =
  | 'receipt'
  | 'bad-signature'
  | 'replay'
  | 'duplicate'
  | 'unknown-msgid'
  | 'raw'
  | 'subscribe-sent'
  | 'subscribe-popup'
  | 'subscribe-change';
/** `answered`: HTTP 200 with `success` or an empty body; `rejected`: any other answer; `failed`: no answer in any attempt. */
export type ReceiptOutcome = 'pending' | 'answered' | 'rejected' | 'failed' | 'cancelled';

export interface ReceiptAttempt {
  startedAt: number;
  endedAt: number | null;
  httpStatus: number | null;
  /** The answer's body (its first 4096 characters), or null without an answer. */
  answer: string | null;
  /** Why there was no answer (`no answer within N ms`, `ECONNREFUSED`, `cancelled`...), else null. */
  error: string | null;
}

/** One push, as sent and answered. Every attempt of it shares its timestamp, nonce and body. */
export interface ReceiptPush {
  /** Position in the record (0-based); `GET /_sim/receipts?since=index` starts there. */
  index: number;
  kind: ReceiptPushKind;
  /** `delivery`: pushed by itself after a send was accepted; `control`: asked for by a test. */
  trigger: 'delivery' | 'control';
  /** The body's MsgID; null for a raw push. */
  msgid: number | null;
  /** The `openid` query parameter (the touser); null when the push had none. */
  openid: string | null;
  /** The body's Status; null for a raw push. */
  status: ReceiptStatus | null;
  /** The client_msg_id of the send that got this msgid, when it had one. */
  client_msg_id: string | null;
  /** replay, duplicate: the index of the push they copy; else null. */
  of: number | null;
  /** Sent in safe mode (`encrypt_type=aes`, body wrapped in `Encrypt`). */
  encrypted: boolean;
  method: 'GET' | 'POST';
  /** The full URL requested, query included. */
  url: string;
  timestamp: string;
  nonce: string;
  /** The body exactly as sent ('' for a GET). */
  body: string;
  /** The plaintext XML before encryption (equal to `body` in plaintext mode); null for a GET. */
  xml: string | null;
  /** When the simulator accepted the message (its CreateTime); unknown-msgid: when pushed; duplicate: the original's; raw: null. */
  acceptedAt: number | null;
  /** When the first attempt started. */
  sentAt: number;
  attempts: ReceiptAttempt[];
  outcome: ReceiptOutcome;
  /** From the last attempt. */
  httpStatus: number | null;
  answer: string | null;
  error: string | null;
  finishedAt: number | null;
}

export interface ReceiptStats {
  /** Receipts waiting for their `delayMs`. */
  scheduled: number;
  /** Pushes started and not finished. */
  inFlight: number;
  /** Pushes started (= record entries). */
  pushed: number;
  answered: number;
  rejected: number;
  failed: number;
  cancelled: number;
  /** Attempts made, retries included. */
  attempts: number;
  /** Kind `receipt` pushes by the Status they carried. */
  byStatus: Record<ReceiptStatus, number>;
}

export interface PushReceiptInput {
  msgid: number;
  /** @defaultValue 'success' */
  status?: ReceiptStatus;
}

export interface BadSignatureInput {
  /** An accepted msgid. @defaultValue the last accepted message */
  msgid?: number;
  /** @defaultValue 'success' */
  status?: ReceiptStatus;
  /** Which signature is wrong; `msg_signature` needs safe mode. @defaultValue 'both' */
  which?: 'signature' | 'msg_signature' | 'both';
}

export interface ReplayInput {
  /** The push whose timestamp and nonce are reused. @defaultValue the last `receipt` push */
  of?: number;
  /** @defaultValue the MsgID of `of` */
  msgid?: number;
  /** @defaultValue the other outcome than `of`'s: `failed: system failed` after a success, else `success` */
  status?: ReceiptStatus;
  /** A plaintext XML body instead of a receipt. */
  xml?: string;
}

export interface DuplicateInput {
  /** The push to repeat byte for byte. @defaultValue the last `receipt` push */
  of?: number;
}

export interface UnknownMsgidInput {
  /** Must not be an accepted msgid. @defaultValue 9000000000 + a counter */
  msgid?: number;
  /** @defaultValue 'oSimulatorUnknownMsgid' */
  openid?: string;
  /** @defaultValue 'success' */
  status?: ReceiptStatus;
}

export interface RawPushInput {
  /** @defaultValue 'POST' */
  method?: 'GET' | 'POST';
  /** Query parameters added after signature, timestamp and nonce (same names replace them). */
  query?: Record<string, string>;
  /** Plaintext XML; encrypted when `encrypt`. Ignored for GET. @defaultValue '' */
  body?: string;
  /** Wrap the body in safe mode. @defaultValue true when an encodingAesKey is configured and the method is POST */
  encrypt?: boolean;
}

/** A user's choice for one template, as WeChat spells it in SubscribeStatusString. */
export type SubscribeStatus = 'accept' | 'reject';

export interface SubscribeChoice {
  templateId: string;
  status: SubscribeStatus;
}

export interface SubscribePopupInput {
  openid: string;
  /** One entry per template of the popup (WeChat's `List` elements). */
  list: SubscribeChoice[];
  /** 0: a mini program page; 1: an Official Account's H5 page; 2: an Official Account's text message. @defaultValue 0 */
  popupScene?: number;
}

export interface SubscribeChangeInput {
  openid: string;
  /** WeChat pushes only `reject` today. @defaultValue each entry's status 'reject' */
  list: { templateId: string; status?: SubscribeStatus }[];
}

const ANSWER_CHARS = 4096;
const UNKNOWN_MSGID_BASE = 9_000_000_000;

/** CDATA cannot hold `]]>`: split it across two sections, as WeChat's SDKs do. */
function cdata(text: string): string {
  return `<![CDATA[${text.replaceAll(']]>', ']]]]><![CDATA[>')}]]>`;
}

/** The plaintext TEMPLATESENDJOBFINISH event, element for element as WeChat sends it. */
export function receiptXml(toUserName: string, openid: string, createTime: number, msgid: number, status: ReceiptStatus): string {
  return (
    `<xml><ToUserName>${cdata(toUserName)}</ToUserName><FromUserName>${cdata(openid)}</FromUserName>` +
    `<CreateTime>${createTime}</CreateTime><MsgType>${cdata('event')}</MsgType>` +
    `<Event>${cdata('TEMPLATESENDJOBFINISH')}</Event><MsgID>${msgid}</MsgID><Status>${cdata(status)}</Status></xml>`
  );
}

/** The plaintext `subscribe_msg_sent_event` WeChat pushes after it delivered a subscribe message. */
export function subscribeSentXml(toUserName: string, openid: string, createTime: number, templateId: string, msgid: number): string {
  return (
    subscribeHead(toUserName, openid, createTime, 'subscribe_msg_sent_event') +
    `<SubscribeMsgSentEvent><List><TemplateId>${cdata(templateId)}</TemplateId><MsgID>${msgid}</MsgID>` +
    `<ErrorCode>0</ErrorCode><ErrorStatus>${cdata('success')}</ErrorStatus></List></SubscribeMsgSentEvent></xml>`
  );
}

/** The plaintext `subscribe_msg_popup_event`: what the user chose in a subscription popup. */
export function subscribePopupXml(toUserName: string, openid: string, createTime: number, list: SubscribeChoice[], popupScene: number): string {
  const items = list
    .map(
      (c) =>
        `<List><TemplateId>${cdata(c.templateId)}</TemplateId><SubscribeStatusString>${cdata(c.status)}</SubscribeStatusString>` +
        `<PopupScene>${popupScene}</PopupScene></List>`,
    )
    .join('');
  return `${subscribeHead(toUserName, openid, createTime, 'subscribe_msg_popup_event')}<SubscribeMsgPopupEvent>${items}</SubscribeMsgPopupEvent></xml>`;
}

/** The plaintext `subscribe_msg_change_event`: the user changed a subscription in the notification settings. */
export function subscribeChangeXml(toUserName: string, openid: string, createTime: number, list: SubscribeChoice[]): string {
  const items = list
    .map((c) => `<List><TemplateId>${cdata(c.templateId)}</TemplateId><SubscribeStatusString>${cdata(c.status)}</SubscribeStatusString></List>`)
    .join('');
  return `${subscribeHead(toUserName, openid, createTime, 'subscribe_msg_change_event')}<SubscribeMsgChangeEvent>${items}</SubscribeMsgChangeEvent></xml>`;
}

function subscribeHead(toUserName: string, openid: string, createTime: number, event: string): string {
  return (
    `<xml><ToUserName>${cdata(toUserName)}</ToUserName><FromUserName>${cdata(openid)}</FromUserName>` +
    `<CreateTime>${createTime}</CreateTime><MsgType>${cdata('event')}</MsgType><Event>${cdata(event)}</Event>`
  );
}

function checkChoices(list: unknown, defaultStatus: SubscribeStatus | undefined): SubscribeChoice[] {
  if (!Array.isArray(list) || list.length === 0) throw new TypeError('list must be a non-empty array of {templateId, status}');
  return list.map((e: unknown, i) => {
    const c = e as { templateId?: unknown; status?: unknown } | null;
    if (c === null || typeof c !== 'object' || typeof c.templateId !== 'string' || c.templateId === '') {
      throw new TypeError(`list[${i}].templateId must be a non-empty string`);
    }
    for (const k of Object.keys(c)) if (k !== 'templateId' && k !== 'status') throw new TypeError(`list[${i}] has an unknown field ${JSON.stringify(k)}`);
    const status = c.status ?? defaultStatus;
    if (status !== 'accept' && status !== 'reject') throw new TypeError(`list[${i}].status must be "accept" or "reject"`);
    return { templateId: c.templateId, status };
  });
}

function checkOpenid(v: unknown): string {
  if (typeof v !== 'string' || v === '') throw new TypeError('openid must be a non-empty string');
  return v;
}

/**
 * A deterministic [0, 1) generator (mulberry32): statuses drawn by share are reproducible from
 * the seed. The tests' randomised cases use it too (test/helpers/prng.ts).
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function statusOr(v: unknown, fallback: ReceiptStatus): ReceiptStatus {
  if (v === undefined) return fallback;
  if (!isReceiptStatus(v)) throw new TypeError(`status must be one of ${JSON.stringify(RECEIPT_STATUSES)}`);
  return v;
}

function describeError(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown }; message?: unknown } | null;
  if (typeof e?.cause?.code === 'string') return e.cause.code;
  if (typeof e?.code === 'string' && e.code !== 'UND_ERR_ABORTED') return e.code;
  return typeof e?.message === 'string' ? e.message : String(err);
}

/** What the record says about the message a push is about. */
interface Meta {
  msgid: number | null;
  openid: string | null;
  client_msg_id: string | null;
  acceptedAt: number | null;
}

const NO_META: Meta = { msgid: null, openid: null, client_msg_id: null, acceptedAt: null };

/** The wire form of one push, before it is sent. */
interface Wire {
  method: 'GET' | 'POST';
  url: string;
  timestamp: string;
  nonce: string;
  body: string;
  xml: string | null;
  encrypted: boolean;
}

interface Running {
  entry: ReceiptPush;
  cancelled: boolean;
  abort: AbortController | null;
  done: Promise<ReceiptPush>;
}


export class ReceiptPusher {
  private cfg: ReceiptsConfig;
  private rules: { re: RegExp; status: ReceiptStatus }[] = [];
  private rand: () => number;
  private record: ReceiptPush[] = [];
  private st: ReceiptStats = emptyStats();
  private readonly scheduled = new Set<NodeJS.Timeout>();
  private readonly running = new Set<Running>();
  private idleWaiters: (() => void)[] = [];
  private readonly agent = new Agent({ headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 4000 });
  /** Nonces never repeat in one simulator's life, resets included: a receiver's replay memory outlives our reset. */
  private nonceNext = randomInt(1_000_000_000, 2_000_000_000);
  private unknownNext = UNKNOWN_MSGID_BASE;
  private closed = false;

  constructor(
    private readonly appId: string,
    private readonly initial: Readonly<ReceiptsConfig>,
    /** The accepted message with this msgid, or the last accepted one when msgid is undefined. */
    private readonly lookup: (msgid?: number) => DeliveredMessage | undefined,
  ) {
    this.cfg = structuredClone(initial);
    this.rand = seededRandom(this.cfg.seed);
    this.compileRules();
  }

  /** The current settings; the token and the EncodingAESKey show as '[redacted]' when set. */
  config(): ReceiptsConfig {
    const c = structuredClone(this.cfg);
    c.token = '[redacted]';
    if (c.encodingAesKey !== null) c.encodingAesKey = '[redacted]';
    return c;
  }

  /** The current settings with `patch` applied, validated; changes nothing. Throws TypeError. */
  merged(patch: unknown): ReceiptsConfig {
    return mergeReceiptsConfig(this.cfg, patch);
  }

  /** Takes settings from {@link merged}. A new seed restarts the draw. Receipts already scheduled keep theirs. */
  apply(next: ReceiptsConfig): void {
    const reseed = next.seed !== this.cfg.seed;
    this.cfg = next;
    if (reseed) this.rand = seededRandom(next.seed);
    this.compileRules();
  }

  /** Called for every accepted message: schedules its receipt when a URL is set, with the settings in force now. */
  delivered(m: DeliveredMessage): void {
    if (this.closed || this.cfg.url === null) return;
    const cfg = this.cfg;
    const status = this.drawStatus(m.openid);
    this.after(cfg.delayMs, () => {
      void this.start('receipt', 'delivery', cfg, this.receiptWire(cfg, m, status), m, status, null);
    });
  }

  /** Runs `fire` after `delayMs` (at once for 0), counted in `scheduled` meanwhile and cancelled by close(). */
  private after(delayMs: number, fire: () => void): void {
    if (delayMs <= 0) return fire();
    this.st.scheduled++;
    const timer = setTimeout(() => {
      this.scheduled.delete(timer);
      this.st.scheduled--;
      fire();
    }, delayMs);
    this.scheduled.add(timer);
  }

  /** Called for every accepted subscribe send: schedules its `subscribe_msg_sent_event` when a URL is set. */
  subscribeSent(m: DeliveredMessage, templateId: string): void {
    if (this.closed || this.cfg.url === null) return;
    const cfg = this.cfg;
    this.after(cfg.delayMs, () => {
      const xml = subscribeSentXml(cfg.toUserName, m.openid, Math.floor(m.acceptedAt / 1000), templateId, m.msgid);
      const wire = this.wire(cfg, 'POST', { openid: m.openid }, xml, cfg.encodingAesKey !== null);
      void this.start('subscribe-sent', 'delivery', cfg, wire, m, null, null);
    });
  }

  /** The user's choices in a subscription popup, now. */
  pushSubscribePopup(input: SubscribePopupInput): Promise<ReceiptPush> {
    const cfg = this.ready();
    const openid = checkOpenid(input.openid);
    const list = checkChoices(input.list, undefined);
    const scene = input.popupScene ?? 0;
    if (!Number.isInteger(scene) || scene < 0) throw new TypeError('popupScene must be a non-negative integer');
    const xml = subscribePopupXml(cfg.toUserName, openid, Math.floor(Date.now() / 1000), list, scene);
    const wire = this.wire(cfg, 'POST', { openid }, xml, cfg.encodingAesKey !== null);
    return this.start('subscribe-popup', 'control', cfg, wire, { ...NO_META, openid }, null, null);
  }

  /** A change the user made to subscriptions in the notification settings (WeChat: rejections only), now. */
  pushSubscribeChange(input: SubscribeChangeInput): Promise<ReceiptPush> {
    const cfg = this.ready();
    const openid = checkOpenid(input.openid);
    const list = checkChoices(input.list, 'reject');
    const xml = subscribeChangeXml(cfg.toUserName, openid, Math.floor(Date.now() / 1000), list);
    const wire = this.wire(cfg, 'POST', { openid }, xml, cfg.encodingAesKey !== null);
    return this.start('subscribe-change', 'control', cfg, wire, { ...NO_META, openid }, null, null);
  }

  /** A correct receipt for an accepted msgid, now. */
  push(input: PushReceiptInput): Promise<ReceiptPush> {
    const cfg = this.ready();
    const m = this.known(input.msgid);
    const status = statusOr(input.status, 'success');
    return this.start('receipt', 'control', cfg, this.receiptWire(cfg, m, status), m, status, null);
  }

  /** A receipt whose `signature` (and/or `msg_signature`) is wrong; the body is right. */
  pushBadSignature(input: BadSignatureInput = {}): Promise<ReceiptPush> {
    const cfg = this.ready();
    const which = input.which ?? 'both';
    if (which !== 'signature' && which !== 'msg_signature' && which !== 'both') throw new TypeError('which must be signature, msg_signature or both');
    if (which === 'msg_signature' && cfg.encodingAesKey === null) throw new TypeError('msg_signature exists only in safe mode (set receipts.encodingAesKey)');
    const m = input.msgid === undefined ? this.lookup() : this.known(input.msgid);
    if (m === undefined) throw new TypeError('no message accepted yet: give a msgid');
    const status = statusOr(input.status, 'success');
    const wire = this.receiptWire(cfg, m, status, which);
    return this.start('bad-signature', 'control', cfg, wire, m, status, null);
  }

  /** The timestamp and nonce of an earlier push with another body, otherwise correctly signed. */
  pushReplay(input: ReplayInput = {}): Promise<ReceiptPush> {
    const cfg = this.ready();
    const base = this.base(input.of);
    let xml: string;
    let m: Meta = { ...NO_META, openid: base.openid };
    let status: ReceiptStatus | null = null;
    if (input.xml !== undefined) {
      if (typeof input.xml !== 'string') throw new TypeError('xml must be a string');
      xml = input.xml;
    } else {
      const msgid = input.msgid ?? base.msgid;
      if (msgid !== null && !Number.isSafeInteger(msgid)) throw new TypeError('msgid must be an integer');
      if (msgid === null) throw new TypeError(`push ${base.index} has no MsgID: give a msgid or an xml`);
      const d = this.lookup(msgid) ?? { msgid, openid: base.openid ?? 'oSimulatorUnknownMsgid', client_msg_id: null, acceptedAt: Date.now() };
      m = d;
      status = statusOr(input.status, base.status === 'success' ? 'failed: system failed' : 'success');
      xml = receiptXml(cfg.toUserName, d.openid, Math.floor(d.acceptedAt / 1000), msgid, status);
    }
    const query: Record<string, string> = m.openid !== null ? { openid: m.openid } : {};
    const wire = this.wire(cfg, 'POST', query, xml, cfg.encodingAesKey !== null, base.timestamp, base.nonce);
    if (wire.body === base.body) throw new TypeError('the replay would repeat the body: change msgid, status or xml (or use duplicate)');
    return this.start('replay', 'control', cfg, wire, m, status, base.index);
  }

  /** An earlier push again, byte for byte (what a retry of WeChat looks like to the receiver). */
  pushDuplicate(input: DuplicateInput = {}): Promise<ReceiptPush> {
    const cfg = this.ready();
    const base = this.base(input.of);
    const wire: Wire = { method: base.method, url: base.url, timestamp: base.timestamp, nonce: base.nonce, body: base.body, xml: base.xml, encrypted: base.encrypted };
    const m: Meta = { msgid: base.msgid, openid: base.openid, client_msg_id: base.client_msg_id, acceptedAt: base.acceptedAt };
    return this.start('duplicate', 'control', cfg, wire, m, base.status, base.index);
  }

  /** A correctly signed receipt for a MsgID the simulator never gave out. */
  pushUnknownMsgid(input: UnknownMsgidInput = {}): Promise<ReceiptPush> {
    const cfg = this.ready();
    const msgid = input.msgid ?? this.unknownNext++;
    if (!Number.isSafeInteger(msgid) || msgid < 0) throw new TypeError('msgid must be a non-negative integer');
    if (this.lookup(msgid) !== undefined) throw new TypeError(`msgid ${msgid} was given out by the simulator`);
    const m: DeliveredMessage = { msgid, openid: input.openid ?? 'oSimulatorUnknownMsgid', client_msg_id: null, acceptedAt: Date.now() };
    const status = statusOr(input.status, 'success');
    return this.start('unknown-msgid', 'control', cfg, this.receiptWire(cfg, m, status), m, status, null);
  }

  /** Any request, correctly signed: a user message, a subscribe event, the GET `echostr` check... */
  pushRaw(input: RawPushInput = {}): Promise<ReceiptPush> {
    const cfg = this.ready();
    const method = input.method ?? 'POST';
    if (method !== 'GET' && method !== 'POST') throw new TypeError('method must be GET or POST');
    const query = input.query ?? {};
    for (const [k, v] of Object.entries(query)) if (typeof v !== 'string') throw new TypeError(`query.${k} must be a string`);
    if (input.body !== undefined && typeof input.body !== 'string') throw new TypeError('body must be a string');
    const encrypt = method === 'POST' && (input.encrypt ?? cfg.encodingAesKey !== null);
    if (encrypt && cfg.encodingAesKey === null) throw new TypeError('encrypt needs safe mode (set receipts.encodingAesKey)');
    const wire = this.wire(cfg, method, query, method === 'GET' ? null : (input.body ?? ''), encrypt);
    return this.start('raw', 'control', cfg, wire, { ...NO_META, openid: query['openid'] ?? null }, null, null);
  }

  /** Every push so far from position `since` (a copy of the array; entries are live until finished). */
  receipts(since = 0): ReceiptPush[] {
    return this.record.slice(since);
  }

  stats(): ReceiptStats {
    return { ...this.st, byStatus: { ...this.st.byStatus } };
  }

  /** Resolves true once nothing is scheduled or in flight, false when `timeoutMs` passes first. */
  idle(timeoutMs = 30_000): Promise<boolean> {
    if (this.isIdle()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== waiter);
        resolve(false);
      }, timeoutMs);
      this.idleWaiters.push(waiter);
    });
  }

  /** Cancels every scheduled and running push, forgets the record and counters, restores the settings of the start. */
  reset(): void {
    this.cancelAll();
    this.record = [];
    this.st = emptyStats();
    this.cfg = structuredClone(this.initial);
    this.rand = seededRandom(this.cfg.seed);
    this.compileRules();
  }

  /** Cancels everything and closes the connections; once it resolved every push is final and no timer is left. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const running = [...this.running].map((r) => r.done);
    this.cancelAll();
    await Promise.all(running);
    await this.agent.destroy();
  }

  // ------------------------------------------------------------------ internals

  private compileRules(): void {
    this.rules = this.cfg.statusFor.map((r) => ({ re: new RegExp(r.pattern), status: r.status }));
  }

  private drawStatus(openid: string): ReceiptStatus {
    for (const r of this.rules) if (r.re.test(openid)) return r.status;
    const u = this.rand();
    if (u < this.cfg.userBlockShare) return 'failed:user block';
    if (u < this.cfg.userBlockShare + this.cfg.systemFailedShare) return 'failed: system failed';
    return 'success';
  }

  private ready(): ReceiptsConfig {
    if (this.closed) throw new TypeError('the simulator is closed');
    if (this.cfg.url === null) throw new TypeError('receipts.url is not set');
    return this.cfg;
  }

  private known(msgid: unknown): DeliveredMessage {
    if (typeof msgid !== 'number' || !Number.isSafeInteger(msgid)) throw new TypeError('msgid must be an integer');
    const m = this.lookup(msgid);
    if (m === undefined) throw new TypeError(`msgid ${msgid} was not given out by the simulator (see unknown-msgid)`);
    return m;
  }

  private base(of: number | undefined): ReceiptPush {
    if (of !== undefined) {
      const b = Number.isInteger(of) ? this.record[of] : undefined;
      if (b === undefined) throw new TypeError(`no push ${String(of)} in the record`);
      return b;
    }
    for (let i = this.record.length - 1; i >= 0; i--) if (this.record[i]!.kind === 'receipt') return this.record[i]!;
    throw new TypeError('no receipt pushed yet: give "of"');
  }

  private receiptWire(cfg: ReceiptsConfig, m: DeliveredMessage, status: ReceiptStatus, badSignature?: 'signature' | 'msg_signature' | 'both'): Wire {
    const xml = receiptXml(cfg.toUserName, m.openid, Math.floor(m.acceptedAt / 1000), m.msgid, status);
    return this.wire(cfg, 'POST', { openid: m.openid }, xml, cfg.encodingAesKey !== null, undefined, undefined, badSignature);
  }

  private wire(
    cfg: ReceiptsConfig,
    method: 'GET' | 'POST',
    extra: Record<string, string>,
    xml: string | null,
    encrypt: boolean,
    timestamp = String(Math.floor(Date.now() / 1000)),
    nonce = String(this.nonceNext++),
    bad?: 'signature' | 'msg_signature' | 'both',
  ): Wire {
    // A wrong signature that still looks like one: a sha1 over the wrong token.
    const wrongToken = `${cfg.token}-wrong`;
    const q = new URLSearchParams();
    q.set('signature', callbackSignature(bad === 'signature' || bad === 'both' ? wrongToken : cfg.token, timestamp, nonce));
    q.set('timestamp', timestamp);
    q.set('nonce', nonce);
    let body = xml ?? '';
    if (encrypt && xml !== null) {
      const encrypted = encryptCallbackMessage(parseEncodingAesKey(cfg.encodingAesKey!), xml, this.appId);
      body = `<xml><ToUserName>${cdata(cfg.toUserName)}</ToUserName><Encrypt>${cdata(encrypted)}</Encrypt></xml>`;
      for (const [k, v] of Object.entries(extra)) q.set(k, v);
      q.set('encrypt_type', 'aes');
      q.set('msg_signature', messageSignature(bad === 'msg_signature' || bad === 'both' ? wrongToken : cfg.token, timestamp, nonce, encrypted));
    } else {
      for (const [k, v] of Object.entries(extra)) q.set(k, v);
    }
    const url = new URL(cfg.url!);
    for (const [k, v] of q) url.searchParams.set(k, v);
    return { method, url: url.href, timestamp, nonce, body, xml, encrypted: encrypt && xml !== null };
  }

  private start(
    kind: ReceiptPushKind,
    trigger: 'delivery' | 'control',
    cfg: ReceiptsConfig,
    wire: Wire,
    m: Meta,
    status: ReceiptStatus | null,
    of: number | null,
  ): Promise<ReceiptPush> {
    const entry: ReceiptPush = {
      index: this.record.length,
      kind,
      trigger,
      msgid: m.msgid,
      openid: m.openid,
      status,
      client_msg_id: m.client_msg_id,
      of,
      encrypted: wire.encrypted,
      method: wire.method,
      url: wire.url,
      timestamp: wire.timestamp,
      nonce: wire.nonce,
      body: wire.body,
      xml: wire.xml,
      acceptedAt: m.acceptedAt,
      sentAt: Date.now(),
      attempts: [],
      outcome: 'pending',
      httpStatus: null,
      answer: null,
      error: null,
      finishedAt: null,
    };
    this.record.push(entry);
    const st = this.st;
    st.pushed++;
    st.inFlight++;
    if (kind === 'receipt' && status !== null) st.byStatus[status]++;
    const run: Running = { entry, cancelled: false, abort: null, done: Promise.resolve(entry) };
    this.running.add(run);
    run.done = this.run(run, cfg, st);
    return run.done;
  }

  private async run(run: Running, cfg: ReceiptsConfig, st: ReceiptStats): Promise<ReceiptPush> {
    const entry = run.entry;
    let outcome: Exclude<ReceiptOutcome, 'pending'> = 'failed';
    for (let i = 0; i < cfg.attempts && !run.cancelled; i++) {
      const a: ReceiptAttempt = { startedAt: Date.now(), endedAt: null, httpStatus: null, answer: null, error: null };
      entry.attempts.push(a);
      st.attempts++;
      await this.attempt(run, a, cfg.timeoutMs);
      entry.httpStatus = a.httpStatus;
      entry.answer = a.answer;
      entry.error = a.error;
      if (a.httpStatus !== null) {
        outcome = a.httpStatus === 200 && (a.answer === '' || a.answer === 'success') ? 'answered' : 'rejected';
        break;
      }
    }
    if (run.cancelled) outcome = 'cancelled';
    entry.outcome = outcome;
    entry.finishedAt = Date.now();
    // After a reset, `st` is the old counters object: the new record does not know this push.
    st.inFlight--;
    st[outcome]++;
    this.running.delete(run);
    this.notifyIdle();
    return entry;
  }

  private async attempt(run: Running, a: ReceiptAttempt, timeoutMs: number): Promise<void> {
    const e = run.entry;
    const ac = new AbortController();
    run.abort = ac;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timeoutMs);
    try {
      const res = await request(e.url, {
        method: e.method,
        dispatcher: this.agent,
        signal: ac.signal,
        ...(e.method === 'POST' ? { body: e.body, headers: { 'content-type': 'text/xml' } } : {}),
      });
      const text = await res.body.text();
      a.httpStatus = res.statusCode;
      a.answer = text.length > ANSWER_CHARS ? text.slice(0, ANSWER_CHARS) : text;
    } catch (err) {
      a.error = timedOut ? `no answer within ${timeoutMs} ms` : run.cancelled ? 'cancelled' : describeError(err);
    } finally {
      clearTimeout(timer);
      a.endedAt = Date.now();
      run.abort = null;
    }
  }

  private cancelAll(): void {
    for (const t of this.scheduled) clearTimeout(t);
    this.scheduled.clear();
    this.st.scheduled = 0;
    for (const r of this.running) {
      r.cancelled = true;
      r.abort?.abort();
    }
    this.notifyIdle();
  }

  private isIdle(): boolean {
    return this.scheduled.size === 0 && [...this.running].every((r) => r.cancelled);
  }

  private notifyIdle(): void {
    if (!this.isIdle() || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

function emptyStats(): ReceiptStats {
  return {
    scheduled: 0,
    inFlight: 0,
    pushed: 0,
    answered: 0,
    rejected: 0,
    failed: 0,
    cancelled: 0,
    attempts: 0,
    byStatus: { success: 0, 'failed:user block': 0, 'failed: system failed': 0 },
  };
}
