import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CallbackCryptoError, CallbackXmlError } from '../errors.js';
import { receiptStateOf, type LedgerReceipt } from '../ledger/index.js';
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
  sync(): Promise<void>;
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
  receipts: number;
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
 * messages in plaintext or safe mode. `TEMPLATESENDJOBFINISH` receipts go to the ledger and are
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
    const isReceipt = textField(fields, 'MsgType') === 'event' && textField(fields, 'Event') === 'TEMPLATESENDJOBFINISH';
    const forward = () =>
      this.forwarder!.forward({
        method: req.method ?? 'POST',
        search: url.search,
        contentType: req.headers['content-type'],
        body,
        remoteAddress: req.socket.remoteAddress,
      });
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
      try {
        await this.options.sink.sync();
      } catch (err) {
        // not durable: no `success`, so WeChat sends it again
        this.options.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'a receipt could not be recorded');
        throw new Refusal(503, 'unavailable', 'receipt not recorded');
      }
    }
    if (this.forwarder && this.options.forwardReceipts) this.noteForward(await forward());
    return SUCCESS;
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
