/**
 * Jobs handed out by read() and not acknowledged: what `inFlight` counts, and what hold() and
 * release() act on (JobQueue in job-queue.ts).
 */

import type { QueueJob } from './job-queue.js';

export class HandedOut {
  /**
   * id → payload of every job handed out and not acknowledged nor released. The payload is
   * kept (the same Buffer the consumer got, not a copy) so that release() can hand the job out
   * again without reading it back from disk; the consumer bounds how many it takes.
   */
  private readonly out = new Map<number, Buffer>();
  private readonly held = new Set<number>();
  /** Jobs put back by release(), ascending ids; acknowledged ones are dropped when met. */
  private released: QueueJob[] = [];

  /** Handed out, not acknowledged, not released (held ones included). */
  get inFlight(): number {
    return this.out.size;
  }

  get heldCount(): number {
    return this.held.size;
  }

  /** `jobs` were just handed out by read(). */
  record(jobs: readonly QueueJob[]): void {
    for (const j of jobs) this.out.set(j.id, j.payload);
  }

  isHandedOut(id: number): boolean {
    return this.out.has(id);
  }

  isReleased(id: number): boolean {
    return this.released.some((j) => j.id === id);
  }

  /** Keep `id` aside; false if it is not handed out. */
  hold(id: number): boolean {
    if (!this.out.has(id)) return false;
    this.held.add(id);
    return true;
  }

  /** Put `id` back in line; false if it is not handed out. */
  release(id: number): boolean {
    const payload = this.out.get(id);
    if (payload === undefined) return false;
    this.out.delete(id);
    this.held.delete(id);
    const list = this.released;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.id < id) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, { id, payload });
    return true;
  }

  /** `id` was acknowledged. */
  acked(id: number): void {
    this.out.delete(id);
    this.held.delete(id);
  }

  /** Move up to `max` released jobs that are not done into `out`, in id order. */
  takeReleased(max: number, isDone: (id: number) => boolean, out: QueueJob[]): void {
    if (this.released.length === 0) return;
    let i = 0;
    while (i < this.released.length && out.length < max) {
      const j = this.released[i++]!;
      if (!isDone(j.id)) out.push(j);
    }
    this.released = this.released.slice(i);
  }
}
