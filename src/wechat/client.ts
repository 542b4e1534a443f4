/**
 * WechatClient: the HTTP side of the WeChat API (token, template send, quota) over an undici
 * keep-alive `Pool`. Usable in worker threads and the main thread; holds no token itself
 * (see TokenManager).
 *
 * Error contract:
 * - `sendTemplate` / `quota` / `privateTemplates` / `subscribeTemplates` resolve with WeChat's JSON
 *   answer whatever its errcode; they reject
 *   only with {@link WechatTransportError} (HTTP non-2xx, timeout, connection error, non-JSON),
 *   whose `retryable` flag says whether sending again may help.
 * - `fetchToken` resolves only with a token; every failure is a {@link TokenError}.
 * - No message ever contains the app secret or an access token (URLs are redacted).
 */

import { SEND_PATHS, type MessageKind } from './kinds.js';
import { Pool, type Dispatcher } from 'undici';
import { ConfigError, TokenError, WechatTransportError, type WechatTransportKind } from '../errors.js';
import { redactLiterals, redactSecrets } from './redact.js';

export interface WechatClientOptions {
  /** e.g. `https://api.weixin.qq.com`; may carry a path prefix (`http://proxy/wx`). */
  apiBase: string;
  /** undici Pool size (max sockets). @defaultValue 64 */
  connections?: number;
  /**
   * Longest wait for each step of a request: connecting, the answer's headers once the request
   * is written, and each gap in its body. @defaultValue 10000
   */
  timeoutMs?: number;
  /** HTTP/1.1 pipelining depth per socket. @defaultValue 1 */
  pipelining?: number;
}

export interface SendResult {
  errcode: number;
  errmsg: string;
  /**
   * WeChat's msgid as a JS number. WeChat msgids are 64-bit and may exceed 2^53:
   * use `raw` when the exact digits matter.
   */
  msgid?: number;
  /** WeChat's JSON text exactly as received. */
  raw: string;
}

export interface TokenResult {
  accessToken: string;
  /** Seconds the token stays valid, as WeChat answered. */
  expiresIn: number;
}

export interface QuotaResult {
  errcode: number;
  errmsg: string;
  quota?: { dailyLimit: number; used: number; remain: number };
  raw: string;
}

/** One template of an Official Account's template-message list (`get_all_private_template`). */
export interface PrivateTemplateInfo {
  templateId: string;
  title: string;
  primaryIndustry: string;
  deputyIndustry: string;
  /** e.g. `{{first.DATA}}\n商品：{{keyword1.DATA}}\n{{remark.DATA}}` */
  content: string;
  example: string;
}

/** One subscription template (`wxaapi/newtmpl/gettemplate`): an Official Account's or a mini program's. */
export interface SubscribeTemplateInfo {
  priTmplId: string;
  title: string;
  /** e.g. `商品名称:{{thing1.DATA}}\n金额:{{amount2.DATA}}` */
  content: string;
  example: string;
  /** 2 = one-time subscription, 3 = long-term; 0 when WeChat did not say. */
  type: number;
}

/** `templates` is present when errcode is 0. */
export interface TemplateListResult<T> {
  errcode: number;
  errmsg: string;
  templates?: T[];
  raw: string;
}

const SEND_PATH = SEND_PATHS.template;
const QUOTA_PATH = '/cgi-bin/openapi/quota/get';
const PRIVATE_TEMPLATES_PATH = '/cgi-bin/template/get_all_private_template';
const SUBSCRIBE_TEMPLATES_PATH = '/wxaapi/newtmpl/gettemplate';
const MAX_RESPONSE_BYTES = 1024 * 1024;
const SNIPPET = 160;

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** The first string `code` found on err, its AggregateError members or its causes. */
function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e !== null && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    if (e instanceof AggregateError && e.errors.length > 0) e = e.errors[0];
    else e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);
const CLOSED_CODES = new Set(['UND_ERR_DESTROYED', 'UND_ERR_CLOSED']);

/** `text` shortened for an error message, secrets redacted, control characters flattened. */
function snippet(text: string): string {
  const flat = redactSecrets(text).replace(/[\r\n\t]+/g, ' ');
  return flat.length > SNIPPET ? `${flat.slice(0, SNIPPET)}...` : flat;
}

interface HttpAnswer {
  status: number;
  text: string;
}

const JSON_HEADERS = { 'content-type': 'application/json; charset=utf-8' };

