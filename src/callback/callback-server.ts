import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CallbackCryptoError, CallbackXmlError } from '../errors.js';
import {
  ledgerSubscription,
  receiptStateOf,
  subscribeSentStateOf,
  subscribeSentStatus,
  type LedgerReceipt,
  type LedgerSubscription,
  type SubscriptionEvent,
} from '../ledger/index.js';
import { repeatedFields } from '../wechat/callback-xml.js';
import {
  appidMatches,
  decryptCallbackMessage,
  parseCallbackXml,
  parseEncodingAesKey,
  textField,
  verifyCallbackSignature,
  verifyMessageSignature,
  type CallbackAesKey,
  type CallbackFields,
} from '../wechat/index.js';
import { Forwarder } from './forwarder.js';
import { ReplayGuard, SUCCESS, type CallbackAnswer } from './replay-guard.js';

/** Where receipts go: the Ledger. `sync` rejects when they could not be made durable. */
export interface ReceiptSink {
  receipt(receipt: LedgerReceipt): void;
  /** A subscribe popup's or settings change's answer for one template; without it they are forwarded as before. */
  subscription?(subscription: LedgerSubscription): void;
  sync(): Promise<void>;
}

/** The events this endpoint records (docs/CALLBACK.md); any other is forwarded. */
const SUBSCRIBE_SENT = 'subscribe_msg_sent_event';
/** The element holding an event's `<List>`s. */
const LIST_OF: Record<string, string> = {
  subscribe_msg_popup_event: 'SubscribeMsgPopupEvent',
  subscribe_msg_change_event: 'SubscribeMsgChangeEvent',
  [SUBSCRIBE_SENT]: 'SubscribeMsgSentEvent',
};

/** The `<List>` entries of a subscribe event, each as its fields (text entries are not lists). */
function listsOf(fields: CallbackFields, event: string): CallbackFields[] {
  const holder = fields[LIST_OF[event]!];
  if (holder === undefined || typeof holder === 'string') return [];
  return repeatedFields(holder, 'List').filter((l): l is CallbackFields => typeof l !== 'string');
}

export interface CallbackServerOptions {
  host: string;
  port: number;
  /** @defaultValue '/wechat/callback' */
  path?: string;
  /** `[wechat] token`. */
  token: string;
  /** `[wechat] encoding_aes_key`: safe-mode requests are refused without it. */
  encodingAesKey?: string;
  /** `[wechat] app_id`: a safe-mode message must be addressed to it. */
  appId: string;
  /** Receipts are recorded here; without one they are answered `success` and not kept. */
  sink?: ReceiptSink;
  /** `[callback] forward_url`. */
  forwardUrl?: string;
  /** @defaultValue false */
  forwardReceipts?: boolean;
  /** @defaultValue 4500 */
  forwardTimeoutMs?: number;
  /** How far a request's timestamp may be from this clock, in s. @defaultValue 300 */
  maxSkewSeconds?: number;
  /** Largest body taken, in bytes; a larger one is a 413. @defaultValue 65536 */
  maxBodyBytes?: number;
  logger: Logger;
  /** @defaultValue Date.now */
  now?: () => number;
}

/** What the endpoint did, for `status`. */
export interface CallbackStats {
  requests: number;
  /** TEMPLATESENDJOBFINISH receipts, and each send of a `subscribe_msg_sent_event`. */
  receipts: number;
  /** Template answers of `subscribe_msg_popup_event` and `subscribe_msg_change_event` recorded. */
  subscriptions: number;
  forwarded: number;
  /** Refused requests by reason. */
  refused: { signature: number; stale: number; replay: number; malformed: number; tooLarge: number };
  /** Forwarded requests the app did not answer (502). */
  forwardFailures: number;
}

type Query = URLSearchParams;

/** A refusal: its status and a short reason (never a secret: tokens and keys are not in reasons). */
class Refusal {
  constructor(
    readonly status: number,
    readonly reason: keyof CallbackStats['refused'] | 'method' | 'path' | 'unavailable',
    readonly text: string,
  ) {}
}

