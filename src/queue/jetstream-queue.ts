/**
 * The second JobQueue (job-queue.ts): jobs in a NATS JetStream WorkQueue stream, handed out
 * through one durable pull consumer shared by every process (docs/QUEUE.md, "A second backend").
 */

import { EventEmitter } from 'node:events';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type ConsumerMessages,
  type JsMsg,
} from '@nats-io/jetstream';
import { backoffDelay } from '../backoff.js';
import { QueueClosedError, QueueWriteError } from '../errors.js';
import type { JobQueue, JobQueueStats, QueueJob } from './job-queue.js';
import { JetStreamPublisher, PublishNoRespondersError } from './jetstream-publisher.js';
import { natsConnectOptions, resolveJetStreamOptions, type JetStreamQueueOptions, type ResolvedJetStreamOptions } from './jetstream-options.js';

export type { JetStreamQueueOptions } from './jetstream-options.js';

export interface JetStreamAppendOptions {
  /**
   * Sent as `Nats-Msg-Id`: a second append with the same id within the stream's duplicate
   * window is not stored again and resolves with the first one's id.
   */
  msgId?: string;
}

/** A delivered message as a job; a redelivery says how many deliveries came before it. */
function jobOf(m: JsMsg): QueueJob {
  const job: QueueJob = { id: m.seq, payload: Buffer.from(m.data) };
  const before = m.info.deliveryCount - 1;
  if (before > 0) job.deferrals = before;
  return job;
}

