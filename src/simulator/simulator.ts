/**
 * The project's own WeChat API simulator: a real HTTP server (node:http) answering the endpoints
 * Mega-WeChat calls with WeChat's response shapes, plus fault injection and control endpoints.
 * Used by tests, the demo and the benchmarks; `main.ts` runs it as its own process.
 *
 * WeChat endpoints:
 * - `GET  /cgi-bin/token?grant_type=client_credential&appid=..&secret=..` — every call issues a new
 *   token; the previous one stays valid for at most 5 more minutes (as WeChat does).
 * - `POST /cgi-bin/stable_token` `{grant_type, appid, secret, force_refresh?}` — returns the current
 *   token while it has more than 5 minutes (or half its lifetime, if shorter) to live, else a new
 *   one (the old one keeps its own expiry); `force_refresh: true` revokes every earlier token.
 * - `POST /cgi-bin/message/template/send?access_token=..` — validates, de-duplicates `client_msg_id`
 *   within 10 minutes, records every request.
 * - `POST /cgi-bin/message/subscribe/bizsend?access_token=..` (an Official Account's subscription
 *   notification) and `POST /cgi-bin/message/subscribe/send?access_token=..` (a mini program's
 *   subscribe message) — the same faults and record; typed `data` checked by
 *   ../wechat/subscribe-rules.ts; no `client_msg_id` de-duplication (WeChat has none there).
 * - `GET /cgi-bin/template/get_all_private_template` and `GET /wxaapi/newtmpl/gettemplate` — the
 *   template lists of the config keys `privateTemplates` and `subscribeTemplates`.
 * - `POST /cgi-bin/openapi/quota/get?access_token=..` `{cgi_path}`.
 *
 * Control endpoints (JSON): `GET /_sim/messages[?since=N]`, `GET /_sim/stats`, `GET /_sim/config`,
 * `POST /_sim/config` (a {@link SimulatorConfigPatch}), `POST /_sim/reset`, and the delivery
 * receipts' `/_sim/receipts...` (receipts.ts, receipts-control.ts).
 *
 * The simulator never logs; it keeps everything in memory.
 */

import { SEND_PATHS, type MessageKind } from '../wechat/kinds.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { ERRCODE, errmsgFor } from '../wechat/errcodes.js';
import { checkSubscribeData } from '../wechat/subscribe-rules.js';
import { mergeReceiptsConfig, RECEIPTS_DEFAULTS, validateReceiptsPatch, type ReceiptsConfig, type ReceiptsPatch } from './receipts-config.js';
import { ReceiptPusher, type DeliveredMessage } from './receipts.js';
import { receiptsControl } from './receipts-control.js';

/** Default credentials the simulator accepts when none are given. */
export const SIMULATOR_DEFAULT_APP_ID = 'wx00000000simulator';
export const SIMULATOR_DEFAULT_APP_SECRET = 'simulator-app-secret-0123456789';

/** The three send endpoints, the daemon's own table of them (template/send, subscribe/bizsend, subscribe/send). */
export type { MessageKind };
export const MESSAGE_KIND_PATHS = SEND_PATHS;

/** `miniprogram_state` and `lang` values WeChat accepts on the subscribe endpoints. */
export const MINIPROGRAM_STATES = ['developer', 'trial', 'formal'] as const;
export const SUBSCRIBE_LANGS = ['zh_CN', 'en_US', 'zh_HK', 'zh_TW'] as const;

/** One entry of `get_all_private_template`'s `template_list` (an Official Account's template messages). */
export interface PrivateTemplate {
  template_id: string;
  title: string;
  primary_industry: string;
  deputy_industry: string;
  /** e.g. `{{first.DATA}}\n商品：{{keyword1.DATA}}\n{{remark.DATA}}` */
  content: string;
  example: string;
}

/** One entry of `wxaapi/newtmpl/gettemplate`'s `data` (subscription templates). */
export interface SubscribeTemplate {
  priTmplId: string;
  title: string;
  /** e.g. `商品名称:{{thing1.DATA}}\n金额:{{amount2.DATA}}` */
  content: string;
  example: string;
  /** 2 = one-time subscription, 3 = long-term. */
  type: 2 | 3;
}

/** A permanent error for every send whose `touser` matches `pattern` (a RegExp source). */
export interface FailOpenidRule {
  pattern: string;
  errcode: number;
  errmsg?: string;
}

/** Fault injection. Every burst counts down one per send request it answers. */
export interface SimulatorFaults {
  /** Sends to matching openids answer the rule's errcode (first matching rule wins). */
  failOpenids: FailOpenidRule[];
  /** When set to true, every token issued so far expires at once (sends answer 42001). One-shot. */
  expireTokenNow: boolean;
  /** The next `count` sends answer `errcode` (e.g. -1 `system error`). */
  errcodeBurst: { errcode: number; count: number } | null;
  /** The next `count` sends answer HTTP `status` (e.g. 502) with an HTML body. */
  http5xxBurst: { status: number; count: number } | null;
  /** The next `count` sends never get an answer (until the client gives up or the simulator closes). */
  hangBurst: { count: number } | null;
  /** After this many delivered messages every send answers 45009. `null` = no limit but `dailyLimit`. */
  quotaAfter: number | null;
  /** Token endpoints answer this errcode (e.g. 40164 IP not whitelisted). `null` = normal. */
  tokenErrcode: number | null;
  /** Subscribe sends (bizsend, subscribe/send) to openids matching one of these RegExp sources answer 43101. */
  refusedOpenids: string[];
}