/**
 * WeChat's server-URL protocol on HTTP (docs/CALLBACK.md): the GET verification, and POSTed
 * messages in plaintext or safe mode. `TEMPLATESENDJOBFINISH` receipts and the subscribe events
 * (`subscribe_msg_sent_event`, `_popup_event`, `_change_event`) go to the ledger and are
 * answered `success` once durable (WeChat never sends again a receipt it got `success` for);
 * any other verified request goes to `[callback] forward_url` and its answer back to WeChat.
 * Nothing that fails verification is recorded or forwarded.
 */
export class CallbackServer {
  private server: Server | undefined;
  private readonly guard = new ReplayGuard();
  private readonly forwarder: Forwarder | undefined;
  private readonly key: CallbackAesKey | undefined;
  private readonly path: string;
  private readonly now: () => number;
  private readonly maxBody: number;
  private readonly maxSkew: number;
  readonly stats: CallbackStats = {
    requests: 0,
    receipts: 0,
    subscriptions: 0,
    forwarded: 0,
    refused: { signature: 0, stale: 0, replay: 0, malformed: 0, tooLarge: 0 },
    forwardFailures: 0,
  };

  constructor(private readonly options: CallbackServerOptions) {
    this.path = options.path ?? '/wechat/callback';
    this.now = options.now ?? Date.now;
    this.maxBody = options.maxBodyBytes ?? 64 * 1024;
    this.maxSkew = options.maxSkewSeconds ?? 300;
    this.key = options.encodingAesKey ? parseEncodingAesKey(options.encodingAesKey) : undefined;
    this.forwarder = options.forwardUrl ? new Forwarder({ url: options.forwardUrl, timeoutMs: options.forwardTimeoutMs }) : undefined;
  }

