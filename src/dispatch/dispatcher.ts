import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { backoffDelay } from '../backoff.js';
import { OutcomeKind, type JobOutcome } from '../jobs/outcome.js';
import type { DeadLetter } from './dead-letter.js';
import { systemClock, type Clock, type DeadLetterSink, type JobFate, type JobMessage, type JobQueue, type OutcomeObserver, type Timer, type TokenSource, type WorkerPool } from './ports.js';
import { Pause, type PauseState, type ServicePause } from './pause.js';
import { RateLimiter, RateMeter } from './rate.js';
import { clientMessage, deadLetterOf, giveUp } from './settle.js';
import type { DispatchMetrics } from '../metrics/index.js';

export interface DispatcherOptions {
  queue: JobQueue;
  pool: WorkerPool;
  tokens: TokenSource;
  deadLetters: DeadLetterSink;
  logger: Logger;
  /** Every delay and timestamp (tests pass a clock they advance by hand). @defaultValue systemClock */
  clock?: Clock;
  /** First retry delay; doubles each attempt, with jitter. @defaultValue 1000 */
  retryBaseMs?: number;
  /** Attempts after the first before a job fails for good. @defaultValue 5 */
  retryMax?: number;
  /** Longest single retry delay. @defaultValue 60000 */
  retryCapMs?: number;
  /**
   * Jobs held in memory (running plus waiting to retry), as a multiple of the pool's
   * capacity. Bounds memory when WeChat is failing and every job is waiting to retry.
   * @defaultValue 4
   */
  holdFactor?: number;
  random?: () => number;
  /**
   * Whether a client is still waiting for this Send's answer. A failed Send nobody waits
   * for (its client left, or it was queued before a restart) is dead-lettered like a Push.
   */
  isAwaited?: (replyKey: string) => boolean;
  /** Messages per second for the whole daemon, 0 = unlimited. @defaultValue 0 */
  rateLimit?: number;
  /** While the daily quota is used up (45009): ms between probe messages. @defaultValue 600000 */
  quotaRetryIntervalMs?: number;
  /** Hears every job's fate; the settled jobs are acknowledged once it has (see OutcomeObserver). */
  observer?: OutcomeObserver;
  /** Told of every delivery, failure, retry, dead letter and WeChat call duration (Prometheus). @defaultValue none */
  metrics?: DispatchMetrics;
  /** The quota pause shared with the other daemons of the service (JetStream backend). @defaultValue none: this daemon alone */
  servicePause?: ServicePause;
}

export type { PauseState };

/** A job read from the queue and not yet finished. */
interface TakenJob {
  message: JobMessage;
  /** Failed attempts that count against retry_max (-1, 5xx, timeouts). */
  attempts: number;
  /** Times the job was handed to a worker: what the dead-letter log reports as attempts. */
  sends: number;
  tokenRetried: boolean;
}

/**
 * The final word on a Send job (one with a reply key), emitted as `settled`: the daemon answers
 * the waiting client with it. Push jobs need no such event.
 * `outcome.kind` is Ok or Failed.
 */
export interface Settlement {
  outcome: JobOutcome;
  /** WeChat's JSON for the client: as received, with `openid` added on failure. */
  message: string;
}

export type DispatcherEvents = {
  /** A Send job is finished (see Settlement). */
  settled: [settlement: Settlement];
  /** After outcomes were handled, no job is running, waiting to retry or kept by a pause. */
  drained: [];
};

export interface DispatcherStats {
  sent: number;
  failed: number;
  failedByErrcode: Record<string, number>;
  retriesPending: number;
  running: number;
  tokenError: string | undefined;
  paused: PauseState | null;
  /** Messages delivered per second, over the last few seconds. */
  sendRate: number;
}

/**
 * Moves jobs from the queue to the task workers in FIFO order, and decides what each
 * outcome means: acknowledge, retry later, refresh the token, or dead-letter.
 * A job leaves the queue (ack) only once it is delivered or its failure is recorded.
 *
 * A job set aside (waiting out its retry delay, or kept through a quota or unreachable pause)
 * is held in the queue; when it may go again it is released, and read() hands it out before
 * any new job. Its attempt counts stay here, in `jobs`.
 */
