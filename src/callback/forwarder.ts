import { Agent, request } from 'undici';
import type { CallbackAnswer } from './replay-guard.js';

export interface ForwarderOptions {
  /** The app that had the server URL before the daemon: `[callback] forward_url`. */
  url: string;
  /** How long the app may take, in ms. @defaultValue 4500 */
  timeoutMs?: number;
  /** Largest answer taken from the app, in bytes; a larger one is a 502. @defaultValue 1048576 */
  maxAnswerBytes?: number;
}

/** A request to pass on, as WeChat sent it. */
export interface ForwardedRequest {
  method: string;
  /** The query string with its `?`, or ''. */
  search: string;
  contentType: string | undefined;
  body: Buffer;
  /** The address WeChat connected from, passed as `X-Forwarded-For`. */
  remoteAddress: string | undefined;
}

/**
 * Passes verified requests to the team's own WeChat app, unchanged (method, query string with
 * its signatures, body, encrypted or not), so the app checks them as if WeChat had called it,
 * and hands back its answer byte for byte. Keep-alive connections through one undici Agent.
 */
export class Forwarder {
  private readonly agent: Agent;
  private readonly base: URL;
  private readonly timeoutMs: number;
  private readonly maxAnswerBytes: number;

  constructor(options: ForwarderOptions) {
    this.base = new URL(options.url);
    this.timeoutMs = options.timeoutMs ?? 4500;
    this.maxAnswerBytes = options.maxAnswerBytes ?? 1024 * 1024;
    this.agent = new Agent({ connections: 64, connectTimeout: this.timeoutMs, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });
  }

  /** The app's URL for a request: forward_url with the request's query string added. */
  target(search: string): string {
    const url = new URL(this.base);
    const extra = search.startsWith('?') ? search.slice(1) : search;
    if (extra) url.search = url.search ? `${url.search}&${extra}` : `?${extra}`;
    return url.toString();
  }

  /**
   * The app's answer; a 502 (never a rejection) when it cannot be reached, fails to answer in
   * time or answers too much. `reason` says why, for the log.
   */
  async forward(req: ForwardedRequest): Promise<CallbackAnswer & { reason?: string }> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      const headers: Record<string, string> = {};
      if (req.contentType) headers['content-type'] = req.contentType;
      if (req.remoteAddress) headers['x-forwarded-for'] = req.remoteAddress;
      const res = await request(this.target(req.search), {
        method: req.method as 'POST',
        headers,
        body: req.method === 'GET' || req.method === 'HEAD' ? undefined : req.body,
        dispatcher: this.agent,
        signal,
      });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > this.maxAnswerBytes) {
          res.body.destroy();
          return bad(`the app answered more than ${this.maxAnswerBytes} bytes`);
        }
        chunks.push(chunk as Buffer);
      }
      const type = res.headers['content-type'];
      return {
        status: res.statusCode,
        contentType: (Array.isArray(type) ? type[0] : type) ?? 'text/plain; charset=utf-8',
        body: Buffer.concat(chunks),
      };
    } catch (err) {
      return bad(signal.aborted ? `the app did not answer within ${this.timeoutMs} ms` : `the app cannot be reached: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => {});
  }
}

function bad(reason: string): CallbackAnswer & { reason: string } {
  return { status: 502, contentType: 'text/plain; charset=utf-8', body: Buffer.from('bad gateway'), reason };
}