/** What the account holds: the answers of the template list endpoints. */
export interface SimulatorAccount {
  privateTemplates: PrivateTemplate[];
  subscribeTemplates: SubscribeTemplate[];
}

/** What `configure()` and `POST /_sim/config` accept. */
export type SimulatorConfigPatch = Partial<SimulatorFaults & SimulatorAccount & { latencyMs: number; dailyLimit: number }> & {
  /** Merged into the current receipt settings (only the keys given change). */
  receipts?: ReceiptsPatch;
};

export interface SimulatorOptions extends Partial<Omit<SimulatorFaults, 'expireTokenNow'>>, Partial<SimulatorAccount> {
  /** @defaultValue '127.0.0.1' */
  host?: string;
  /** 0 = a random free port. @defaultValue 0 */
  port?: number;
  /** @defaultValue {@link SIMULATOR_DEFAULT_APP_ID} */
  appId?: string;
  /** @defaultValue {@link SIMULATOR_DEFAULT_APP_SECRET} */
  appSecret?: string;
  /** Delay before answering each WeChat API request. @defaultValue 0 */
  latencyMs?: number;
  /** Lifetime of issued access tokens. @defaultValue 7200 */
  tokenTtlSeconds?: number;
  /** Keep each send's body and `data` in the record. @defaultValue true */
  recordBodies?: boolean;
  /** `quota.daily_limit`; sends answer 45009 once this many were delivered. @defaultValue 100000 */
  dailyLimit?: number;
  /** How long a `client_msg_id` is remembered for de-duplication. @defaultValue 600 */
  dedupeWindowSeconds?: number;
  /** Delivery receipts pushed to a server URL (off without `url`). @defaultValue {@link RECEIPTS_DEFAULTS} */
  receipts?: ReceiptsPatch;
}

/** One send request as the simulator received and answered it. */
export interface ReceivedMessage {
  /** Position in the record (0-based); `GET /_sim/messages?since=index` starts there. */
  index: number;
  /** Arrival time, ms since the epoch. */
  receivedAt: number;
  /** The endpoint: template/send (`template`), subscribe/bizsend (`subscribe`), subscribe/send (`miniprogram`). */
  kind: MessageKind;
  touser?: string;
  template_id?: string;
  client_msg_id?: string;
  /** The body's `data` (absent when `recordBodies` is false). */
  data?: unknown;
  /** The parsed body, or its text when not JSON (absent when `recordBodies` is false). */
  body?: unknown;
  /** HTTP status answered; 0 while/if never answered (hangBurst). */
  status: number;
  /** errcode answered; `null` when the answer was not WeChat JSON (5xx, hang). */
  errcode: number | null;
  msgid?: number;
  /** True when `client_msg_id` repeated a delivered message: answered ok, not delivered again. */
  duplicate: boolean;
}

export interface SimulatorStats {
  /** Requests to /cgi-bin/token and /cgi-bin/stable_token. */
  tokenRequests: number;
  /** Requests to the three send endpoints (`byKind` has them apart). */
  sendRequests: number;
  quotaRequests: number;
  /** Requests to the two template list endpoints. */
  templateListRequests: number;
  /** Unique deliveries (errcode 0, not a duplicate). */
  delivered: number;
  /** Sends answered ok without delivering because their client_msg_id was already delivered. */
  duplicates: number;
  /** Send answers by errcode (JSON answers only). */
  byErrcode: Record<string, number>;
  /** Send answers with an HTTP 5xx status (http5xxBurst). */
  http5xx: number;
  /** Sends held without an answer (hangBurst). */
  hung: number;
  /** Send requests received and not yet answered/closed. */
  inFlight: number;
  maxInFlight: number;
  /** Per endpoint: requests, answers with errcode 0 (duplicates included), unique deliveries. */
  byKind: Record<MessageKind, KindStats>;
}

export interface KindStats {
  requests: number;
  ok: number;
  delivered: number;
}

interface FaultConfig extends SimulatorFaults, SimulatorAccount {
  latencyMs: number;
  dailyLimit: number;
}

export interface SimulatorConfig extends FaultConfig {
  /** The token and the EncodingAESKey show as '[redacted]'. */
  receipts: ReceiptsConfig;
}

const FAULT_KEYS = [
  'failOpenids',
  'expireTokenNow',
  'errcodeBurst',
  'http5xxBurst',
  'hangBurst',
  'quotaAfter',
  'tokenErrcode',
  'refusedOpenids',
  'privateTemplates',
  'subscribeTemplates',
  'latencyMs',
  'dailyLimit',
  'receipts',
] as const;

const MAX_BODY_BYTES = 4 * 1024 * 1024;
const KIND_OF_PATH = new Map<string, MessageKind>(
  (Object.entries(MESSAGE_KIND_PATHS) as [MessageKind, string][]).map(([k, p]) => [p, k]),
);
const PRIVATE_TEMPLATES_PATH = '/cgi-bin/template/get_all_private_template';
const SUBSCRIBE_TEMPLATES_PATH = '/wxaapi/newtmpl/gettemplate';
const TOKEN_OVERLAP_MS = 300_000;
const MAX_TOKENS_KEPT = 10_000;

