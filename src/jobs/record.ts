/**
 * A queued job, as stored in one queue record. Field names are short because a backlog of
 * millions of records sits on disk in this form; the variables are embedded as the exact
 * JSON bytes the client sent (already validated), so enqueueing never re-serialises them.
 */
export interface JobRecord {
  /** push or send: only a send has a client waiting for WeChat's answer. */
  k: 'push' | 'send';
  /** openid */
  o: string;
  /** template key */
  t: string;
  /** client_msg_id sent to WeChat: the client's <msgid>, or one assigned at enqueue. */
  m: string;
  /** enqueue time, ms since the epoch */
  at: number;
  /** for a send: the key under which this process waits to answer the client */
  r?: string;
  /** the template variables */
  d: Record<string, unknown> | null;
}

export interface NewJob {
  kind: 'push' | 'send';
  openid: string;
  key: string;
  clientMsgId: string;
  replyKey?: string;
  /** The variables JSON exactly as received (validated as an object or null). */
  body: Buffer;
  at: number;
}

const CLOSE = Buffer.from('}');

export function encodeJobRecord(job: NewJob): Buffer {
  const head =
    `{"k":"${job.kind}","o":${JSON.stringify(job.openid)},"t":${JSON.stringify(job.key)},` +
    `"m":${JSON.stringify(job.clientMsgId)},"at":${job.at},` +
    (job.replyKey === undefined ? '' : `"r":${JSON.stringify(job.replyKey)},`) +
    '"d":';
  return Buffer.concat([Buffer.from(head), job.body, CLOSE]);
}

export function decodeJobRecord(payload: Buffer | string): JobRecord {
  return JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8')) as JobRecord;
}

/**
 * Server-assigned client_msg_ids: a per-process prefix plus a counter, so they are unique
 * across restarts without coordination, and stable for a job because they are stored in it.
 */
export class ClientMsgIdGenerator {
  private readonly prefix: string;
  private next = 0;
  constructor(now: number = Date.now(), random: () => number = Math.random) {
    const rand = Math.floor(random() * 36 ** 4)
      .toString(36)
      .padStart(4, '0');
    this.prefix = `mw${now.toString(36)}${rand}-`;
  }
  generate(): string {
    return this.prefix + (this.next++).toString(36);
  }
}