/** Collects one response's status and body text; calls `done` once, with either. */
class AnswerCollector implements Dispatcher.DispatchHandler {
  private status = 0;
  private chunks: Buffer[] = [];
  private finished = false;

  constructor(private readonly done: (err: Error | null, answer?: HttpAnswer) => void) {}

  onRequestStart(): void {}

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number): void {
    this.status = statusCode;
    this.chunks = [];
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
  }

  onResponseEnd(): void {
    if (this.finished) return;
    this.finished = true;
    const c = this.chunks;
    const text = c.length === 1 ? c[0]!.toString('utf8') : Buffer.concat(c).toString('utf8');
    this.done(null, { status: this.status, text });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.done(err);
  }
}

export class WechatClient {
  /** The api base, normalized (no trailing slash). */
  readonly apiBase: string;
  readonly timeoutMs: number;
  private readonly pool: Pool;
  private readonly prefix: string;

  constructor(o: WechatClientOptions) {
    if (o === null || typeof o !== 'object') throw new ConfigError('WechatClient options must be an object');
    if (typeof o.apiBase !== 'string' || o.apiBase === '') {
      throw new ConfigError('WechatClient option apiBase must be an http(s) URL, got an empty value');
    }
    let url: URL;
    try {
      url = new URL(o.apiBase);
    } catch {
      throw new ConfigError('WechatClient option apiBase must be an http(s) URL, got an unparsable value');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigError(`WechatClient option apiBase must be an http(s) URL, got protocol "${url.protocol}"`);
    }
    if (url.search !== '' || url.hash !== '') {
      throw new ConfigError('WechatClient option apiBase must not carry a query or fragment');
    }
    const connections = o.connections ?? 64;
    if (!isPositiveInt(connections)) throw new ConfigError('WechatClient option connections must be a positive integer');
    const timeoutMs = o.timeoutMs ?? 10_000;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new ConfigError('WechatClient option timeoutMs must be a positive number of milliseconds');
    }
    const pipelining = o.pipelining ?? 1;
    if (!isPositiveInt(pipelining)) throw new ConfigError('WechatClient option pipelining must be a positive integer');