interface CompiledRule extends FailOpenidRule {
  re: RegExp;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A list of objects with exactly the string fields `fields` (and `extra` checked apart); throws TypeError naming the entry. */
function checkObjects<T>(key: string, v: unknown, fields: readonly string[], extra: Record<string, (x: unknown) => boolean> = {}): T[] {
  const shape = `{${[...fields.map((f) => `${f}: string`), ...Object.keys(extra)].join(', ')}}`;
  if (!Array.isArray(v)) throw new TypeError(`${key} must be an array of ${shape}`);
  return v.map((e: unknown, i) => {
    if (!isPlainObject(e)) throw new TypeError(`${key}[${i}] must be ${shape}`);
    for (const f of Object.keys(e)) {
      if (!fields.includes(f) && !(f in extra)) throw new TypeError(`${key}[${i}] has an unknown field ${JSON.stringify(f)}`);
    }
    for (const f of fields) if (typeof e[f] !== 'string') throw new TypeError(`${key}[${i}].${f} must be a string`);
    for (const [f, ok] of Object.entries(extra)) if (!ok(e[f])) throw new TypeError(`${key}[${i}].${f} is missing or invalid`);
    return { ...e } as T;
  });
}

function checkNonNegInt(key: string, v: unknown): number {
  if (!isInt(v) || v < 0) throw new TypeError(`${key} must be a non-negative integer`);
  return v;
}

/**
 * Validates a config patch (from `configure()` or `POST /_sim/config`).
 * Throws TypeError naming the offending key.
 */
export function validateConfigPatch(patch: unknown): SimulatorConfigPatch {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) {
    throw new TypeError('simulator config patch must be a JSON object');
  }
  const p = patch as Record<string, unknown>;
  const out: SimulatorConfigPatch = {};
  for (const key of Object.keys(p)) {
    if (!(FAULT_KEYS as readonly string[]).includes(key)) {
      throw new TypeError(`unknown simulator config key ${JSON.stringify(key)}`);
    }
    const v = p[key];
    switch (key as (typeof FAULT_KEYS)[number]) {
      case 'latencyMs':
        if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new TypeError('latencyMs must be a non-negative number');
        out.latencyMs = v;
        break;
      case 'dailyLimit':
        out.dailyLimit = checkNonNegInt('dailyLimit', v);
        break;
      case 'receipts':
        out.receipts = validateReceiptsPatch(v);
        break;
      case 'quotaAfter':
        out.quotaAfter = v === null ? null : checkNonNegInt('quotaAfter', v);
        break;
      case 'tokenErrcode':
        if (v !== null && !isInt(v)) throw new TypeError('tokenErrcode must be an integer or null');
        out.tokenErrcode = v as number | null;
        break;
      case 'expireTokenNow':
        if (typeof v !== 'boolean') throw new TypeError('expireTokenNow must be a boolean');
        out.expireTokenNow = v;
        break;
      case 'errcodeBurst': {
        if (v === null) {
          out.errcodeBurst = null;
          break;
        }
        const b = v as { errcode?: unknown; count?: unknown };
        if (typeof v !== 'object' || !isInt(b.errcode)) {
          throw new TypeError('errcodeBurst must be {errcode: integer, count: integer} or null');
        }
        out.errcodeBurst = { errcode: b.errcode, count: checkNonNegInt('errcodeBurst.count', b.count) };
        break;
      }
      case 'http5xxBurst': {
        if (v === null) {
          out.http5xxBurst = null;
          break;
        }
        const b = v as { status?: unknown; count?: unknown };
        if (typeof v !== 'object' || !isInt(b.status) || b.status < 500 || b.status > 599) {
          throw new TypeError('http5xxBurst must be {status: 500..599, count: integer} or null');
        }
        out.http5xxBurst = { status: b.status, count: checkNonNegInt('http5xxBurst.count', b.count) };
        break;
      }
      case 'hangBurst': {
        if (v === null) {
          out.hangBurst = null;
          break;
        }
        const b = v as { count?: unknown };
        if (typeof v !== 'object') throw new TypeError('hangBurst must be {count: integer} or null');
        out.hangBurst = { count: checkNonNegInt('hangBurst.count', b.count) };
        break;
      }
      case 'refusedOpenids': {
        if (!Array.isArray(v)) throw new TypeError('refusedOpenids must be an array of regular expressions (strings)');
        out.refusedOpenids = v.map((pattern: unknown, i) => {
          if (typeof pattern !== 'string') throw new TypeError(`refusedOpenids[${i}] must be a string`);
          try {
            new RegExp(pattern);
          } catch {
            throw new TypeError(`refusedOpenids[${i}] is not a valid regular expression`);
          }
          return pattern;
        });
        break;
      }
      case 'privateTemplates':
        out.privateTemplates = checkObjects<PrivateTemplate>('privateTemplates', v, [
          'template_id',
          'title',
          'primary_industry',
          'deputy_industry',
          'content',
          'example',
        ]);
        break;
      case 'subscribeTemplates':
        out.subscribeTemplates = checkObjects<SubscribeTemplate>('subscribeTemplates', v, ['priTmplId', 'title', 'content', 'example'], {
          type: (x) => x === 2 || x === 3,
        });
        break;
      case 'failOpenids': {
        if (!Array.isArray(v)) throw new TypeError('failOpenids must be an array of {pattern, errcode, errmsg?}');
        out.failOpenids = v.map((r: unknown, i) => {
          const rule = r as { pattern?: unknown; errcode?: unknown; errmsg?: unknown };
          if (r === null || typeof r !== 'object' || typeof rule.pattern !== 'string' || !isInt(rule.errcode)) {
            throw new TypeError(`failOpenids[${i}] must be {pattern: string, errcode: integer, errmsg?: string}`);
          }
          if (rule.errmsg !== undefined && typeof rule.errmsg !== 'string') {
            throw new TypeError(`failOpenids[${i}].errmsg must be a string`);
          }
          try {
            new RegExp(rule.pattern);
          } catch {
            throw new TypeError(`failOpenids[${i}].pattern is not a valid regular expression`);
          }
          const res: FailOpenidRule = { pattern: rule.pattern, errcode: rule.errcode };
          if (rule.errmsg !== undefined) res.errmsg = rule.errmsg;
          return res;
        });
        break;
      }
    }
  }
  return out;
}