  /** Listens; resolves with the bound address (port 0 = any free port). */
  async listen(): Promise<AddressInfo> {
    const server = createServer((req, res) => void this.serve(req, res));
    // keep-alive longer than a proxy's usual idle timeout, so the proxy closes first
    server.keepAliveTimeout = 65_000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.options.logger.error({ err: err.message }, 'callback endpoint error'));
    return server.address() as AddressInfo;
  }

  address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    }
    await this.forwarder?.close();
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.requests++;
    let answer: CallbackAnswer;
    try {
      answer = await this.handle(req);
    } catch (err) {
      if (!(err instanceof Refusal)) {
        this.options.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'callback request failed');
        err = new Refusal(500, 'unavailable', 'internal error');
      }
      const refusal = err as Refusal;
      if (refusal.reason in this.stats.refused) this.stats.refused[refusal.reason as keyof CallbackStats['refused']]++;
      this.options.logger.debug({ status: refusal.status, reason: refusal.text }, 'callback request refused');
      answer = { status: refusal.status, contentType: 'text/plain; charset=utf-8', body: Buffer.from(refusal.text) };
      // a refused body may still be arriving: don't read the rest of a 413
      if (refusal.status === 413) res.setHeader('connection', 'close');
    }
    if (res.destroyed) return;
    res.writeHead(answer.status, { 'content-type': answer.contentType, 'content-length': answer.body.length });
    res.end(answer.body);
  }

  private async handle(req: IncomingMessage): Promise<CallbackAnswer> {
    const url = new URL(req.url ?? '/', 'http://callback');
    if (url.pathname !== this.path) throw new Refusal(404, 'path', 'not found');
    const q = url.searchParams;
    if (req.method === 'GET') return this.verification(q);
    if (req.method !== 'POST') throw new Refusal(405, 'method', 'method not allowed');

    const body = await this.readBody(req);
    const timestamp = q.get('timestamp') ?? '';
    const nonce = q.get('nonce') ?? '';
    this.checkSignature(q);
    const verdict = this.guard.check(timestamp, nonce, body);
    if (verdict.kind === 'replay') throw new Refusal(401, 'replay', 'replayed timestamp and nonce');
    if (verdict.kind === 'retry') return verdict.answer;
    const answer = this.message(req, url, q, body);
    this.guard.settle(timestamp, nonce, answer);
    return answer;
  }

  /** GET: WeChat checking the URL when it is configured; answered by the daemon, never forwarded. */
  private verification(q: Query): CallbackAnswer {
    this.checkSignature(q);
    const echostr = q.get('echostr');
    if (echostr === null) throw new Refusal(400, 'malformed', 'echostr missing');
    return { status: 200, contentType: 'text/plain; charset=utf-8', body: Buffer.from(echostr) };
  }

  private checkSignature(q: Query): void {
    const timestamp = q.get('timestamp') ?? '';
    const nonce = q.get('nonce') ?? '';
    const signature = q.get('signature') ?? '';
    if (!timestamp || !nonce || !verifyCallbackSignature(this.options.token, timestamp, nonce, signature)) {
      throw new Refusal(401, 'signature', 'bad signature');
    }
    const seconds = /^\d{1,12}$/.test(timestamp) ? Number(timestamp) : NaN;
    if (!(Math.abs(this.now() / 1000 - seconds) <= this.maxSkew)) throw new Refusal(401, 'stale', 'timestamp out of range');
  }

  private async readBody(req: IncomingMessage): Promise<Buffer> {
    const declared = Number(req.headers['content-length']);
    if (declared > this.maxBody) throw new Refusal(413, 'tooLarge', 'body too large');
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of req) {
        size += (chunk as Buffer).length;
        if (size > this.maxBody) throw new Refusal(413, 'tooLarge', 'body too large');
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      if (err instanceof Refusal) throw err;
      // the caller went away mid-body: nothing to answer, nothing worth an error line
      throw new Refusal(400, 'malformed', 'request aborted');
    }
    return Buffer.concat(chunks);
  }

  /** A verified, new POST: opened (safe mode), then recorded as a receipt or forwarded. */
  private async message(req: IncomingMessage, url: URL, q: Query, body: Buffer): Promise<CallbackAnswer> {
    const fields = this.open(q, body);
    const event = textField(fields, 'MsgType') === 'event' ? (textField(fields, 'Event') ?? '') : '';
    const isReceipt = event === 'TEMPLATESENDJOBFINISH';
    const forward = () =>
      this.forwarder!.forward({
        method: req.method ?? 'POST',
        search: url.search,
        contentType: req.headers['content-type'],
        body,
        remoteAddress: req.socket.remoteAddress,
      });
    const sink = this.options.sink;
    if (Object.hasOwn(LIST_OF, event) && sink && (event === SUBSCRIBE_SENT || sink.subscription)) {
      // recorded like receipts; still forwarded as before (the app may act on them), its answer unused
      await this.subscribeEvent(fields, event);
      if (this.forwarder) this.noteForward(await forward());
      return SUCCESS;
    }
    if (!isReceipt) {
      if (!this.forwarder) return SUCCESS;
      const answer = await forward();
      this.noteForward(answer);
      return answer;
    }
    const wechatMsgid = textField(fields, 'MsgID') ?? '';
    if (!/^\d{1,20}$/.test(wechatMsgid)) throw new Refusal(400, 'malformed', 'MsgID missing or not a number');
    const status = textField(fields, 'Status') ?? '';
    this.stats.receipts++;
    if (this.options.sink) {
      this.options.sink.receipt({ receipt: wechatMsgid, state: receiptStateOf(status), status, openid: textField(fields, 'FromUserName'), at: this.now() });
      await this.durable('receipt');
    }
    if (this.forwarder && this.options.forwardReceipts) this.noteForward(await forward());
    return SUCCESS;
  }

  /** Waits for the sink's journal write. @throws Refusal 503 when it failed: no `success`, so WeChat sends it again */
  private async durable(what: string): Promise<void> {
    try {
      await this.options.sink!.sync();
    } catch (err) {
      this.options.logger.warn({ err: err instanceof Error ? err.message : String(err) }, `a ${what} could not be recorded`);
      throw new Refusal(503, 'unavailable', `${what} not recorded`);
    }
  }

  /**
   * A subscribe event to the sink: each `<List>` of a `subscribe_msg_sent_event` is a receipt of
   * the send with that MsgID (ErrorCode 0 delivered, else failed); each of a popup or settings
   * event the user's status for that template. Entries with another status (none documented)
   * are left out: a popup or change event with nothing to record is answered `success` and only
   * forwarded, as before; a sent event without a numeric MsgID is malformed, like a receipt.
   */
  private async subscribeEvent(fields: CallbackFields, event: string): Promise<void> {
    const sink = this.options.sink!;
    const openid = textField(fields, 'FromUserName') ?? '';
    const at = this.now();
    const lists = listsOf(fields, event);
    if (event === SUBSCRIBE_SENT) {
      const sends = lists.filter((l) => /^\d{1,20}$/.test(textField(l, 'MsgID') ?? ''));
      if (sends.length === 0) throw new Refusal(400, 'malformed', 'subscribe_msg_sent_event without a List with a numeric MsgID');
      for (const l of sends) {
        const code = textField(l, 'ErrorCode') ?? '';
        const errorStatus = textField(l, 'ErrorStatus') ?? '';
        sink.receipt({
          receipt: textField(l, 'MsgID')!,
          state: subscribeSentStateOf(code, errorStatus),
          status: subscribeSentStatus(code, errorStatus),
          openid: openid || undefined,
          at,
        });
      }
      this.stats.receipts += sends.length;
      return this.durable('receipt');
    }
    const answers = lists.filter((l) => (textField(l, 'TemplateId') ?? '') !== '' && ['accept', 'reject'].includes(textField(l, 'SubscribeStatusString') ?? ''));
    if (openid === '' || answers.length === 0) {
      this.options.logger.debug({ event }, 'callback: a subscribe event with no openid or no accept/reject entry, nothing recorded');
      return;
    }
    for (const l of answers) {
      const status = textField(l, 'SubscribeStatusString') as 'accept' | 'reject';
      sink.subscription!(ledgerSubscription(openid, textField(l, 'TemplateId')!, status, event as SubscriptionEvent, at));
    }
    this.stats.subscriptions += answers.length;
    return this.durable('subscription');
  }

  /** The message's fields: the body itself in plaintext mode, its `<Encrypt>` opened in safe mode. */
  private open(q: Query, body: Buffer): CallbackFields {
    const outer = this.parse(body.toString('utf8'));
    if (q.get('encrypt_type') !== 'aes') return outer;
    if (!this.key) throw new Refusal(400, 'malformed', 'an encrypted message, and no [wechat] encoding_aes_key to open it');
    const encrypt = textField(outer, 'Encrypt');
    if (!encrypt) throw new Refusal(400, 'malformed', 'Encrypt missing');
    const timestamp = q.get('timestamp') ?? '';
    const nonce = q.get('nonce') ?? '';
    if (!verifyMessageSignature(this.options.token, timestamp, nonce, encrypt, q.get('msg_signature') ?? '')) {
      throw new Refusal(401, 'signature', 'bad msg_signature');
    }
    let opened;
    try {
      opened = decryptCallbackMessage(this.key, encrypt);
    } catch (err) {
      if (err instanceof CallbackCryptoError) throw new Refusal(400, 'malformed', `Encrypt cannot be opened (${err.reason})`);
      throw err;
    }
    if (!appidMatches(opened, this.options.appId)) throw new Refusal(401, 'signature', 'the message is for another app id');
    return this.parse(opened.message);
  }

  private parse(text: string): CallbackFields {
    try {
      return parseCallbackXml(text);
    } catch (err) {
      if (err instanceof CallbackXmlError) throw new Refusal(400, 'malformed', err.message);
      throw err;
    }
  }

  private noteForward(answer: CallbackAnswer & { reason?: string }): void {
    this.stats.forwarded++;
    if (answer.reason === undefined) return;
    this.stats.forwardFailures++;
    this.options.logger.warn({ reason: answer.reason }, 'callback: forwarding failed');
  }
}