    this.prefix = url.pathname.replace(/\/+$/, '');
    this.apiBase = `${url.origin}${this.prefix}`;
    this.timeoutMs = timeoutMs;
    this.pool = new Pool(url.origin, {
      connections,
      pipelining,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      connectTimeout: timeoutMs,
      maxResponseSize: MAX_RESPONSE_BYTES,
    });
  }

  /**
   * Obtains an access token from `/cgi-bin/stable_token` (`kind` 'stable', POST, secret in the body)
   * or `/cgi-bin/token` ('token', GET). Rejects with TokenError carrying WeChat's `errcode` when
   * WeChat refused (message `token endpoint answered 40125 invalid appsecret`), or without
   * errcode for transport failures (cause: the WechatTransportError).
   */
  async fetchToken(kind: 'stable' | 'token', appId: string, appSecret: string, forceRefresh = false): Promise<TokenResult> {
    const secrets = [appSecret];
    let answer: HttpAnswer;
    try {
      if (kind === 'stable') {
        const body: Record<string, unknown> = { grant_type: 'client_credential', appid: appId, secret: appSecret };
        if (forceRefresh) body['force_refresh'] = true;
        answer = await this.request('POST', '/cgi-bin/stable_token', JSON.stringify(body));
      } else if (kind === 'token') {
        const qs = new URLSearchParams({ grant_type: 'client_credential', appid: appId, secret: appSecret });
        answer = await this.request('GET', `/cgi-bin/token?${qs.toString()}`);
      } else {
        throw new TokenError(`unknown token endpoint kind ${JSON.stringify(String(kind))}`);
      }
    } catch (err) {
      if (err instanceof TokenError) throw err;
      const msg = err instanceof Error ? err.message : String(err);
      throw new TokenError(`token endpoint unreachable: ${redactLiterals(msg, secrets)}`, undefined, { cause: err });
    }
    if (answer.status < 200 || answer.status > 299) {
      throw new TokenError(`token endpoint answered HTTP ${answer.status}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(answer.text);
    } catch {
      throw new TokenError(`token endpoint answered non-JSON: ${redactLiterals(snippet(answer.text), secrets)}`);
    }
    const j = (json ?? {}) as Record<string, unknown>;
    const errcode = typeof j['errcode'] === 'number' ? j['errcode'] : 0;
    if (errcode !== 0) {
      const errmsg = typeof j['errmsg'] === 'string' ? j['errmsg'] : '';
      throw new TokenError(`token endpoint answered ${errcode} ${redactLiterals(snippet(errmsg), secrets)}`, errcode);
    }
    const accessToken = j['access_token'];
    const expiresIn = j['expires_in'];
    if (typeof accessToken !== 'string' || accessToken === '' || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
      throw new TokenError('token endpoint answered without access_token/expires_in');
    }
    return { accessToken, expiresIn };
  }

  /**
   * Sends one template message. `body` is the request JSON (object, or already serialized text).
   * Resolves with WeChat's answer whatever its errcode.
   */
  async sendTemplate(accessToken: string, body: Record<string, unknown> | string): Promise<SendResult> {
    return this.sendMessage('template', accessToken, body);
  }

  /** Sends one message of `kind` to its endpoint (SEND_PATHS); the answer as sendTemplate's. */
  async sendMessage(kind: MessageKind, accessToken: string, body: Record<string, unknown> | string): Promise<SendResult> {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const path = `${SEND_PATHS[kind]}?access_token=${encodeURIComponent(accessToken)}`;
    const answer = await this.request('POST', path, text);
    const j = this.parseWechatJson(answer, 'POST', path);
    // errcode is read from WeChat's JSON first and never overwritten (the original's bug).
    const res: SendResult = {
      errcode: j['errcode'] as number,
      errmsg: typeof j['errmsg'] === 'string' ? j['errmsg'] : '',
      raw: answer.text,
    };
    if (typeof j['msgid'] === 'number') res.msgid = j['msgid'];
    return res;
  }

  /** `/cgi-bin/openapi/quota/get` for `cgiPath` (e.g. `/cgi-bin/message/template/send`). */
  async quota(accessToken: string, cgiPath: string = SEND_PATH): Promise<QuotaResult> {
    const path = `${QUOTA_PATH}?access_token=${encodeURIComponent(accessToken)}`;
    const answer = await this.request('POST', path, JSON.stringify({ cgi_path: cgiPath }));
    const j = this.parseWechatJson(answer, 'POST', path);
    const res: QuotaResult = {
      errcode: j['errcode'] as number,
      errmsg: typeof j['errmsg'] === 'string' ? j['errmsg'] : '',
      raw: answer.text,
    };
    const q = j['quota'];
    if (q !== null && typeof q === 'object') {
      const qq = q as Record<string, unknown>;
      res.quota = {
        dailyLimit: Number(qq['daily_limit'] ?? 0),
        used: Number(qq['used'] ?? 0),
        remain: Number(qq['remain'] ?? 0),
      };
    }
    return res;
  }

  /** The Official Account's template-message templates (`GET /cgi-bin/template/get_all_private_template`). */
  async privateTemplates(accessToken: string): Promise<TemplateListResult<PrivateTemplateInfo>> {
    return this.templateList(PRIVATE_TEMPLATES_PATH, 'template_list', accessToken, (e) => {
      const templateId = e['template_id'];
      if (typeof templateId !== 'string') return undefined;
      return {
        templateId,
        title: str(e['title']),
        primaryIndustry: str(e['primary_industry']),
        deputyIndustry: str(e['deputy_industry']),
        content: str(e['content']),
        example: str(e['example']),
      };
    });
  }

  /** The account's subscription templates (`GET /wxaapi/newtmpl/gettemplate`): bizsend's and subscribe/send's. */
  async subscribeTemplates(accessToken: string): Promise<TemplateListResult<SubscribeTemplateInfo>> {
    return this.templateList(SUBSCRIBE_TEMPLATES_PATH, 'data', accessToken, (e) => {
      const priTmplId = e['priTmplId'];
      if (typeof priTmplId !== 'string') return undefined;
      return {
        priTmplId,
        title: str(e['title']),
        content: str(e['content']),
        example: str(e['example']),
        type: typeof e['type'] === 'number' ? e['type'] : 0,
      };
    });
  }

  /** Closes the pool once pending requests have finished (they are bounded by `timeoutMs`). */
  async close(): Promise<void> {
    if (this.pool.closed || this.pool.destroyed) return;
    await this.pool.close();
  }

  /** Closes the pool at once: pending requests reject with WechatTransportError kind `closed`. */
  async destroy(): Promise<void> {
    if (this.pool.destroyed) return;
    await this.pool.destroy();
  }

  // ------------------------------------------------------------------ internals

  /**
   * GETs a template list. `get_all_private_template` answers a success without any errcode
   * (`{"template_list": [...]}`), so a missing errcode counts as 0 when the list is there;
   * entries without their id are left out.
   */
  private async templateList<T>(
    listPath: string,
    field: string,
    accessToken: string,
    entry: (e: Record<string, unknown>) => T | undefined,
  ): Promise<TemplateListResult<T>> {
    const path = `${listPath}?access_token=${encodeURIComponent(accessToken)}`;
    const answer = await this.request('GET', path);
    const j = this.parseWechatJson(answer, 'GET', path, field);
    const errcode = typeof j['errcode'] === 'number' ? j['errcode'] : 0;
    const res: TemplateListResult<T> = { errcode, errmsg: typeof j['errmsg'] === 'string' ? j['errmsg'] : '', raw: answer.text };
    if (errcode !== 0) return res;
    const list = j[field];
    if (!Array.isArray(list)) {
      throw new WechatTransportError(`WeChat API answered GET ${listPath} with errcode 0 but no ${field} list: ${snippet(answer.text)}`, {
        kind: 'invalid_response',
        status: answer.status,
        retryable: true,
      });
    }
    res.templates = [];
    for (const e of list) {
      const t = e !== null && typeof e === 'object' ? entry(e as Record<string, unknown>) : undefined;
      if (t !== undefined) res.templates.push(t);
    }
    return res;
  }

  /** `listField`: an answer holding that array needs no errcode (get_all_private_template's success). */
  private parseWechatJson(answer: HttpAnswer, method: string, path: string, listField?: string): Record<string, unknown> {
    if (answer.status < 200 || answer.status > 299) {
      const s = answer.status;
      throw new WechatTransportError(
        `WeChat API answered HTTP ${s} to ${method} ${redactSecrets(path)}: ${snippet(answer.text)}`,
        { kind: 'http', status: s, retryable: s >= 500 || s === 408 || s === 429 },
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(answer.text);
    } catch {
      json = undefined;
    }
    const j = json as Record<string, unknown> | null | undefined;
    const wellFormed =
      j !== null &&
      typeof j === 'object' &&
      !Array.isArray(j) &&
      (typeof j['errcode'] === 'number' || (listField !== undefined && j['errcode'] === undefined && Array.isArray(j[listField])));
    if (!wellFormed) {
      throw new WechatTransportError(
        `WeChat API answered ${method} ${redactSecrets(path)} with something that is not its JSON: ${snippet(answer.text)}`,
        { kind: 'invalid_response', status: answer.status, retryable: true },
      );
    }
    return json as Record<string, unknown>;
  }

  /**
   * One HTTP exchange through `Pool.dispatch` with a handler that only collects the body: no
   * body stream, AbortController or timer per call, which `Pool.request` would add to every
   * message. Time limits are the pool's own (`connectTimeout`, `headersTimeout`,
   * `bodyTimeout`, each `timeoutMs`).
   */
  private request(method: 'GET' | 'POST', path: string, body?: string): Promise<HttpAnswer> {
    return new Promise<HttpAnswer>((resolve, reject) => {
      const handler = new AnswerCollector((err, answer) => {
        if (err) reject(this.transportError(err, method, path));
        else resolve(answer!);
      });
      try {
        this.pool.dispatch(
          {
            method,
            path: this.prefix + path,
            headers: body === undefined ? undefined : JSON_HEADERS,
            body,
          },
          handler,
        );
      } catch (err) {
        reject(this.transportError(err, method, path));
      }
    });
  }

  private transportError(err: unknown, method: string, path: string): WechatTransportError {
    const code = errorCode(err);
    let kind: WechatTransportKind;
    if (code !== undefined && TIMEOUT_CODES.has(code)) kind = 'timeout';
    else if (code !== undefined && CLOSED_CODES.has(code)) kind = 'closed';
    else kind = 'connection';
    const what =
      kind === 'timeout'
        ? `timed out after ${this.timeoutMs} ms`
        : kind === 'closed'
          ? 'aborted: client closed'
          : `failed (${code ?? (err instanceof Error ? err.name : 'error')})`;
    return new WechatTransportError(`WeChat API request ${method} ${redactSecrets(path)} ${what}`, {
      kind,
      retryable: true,
      cause: err,
    });
  }
}
