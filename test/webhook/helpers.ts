/** Shared helpers for the webhook tests (this module defines no tests): a real HTTP receiver, records, a recording logger. */

import fs from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { MessageRecord } from '../../src/protocol/index.js';
import type { WebhookBody, WebhookEvent, WebhookEventState } from '../../src/webhook/index.js';
import { freePort } from '../helpers/ports.js';

/** What the receiver does with request number `n` (0-based): answer this status, or never answer. */
export type Reply = number | 'hang';

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  events: WebhookEvent[];
  reply: Reply;
}

/** A webhook receiver on 127.0.0.1: records every request, answers as `reply` says. */
export class Receiver {
  readonly requests: Received[] = [];
  private constructor(
    private readonly server: http.Server,
    readonly port: number,
    public reply: (n: number) => Reply,
  ) {}

  static async start(reply: (n: number) => Reply = () => 200, port?: number): Promise<Receiver> {
    const p = port ?? (await freePort());
    let r: Receiver | undefined;
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const reply = r!.reply(r!.requests.length);
        r!.requests.push({ headers: req.headers, body, events: (JSON.parse(body.toString('utf8')) as WebhookBody).events, reply });
        if (reply === 'hang') return;
        res.writeHead(reply, { 'content-type': 'text/plain' }).end(reply >= 200 && reply <= 299 ? 'ok' : `no thanks ${reply}`);
      });
    });
    server.listen(p, '127.0.0.1');
    await once(server, 'listening');
    r = new Receiver(server, p, reply);
    return r;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks/mega`;
  }

  /** The requests answered 2xx, in arrival order. */
  accepted(): Received[] {
    return this.requests.filter((q) => typeof q.reply === 'number' && q.reply >= 200 && q.reply <= 299);
  }

  /** Event ids of the requests answered 2xx, in arrival order. */
  acceptedIds(): string[] {
    return this.accepted().flatMap((q) => q.events.map((e) => e.id));
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    const closed = once(this.server, 'close');
    this.server.close();
    await closed;
  }
}

/** A final record of message `m<i>`. */
export function record(i: number, state: WebhookEventState = 'delivered', finalAt = 1_700_000_000_000 + i): MessageRecord {
  return {
    msgid: `m${i}`,
    openid: `o${i % 7}`,
    key: 'order_paid',
    kind: i % 2 === 0 ? 'push' : 'send',
    state,
    attempts: 1,
    wechatMsgid: state === 'rejected' || state === 'dead' ? null : String(9_000_000 + i),
    errcode: state === 'rejected' ? 40003 : null,
    errmsg: state === 'rejected' ? 'invalid openid' : null,
    queuedAt: finalAt - 2000,
    sentAt: state === 'rejected' || state === 'dead' ? null : finalAt - 1000,
    finalAt,
  };
}

export const idOf = (r: MessageRecord): string => `${r.msgid}:${r.state}:${String(r.finalAt)}`;

export function tmpDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mega-webhook-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'outbox');
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` every 5 ms, for at most `ms`. */
export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

export type LogCall = { level: string; obj: unknown; msg: string | undefined };

/** A logger that records every call (the part of pino's surface the sender and its outbox use). */
export function recordingLogger(): { logger: Logger; calls: LogCall[]; at: (level: string) => LogCall[] } {
  const calls: LogCall[] = [];
  const mk =
    (level: string) =>
    (objOrMsg?: unknown, msg?: string): void => {
      if (typeof objOrMsg === 'string') calls.push({ level, obj: undefined, msg: objOrMsg });
      else calls.push({ level, obj: objOrMsg, msg });
    };
  const logger = { trace: mk('trace'), debug: mk('debug'), info: mk('info'), warn: mk('warn'), error: mk('error'), fatal: mk('fatal') } as unknown as Logger;
  return { logger, calls, at: (level) => calls.filter((c) => c.level === level) };
}
