/** The options of `JetStreamQueue.open`, their defaults and their validation (docs/QUEUE.md). */

import type { Logger } from 'pino';
import type { ConnectionOptions } from '@nats-io/transport-node';

/** How to reach and authenticate to the NATS servers: shared by the queue and cluster/. */
export interface NatsCredentials {
  /** User and password, or a token; none: the servers need no authentication. */
  user?: string;
  pass?: string;
  token?: string;
  /** PEM files; `caFile` (or a client certificate) turns TLS on. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

export interface JetStreamQueueOptions {
  /** NATS server URLs (`nats://host:port`); the client connects to one and fails over to the others. */
  servers: string | readonly string[];
  /**
   * The daemon's name: the default stream, subject and consumer names are derived from it.
   * Letters, digits, `_` and `-`.
   */
  name: string;
  /**
   * The WorkQueue stream holding the jobs (created if missing).
   * @defaultValue `MEGA_<NAME>` (the name upper-cased, `-` as `_`)
   */
  stream?: string;
  /**
   * The subject jobs are published on (the stream's only subject when it is created).
   * @defaultValue `mega.<name>.jobs`
   */
  subject?: string;
  /**
   * The durable pull consumer every daemon of the service shares (a WorkQueue stream allows only
   * one unfiltered consumer). Created if missing.
   * @defaultValue `mega-<name>`
   */
  consumer?: string;
  /**
   * Replicas of the stream when it is created (an acknowledged append is on a quorum of them).
   * An existing stream is used as it is.
   * @defaultValue 1
   */
  replicas?: number;
  /**
   * The consumer's ack_wait when it is created: a job handed to a process that stops heartbeating
   * it (crashed, cut off) is redelivered after this long. The queue heartbeats every job it holds
   * (`working()`) at a third of the consumer's actual ack_wait.
   * @defaultValue 30000
   */
  ackWaitMs?: number;
  /**
   * The consumer's max_ack_pending when it is created: jobs handed out to all processes and not
   * acknowledged (held ones included) beyond which the server hands out no more.
   * @defaultValue 10000
   */
  maxAckPending?: number;
  /**
   * Jobs fetched ahead into the local buffer that read() takes from.
   * @defaultValue 256
   */
  prefetch?: number;
  /**
   * How long one pull request waits on the server for jobs before it is renewed.
   * @defaultValue 5000
   */
  fetchExpiresMs?: number;
  /**
   * How long an append waits for the stream's PubAck before it rejects with QueueWriteError.
   * @defaultValue 5000
   */
  publishTimeoutMs?: number;
  /**
   * Appends waiting for their PubAck at once; more wait their turn in this process, in order.
   * The NATS client slows down with about a thousand requests outstanding (its per-request timers
   * fall behind), and the daemon's dispatch shares its thread: with 128, end to end at 50 ms was
   * about 15 % higher than unbounded in `bench --only jetstream` (noisy, single runs), ingest the same.
   * @defaultValue 128
   */
  maxPublishing?: number;
  /** Errors of the fetch loop (it retries), and an info line at open. */
  logger?: Logger;
  /** Authentication and TLS for the servers. @defaultValue none */
  credentials?: NatsCredentials;
}

export interface ResolvedJetStreamOptions {
  servers: string[];
  name: string;
  stream: string;
  subject: string;
  consumer: string;
  replicas: number;
  ackWaitMs: number;
  maxAckPending: number;
  prefetch: number;
  fetchExpiresMs: number;
  publishTimeoutMs: number;
  maxPublishing: number;
  logger: Logger | undefined;
  credentials: NatsCredentials;
}

/**
 * The connect() options for `servers` with `credentials`. The connection reconnects forever: a
 * daemon outlives an outage of NATS (the client's default gives up after about 20 s).
 */
export function natsConnectOptions(servers: readonly string[], connectionName: string, credentials: NatsCredentials = {}): ConnectionOptions {
  const { user, pass, token, tls } = credentials;
  return {
    servers: [...servers],
    name: connectionName,
    maxReconnectAttempts: -1,
    // otherwise the client builds two Errors with stack traces per request (every publish):
    // a third of its CPU at high publish rates, measured by bench --only jetstream
    noAsyncTraces: true,
    ...(user !== undefined ? { user, pass } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(tls && (tls.caFile || tls.certFile) ? { tls: { ...tls } } : {}),
  };
}

/**
 * NATS names (streams, consumers, buckets) allow letters, digits, `_` and `-`; a service name
 * may also hold `.`, which would split a subject: it becomes `_`.
 */
export function natsSafeName(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, '_');
}

const NAME = /^[A-Za-z0-9_-]+$/;
const SUBJECT = /^[^\s*>.]+(\.[^\s*>.]+)*$/;

function int(opt: string, value: number | undefined, def: number, min: number, max: number): number {
  const v = value ?? def;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`JetStreamQueue option ${opt} must be an integer from ${min} to ${max} (got ${String(value)})`);
  }
  return v;
}

function str(opt: string, value: string | undefined, def: string, re: RegExp): string {
  const v = value ?? def;
  if (typeof v !== 'string' || !re.test(v)) throw new TypeError(`JetStreamQueue option ${opt} is not valid (got ${JSON.stringify(value)})`);
  return v;
}

/** `MEGA_<NAME>`: the name upper-cased, `-` and `.` as `_`. */
export function defaultStreamName(name: string): string {
  return `MEGA_${natsSafeName(name).toUpperCase().replace(/-/g, '_')}`;
}

export function resolveJetStreamOptions(o: JetStreamQueueOptions): ResolvedJetStreamOptions {
  const servers = typeof o.servers === 'string' ? [o.servers] : [...(o.servers ?? [])];
  if (servers.length === 0 || servers.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new TypeError('JetStreamQueue option servers must name at least one server');
  }
  const name = str('name', o.name, '', NAME);
  return {
    servers,
    name,
    stream: str('stream', o.stream, defaultStreamName(name), NAME),
    subject: str('subject', o.subject, `mega.${name}.jobs`, SUBJECT),
    consumer: str('consumer', o.consumer, `mega-${name}`, NAME),
    replicas: int('replicas', o.replicas, 1, 1, 5),
    ackWaitMs: int('ackWaitMs', o.ackWaitMs, 30_000, 1000, 24 * 3600_000),
    maxAckPending: int('maxAckPending', o.maxAckPending, 10_000, 1, 10_000_000),
    prefetch: int('prefetch', o.prefetch, 256, 1, 100_000),
    fetchExpiresMs: int('fetchExpiresMs', o.fetchExpiresMs, 5000, 1000, 600_000),
    publishTimeoutMs: int('publishTimeoutMs', o.publishTimeoutMs, 5000, 100, 600_000),
    maxPublishing: int('maxPublishing', o.maxPublishing, 128, 1, 100_000),
    logger: o.logger,
    credentials: o.credentials ?? {},
  };
}
