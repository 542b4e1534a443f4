import type { JobOutcome } from './outcome.js';

/**
 * What the dispatcher (dispatch/) hands to the worker pool (workers/) and hears back, in a home
 * both import: workers/ sits below dispatch/ and may not import it, yet `TaskPool` should say
 * `implements WorkerPool`.
 */

/** A job as handed to a worker: the queue record untouched, plus (beside it) the token to use. */
export interface JobMessage {
  id: number;
  payload: string;
}

/** Events of a WorkerPool (a typed EventEmitter map). */
export type WorkerPoolEvents = {
  /** What became of jobs given to run(): each job handed out comes back exactly once. */
  outcomes: [outcomes: JobOutcome[]];
};

/** The narrow view the dispatcher has of the worker-thread pool. */
export interface WorkerPool {
  /** Jobs the pool can run at once (0 while no worker is up). */
  readonly capacity: number;
  /** Jobs given to run() whose outcome has not come back yet. */
  readonly inFlight: number;
  /** capacity - inFlight, never negative. */
  readonly free: number;
  /**
   * Start these jobs with this access token. The caller never gives more than `free`; each
   * comes back in an 'outcomes' event (a worker that dies reports its jobs as Retry).
   */
  run(jobs: JobMessage[], token: string): void;
  on(event: 'outcomes', listener: (outcomes: JobOutcome[]) => void): this;
  off(event: 'outcomes', listener: (outcomes: JobOutcome[]) => void): this;
}