export class Dispatcher extends EventEmitter<DispatcherEvents> {
  /** Jobs read from the queue and not finished: running, waiting to retry, or kept by a pause. */
  private readonly jobs = new Map<number, TakenJob>();
  /** Of `jobs`, those released to the queue and not read back yet. */
  private readonly released = new Set<number>();
  /** Of `jobs`, those held in the queue until the pause ends (one at a time goes as a probe). */
  private readonly paused = new Set<number>();
  private pumping = false;
  /** Acks waiting for the observer. */
  private readonly acking = new Set<Promise<void>>();
  private pumpAgain = false;
  private stopped = false;
  private tokenWait: Timer | undefined;
  private tokenError: string | undefined;
  private tokenErrorSince = '';
  /**
   * While the daily quota is used up or the API cannot be reached: every job is kept and only
   * one probe job at a time is dispatched.
   */
  private readonly pause: Pause;
  private rateTimer: Timer | undefined;
  private readonly clock: Clock;
  private limiter: RateLimiter;
  /** The pause ending now was ended by the service (another daemon's probe or resume): not told back. */
  private endingForService = false;
  private readonly sendRate = new RateMeter();
  private sent = 0;
  private failed = 0;
  private readonly failedByErrcode: Record<string, number> = {};
  private readonly retryBaseMs: number;
  private readonly retryMax: number;
  private readonly retryCapMs: number;
  private readonly holdFactor: number;
  private readonly random: () => number;

  constructor(private readonly options: DispatcherOptions) {
    super();
    this.clock = options.clock ?? systemClock;
    this.retryBaseMs = options.retryBaseMs ?? 1000;
    this.retryMax = options.retryMax ?? 5;
    this.retryCapMs = options.retryCapMs ?? 60000;
    this.holdFactor = options.holdFactor ?? 4;
    this.random = options.random ?? Math.random;
    this.limiter = new RateLimiter(options.rateLimit ?? 0, this.clock.now());
    this.pause = new Pause({
      clock: this.clock,
      logger: options.logger,
      quotaRetryIntervalMs: options.quotaRetryIntervalMs ?? 600000,
      retryBaseMs: this.retryBaseMs,
      onProbeDue: () => this.pump(),
      // back together, in queue order: release() puts them at the front of the line by id
      onEnd: (ended) => {
        for (const id of this.paused) this.releaseJob(id);
        this.paused.clear();
        if (ended?.reason === 'quota' && !this.endingForService) this.options.servicePause?.clear();
      },
      mayProbe: () => this.pause.state?.reason !== 'quota' || (this.options.servicePause?.isProber() ?? true),
    });
    options.pool.on('outcomes', (outcomes) => this.onOutcomes(outcomes));
  }

  start(): void {
    this.options.queue.on('readable', () => this.pump());
    this.pump();
  }

  stats(): DispatcherStats {
    return {
      sent: this.sent,
      failed: this.failed,
      failedByErrcode: { ...this.failedByErrcode },
      retriesPending: this.options.queue.stats().deferred + this.released.size + this.paused.size,
      running: this.options.pool.inFlight,
      tokenError: this.tokenError,
      paused:
        this.pause.state ??
        (this.tokenError ? { reason: 'token', since: this.tokenErrorSince, detail: this.tokenError } : null),
      sendRate: Math.round(this.sendRate.perSecond(this.clock.now()) * 10) / 10,
    };
  }

  /** Ends a hold now (`mega <name> resume`); returns whether dispatch was on hold. */
  resume(): boolean {
    if (!this.pause.state) return false;
    this.options.logger.info('dispatch resumed by request');
    this.pause.end();
    this.pump();
    return true;
  }

  /**
   * Another daemon of the service met the daily quota: pause here too (one daemon probes,
   * `mayProbe`). Does nothing while this daemon is already in a quota pause.
   */
  pauseForService(state: PauseState): void {
    if (this.stopped || this.pause.state?.reason === 'quota') return;
    this.pause.start('quota', state.detail, state.since);
  }

  /** The service's quota pause ended elsewhere (a probe was answered, or `resume`): resume here. */
  resumeForService(): void {
    if (this.pause.state?.reason !== 'quota') return;
    this.options.logger.info('the service\'s quota pause ended: dispatch resumes');
    this.endingForService = true;
    try {
      this.pause.end();
    } finally {
      this.endingForService = false;
    }
    this.pump();
  }