function notFound(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

export class JetStreamQueue extends EventEmitter implements JobQueue {
  /** Every unacknowledged job this process holds, by id: buffered, handed out, held or released. */
  private readonly msgs = new Map<number, JsMsg>();
  /** Fetched and never handed out, in arrival order. */
  private ready: JsMsg[] = [];
  /** Released and not read again, ascending. */
  private released: number[] = [];
  private readonly handedOut = new Set<number>();
  private readonly held = new Set<number>();
  private publishing = 0;
  private readonly publishWaiters: Array<() => void> = [];
  /** Jobs nak'ed with a delay that has not passed (nor come back here) yet, for stats. */
  private readonly deferredIds = new Map<number, NodeJS.Timeout>();
  /** The highest id ever handed out: an unknown id at or below it was acknowledged (ack and hold ignore it). */
  private maxHandedOut = 0;
  /** The highest id this process received from the consumer. */
  private maxReceived = 0;
  /** Enqueue times (ms) of the unacknowledged jobs this process appended or received, in about id order. */
  private readonly known = new Map<number, number>();
  /**
   * The jobs this process knows to be in the stream and not acknowledged: the stream's count at
   * open, plus its own appends and the jobs other processes appended that reached it. Jobs other
   * processes took and finished since open are not subtracted: `streamState()` asks the server.
   */
  private depth: number;
  /** Jobs counted in `depth` at open that this process has not received yet, and the oldest one's time. */
  private openUnseen: number;
  private readonly openLastSeq: number;
  private readonly openOldest: number | undefined;

  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly appends = new Set<Promise<unknown>>();
  private fetching: ConsumerMessages | undefined;
  private pumping: Promise<void> | undefined;
  private wakePump: (() => void) | undefined;
  private readableScheduled = false;
  private readonly heartbeat: NodeJS.Timeout;
  /** The last job acknowledged and not yet confirmed: close() waits for the server to confirm it. */
  private lastAck: JsMsg | undefined;
  private readonly publisher: JetStreamPublisher;
  /**
   * A new fetch once this much of the buffer is free: one pull request (a subscription and a
   * round trip in the client) per half buffer rather than per job the dispatcher took.
   */
  private readonly refill: number;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly consumer: Consumer,
    private readonly opts: ResolvedJetStreamOptions,
    init: { depth: number; lastSeq: number; oldest: number | undefined; ackWaitMs: number },
  ) {
    super();
    this.publisher = new JetStreamPublisher(nc);
    this.refill = Math.ceil(opts.prefetch / 2);
    this.depth = init.depth;
    this.openUnseen = init.depth;
    this.openLastSeq = init.lastSeq;
    this.openOldest = init.oldest;
    // Every job held here, handed out or not, would otherwise go back to the server after
    // ack_wait and be handed to another process while this one still works on it.
    this.heartbeat = setInterval(() => {
      for (const m of this.msgs.values()) m.working();
    }, Math.max(100, Math.floor(init.ackWaitMs / 3)));
    this.heartbeat.unref();
    this.pumping = this.pump();
  }

  /** Connects, creates the stream and the consumer if missing, and starts fetching. */
  static async open(options: JetStreamQueueOptions): Promise<JetStreamQueue> {
    const opts = resolveJetStreamOptions(options);
    const nc = await connect(natsConnectOptions(opts.servers, `mega-${opts.name}`, opts.credentials));
    try {
      const jsm = await jetstreamManager(nc);
      let stream;
      try {
        stream = await jsm.streams.info(opts.stream);
      } catch (err) {
        if (!notFound(err, JetStreamApiCodes.StreamNotFound)) throw err;
        stream = await jsm.streams.add({
          name: opts.stream,
          subjects: [opts.subject],
          retention: RetentionPolicy.Workqueue,
          storage: StorageType.File,
          num_replicas: opts.replicas,
        });
      }
      let info;
      try {
        info = await jsm.consumers.info(opts.stream, opts.consumer);
      } catch (err) {
        if (!notFound(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
        info = await jsm.consumers.add(opts.stream, {
          durable_name: opts.consumer,
          ack_policy: AckPolicy.Explicit,
          ack_wait: nanos(opts.ackWaitMs),
          max_ack_pending: opts.maxAckPending,
        });
      }
      const js = jetstream(nc);
      const consumer = await js.consumers.get(opts.stream, opts.consumer);
      // A WorkQueue stream drops what is acknowledged, so its message count is the depth. Not
      // the consumer's num_pending + num_ack_pending: 2.9 counts a nak'ed last job in both.
      // (A job that reached max_deliver would stay counted: the consumer sets none.)
      const depth = stream.state.messages;
      const first = stream.state.first_ts ? Date.parse(stream.state.first_ts) : NaN;
      const q = new JetStreamQueue(nc, consumer, opts, {
        depth,
        lastSeq: stream.state.last_seq,
        oldest: depth > 0 && Number.isFinite(first) ? first : undefined,
        ackWaitMs: Math.floor((info.config.ack_wait ?? 0) / 1e6) || opts.ackWaitMs,
      });
      opts.logger?.info({ stream: opts.stream, consumer: opts.consumer, depth }, 'JetStream queue opened');
      return q;
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
  }

  /**
   * The stream's depth, oldest job and size, without consuming anything (`mega <name> queue`
   * while this daemon is stopped: other daemons of the service may be running).
   */
  static async inspect(options: JetStreamQueueOptions): Promise<{ depth: number; oldestEnqueuedAt: number | undefined; bytes: number }> {
    const opts = resolveJetStreamOptions(options);
    const nc = await connect({ ...natsConnectOptions(opts.servers, `mega-${opts.name}-inspect`, opts.credentials), maxReconnectAttempts: 0 });
    try {
      const jsm = await jetstreamManager(nc);
      let state;
      try {
        state = (await jsm.streams.info(opts.stream)).state;
      } catch (err) {
        if (notFound(err, JetStreamApiCodes.StreamNotFound)) return { depth: 0, oldestEnqueuedAt: undefined, bytes: 0 };
        throw err;
      }
      const first = state.first_ts ? Date.parse(state.first_ts) : NaN;
      return { depth: state.messages, oldestEnqueuedAt: state.messages > 0 && Number.isFinite(first) ? first : undefined, bytes: state.bytes };
    } finally {
      await nc.close();
    }
  }

  /**
   * The stream as the server has it: every daemon's jobs, not only what this process counted
   * (`stats()` is cheap and local; this asks the server).
   */
  async streamState(): Promise<{ depth: number; oldestEnqueuedAt: number | undefined; bytes: number }> {
    if (this.closed) throw new QueueClosedError();
    const jsm = await jetstreamManager(this.nc);
    const state = (await jsm.streams.info(this.opts.stream)).state;
    const first = state.first_ts ? Date.parse(state.first_ts) : NaN;
    return { depth: state.messages, oldestEnqueuedAt: state.messages > 0 && Number.isFinite(first) ? first : undefined, bytes: state.bytes };
  }

  /** The stream's name (for status lines). */
  get streamName(): string {
    return this.opts.stream;
  }

  append(payload: Uint8Array, options: JetStreamAppendOptions = {}): Promise<number> {
    if (this.closed) return Promise.reject(new QueueClosedError());
    const p = this.publish(payload, options.msgId);
    this.appends.add(p);
    void p.then(
      () => this.appends.delete(p),
      () => this.appends.delete(p),
    );
    return p;
  }

  async appendMany(payloads: readonly Uint8Array[]): Promise<number[]> {
    if (this.closed) throw new QueueClosedError();
    const all = payloads.map((p) => this.append(p));
    const settled = await Promise.allSettled(all);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<number>).value);
  }

  /**
   * Publishes until the stream acknowledges or `publishTimeoutMs` has passed: while a replicated
   * stream elects a new leader (5–7 s for a killed one) a publish gets no answer or an error, and
   * is tried again. With a msgId a retry is never stored twice (the stream's duplicate window);
   * without one, only a publish the server refused outright (not one that timed out: it may have
   * been stored) is tried again.
   */
  private async publish(payload: Uint8Array, msgId: string | undefined): Promise<number> {
    const deadline = Date.now() + this.opts.publishTimeoutMs;
    // At most maxPublishing requests at a time; the rest wait here, in order.
    if (this.publishing >= this.opts.maxPublishing) await new Promise<void>((resolve) => this.publishWaiters.push(resolve));
    this.publishing++;
    try {
      return await this.publishNow(payload, msgId, deadline);
    } finally {
      this.publishing--;
      this.publishWaiters.shift()?.();
    }
  }

  private async publishNow(payload: Uint8Array, msgId: string | undefined, deadline: number): Promise<number> {
    let ack;
    for (let attempt = 0; ; attempt++) {
      const left = deadline - Date.now();
      try {
        // short tries, so that a leader elected meanwhile is used well before the deadline
        ack = await this.publisher.publish(this.opts.subject, payload, Math.max(100, Math.min(left, 2000)), msgId);
        break;
      } catch (err) {
        const wait = backoffDelay(attempt, { baseMs: 100, maxMs: 1000 });
        const refused = err instanceof JetStreamApiError || err instanceof PublishNoRespondersError;
        if (this.closed || Date.now() + wait >= deadline || (msgId === undefined && !refused)) {
          throw new QueueWriteError(`JetStream did not acknowledge the append to stream ${this.opts.stream}: ${(err as Error).message}`, { cause: err });
        }
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    // counted once, by whichever comes first: this PubAck or the job's delivery (receive())
    if (!ack.duplicate && !this.known.has(ack.seq)) {
      this.depth++;
      this.known.set(ack.seq, Date.now());
    }
    return ack.seq;
  }

  read(max = 1): QueueJob[] {
    if (this.closed) throw new QueueClosedError();
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`read(max): max must be a positive integer (got ${max})`);
    const out: QueueJob[] = [];
    while (out.length < max && this.released.length > 0) {
      const id = this.released.shift()!;
      const m = this.msgs.get(id)!;
      this.handedOut.add(id);
      out.push(jobOf(m));
    }
    while (out.length < max && this.ready.length > 0) {
      const m = this.ready.shift()!;
      const id = m.seq;
      this.handedOut.add(id);
      if (id > this.maxHandedOut) this.maxHandedOut = id;
      out.push(jobOf(m));
    }
    if (this.wakePump && this.opts.prefetch - this.ready.length >= this.refill) this.wakePump();
    return out;
  }

  ack(id: number): void {
    if (this.closed) throw new QueueClosedError();
    const m = this.msgs.get(id);
    if (m && (this.handedOut.has(id) || this.removeReleased(id))) {
      m.ack();
      this.lastAck = m;
      this.msgs.delete(id);
      this.handedOut.delete(id);
      this.held.delete(id);
      this.known.delete(id);
      this.depth--;
      return;
    }
    if (m || id > this.maxHandedOut || !(id > 0)) throw new RangeError(`ack(${id}): job not handed out`);
  }

  hold(id: number): void {
    if (this.closed) throw new QueueClosedError();
    if (this.handedOut.has(id)) {
      this.held.add(id);
      return;
    }
    if (this.msgs.has(id) || id > this.maxHandedOut || !(id > 0)) throw new RangeError(`hold(${id}): job not handed out`);
  }

  release(id: number): void {
    if (this.closed) throw new QueueClosedError();
    if (this.handedOut.has(id)) {
      this.handedOut.delete(id);
      this.held.delete(id);
      // Kept here rather than nak'ed: the contract hands it out again to this process, first.
      let i = this.released.length;
      while (i > 0 && this.released[i - 1]! > id) i--;
      this.released.splice(i, 0, id);
      this.scheduleReadable();
      return;
    }
    if (this.released.includes(id)) return;
    if (this.msgs.has(id) || id > this.maxHandedOut || !(id > 0)) throw new RangeError(`release(${id}): job not handed out`);
  }

  /**
   * A delayed redelivery: nak(delay) hands the job back to the server, which delivers it again
   * after `delayMs` to whichever daemon of the service fetches then. Nothing is held meanwhile.
   */
  defer(id: number, delayMs: number): void {
    if (this.closed) throw new QueueClosedError();
    if (!(delayMs >= 0)) throw new RangeError(`defer(${id}, ${delayMs}): the delay must be a number >= 0`);
    const m = this.msgs.get(id);
    if (m && (this.handedOut.has(id) || this.removeReleased(id))) {
      m.nak(Math.round(delayMs));
      this.msgs.delete(id);
      this.handedOut.delete(id);
      this.held.delete(id);
      this.known.delete(id);
      // no longer this process's: it is counted again by whichever process receives it
      this.depth--;
      const t = setTimeout(() => this.deferredIds.delete(id), delayMs);
      t.unref();
      this.deferredIds.set(id, t);
      return;
    }
    if (m || id > this.maxHandedOut || !(id > 0)) throw new RangeError(`defer(${id}): job not handed out`);
  }

  stats(): JobQueueStats {
    const s: JobQueueStats = { depth: this.depth, inFlight: this.handedOut.size, held: this.held.size, deferred: this.deferredIds.size };
    if (this.depth > 0) {
      let oldest: number | undefined;
      for (const t of this.known.values()) {
        oldest = t;
        break;
      }
      if (this.openUnseen > 0 && this.openOldest !== undefined && (oldest === undefined || this.openOldest < oldest)) oldest = this.openOldest;
      if (oldest !== undefined) s.oldestEnqueuedAt = oldest;
    }
    return s;
  }

  close(): Promise<void> {
    this.closed = true;
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await Promise.allSettled([...this.appends]);
    this.publisher.close();
    clearInterval(this.heartbeat);
    this.wakePump?.();
    await this.fetching?.close().catch(() => {});
    await this.pumping;
    const replyOf = (m: JsMsg | undefined): string | undefined => (m as unknown as { msg?: { reply?: string } } | undefined)?.msg?.reply;
    const ids = [...this.msgs.keys()].sort((a, b) => a - b);
    // nats-server 2.9.10 rewinds the consumer for a nak of the job it delivered last, and when
    // that nak comes after others, one of those is not redelivered (measured: 1, 3, 5 nak'ed in
    // that order came back as 3, 5). Nak'ed first, it comes back after the others, in id order.
    if (ids.length > 1 && ids[ids.length - 1] === this.maxReceived) ids.unshift(ids.pop()!);
    const held = ids.map((id) => replyOf(this.msgs.get(id)));
    const lastAck = replyOf(this.lastAck);
    this.msgs.clear();
    // Acknowledgements and naks are plain publishes on each delivery's reply subject, so they
    // can be sent from any connection. The naks wait until this one is closed: nats-server 2.9
    // would redeliver a nak'ed job to this connection's pull request still waiting on the
    // server (gone from the client), where it would sit until ack_wait.
    await this.nc.flush().catch(() => undefined);
    await this.nc.close();
    if (held.length === 0 && lastAck === undefined) return;
    let nc: NatsConnection;
    try {
      nc = await connect({ ...natsConnectOptions(this.opts.servers, `mega-${this.opts.name}-close`, this.opts.credentials), maxReconnectAttempts: 0 });
    } catch (err) {
      // Nothing lost: the server hands the jobs out again after ack_wait.
      this.opts.logger?.warn({ err }, 'JetStream unreachable at close; held jobs come back after ack_wait');
      return;
    }
    try {
      // What this process holds goes back at once, in id order, rather than after ack_wait.
      for (const reply of held) if (reply) nc.publish(reply, '-NAK');
      // The server applies a consumer's acknowledgements in order and answers a repeated one:
      // once answered, a queue opened next sees its depth without the acknowledged jobs.
      if (lastAck) await nc.request(lastAck, '+ACK', { timeout: this.opts.publishTimeoutMs }).catch(() => undefined);
      await nc.flush();
    } finally {
      await nc.close();
    }
  }

  private removeReleased(id: number): boolean {
    const i = this.released.indexOf(id);
    if (i < 0) return false;
    this.released.splice(i, 1);
    return true;
  }

  private scheduleReadable(): void {
    if (this.readableScheduled) return;
    this.readableScheduled = true;
    setImmediate(() => {
      this.readableScheduled = false;
      if (this.closed) return;
      try {
        this.emit('readable');
      } catch (err) {
        this.opts.logger?.error({ err }, "a 'readable' listener threw");
      }
    });
  }

  private receive(m: JsMsg): void {
    const id = m.seq;
    const deferred = this.deferredIds.get(id);
    if (deferred) {
      // back before this process's own timer said so
      clearTimeout(deferred);
      this.deferredIds.delete(id);
    }
    if (id > this.maxReceived) this.maxReceived = id;
    if (this.msgs.has(id)) {
      // Delivered again (ack_wait passed despite the heartbeats): keep the newer delivery.
      this.msgs.set(id, m);
      return;
    }
    this.msgs.set(id, m);
    if (!this.known.has(id)) {
      this.known.set(id, Math.floor(Number(m.timestampNanos / 1_000_000n)));
      // counted at open, or appended by another process of the service (counted now, so that
      // depth - inFlight tells the dispatcher there is something to read)
      if (id <= this.openLastSeq && this.openUnseen > 0) this.openUnseen--;
      else this.depth++;
    }
    this.ready.push(m);
    this.scheduleReadable();
  }

  private async pump(): Promise<void> {
    // failed fetches in a row: one warning when they start, one line when they end, backoff between
    let failures = 0;
    while (!this.closed) {
      const room = this.opts.prefetch - this.ready.length;
      if (room < this.refill) {
        await new Promise<void>((resolve) => (this.wakePump = resolve));
        this.wakePump = undefined;
        continue;
      }
      try {
        const iter = await this.consumer.fetch({ max_messages: room, expires: this.opts.fetchExpiresMs });
        this.fetching = iter;
        if (this.closed) await iter.close();
        for await (const m of iter) this.receive(m);
        if (failures > 0) this.opts.logger?.info({ failures }, 'JetStream fetch works again');
        failures = 0;
      } catch (err) {
        if (this.closed) break;
        if (failures === 0) this.opts.logger?.warn({ err }, 'JetStream fetch failed; retrying with backoff until it works');
        await new Promise((r) => setTimeout(r, backoffDelay(failures++, { baseMs: 500, maxMs: 5000 })));
      } finally {
        this.fetching = undefined;
      }
    }
  }
}
