/**
 * In-memory stand-ins for what the Dispatcher depends on (src/dispatch/ports.ts): a JobQueue
 * (checked against the shared contract in fake-queue.test.ts), a worker pool whose outcomes the
 * test gives, a token source, and a clock the test advances by hand. No timers, no sleeps.
 */

import { EventEmitter } from 'node:events';
import { QueueClosedError } from '../../src/errors.js';
import { OutcomeKind, type JobOutcome } from '../../src/jobs/outcome.js';
import type { DeadLetter } from '../../src/dispatch/dead-letter.js';
import { Deferrals, type SetTimer } from '../../src/queue/deferrals.js';
import type {
  Clock,
  DeadLetterSink,
  JobMessage,
  JobQueue,
  JobQueueEvents,
  JobQueueStats,
  QueueJob,
  Timer,
  TokenSource,
  WorkerPool,
  WorkerPoolEvents,
} from '../../src/dispatch/ports.js';

/** Lets every pending promise continuation and queued microtask run (one macrotask turn). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

interface FakeTimer {
  at: number;
  seq: number;
  callback: () => void;
}

/** Time stands still until advance(); timers due on the way run in order, at their own time. */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: FakeTimer[] = [];

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(ms: number, callback: () => void): Timer {
    const timer: FakeTimer = { at: this.t + Math.max(0, ms), seq: this.seq++, callback };
    this.timers.push(timer);
    return {
      cancel: () => {
        this.timers = this.timers.filter((x) => x !== timer);
      },
    };
  }

  /** Delays (from now) of the timers not yet run, shortest first. */
  pending(): number[] {
    return this.timers.map((x) => x.at - this.t).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, running each timer that falls due (and what it sets in motion). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      let next: FakeTimer | undefined;
      for (const x of this.timers) if (x.at <= end && (!next || x.at < next.at || (x.at === next.at && x.seq < next.seq))) next = x;
      if (!next) break;
      this.timers = this.timers.filter((x) => x !== next);
      this.t = next.at;
      next.callback();
    }
    this.t = end;
    await settle();
  }
}

/**
 * A JobQueue in memory, honouring test/queue/contract.ts (no restart: nothing is kept).
 * Jobs are handed out in id order; released ones first.
 */
export class FakeQueue extends EventEmitter<JobQueueEvents> implements JobQueue {
  private nextId = 1;
  /** Next id never handed out. */
  private nextRead = 1;
  /** Unacknowledged jobs, by id. */
  private readonly stored = new Map<number, { payload: Buffer; at: number }>();
  /** Handed out, not acknowledged, not released (held ones included). */
  private readonly out = new Set<number>();
  private readonly heldIds = new Set<number>();
  private readonly releasedIds = new Set<number>();
  private releaseSignalled = false;
  private closed = false;
  /** Every call of hold/release/ack, in order, for the tests to read. */
  readonly calls: string[] = [];

  private readonly deferrals: Deferrals;

  /** `setTimer`: what defer() waits with (the FakeClock's, so that a test advances it). */
  constructor(
    private readonly now: () => number = Date.now,
    setTimer?: SetTimer,
  ) {
    super();
    this.deferrals = new Deferrals(setTimer);
  }

  /** Appends at once (what append() does, without the promise). */
  add(...payloads: (string | Uint8Array)[]): number[] {
    if (this.closed) throw new QueueClosedError();
    const ids = payloads.map((p) => {
      const id = this.nextId++;
      this.stored.set(id, { payload: Buffer.from(p), at: this.now() });
      return id;
    });
    if (ids.length > 0) queueMicrotask(() => this.signal());
    return ids;
  }