  /** This daemon's share of a service-wide `rate_limit` changed (a daemon joined or left); 0 = unlimited. */
  setRateLimit(perSecond: number): void {
    if (perSecond === this.limiter.ratePerSecond) return;
    this.limiter = new RateLimiter(perSecond, this.clock.now());
    this.rateTimer?.cancel();
    this.rateTimer = undefined;
    this.pump();
  }

  private isoNow(): string {
    return new Date(this.clock.now()).toISOString();
  }

  /**
   * Sets the job aside in the queue. After stop() the queue is about to close, so nothing is
   * held or released any more: every job not acknowledged comes again after the next start.
   */
  private holdJob(id: number): void {
    if (!this.stopped) this.options.queue.hold(id);
  }

  /** Puts the job back in circulation: the next read() hands it out before any new job. */
  private releaseJob(id: number): void {
    if (this.stopped) return;
    this.released.add(id);
    this.options.queue.release(id);
  }

  /** Hands out as many jobs as the pool has room for. Safe to call at any time. */
  pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    void this.fill().finally(() => {
      this.pumping = false;
      if (this.pumpAgain) {
        this.pumpAgain = false;
        this.pump();
      }
    });
  }

  private async fill(): Promise<void> {
    const { pool, queue, tokens, logger } = this.options;
    for (;;) {
      if (this.stopped || this.tokenWait || this.rateTimer) return;
      if (this.pause.blocking) return;
      // Jobs already taken that may go now: the released ones; during a pause, a kept one as the probe.
      const again = this.released.size + this.paused.size;
      const waiting = queue.stats();
      // jobs waiting out a retry delay count too: the file queue keeps them in memory meanwhile
      const room = pool.capacity * this.holdFactor - this.jobs.size - waiting.deferred;
      if (pool.free === 0 || (again === 0 && room <= 0)) return;
      if (again === 0 && waiting.depth - waiting.inFlight <= 0) return;

      let token: string;
      try {
        token = await tokens.get();
        if (this.tokenError) logger.info('dispatch resumes: it has an access token again');
        this.tokenError = undefined;
      } catch (err) {
        // Without a token every call would fail: keep the jobs queued and try again later.
        // The token manager logs the failure itself (once per distinct error); this says once
        // what it means for dispatch.
        const message = err instanceof Error ? err.message : String(err);
        if (!this.tokenError) logger.warn({ reason: message }, 'no access token: dispatch waits, every job stays queued');
        if (!this.tokenError) this.tokenErrorSince = this.isoNow();
        this.tokenError = message;
        this.tokenWait = this.clock.setTimer(this.retryBaseMs, () => {
          this.tokenWait = undefined;
          this.pump();
        });
        return;
      }
      // a pause may have begun while the token was awaited (another daemon's, say)
      if (this.stopped || this.pause.blocking) return;

      let permits = pool.free;
      if (this.pause.state) permits = Math.min(permits, 1);
      permits = this.limiter.take(permits, this.clock.now());
      if (permits === 0) {
        this.rateTimer = this.clock.setTimer(this.limiter.waitMs(), () => {
          this.rateTimer = undefined;
          this.pump();
        });
        return;
      }
      if (this.pause.state && this.released.size === 0) {
        // the probe: the first job the pause kept (none: a job never handed out)
        let first: number | undefined;
        for (const id of this.paused) if (first === undefined || id < first) first = id;
        if (first !== undefined) {
          this.paused.delete(first);
          this.releaseJob(first);
        }
      }
      // read() hands out the released jobs first, so at most `room` new ones
      const count = Math.min(permits, this.released.size + Math.max(0, pool.capacity * this.holdFactor - this.jobs.size - queue.stats().deferred));
      const batch: JobMessage[] = [];
      for (const record of count > 0 ? queue.read(count) : []) {
        const known = this.jobs.get(record.id);
        if (known) {
          this.released.delete(record.id);
          known.sends++;
          batch.push(known.message);
        } else {
          const message: JobMessage = { id: record.id, payload: record.payload.toString('utf8') };
          // a retried job comes back from the queue with its count of failed attempts
          const attempts = record.deferrals ?? 0;
          this.jobs.set(record.id, { message, attempts, sends: attempts + 1, tokenRetried: false });
          batch.push(message);
        }
      }
      if (batch.length === 0) return;
      if (this.pause.state) this.pause.probing(batch[0]!.id);
      pool.run(batch, token);
    }
  }

  private onOutcomes(outcomes: JobOutcome[]): void {
    const dead: DeadLetter[] = [];
    const finished: Array<{ outcome: JobOutcome; job: TakenJob }> = [];
    const observer = this.options.observer;
    const fates: JobFate[] = [];
    const metrics = this.options.metrics;
    for (const outcome of outcomes) {
      const job = this.jobs.get(outcome.id);
      if (!job) continue;
      if (metrics && outcome.ms !== undefined) metrics.wechatCall(outcome.ms / 1000);
      if (this.pause.isProbe(outcome.id)) this.pause.answer(outcome);
      switch (outcome.kind) {
        case OutcomeKind.Ok:
          finished.push({ outcome, job });
          break;
        case OutcomeKind.Failed:
          finished.push({ outcome, job });
          break;
        case OutcomeKind.TokenRejected:
          this.options.tokens.invalidate(outcome.token ?? '');
          if (!job.tokenRetried) {
            job.tokenRetried = true;
            this.releaseJob(outcome.id);
          } else {
            finished.push({ outcome: { ...outcome, kind: OutcomeKind.Failed }, job });
          }
          break;
        case OutcomeKind.Quota:
        case OutcomeKind.Unreachable:
          // Not the job's fault: it keeps its attempt count, and its place in the line
          // (released with the others, in queue order, when the pause ends).
          this.holdJob(outcome.id);
          this.paused.add(outcome.id);
          if (outcome.kind === OutcomeKind.Quota) {
            this.pause.start('quota', outcome.errmsg ?? 'daily quota reached');
            this.options.servicePause?.announce(this.pause.state!);
          } else this.pause.start('unreachable', outcome.reason ?? 'connection failed');
          break;
        case OutcomeKind.Retry:
          job.attempts++;
          if (job.attempts > this.retryMax) {
            finished.push({ outcome: giveUp(outcome, job.attempts), job });
          } else {
            this.scheduleRetry(job);
            metrics?.retried();
            if (observer) fates.push({ fate: 'retry', outcome, sends: job.sends, payload: job.message.payload });
          }
          break;
      }
    }

    for (const { outcome, job } of finished) {
      const awaited = outcome.replyKey !== undefined && (this.options.isAwaited?.(outcome.replyKey) ?? false);
      if (outcome.kind === OutcomeKind.Failed && !awaited) dead.push(deadLetterOf(outcome, job.message.payload, job.sends, this.clock.now()));
    }
    // The dead-letter sink is synchronous for the file log, asynchronous for JetStream's stream:
    // either way nothing is acknowledged before the failures are recorded.
    let recording: void | Promise<void>;
    try {
      recording = this.options.deadLetters.append(dead);
    } catch (err) {
      this.finish(finished, dead, fates, err);
      return;
    }
    if (recording instanceof Promise) {
      const recorded: Promise<void> = recording.then(
        () => this.finish(finished, dead, fates, undefined, recorded),
        (err: unknown) => this.finish(finished, dead, fates, err, recorded),
      );
      // stop() waits for it like for an ack
      this.acking.add(recorded);
    } else {
      this.finish(finished, dead, fates, undefined);
    }
  }

  /** The jobs settled by one batch of outcomes, once their dead letters are recorded (or failed to be: `err`). */
  private finish(
    finished: Array<{ outcome: JobOutcome; job: TakenJob }>,
    dead: DeadLetter[],
    fates: JobFate[],
    err: unknown,
    recording?: Promise<void>,
  ): void {
    if (recording) this.acking.delete(recording);
    const observer = this.options.observer;
    if (err !== undefined) {
      // Not recorded, so not acknowledged: the jobs stay queued (held) and are tried again after a restart.
      this.options.logger.error({ err, jobs: dead.length }, 'cannot write the dead-letter log; failed jobs stay queued');
      const unrecorded = new Set(dead.map((d) => d.id));
      for (const id of unrecorded) {
        this.jobs.delete(id);
        this.holdJob(id);
      }
      finished = finished.filter(({ job }) => !unrecorded.has(job.message.id));
    }

    const metrics = this.options.metrics;
    if (err === undefined) metrics?.deadLettered(dead.length);
    const deadIds = observer && dead.length > 0 ? new Set(dead.map((d) => d.id)) : undefined;
    for (const { outcome, job } of finished) {
      this.jobs.delete(outcome.id);
      if (observer) {
        const fate = outcome.kind === OutcomeKind.Ok ? 'sent' : deadIds?.has(outcome.id) ? 'dead' : 'rejected';
        fates.push({ fate, outcome, sends: job.sends, payload: job.message.payload });
      } else {
        this.ackJob(outcome.id);
      }
      if (outcome.kind === OutcomeKind.Ok) {
        this.sent++;
        this.sendRate.record(1, this.clock.now());
        metrics?.delivered();
      } else {
        this.failed++;
        const code = String(outcome.errcode ?? 'transport');
        this.failedByErrcode[code] = (this.failedByErrcode[code] ?? 0) + 1;
        metrics?.failed(code);
        this.options.logger.warn(
          { id: outcome.id, openid: outcome.openid, key: outcome.key, errcode: outcome.errcode, errmsg: outcome.errmsg ?? outcome.reason },
          'template message failed',
        );
      }
      if (outcome.replyKey !== undefined) this.emit('settled', { outcome, message: clientMessage(outcome) });
    }
    if (observer && fates.length > 0) {
      const ids = finished.map(({ outcome }) => outcome.id);
      // An observer that throws or rejects must neither crash the daemon nor keep jobs forever:
      // delivery goes on, and the failure is logged (the ledger says so in status too).
      const acked = Promise.resolve()
        .then(() => observer.beforeAck(fates))
        .catch((e: unknown) => this.options.logger.error({ err: e }, 'the outcome observer failed; the jobs are acknowledged all the same'))
        .then(() => {
          this.acking.delete(acked);
          // stop() waits for these before the queue closes
          for (const id of ids) this.ackJob(id);
          if (this.jobs.size === 0 && this.acking.size === 0) this.emit('drained');
        });
      this.acking.add(acked);
    } else if (this.jobs.size === 0 && this.acking.size === 0) {
      this.emit('drained');
    }
    this.pump();
  }

  private ackJob(id: number): void {
    try {
      this.options.queue.ack(id);
    } catch (err) {
      this.options.logger.warn({ err, id }, 'ack after the ledger journal failed; the job is sent again after a restart');
    }
  }

  /**
   * The job goes again after its backoff: the queue takes it back (JobQueue.defer: held and
   * released by the file queue, a delayed redelivery with JetStream, possibly to another daemon)
   * and hands it out again with its count of failed attempts (`deferrals`). Nothing of it stays
   * here meanwhile. After stop() it is left as it is: it comes again after the next start.
   */
  private scheduleRetry(job: TakenJob): void {
    const id = job.message.id;
    this.jobs.delete(id);
    if (this.stopped) return;
    // Jitter spreads a burst of failures so they do not all come back at once.
    const delay = backoffDelay(job.attempts - 1, { baseMs: this.retryBaseMs, maxMs: this.retryCapMs }, this.random);
    this.options.queue.defer(id, delay);
  }

  /**
   * Stops handing out jobs and waits up to `timeoutMs` for running calls to finish.
   * Jobs not finished stay in the queue and are sent again after the next start.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    this.tokenWait?.cancel();
    this.pause.stop();
    this.rateTimer?.cancel();
    const pool = this.options.pool;
    if (pool.inFlight > 0) await this.waitIdle(pool, timeoutMs);
    // the acks the observer holds back: the queue closes after this
    while (this.acking.size > 0) await Promise.all([...this.acking]);
  }

  private async waitIdle(pool: WorkerPool, timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        timer.cancel();
        pool.off('outcomes', onOutcomes);
        resolve();
      };
      const onOutcomes = (): void => {
        if (pool.inFlight === 0) done();
      };
      const timer = this.clock.setTimer(timeoutMs, done);
      pool.on('outcomes', onOutcomes);
    });
  }
}