function emptyStats(): SimulatorStats {
  return {
    tokenRequests: 0,
    sendRequests: 0,
    quotaRequests: 0,
    templateListRequests: 0,
    delivered: 0,
    duplicates: 0,
    byErrcode: {},
    http5xx: 0,
    hung: 0,
    inFlight: 0,
    maxInFlight: 0,
    byKind: {
      template: { requests: 0, ok: 0, delivered: 0 },
      subscribe: { requests: 0, ok: 0, delivered: 0 },
      miniprogram: { requests: 0, ok: 0, delivered: 0 },
    },
  };
}

function newToken(): string {
  // WeChat tokens are long opaque strings of [A-Za-z0-9_-].
  return randomBytes(48).toString('base64url');
}

function readBody(req: IncomingMessage): Promise<string | null> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        resolve(null);
        req.removeAllListeners('data');
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, payload: unknown): void {
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(payload);
  res.writeHead(status, {
    'Content-Type': 'application/json; encoding=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendText(res: ServerResponse, status: number, text: string, type = 'text/plain; charset=utf-8'): void {
  if (res.destroyed || res.writableEnded) return;
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function wechatError(errcode: number, errmsg?: string): { errcode: number; errmsg: string } {
  return { errcode, errmsg: errmsg ?? errmsgFor(errcode) };
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The checks of a subscribe send's body after touser and template_id: `data` and the jump fields
 * malformed → 47001; a `miniprogram_state` or `lang` WeChat does not know, or a `data` value
 * breaking its key's type rule → 47003 naming the field as WeChat does. `null` when it passes.
 */
function checkSubscribeBody(kind: Exclude<MessageKind, 'template'>, body: Record<string, unknown>): { errcode: number; errmsg?: string } | null {
  const data = body['data'];
  if (!isPlainObject(data) || Object.keys(data).length === 0) return { errcode: ERRCODE.DATA_FORMAT_ERROR };
  for (const v of Object.values(data)) {
    if (!isPlainObject(v) || !('value' in v)) return { errcode: ERRCODE.DATA_FORMAT_ERROR };
  }
  if (body['page'] !== undefined && typeof body['page'] !== 'string') return { errcode: ERRCODE.DATA_FORMAT_ERROR };
  if (kind === 'subscribe' && body['miniprogram'] !== undefined) {
    const mp = body['miniprogram'];
    if (!isPlainObject(mp) || typeof mp['appid'] !== 'string' || (mp['pagepath'] !== undefined && typeof mp['pagepath'] !== 'string')) {
      return { errcode: ERRCODE.DATA_FORMAT_ERROR };
    }
  }
  const state = body['miniprogram_state'];
  if (state !== undefined && !(MINIPROGRAM_STATES as readonly unknown[]).includes(state)) {
    return { errcode: ERRCODE.ARGUMENT_INVALID, errmsg: 'argument invalid! miniprogram_state invalid' };
  }
  const lang = body['lang'];
  if (lang !== undefined && !(SUBSCRIBE_LANGS as readonly unknown[]).includes(lang)) {
    return { errcode: ERRCODE.ARGUMENT_INVALID, errmsg: 'argument invalid! lang invalid' };
  }
  // The daemon's own rules: the simulator refuses exactly what the daemon is meant to stop first.
  const [v] = checkSubscribeData(data);
  if (v !== undefined) {
    return { errcode: ERRCODE.ARGUMENT_INVALID, errmsg: `argument invalid! data.${v.field}.value ${v.value === '' ? 'is empty' : 'invalid'}` };
  }
  return null;
}

export class WechatSimulator {
  /** `http://host:port`, usable as `[wechat] api_base`. */
  readonly url: string;
  readonly port: number;
  readonly appId: string;
  readonly appSecret: string;

  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly initial: FaultConfig;
  private readonly tokenTtlMs: number;
  private readonly recordBodies: boolean;
  private readonly dedupeWindowMs: number;

  private cfg!: FaultConfig;
  private rules: CompiledRule[] = [];
  private refused: RegExp[] = [];
  private record: ReceivedMessage[] = [];
  private st: SimulatorStats = emptyStats();
  /** token → expiry (ms since epoch). Revoked tokens are removed (→ 40001); expired ones kept (→ 42001). */
  private readonly tokens = new Map<string, number>();
  private currentToken: string | undefined;
  /** client_msg_id → first delivery (ms) and its msgid. */
  private dedupe = new Map<string, { at: number; msgid: number }>();
  private nextMsgid = 1_000_000_001;
  private closed = false;
  /** Delivery receipts to a server URL, and their test controls (receipts.ts). */
  readonly receipts: ReceiptPusher;

  private constructor(server: Server, port: number, host: string, o: SimulatorOptions) {
    this.server = server;
    this.port = port;
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    this.appId = o.appId ?? SIMULATOR_DEFAULT_APP_ID;
    this.appSecret = o.appSecret ?? SIMULATOR_DEFAULT_APP_SECRET;
    this.tokenTtlMs = (o.tokenTtlSeconds ?? 7200) * 1000;
    this.recordBodies = o.recordBodies ?? true;
    this.dedupeWindowMs = (o.dedupeWindowSeconds ?? 600) * 1000;
    const patch = validateConfigPatch(
      Object.fromEntries(
        FAULT_KEYS.filter((k) => k !== 'expireTokenNow' && k !== 'receipts' && (o as Record<string, unknown>)[k] !== undefined).map((k) => [
          k,
          (o as Record<string, unknown>)[k],
        ]),
      ),
    );
    this.initial = {
      failOpenids: [],
      expireTokenNow: false,
      errcodeBurst: null,
      http5xxBurst: null,
      hangBurst: null,
      quotaAfter: null,
      tokenErrcode: null,
      refusedOpenids: [],
      privateTemplates: [],
      subscribeTemplates: [],
      latencyMs: 0,
      dailyLimit: 100_000,
      ...patch,
    };
    this.applyConfig(structuredClone(this.initial));
    this.receipts = new ReceiptPusher(this.appId, mergeReceiptsConfig(RECEIPTS_DEFAULTS, o.receipts ?? {}), (msgid) => this.findDelivered(msgid));
  }

  /** Starts a simulator listening on `host:port` (a random port by default). */
  static start(o: SimulatorOptions = {}): Promise<WechatSimulator> {
    const host = o.host ?? '127.0.0.1';
    if (o.tokenTtlSeconds !== undefined && (!(o.tokenTtlSeconds > 0) || !Number.isFinite(o.tokenTtlSeconds))) {
      return Promise.reject(new TypeError('tokenTtlSeconds must be a positive number'));
    }
    if (o.dedupeWindowSeconds !== undefined && !(o.dedupeWindowSeconds >= 0)) {
      return Promise.reject(new TypeError('dedupeWindowSeconds must be a non-negative number'));
    }
    // Validate before binding a port.
    try {
      validateConfigPatch(
        Object.fromEntries(FAULT_KEYS.filter((k) => (o as Record<string, unknown>)[k] !== undefined).map((k) => [k, (o as Record<string, unknown>)[k]])),
      );
      mergeReceiptsConfig(RECEIPTS_DEFAULTS, o.receipts ?? {});
    } catch (err) {
      return Promise.reject(err);
    }
    let sim: WechatSimulator | undefined;
    const server = createServer({ keepAlive: true, noDelay: true }, (req, res) => {
      if (sim) sim.handle(req, res);
      else sendText(res, 503, 'starting');
    });
    server.keepAliveTimeout = 60_000;
    server.headersTimeout = 65_000;
    server.requestTimeout = 0;
    server.maxRequestsPerSocket = 0;
    server.maxHeadersCount = 100;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port ?? 0, host, () => {
        server.off('error', reject);
        const addr = server.address() as AddressInfo;
        sim = new WechatSimulator(server, addr.port, host, o);
        const s = sim;
        server.on('connection', (sock: Socket) => {
          s.sockets.add(sock);
          sock.once('close', () => s.sockets.delete(sock));
        });
        resolve(sim);
      });
    });
  }

  /** Stops listening, destroys every connection (hung requests included) and cancels pending receipts. Idempotent. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    const receiptsClosed = this.receipts.close();
    return new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
      this.server.closeAllConnections();
    }).then(() => receiptsClosed);
  }

  /** Changes faults / latency / daily limit / receipts. Throws TypeError on an invalid patch, changing nothing. */
  configure(patch: SimulatorConfigPatch): void {
    const { receipts, ...p } = validateConfigPatch(patch);
    const nextReceipts = receipts === undefined ? undefined : this.receipts.merged(receipts);
    const next: FaultConfig = { ...this.cfg, ...p, expireTokenNow: false };
    if (p.expireTokenNow === true) this.expireAllTokens();
    this.applyConfig(next);
    if (nextReceipts !== undefined) this.receipts.apply(nextReceipts);
  }

  /** The current configuration (faults with their remaining burst counts). */
  config(): SimulatorConfig {
    return { ...structuredClone(this.cfg), receipts: this.receipts.config() };
  }

  /**
   * Clears the record, the counters and the `client_msg_id` memory, and restores the faults,
   * latency and daily limit given at start. Issued tokens stay valid, so a running client is
   * not disturbed.
   */
  reset(): void {
    this.record = [];
    this.st = emptyStats();
    // Keep counting in-flight requests that are still open.
    this.st.inFlight = this.inFlightNow;
    this.st.maxInFlight = this.inFlightNow;
    this.dedupe = new Map();
    this.applyConfig(structuredClone(this.initial));
    this.receipts.reset();
  }

  /** Every send request received so far (a copy of the record array; entries are shared). */
  messages(since = 0): ReceivedMessage[] {
    return this.record.slice(since);
  }

  stats(): SimulatorStats {
    return { ...this.st, byErrcode: { ...this.st.byErrcode }, byKind: structuredClone(this.st.byKind) };
  }

  // ------------------------------------------------------------------ internals

  private inFlightNow = 0;

  private applyConfig(c: FaultConfig): void {
    this.cfg = c;
    this.rules = c.failOpenids.map((r) => ({ ...r, re: new RegExp(r.pattern) }));
    this.refused = c.refusedOpenids.map((p) => new RegExp(p));
  }

  private expireAllTokens(): void {
    const now = Date.now();
    for (const [t, exp] of this.tokens) if (exp > now) this.tokens.set(t, now - 1);
    this.currentToken = undefined;
  }

  private issueToken(now: number): string {
    if (this.tokens.size >= MAX_TOKENS_KEPT) {
      for (const [t, exp] of this.tokens) {
        if (exp < now - 3_600_000 || this.tokens.size >= MAX_TOKENS_KEPT) this.tokens.delete(t);
        if (this.tokens.size < MAX_TOKENS_KEPT / 2) break;
      }
    }
    const t = newToken();
    this.tokens.set(t, now + this.tokenTtlMs);
    this.currentToken = t;
    return t;
  }

  /** 0 when valid, else the errcode a send with this token gets. */
  private checkToken(token: string | null, now: number): number {
    if (!token) return ERRCODE.INVALID_CREDENTIAL;
    const exp = this.tokens.get(token);
    if (exp === undefined) return ERRCODE.INVALID_CREDENTIAL;
    if (exp <= now) return ERRCODE.ACCESS_TOKEN_EXPIRED;
    return 0;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1));
    const method = req.method ?? 'GET';

    if (path.startsWith('/_sim/')) {
      this.handleControl(method, path, query, req, res).catch((err: unknown) => {
        sendJson(res, 500, { error: err instanceof Error ? err.message : String(err) });
      });
      return;
    }
    const kind = KIND_OF_PATH.get(path);
    if (kind !== undefined) {
      if (method !== 'POST') return sendText(res, 405, 'method not allowed');
      return this.handleSend(kind, query, req, res);
    }
    switch (path) {
      case PRIVATE_TEMPLATES_PATH:
      case SUBSCRIBE_TEMPLATES_PATH:
        if (method !== 'GET') return sendText(res, 405, 'method not allowed');
        this.st.templateListRequests++;
        req.resume();
        return this.delay(() => this.answerTemplateList(res, path, query.get('access_token')));
      case '/cgi-bin/token':
        if (method !== 'GET') return sendText(res, 405, 'method not allowed');
        this.st.tokenRequests++;
        req.resume();
        return this.delay(() => this.answerToken(res, query.get('grant_type'), query.get('appid'), query.get('secret'), false, false));
      case '/cgi-bin/stable_token':
        if (method !== 'POST') return sendText(res, 405, 'method not allowed');
        this.st.tokenRequests++;
        readBody(req).then(
          (text) =>
            this.delay(() => {
              const b = text === null ? undefined : parseJsonObject(text);
              if (!b) return sendJson(res, 200, wechatError(ERRCODE.DATA_FORMAT_ERROR));
              this.answerToken(
                res,
                typeof b['grant_type'] === 'string' ? b['grant_type'] : null,
                typeof b['appid'] === 'string' ? b['appid'] : null,
                typeof b['secret'] === 'string' ? b['secret'] : null,
                true,
                b['force_refresh'] === true,
              );
            }),
          () => res.destroy(),
        );
        return;
      case '/cgi-bin/openapi/quota/get':
        if (method !== 'POST') return sendText(res, 405, 'method not allowed');
        this.st.quotaRequests++;
        readBody(req).then(
          (text) => this.delay(() => this.answerQuota(res, query.get('access_token'), text)),
          () => res.destroy(),
        );
        return;
      default:
        req.resume();
        return sendText(res, 404, 'not found');
    }
  }

  private delay(fn: () => void): void {
    const ms = this.cfg.latencyMs;
    if (ms > 0) setTimeout(fn, ms);
    else fn();
  }

  private answerToken(
    res: ServerResponse,
    grantType: string | null,
    appid: string | null,
    secret: string | null,
    stable: boolean,
    force: boolean,
  ): void {
    if (this.cfg.tokenErrcode !== null) return sendJson(res, 200, wechatError(this.cfg.tokenErrcode));
    if (grantType !== 'client_credential') return sendJson(res, 200, wechatError(ERRCODE.INVALID_GRANT_TYPE));
    if (appid !== this.appId) return sendJson(res, 200, wechatError(ERRCODE.INVALID_APPID));
    if (secret !== this.appSecret) return sendJson(res, 200, wechatError(ERRCODE.INVALID_APPSECRET));
    const now = Date.now();
    const cur = this.currentToken;
    const curExp = cur === undefined ? undefined : this.tokens.get(cur);
    if (stable) {
      if (force) {
        for (const t of [...this.tokens.keys()]) this.tokens.delete(t);
        this.currentToken = undefined;
      } else if (cur !== undefined && curExp !== undefined) {
        const renewWindow = Math.min(TOKEN_OVERLAP_MS, this.tokenTtlMs / 2);
        if (curExp - now > renewWindow) {
          return sendJson(res, 200, { access_token: cur, expires_in: Math.max(1, Math.floor((curExp - now) / 1000)) });
        }
      }
    } else if (cur !== undefined && curExp !== undefined && curExp > now) {
      // /cgi-bin/token: the previous token stays usable for at most 5 more minutes.
      this.tokens.set(cur, Math.min(curExp, now + Math.min(TOKEN_OVERLAP_MS, this.tokenTtlMs)));
    }
    const token = this.issueToken(now);
    sendJson(res, 200, { access_token: token, expires_in: Math.max(1, Math.floor(this.tokenTtlMs / 1000)) });
  }

  private answerQuota(res: ServerResponse, token: string | null, text: string | null): void {
    const tokenErr = this.checkToken(token, Date.now());
    if (tokenErr !== 0) return sendJson(res, 200, wechatError(tokenErr));
    const b = text === null ? undefined : parseJsonObject(text);
    if (!b) return sendJson(res, 200, wechatError(ERRCODE.DATA_FORMAT_ERROR));
    const cgiPath = b['cgi_path'];
    if (typeof cgiPath !== 'string' || cgiPath === '') return sendJson(res, 200, wechatError(ERRCODE.INVALID_ARGS));
    if (!cgiPath.startsWith('/cgi-bin/')) return sendJson(res, 200, wechatError(ERRCODE.CGI_PATH_NOT_FOUND));
    const limit = this.cfg.dailyLimit;
    const kind = KIND_OF_PATH.get(cgiPath);
    // Each send endpoint has a quota of its own, as at WeChat.
    const used = kind === undefined ? 0 : this.st.byKind[kind].ok;
    sendJson(res, 200, { errcode: 0, errmsg: 'ok', quota: { daily_limit: limit, used, remain: Math.max(0, limit - used) } });
  }

  private answerTemplateList(res: ServerResponse, path: string, token: string | null): void {
    const tokenErr = this.checkToken(token, Date.now());
    if (tokenErr !== 0) return sendJson(res, 200, wechatError(tokenErr));
    if (path === PRIVATE_TEMPLATES_PATH) return sendJson(res, 200, { template_list: this.cfg.privateTemplates });
    sendJson(res, 200, { errcode: 0, errmsg: 'ok', data: this.cfg.subscribeTemplates });
  }

  private handleSend(kind: MessageKind, query: URLSearchParams, req: IncomingMessage, res: ServerResponse): void {
    const receivedAt = Date.now();
    const st = this.st;
    st.sendRequests++;
    st.byKind[kind].requests++;
    this.inFlightNow++;
    st.inFlight = this.inFlightNow;
    if (st.inFlight > st.maxInFlight) st.maxInFlight = st.inFlight;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      this.inFlightNow--;
      // A reset() may have replaced the stats object meanwhile: update the live one.
      this.st.inFlight = this.inFlightNow;
    };
    res.once('close', finish);
    const token = query.get('access_token');
    readBody(req).then(
      (text) => this.delay(() => this.answerSend(kind, res, token, text, receivedAt)),
      () => res.destroy(),
    );
  }

  private answerSend(kind: MessageKind, res: ServerResponse, token: string | null, text: string | null, receivedAt: number): void {
    const st = this.st;
    const cfg = this.cfg;
    const body = text === null ? undefined : parseJsonObject(text);
    const rec: ReceivedMessage = {
      index: this.record.length,
      receivedAt,
      kind,
      status: 200,
      errcode: null,
      duplicate: false,
    };
    if (body) {
      if (typeof body['touser'] === 'string') rec.touser = body['touser'];
      if (typeof body['template_id'] === 'string') rec.template_id = body['template_id'];
      if (typeof body['client_msg_id'] === 'string') rec.client_msg_id = body['client_msg_id'];
      if (this.recordBodies) {
        if (body['data'] !== undefined) rec.data = body['data'];
        rec.body = body;
      }
    } else if (this.recordBodies && text !== null) {
      rec.body = text;
    }
    this.record.push(rec);

    if (cfg.hangBurst !== null && cfg.hangBurst.count > 0) {
      cfg.hangBurst.count--;
      rec.status = 0;
      st.hung++;
      return; // never answered; closed by the client's timeout or by close()
    }
    if (cfg.http5xxBurst !== null && cfg.http5xxBurst.count > 0) {
      cfg.http5xxBurst.count--;
      rec.status = cfg.http5xxBurst.status;
      st.http5xx++;
      return sendText(
        res,
        cfg.http5xxBurst.status,
        `<html><head><title>${cfg.http5xxBurst.status}</title></head><body>upstream error</body></html>`,
        'text/html',
      );
    }

    const answer = (errcode: number, errmsg?: string, msgid?: number): void => {
      rec.errcode = errcode;
      const key = String(errcode);
      st.byErrcode[key] = (st.byErrcode[key] ?? 0) + 1;
      if (errcode === 0) st.byKind[kind].ok++;
      if (msgid !== undefined) {
        rec.msgid = msgid;
        sendJson(res, 200, { errcode, errmsg: errmsg ?? 'ok', msgid });
      } else {
        sendJson(res, 200, wechatError(errcode, errmsg));
      }
    };

    const now = Date.now();
    const tokenErr = this.checkToken(token, now);
    if (tokenErr !== 0) return answer(tokenErr);
    if (!body) return answer(ERRCODE.DATA_FORMAT_ERROR);
    if (cfg.errcodeBurst !== null && cfg.errcodeBurst.count > 0) {
      cfg.errcodeBurst.count--;
      return answer(cfg.errcodeBurst.errcode);
    }
    const limit = cfg.quotaAfter === null ? cfg.dailyLimit : Math.min(cfg.quotaAfter, cfg.dailyLimit);
    if (st.byKind[kind].delivered >= limit) return answer(ERRCODE.DAILY_QUOTA_REACHED);
    if (typeof body['touser'] !== 'string' || body['touser'] === '') return answer(ERRCODE.INVALID_OPENID);
    if (typeof body['template_id'] !== 'string' || body['template_id'] === '') return answer(ERRCODE.INVALID_TEMPLATE_ID);
    const touser = body['touser'];
    const templateId = body['template_id'];
    if (kind !== 'template') {
      const bad = checkSubscribeBody(kind, body);
      if (bad !== null) return answer(bad.errcode, bad.errmsg);
    }
    for (const r of this.rules) {
      if (r.re.test(touser)) return answer(r.errcode, r.errmsg);
    }
    if (kind !== 'template') {
      if (this.refused.some((re) => re.test(touser))) return answer(ERRCODE.USER_REFUSED);
      // No client_msg_id on these endpoints: every accepted send is a new message.
      const msgid = this.nextMsgid++;
      st.delivered++;
      st.byKind[kind].delivered++;
      answer(0, 'ok', msgid);
      this.receipts.subscribeSent({ msgid, openid: touser, client_msg_id: null, acceptedAt: receivedAt }, templateId);
      return;
    }
    const cmid = rec.client_msg_id;
    if (cmid !== undefined && cmid !== '') {
      const prev = this.dedupe.get(cmid);
      if (prev !== undefined && now - prev.at < this.dedupeWindowMs) {
        rec.duplicate = true;
        st.duplicates++;
        return answer(0, 'ok', prev.msgid);
      }
      if (this.dedupe.size >= 100_000) this.pruneDedupe(now);
    }
    const msgid = this.nextMsgid++;
    if (cmid !== undefined && cmid !== '') this.dedupe.set(cmid, { at: now, msgid });
    st.delivered++;
    st.byKind.template.delivered++;
    answer(0, 'ok', msgid);
    this.receipts.delivered({ msgid, openid: touser, client_msg_id: cmid ?? null, acceptedAt: receivedAt });
  }

  /** The accepted (errcode 0, not duplicate) template message with this msgid, or the last one: what a TEMPLATESENDJOBFINISH is about. */
  private findDelivered(msgid?: number): DeliveredMessage | undefined {
    for (let i = this.record.length - 1; i >= 0; i--) {
      const r = this.record[i]!;
      if (r.kind !== 'template' || r.errcode !== 0 || r.duplicate || r.msgid === undefined || r.touser === undefined) continue;
      if (msgid === undefined || r.msgid === msgid) {
        return { msgid: r.msgid, openid: r.touser, client_msg_id: r.client_msg_id ?? null, acceptedAt: r.receivedAt };
      }
    }
    return undefined;
  }

  private pruneDedupe(now: number): void {
    for (const [k, v] of this.dedupe) {
      if (now - v.at >= this.dedupeWindowMs) this.dedupe.delete(k);
    }
  }

  private async handleControl(
    method: string,
    path: string,
    query: URLSearchParams,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    if (method === 'GET') req.resume();
    if (path === '/_sim/receipts' || path.startsWith('/_sim/receipts/')) {
      const a = await receiptsControl(this.receipts, method, path, query, method === 'POST' ? await readBody(req) : (req.resume(), ''));
      return sendJson(res, a.status, a.payload);
    }
    if (method === 'GET' && path === '/_sim/messages') {
      const sinceText = query.get('since');
      const since = sinceText === null ? 0 : Number(sinceText);
      if (!Number.isInteger(since) || since < 0) return sendJson(res, 400, { error: 'since must be a non-negative integer' });
      return sendJson(res, 200, { next: this.record.length, messages: this.record.slice(since) });
    }
    if (method === 'GET' && path === '/_sim/stats') return sendJson(res, 200, this.stats());
    if (method === 'GET' && path === '/_sim/config') return sendJson(res, 200, this.config());
    if (method === 'POST' && path === '/_sim/config') {
      const text = await readBody(req);
      let patch: unknown;
      try {
        patch = JSON.parse(text ?? '');
      } catch {
        return sendJson(res, 400, { error: 'body must be JSON' });
      }
      try {
        this.configure(patch as SimulatorConfigPatch);
      } catch (err) {
        return sendJson(res, 400, { error: err instanceof Error ? err.message : String(err) });
      }
      return sendJson(res, 200, this.config());
    }
    if (method === 'POST' && path === '/_sim/reset') {
      req.resume();
      this.reset();
      return sendJson(res, 200, { ok: true });
    }
    req.resume();
    return sendJson(res, 404, { error: `no control endpoint ${method} ${path}` });
  }
}
