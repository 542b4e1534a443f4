/**
 * A receiver for the daemon's receipt webhook (docs/WEBHOOK.md), for end-to-end tests: a real
 * node:http server on a fixed loopback port that records every batch as it arrives, checks its
 * signature with the function receivers are told to use, and can be switched down (connections
 * refused), failing (answers 503), slow (answers late) and up again on the same port, so the
 * daemon's outbox has something to survive.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { verifyWebhookSignature, type WebhookEvent } from '../../src/webhook/index.js';
import { freePort } from './ports.js';

/** How the receiver answers: `up` 204, `failing` 503, `down` refuses connections. */
export type ReceiverMode = 'up' | 'failing' | 'down';

/** One request as it arrived. */
export interface ReceivedBatch {
  /** Arrival order, from 0. */
  seq: number;
  at: number;
  /** X-Mega-Signature checked against the secret (with the default 300 s tolerance). */
  signatureOk: boolean;
  timestamp: string | undefined;
  userAgent: string | undefined;
  contentType: string | undefined;
  raw: Buffer;
  /** The body's events; [] when it was not `{"events":[...]}`. */
  events: WebhookEvent[];
  /** The status this receiver answered with. */
  answered: number;
}

export class WebhookReceiver {
  readonly batches: ReceivedBatch[] = [];
  mode: ReceiverMode = 'up';
  /** Milliseconds to wait before answering (stored at arrival: "store first, then answer"). */
  delayMs = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly port: number,
    private readonly secret: string,
  ) {}

  /** Listening on a free port, mode `up`. */
  static async start(secret: string): Promise<WebhookReceiver> {
    const r = new WebhookReceiver(await freePort(), secret);
    await r.listen();
    return r;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks/mega`;
  }

  /** `up` or `failing` (listening again if it was down), or `down` (closed, every connection cut). */
  async set(mode: ReceiverMode): Promise<void> {
    this.mode = mode;
    if (mode === 'down') await this.close();
    else if (!this.server) await this.listen();
  }

  /** The batches this receiver accepted (answered 2xx): what it has stored. */
  accepted(): ReceivedBatch[] {
    return this.batches.filter((b) => b.answered >= 200 && b.answered < 300);
  }

  /** Every event of an accepted batch, in arrival order (repeats included). */
  events(): WebhookEvent[] {
    return this.accepted().flatMap((b) => b.events);
  }

  /** Event ids accepted so far. */
  ids(): Set<string> {
    return new Set(this.events().map((e) => e.id));
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async listen(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.server = server;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const timestamp = req.headers['x-mega-timestamp'];
    let events: WebhookEvent[] = [];
    try {
      const parsed = JSON.parse(raw.toString('utf8')) as { events?: unknown };
      if (Array.isArray(parsed.events)) events = parsed.events as WebhookEvent[];
    } catch {
      // recorded with no events: a test sees the raw bytes
    }
    const status = this.mode === 'failing' ? 503 : 204;
    this.batches.push({
      seq: this.batches.length,
      at: Date.now(),
      signatureOk: verifyWebhookSignature(this.secret, timestamp, raw, req.headers['x-mega-signature']),
      timestamp: typeof timestamp === 'string' ? timestamp : undefined,
      userAgent: req.headers['user-agent'],
      contentType: req.headers['content-type'],
      raw,
      events,
      answered: status,
    });
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (!res.destroyed) res.writeHead(status).end();
  }
}

/**
 * Problems with the order of first arrivals: per msgid, the states must arrive in the order of
 * their finalAt (a later fact never first). Repeats (an id seen before) are skipped, as a
 * receiver that drops repeats would.
 */
export function orderProblems(events: readonly WebhookEvent[]): string[] {
  const seen = new Set<string>();
  const last = new Map<string, WebhookEvent>();
  const problems: string[] = [];
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const prev = last.get(e.msgid);
    if (prev && prev.finalAt > e.finalAt) problems.push(`${e.msgid}: ${e.id} arrived after ${prev.id}`);
    last.set(e.msgid, e);
  }
  return problems;
}