  append(payload: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new QueueClosedError());
    return Promise.resolve(this.add(payload)[0]!);
  }

  appendMany(payloads: readonly Uint8Array[]): Promise<number[]> {
    if (this.closed) return Promise.reject(new QueueClosedError());
    return Promise.resolve(this.add(...payloads));
  }

  read(max = 1): QueueJob[] {
    if (this.closed) throw new QueueClosedError();
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`read: max must be a positive integer, got ${max}`);
    const jobs: QueueJob[] = [];
    for (const id of [...this.releasedIds].sort((a, b) => a - b)) {
      if (jobs.length === max) break;
      this.releasedIds.delete(id);
      this.out.add(id);
      jobs.push({ id, payload: this.stored.get(id)!.payload });
    }
    while (jobs.length < max && this.nextRead < this.nextId) {
      const id = this.nextRead++;
      const job = this.stored.get(id);
      if (!job) continue;
      this.out.add(id);
      jobs.push({ id, payload: job.payload });
    }
    this.deferrals.annotate(jobs);
    return jobs;
  }

  ack(id: number): void {
    this.check(id);
    this.calls.push(`ack ${id}`);
    if (!this.stored.delete(id)) return;
    this.out.delete(id);
    this.heldIds.delete(id);
    this.releasedIds.delete(id);
    this.deferrals.forget(id);
  }

  defer(id: number, delayMs: number): void {
    this.check(id);
    this.calls.push(`defer ${id} ${delayMs}`);
    if (!this.stored.has(id)) return;
    this.deferrals.defer(
      id,
      delayMs,
      () => this.hold(id),
      () => {
        if (!this.closed) this.release(id);
      },
    );
  }

  hold(id: number): void {
    this.check(id);
    this.calls.push(`hold ${id}`);
    if (!this.stored.has(id)) return;
    if (!this.out.has(id)) throw new RangeError(`hold: job ${id} is not handed out (released and not read again)`);
    this.heldIds.add(id);
  }

  release(id: number): void {
    this.check(id);
    this.calls.push(`release ${id}`);
    if (!this.stored.has(id) || this.releasedIds.has(id)) return;
    this.out.delete(id);
    this.heldIds.delete(id);
    this.releasedIds.add(id);
    if (this.releaseSignalled) return;
    this.releaseSignalled = true;
    queueMicrotask(() => {
      this.releaseSignalled = false;
      this.signal();
    });
  }

  /** Whether `id` is held now. */
  isHeld(id: number): boolean {
    return this.heldIds.has(id);
  }

  /** Whether `id` is still unacknowledged. */
  has(id: number): boolean {
    return this.stored.has(id);
  }

  stats(): JobQueueStats {
    let oldest: number | undefined;
    for (const { at } of this.stored.values()) if (oldest === undefined || at < oldest) oldest = at;
    return { depth: this.stored.size, inFlight: this.out.size, held: this.heldIds.size, deferred: this.deferrals.pending, oldestEnqueuedAt: oldest };
  }

  close(): Promise<void> {
    this.closed = true;
    this.deferrals.close();
    return Promise.resolve();
  }

  private check(id: number): void {
    if (this.closed) throw new QueueClosedError();
    if (!Number.isSafeInteger(id) || id < 1 || id >= this.nextRead) throw new RangeError(`job id ${id} was not handed out by read()`);
  }

  private signal(): void {
    if (this.closed) return;
    try {
      this.emit('readable');
    } catch {
      // a listener that throws is not the queue's failure
    }
  }
}

/** A worker pool that runs nothing: the test answers for each job it was given. */
export class FakePool extends EventEmitter<WorkerPoolEvents> implements WorkerPool {
  /** Jobs given to run() and not answered: the message and the token it went with. */
  readonly running = new Map<number, { job: JobMessage; token: string }>();
  /** Every run() call: the ids, the token, and when (by `clock`). */
  readonly runs: Array<{ ids: number[]; token: string; at: number }> = [];

  constructor(
    public capacity: number,
    private readonly clock: Clock,
  ) {
    super();
  }

  get inFlight(): number {
    return this.running.size;
  }

  get free(): number {
    return Math.max(0, this.capacity - this.inFlight);
  }

  run(jobs: JobMessage[], token: string): void {
    if (jobs.length > this.free) throw new Error(`run: ${jobs.length} jobs given, ${this.free} free`);
    for (const job of jobs) {
      if (this.running.has(job.id)) throw new Error(`run: job ${job.id} is already running`);
      this.running.set(job.id, { job, token });
    }
    this.runs.push({ ids: jobs.map((j) => j.id), token, at: this.clock.now() });
  }

  /** Ids sent, in order, over every run() call. */
  sentIds(): number[] {
    return this.runs.flatMap((r) => r.ids);
  }

  /**
   * Reports outcomes for running jobs in one 'outcomes' event, as a worker does: `kind` and
   * WeChat's fields; a TokenRejected outcome names the token the job ran with.
   */
  answer(...outcomes: Array<{ id: number; kind: OutcomeKind } & Partial<JobOutcome>>): void {
    const out: JobOutcome[] = outcomes.map((o) => {
      const running = this.running.get(o.id);
      if (!running) throw new Error(`answer: job ${o.id} is not running`);
      this.running.delete(o.id);
      return o.kind === OutcomeKind.TokenRejected ? { token: running.token, ...o } : { ...o };
    });
    this.emit('outcomes', out);
  }

  /** Answers every running job the same way (lowest id first). */
  answerAll(kind: OutcomeKind, fields: Partial<JobOutcome> = {}): number[] {
    const ids = [...this.running.keys()].sort((a, b) => a - b);
    this.answer(...ids.map((id) => ({ ...fields, id, kind })));
    return ids;
  }
}

/**
 * Tokens tok-1, tok-2, ...: one fetch per expiry, shared by every caller (single flight), and
 * compare-and-expire like TokenManager.invalidate.
 */
export class FakeTokens implements TokenSource {
  current: string | undefined;
  fetches = 0;
  gets = 0;
  /** While set, get() rejects with it. */
  failing: Error | undefined;
  readonly invalidated: string[] = [];

  get(): Promise<string> {
    this.gets++;
    if (this.failing) return Promise.reject(this.failing);
    if (this.current === undefined) this.current = `tok-${++this.fetches}`;
    return Promise.resolve(this.current);
  }

  invalidate(token: string): void {
    this.invalidated.push(token);
    if (token === this.current) this.current = undefined;
  }
}

/** A dead-letter log in memory; `failing` makes append throw (a full disk). */
export class FakeDeadLetters implements DeadLetterSink {
  readonly entries: DeadLetter[] = [];
  failing = false;

  append(entries: DeadLetter[]): void {
    if (entries.length === 0) return;
    if (this.failing) throw new Error('ENOSPC: no space left on device');
    this.entries.push(...entries);
  }
}
