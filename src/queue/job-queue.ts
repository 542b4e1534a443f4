/**
 * What the dispatcher needs of a durable job queue, so that a second backend (a replicated
 * queue on NATS JetStream) can be added without touching the dispatcher. `FileQueue` is the
 * first implementation (docs/QUEUE.md); test/queue/contract.ts is the behaviour every
 * implementation must show.
 *
 * A job's life: append() makes it durable and gives it an id; read() hands it out (once per
 * process, in id order); the consumer then either acknowledges it (ack: it is finished and will
 * never be handed out again), keeps it aside (hold: a retry delay, a quota pause) or puts it
 * back (release: read() hands it out again, before any job not handed out yet). A job not
 * acknowledged when the process stops is handed out again after the next start
 * (at-least-once delivery).
 *
 * Errors: every method throws (or rejects with) `QueueClosedError` after close();
 * append rejects with `QueueWriteError` when the job could not be made durable.
 */

/** A job as handed out by read(). */
export interface QueueJob {
  /** Positive, increasing in append order, never reused. */
  id: number;
  /** The bytes given to append(); the consumer may keep them. */
  payload: Buffer;
  /**
   * How many times the job was deferred (defer()) before this hand-out: the consumer's count of
   * failed attempts, carried by the queue because the job may come back to another process.
   * Absent for a job never deferred. (JetStream counts deliveries: a job handed back when a
   * daemon stopped counts one too.)
   */
  deferrals?: number;
}

export interface JobQueueStats {
  /** Jobs appended (durably) and not acknowledged: waiting, handed out or held. */
  depth: number;
  /** Jobs handed out by read() and neither acknowledged nor released (held ones included). */
  inFlight: number;
  /** Of `inFlight`, the jobs kept aside with hold(). */
  held: number;
  /** Jobs this process deferred (defer()) whose delay has not passed yet. */
  deferred: number;
  /**
   * When the oldest unacknowledged job was appended (ms since epoch); undefined when `depth`
   * is 0. Its age is what an operator watches; the resolution is up to the implementation.
   */
  oldestEnqueuedAt?: number;
}

/** Events of a JobQueue (a typed EventEmitter map). */
export type JobQueueEvents = {
  /**
   * Jobs became ready for read(): a consumer calls read() once at start, then on 'readable'
   * and whenever it has capacity again. A listener that throws is logged, never fatal.
   */
  readable: [];
};

export interface JobQueue {
  /**
   * Append one job. Resolves with its id once it is durable (what "durable" means is the
   * implementation's: fdatasync'ed to disk, or acknowledged by a quorum of replicas).
   * The payload must not be modified until the promise settles.
   * `options.msgId` (the message's client_msg_id): a backend that can (JetStream) stores a
   * second append with the same msgId only once, so a client's resent request is not queued
   * twice; the file queue ignores it.
   */
  append(payload: Uint8Array, options?: { msgId?: string }): Promise<number>;

  /**
   * Append several jobs, with ids in the order given. Each succeeds or fails on its own, as
   * with separate append() calls; the promise rejects if any of them failed.
   */
  appendMany(payloads: readonly Uint8Array[]): Promise<number[]>;

  /**
   * Up to `max` jobs ready now, in id order: first those put back with release(), then those
   * never handed out in this process. Synchronous, never blocks: [] means none is ready now
   * ('readable' fires when some are). `max` is a positive integer, 1 if omitted.
   */
  read(max?: number): QueueJob[];

  on(event: 'readable', listener: () => void): this;
  off(event: 'readable', listener: () => void): this;

  /**
   * The job `id` (handed out by read()) is finished, and will not be handed out again, even
   * after a restart once the acknowledgement is persisted (shortly after; not awaited, so a
   * crash may re-deliver the last ones). Any order; a repeated ack is ignored.
   * Throws RangeError for an id never handed out.
   */
  ack(id: number): void;

  /**
   * Keep the handed-out job `id` out of circulation: not acknowledged (so it survives a
   * restart), not handed out again, and counted in `stats().held`, until release() or ack().
   * Why: a consumer waiting to retry a job (a backoff, a quota pause) says so, so that a
   * backend with redelivery deadlines (JetStream's ack_wait) does not hand it to someone else
   * meanwhile, and an operator can tell waiting jobs from running ones. Holding a held job, or
   * an acknowledged one, does nothing. Throws RangeError for a job that is not handed out.
   */
  hold(id: number): void;

  /**
   * Put the handed-out (or held) job `id` back in circulation: the next read() hands it out
   * again, before any job not handed out yet, in id order ("front of the line"); 'readable'
   * fires soon after (not synchronously). Releasing an acknowledged job does nothing.
   * Throws RangeError for a job that is not handed out.
   */
  release(id: number): void;

  /**
   * The handed-out job `id` failed and goes again no sooner than `delayMs` from now (a retry
   * after a backoff). The consumer lets go of it: the queue hands it out again when the delay
   * has passed — to this process, or with JetStream to any daemon of the service (a delayed
   * redelivery, no slot held meanwhile) — with `deferrals` one higher. Not acknowledged, so it
   * survives a restart. Deferring an acknowledged job does nothing. Throws RangeError for a job
   * that is not handed out, or a negative delay.
   */
  defer(id: number, delayMs: number): void;

  /** Cheap counters (no I/O). */
  stats(): JobQueueStats;

  /**
   * Finish the appends already accepted, persist the acknowledgements, release resources.
   * Idempotent. Jobs handed out and not acknowledged are handed out again after the next open.
   */
  close(): Promise<void>;
}
