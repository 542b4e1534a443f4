/**
 * Publishes to a JetStream stream and resolves with its PubAck, for JetStreamQueue.append.
 *
 * Why not `js.publish()`: it is a core NATS request per publish, and nats.js 3 builds an Error
 * with a stack trace for every request it completes (RequestOne.cancel rejects its settled
 * promise with a new RequestError) plus a timer and a headers object each. Measured with
 * `npm run bench -- --only jetstream` (CPU profile of the daemon, end to end at 50 ms), those
 * were about a fifth of the daemon's main-thread time on the JetStream path. Here every publish
 * shares one reply subscription (`<inbox>.<token>`), one headers object, and one timer that
 * expires what waited too long. The wire is the same as js.publish's: `HPUB` with
 * `Nats-Msg-Id`, the PubAck (or the API error, or a 503 status when no stream listens) on the
 * reply subject.
 */

import { createInbox, headers, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { JetStreamApiError, type ApiError } from '@nats-io/jetstream';

export interface PubAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

/** No answer within the timeout: the message may or may not have been stored. */
export class PublishTimeoutError extends Error {
  override readonly name = 'PublishTimeoutError';
}

/** Nothing listens on the subject (no stream, or JetStream not reachable): certainly not stored. */
export class PublishNoRespondersError extends Error {
  override readonly name = 'PublishNoRespondersError';
}

interface Waiting {
  resolve(ack: PubAck): void;
  reject(err: Error): void;
  deadline: number;
}

const decoder = new TextDecoder();

export class JetStreamPublisher {
  private readonly prefix: string;
  private readonly sub: Subscription;
  private readonly waiting = new Map<string, Waiting>();
  /** Reused: the client encodes the headers synchronously inside publish(). */
  private readonly hdrs: MsgHdrs = headers();
  private next = 0;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly nc: NatsConnection,
    /** How often expired publishes are looked for: a timeout fires up to this much late. */
    private readonly sweepMs = 50,
  ) {
    this.prefix = `${createInbox()}.`;
    this.sub = nc.subscribe(`${this.prefix}*`, { callback: (err, msg) => (err ? this.failAll(err) : this.answer(msg)) });
  }

  /** Resolves with the PubAck; rejects with the API error, PublishNoRespondersError or PublishTimeoutError. */
  publish(subject: string, data: Uint8Array, timeoutMs: number, msgId?: string): Promise<PubAck> {
    const token = (this.next++).toString(36);
    return new Promise<PubAck>((resolve, reject) => {
      this.waiting.set(token, { resolve, reject, deadline: Date.now() + timeoutMs });
      try {
        if (msgId !== undefined) this.hdrs.set('Nats-Msg-Id', msgId);
        this.nc.publish(subject, data, { reply: this.prefix + token, ...(msgId !== undefined ? { headers: this.hdrs } : {}) });
      } catch (err) {
        this.waiting.delete(token);
        reject(err as Error);
        return;
      }
      if (!this.sweeper) {
        this.sweeper = setInterval(() => this.sweep(), this.sweepMs);
        this.sweeper.unref();
      }
    });
  }

  /** Rejects what is still waiting and stops listening. */
  close(): void {
    this.failAll(new Error('publisher closed'));
    this.sub.unsubscribe();
  }

  private answer(msg: Msg): void {
    const token = msg.subject.slice(this.prefix.length);
    const w = this.waiting.get(token);
    if (!w) return; // expired meanwhile: its publisher was told it timed out
    this.waiting.delete(token);
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      w.reject(new PublishNoRespondersError('no JetStream stream took the message (503 no responders)'));
      return;
    }
    let v: { stream?: string; seq?: number; duplicate?: boolean; error?: ApiError };
    try {
      v = JSON.parse(decoder.decode(msg.data)) as typeof v;
    } catch (err) {
      w.reject(new Error(`unreadable PubAck: ${(err as Error).message}`));
      return;
    }
    if (v.error) w.reject(new JetStreamApiError(v.error));
    else if (typeof v.stream !== 'string' || v.stream === '' || typeof v.seq !== 'number') w.reject(new Error('invalid PubAck'));
    else w.resolve({ stream: v.stream, seq: v.seq, duplicate: v.duplicate === true });
  }

  private sweep(): void {
    const now = Date.now();
    for (const [token, w] of this.waiting) {
      if (w.deadline > now) continue;
      this.waiting.delete(token);
      w.reject(new PublishTimeoutError('no PubAck within the timeout'));
    }
    if (this.waiting.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private failAll(err: Error): void {
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}
