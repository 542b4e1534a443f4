import type { QueueJob } from './job-queue.js';

/** A scheduled callback (the dispatcher's Clock timers fit). */
export type SetTimer = (ms: number, callback: () => void) => { cancel(): void };

/** Real timers (close() cancels them). */
export const realTimer: SetTimer = (ms, callback) => {
  const t = setTimeout(callback, ms);
  return { cancel: () => clearTimeout(t) };
};

/**
 * JobQueue.defer() for a queue that keeps its jobs itself (the file queue): the job is held
 * until its delay has passed, then released, so it goes again before any job never handed out.
 * The count of deferrals per job is kept in memory: after a restart a held job is handed out at
 * once, and its count starts again at 0 (as the retry counts always did with the file queue).
 */
export class Deferrals {
  private readonly counts = new Map<number, number>();
  private readonly timers = new Map<number, { cancel(): void }>();

  constructor(private readonly setTimer: SetTimer = realTimer) {}

  /** Holds the job now (`hold`) and releases it (`release`) after `delayMs`. */
  defer(id: number, delayMs: number, hold: () => void, release: () => void): void {
    if (!(delayMs >= 0)) throw new RangeError(`defer(${id}, ${delayMs}): the delay must be a number >= 0`);
    hold();
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.timers.get(id)?.cancel();
    this.timers.set(
      id,
      this.setTimer(delayMs, () => {
        this.timers.delete(id);
        release();
      }),
    );
  }

  /** Sets `deferrals` on the jobs about to be handed out. */
  annotate(jobs: QueueJob[]): void {
    if (this.counts.size === 0) return;
    for (const job of jobs) {
      const n = this.counts.get(job.id);
      if (n !== undefined) job.deferrals = n;
    }
  }

  /** The job was acknowledged: nothing more to count or release. */
  forget(id: number): void {
    this.counts.delete(id);
    this.timers.get(id)?.cancel();
    this.timers.delete(id);
  }

  /** Deferred jobs whose delay has not passed. */
  get pending(): number {
    return this.timers.size;
  }

  /** No release from now on (the queue closes; held jobs come back at the next open). */
  close(): void {
    for (const t of this.timers.values()) t.cancel();
    this.timers.clear();
  }
}
