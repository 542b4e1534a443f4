/**
 * What the Dispatcher needs of the parts around it, and no more, so that each can be replaced:
 * a second queue backend (JobQueue), fakes in test/dispatch/, a clock a test advances by hand.
 * The daemon passes FileQueue, TaskPool, TokenManager and the system clock; each satisfies
 * these structurally (TaskPool says `implements WorkerPool`; TokenManager lives in a lower
 * layer, wechat/, that may not import this folder).
 */

import type { DeadLetter } from './dead-letter.js';
import type { JobOutcome } from '../jobs/outcome.js';

export type { JobQueue, JobQueueEvents, JobQueueStats, QueueJob } from '../queue/job-queue.js';
export type { JobMessage, WorkerPool, WorkerPoolEvents } from '../jobs/worker-pool.js';

/** The shared access token (wechat/token-manager.ts's TokenManager). */
export interface TokenSource {
  /**
   * A token believed valid. Concurrent callers share one refresh; rejects (with the reason,
   * never the secret) while no token can be had.
   */
  get(): Promise<string>;
  /**
   * WeChat rejected `token` (40001/40014/42001): forget it if it is still the current one, so
   * the next get() fetches a new one. A late report about an older token changes nothing.
   */
  invalidate(token: string): void;
}

/**
 * Where permanent failures are recorded before their jobs are acknowledged: the file log
 * (DeadLetterLog, synchronous) or the service's JetStream stream (asynchronous).
 */
export interface DeadLetterSink {
  /**
   * Durable when it returns (or when its promise resolves); throws (rejects) when the entries
   * could not be recorded. Returns synchronously for no entries.
   */
  append(entries: DeadLetter[]): void | Promise<void>;
}

/**
 * What became of a job, as an {@link OutcomeObserver} hears it: `sent` (WeChat accepted it),
 * `rejected` (failed for good, a client waits for the answer), `dead` (failed for good and
 * dead-lettered), `retry` (it goes again later).
 */
export interface JobFate {
  fate: 'sent' | 'rejected' | 'dead' | 'retry';
  outcome: JobOutcome;
  /** Times this process handed the job to a worker. */
  sends: number;
  /** The queue record, for an observer that needs more than the outcome carries. */
  payload: string;
}

/**
 * Told of every job's fate before the job is acknowledged (the daemon's message ledger). The
 * dispatcher acks the settled jobs only once `beforeAck` resolves, so whatever the observer
 * makes durable before resolving is never behind the queue. It must not reject; Send answers
 * and counters do not wait for it.
 */
export interface OutcomeObserver {
  beforeAck(fates: readonly JobFate[]): Promise<void>;
}

/** A scheduled callback; cancel() is a no-op once it ran. */
export interface Timer {
  cancel(): void;
}

/** Time, as the dispatcher and its rate limiter see it: every delay and every timestamp. */
export interface Clock {
  /** ms since the epoch */
  now(): number;
  /** Calls `callback` once, `ms` from now. */
  setTimer(ms: number, callback: () => void): Timer;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, callback) {
    const handle = setTimeout(callback, ms);
    return { cancel: () => clearTimeout(handle) };
  },
};
