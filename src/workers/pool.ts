import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { CompiledTemplate } from '../templates/render.js';
import { OutcomeKind, type JobOutcome } from '../jobs/outcome.js';
import { decodeJobRecord } from '../jobs/record.js';
import type { WorkerPool, WorkerPoolEvents } from '../jobs/worker-pool.js';
import { FromWorker, ToWorker, type FromWorkerMessage, type JobMessage, type ToWorkerMessage, type WorkerInit } from './messages.js';

export interface TaskPoolOptions {
  /** Number of worker threads (`[setting] task_worker_num`). */
  size: number;
  /** Per-worker settings; `concurrency` is `[setting] task_concurrency`. */
  init: WorkerInit;
  /** Templates every new worker starts with. */
  templates: () => CompiledTemplate[];
  logger: Logger;
  /** Milliseconds a new thread has to say it is ready. @defaultValue 10000 */
  startTimeoutMs?: number;
}

const WORKER_URL = new URL('./task-worker.js', import.meta.url);

interface Slot {
  worker: Worker;
  /** Jobs handed to this worker and not reported yet, by id. */
  inFlight: Map<number, JobMessage>;
  ready: boolean;
}

/**
 * A fixed pool of task worker threads. Jobs go to the least busy worker; each worker runs
 * up to `concurrency` at once. A thread that dies is replaced by a new one (never revived),
 * and the jobs it held come back as Retry outcomes so nothing is lost with it.
 *
 * Events: `outcomes` (JobOutcome[]), `idle` (every slot free).
 */
export class TaskPool extends EventEmitter<WorkerPoolEvents & { idle: [] }> implements WorkerPool {
  private readonly slots: Slot[] = [];
  private closing = false;
  private readonly startTimeoutMs: number;

  constructor(private readonly options: TaskPoolOptions) {
    super();
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new RangeError(`TaskPool size must be a positive integer, got ${options.size}`);
    }
    if (!Number.isInteger(options.init.concurrency) || options.init.concurrency < 1) {
      throw new RangeError(`TaskPool init.concurrency must be a positive integer, got ${options.init.concurrency}`);
    }
    this.startTimeoutMs = options.startTimeoutMs ?? 10000;
  }

  /** Starts every thread; rejects if any fails to come up (the others are terminated). */
  async start(): Promise<void> {
    try {
      await Promise.all(Array.from({ length: this.options.size }, () => this.spawn()));
    } catch (err) {
      await Promise.all(this.slots.map((s) => s.worker.terminate()));
      this.slots.length = 0;
      throw err;
    }
  }

  private spawn(): Promise<Slot> {
    const worker = new Worker(WORKER_URL);
    const slot: Slot = { worker, inFlight: new Map(), ready: false };
    this.slots.push(slot);
    return new Promise<Slot>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`task worker did not start within ${this.startTimeoutMs} ms`));
        void worker.terminate();
      }, this.startTimeoutMs);
      worker.on('message', (message: FromWorkerMessage) => {
        switch (message.type) {
          case FromWorker.Ready:
            clearTimeout(timer);
            slot.ready = true;
            resolve(slot);
            break;
          case FromWorker.Outcomes: {
            const outcomes = message.outcomes;
            for (const o of outcomes) slot.inFlight.delete(o.id);
            const { delivered, deliveredMsgids, deliveredWechat, deliveredMs } = message;
            for (let i = 0; i < delivered.length; i++) {
              const id = delivered[i]!;
              slot.inFlight.delete(id);
              outcomes.push({ id, kind: OutcomeKind.Ok, msgid: deliveredMsgids[i], wechatMsgid: deliveredWechat[i] || undefined, ms: deliveredMs[i] });
            }
            this.emit('outcomes', outcomes);
            if (this.inFlight === 0) this.emit('idle');
            break;
          }
          case FromWorker.Closed:
            break;
        }
      });
      worker.on('error', (err) => {
        clearTimeout(timer);
        if (!slot.ready) reject(err);
        this.options.logger.error({ err }, 'task worker failed');
      });
      worker.on('exit', (code) => {
        clearTimeout(timer);
        this.onExit(slot, code);
      });
      this.post(slot, {
        type: ToWorker.Init,
        init: this.options.init,
        templates: this.options.templates(),
      });
    });
  }

  private onExit(slot: Slot, code: number): void {
    const index = this.slots.indexOf(slot);
    if (index >= 0) this.slots.splice(index, 1);
    if (slot.inFlight.size > 0) {
      // The thread took these jobs with it; hand them back for another attempt.
      const outcomes: JobOutcome[] = [...slot.inFlight.values()].map((job) => {
        const record = decodeJobRecord(job.payload);
        return { id: job.id, kind: OutcomeKind.Retry, reason: `task worker exited with code ${code}`, openid: record.o, key: record.t, replyKey: record.r, msgid: record.m };
      });
      slot.inFlight.clear();
      this.emit('outcomes', outcomes);
    }
    if (!this.closing && slot.ready) {
      this.options.logger.error({ code }, 'task worker exited; starting a new one');
      this.spawn().catch((err: unknown) => this.options.logger.error({ err }, 'replacement task worker failed to start'));
    }
  }

  private post(slot: Slot, message: ToWorkerMessage): void {
    slot.worker.postMessage(message);
  }

  /** Total jobs the pool can run at once. */
  get capacity(): number {
    return this.slots.filter((s) => s.ready).length * this.options.init.concurrency;
  }

  get inFlight(): number {
    let n = 0;
    for (const s of this.slots) n += s.inFlight.size;
    return n;
  }

  get free(): number {
    return Math.max(0, this.capacity - this.inFlight);
  }

  get threads(): number {
    return this.slots.length;
  }

  /**
   * Hands jobs out, filling the least busy workers first; one message per worker.
   * The caller never gives more than `free` jobs.
   */
  run(jobs: JobMessage[], token: string): void {
    const limit = this.options.init.concurrency;
    const batches = new Map<Slot, JobMessage[]>();
    for (const job of jobs) {
      let best: Slot | undefined;
      for (const s of this.slots) {
        if (!s.ready) continue;
        const load = s.inFlight.size;
        if (load < limit && (!best || load < best.inFlight.size)) best = s;
      }
      if (!best) throw new Error('TaskPool.run was given more jobs than it has free slots');
      best.inFlight.set(job.id, job);
      let batch = batches.get(best);
      if (!batch) batches.set(best, (batch = []));
      batch.push(job);
    }
    for (const [slot, batch] of batches) this.post(slot, { type: ToWorker.Jobs, token, jobs: batch });
  }

  /** After a TSet: every job handed out after this call renders with these templates. */
  updateTemplates(templates: CompiledTemplate[]): void {
    for (const s of this.slots) this.post(s, { type: ToWorker.Templates, templates });
  }

  /** After a TSet found a template deleted: every job handed out after this call fails as template key not exists. */
  dropTemplates(keys: string[]): void {
    for (const s of this.slots) this.post(s, { type: ToWorker.DropTemplates, keys });
  }

  /** Asks every thread to close its HTTP pool and exit; terminates those that do not. */
  async close(timeoutMs = 5000): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.slots.map(
        (slot) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void slot.worker.terminate(), timeoutMs);
            slot.worker.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            this.post(slot, { type: ToWorker.Shutdown });
          }),
      ),
    );
  }
}
