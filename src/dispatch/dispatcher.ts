import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { FileQueue } from '../queue/index.js';
import type { TaskPool } from '../workers/pool.js';
import type { JobMessage } from '../workers/messages.js';
import type { TokenManager } from '../wechat/token-manager.js';
import { OutcomeKind, type JobOutcome } from '../jobs/outcome.js';
import { decodeJobRecord, type JobRecord } from '../jobs/record.js';
import type { DeadLetter, DeadLetterLog } from './dead-letter.js';
import { RateLimiter, RateMeter } from './rate.js';

export interface DispatcherOptions {
  queue: FileQueue;
  pool: TaskPool;
  tokens: TokenManager;
  deadLetters: DeadLetterLog;
  logger: Logger;
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
}

/** Why dispatch is on hold. */
export interface PauseState {
  reason: 'quota' | 'token' | 'unreachable';
  /** ISO time the hold began */
  since: string;
  detail: string;
}

/** A job taken from the queue and not yet finished. */
interface HeldJob {
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
 */
export class Dispatcher extends EventEmitter {
  private readonly held = new Map<number, HeldJob>();
  /** Jobs whose retry delay has passed, dispatched before new queue records. */
  private readonly retryReady: HeldJob[] = [];
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private pumping = false;
  private pumpAgain = false;
  private stopped = false;
  private tokenWait: NodeJS.Timeout | undefined;
  private tokenError: string | undefined;
  private tokenErrorSince = '';
  /**
   * Set while the daily quota is used up or the API cannot be reached: every job is kept and
   * only one probe job at a time is dispatched, after `holdDelayMs`.
   */
  private hold: PauseState | undefined;
  private holdDelayMs = 0;
  private probeTimer: NodeJS.Timeout | undefined;
  private probeDue = false;
  private probeId: number | undefined;
  private rateTimer: NodeJS.Timeout | undefined;
  private readonly limiter: RateLimiter;
  private readonly sendRate = new RateMeter();
  private readonly quotaRetryIntervalMs: number;
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
    this.retryBaseMs = options.retryBaseMs ?? 1000;
    this.retryMax = options.retryMax ?? 5;
    this.retryCapMs = options.retryCapMs ?? 60000;
    this.holdFactor = options.holdFactor ?? 4;
    this.random = options.random ?? Math.random;
    this.limiter = new RateLimiter(options.rateLimit ?? 0, Date.now());
    this.quotaRetryIntervalMs = options.quotaRetryIntervalMs ?? 600000;
    options.pool.on('outcomes', (outcomes: JobOutcome[]) => this.onOutcomes(outcomes));
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
      retriesPending: this.retryTimers.size + this.retryReady.length,
      running: this.options.pool.inFlight,
      tokenError: this.tokenError,
      paused:
        this.hold ??
        (this.tokenError ? { reason: 'token', since: this.tokenErrorSince, detail: this.tokenError } : null),
      sendRate: Math.round(this.sendRate.perSecond(Date.now()) * 10) / 10,
    };
  }

  /** Ends a hold now (`mega <name> resume`); returns whether dispatch was on hold. */
  resume(): boolean {
    if (!this.hold) return false;
    this.options.logger.info('dispatch resumed by request');
    this.endHold();
    this.pump();
    return true;
  }

  private endHold(): void {
    this.hold = undefined;
    this.probeDue = false;
    this.probeId = undefined;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  /**
   * Quota: probe every quota_retry_interval. Unreachable: probe after retry_base_ms, doubling
   * up to 30 s. A quota answer while unreachable turns the hold into a quota hold.
   */
  private startHold(reason: 'quota' | 'unreachable', detail: string): void {
    if (this.hold?.reason === reason || (this.hold?.reason === 'quota' && reason === 'unreachable')) return;
    this.hold = { reason, since: new Date().toISOString(), detail };
    this.holdDelayMs = reason === 'quota' ? this.quotaRetryIntervalMs : this.retryBaseMs;
    if (reason === 'quota') {
      this.options.logger.warn(
        { probeEverySeconds: this.quotaRetryIntervalMs / 1000 },
        'daily quota reached (45009): dispatch paused, every job kept; probing with one message at a time',
      );
    } else {
      this.options.logger.error({ reason: detail }, 'WeChat API unreachable: dispatch paused, every job kept; probing with one message at a time');
    }
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      this.probeDue = true;
      this.pump();
    }, this.holdDelayMs);
  }

  /** What a probe's answer means for the hold it was sent to test. */
  private onProbe(outcome: JobOutcome): void {
    this.probeId = undefined;
    if (outcome.kind === OutcomeKind.Quota) {
      if (this.hold?.reason !== 'quota') {
        this.hold = undefined;
        this.startHold('quota', outcome.errmsg ?? 'daily quota reached');
      } else {
        this.scheduleProbe();
      }
    } else if (outcome.kind === OutcomeKind.Unreachable || (outcome.kind === OutcomeKind.Retry && outcome.errcode === undefined)) {
      // no answer at all tells nothing about the quota; for an unreachable API, wait longer
      if (this.hold?.reason === 'unreachable') this.holdDelayMs = Math.min(this.holdDelayMs * 2, 30000);
      this.scheduleProbe();
    } else {
      this.options.logger.info({ hold: this.hold?.reason }, 'WeChat answers again: dispatch resumes');
      this.endHold();
    }
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
      if (this.hold && !this.probeDue) return;
      const free = pool.free;
      const room = pool.capacity * this.holdFactor - this.held.size;
      if (free === 0 || (this.retryReady.length === 0 && room <= 0)) return;
      if (this.retryReady.length === 0 && queue.stats().depth - queue.stats().inFlight <= 0) return;

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
        if (!this.tokenError) this.tokenErrorSince = new Date().toISOString();
        this.tokenError = message;
        this.tokenWait = setTimeout(() => {
          this.tokenWait = undefined;
          this.pump();
        }, this.retryBaseMs);
        return;
      }
      if (this.stopped) return;

      const batch: JobMessage[] = [];
      let nowFree = pool.free;
      if (this.hold) nowFree = Math.min(nowFree, 1);
      nowFree = this.limiter.take(nowFree, Date.now());
      if (nowFree === 0) {
        this.rateTimer = setTimeout(() => {
          this.rateTimer = undefined;
          this.pump();
        }, this.limiter.waitMs());
        return;
      }
      while (batch.length < nowFree && this.retryReady.length > 0) {
        const job = this.retryReady.shift()!;
        job.sends++;
        batch.push(job.message);
      }
      const fromQueue = Math.min(nowFree - batch.length, pool.capacity * this.holdFactor - this.held.size);
      if (fromQueue > 0) {
        for (const record of queue.read(fromQueue)) {
          const message: JobMessage = { id: record.id, payload: record.payload.toString('utf8') };
          this.held.set(record.id, { message, attempts: 0, sends: 1, tokenRetried: false });
          batch.push(message);
        }
      }
      if (batch.length === 0) return;
      if (this.hold) {
        this.probeDue = false;
        this.probeId = batch[0]!.id;
      }
      pool.run(batch, token);
    }
  }

  private onOutcomes(outcomes: JobOutcome[]): void {
    const dead: DeadLetter[] = [];
    const finished: Array<{ outcome: JobOutcome; job: HeldJob }> = [];
    const heldBack: HeldJob[] = [];
    for (const outcome of outcomes) {
      const job = this.held.get(outcome.id);
      if (!job) continue;
      if (outcome.id === this.probeId) this.onProbe(outcome);
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
            this.retryReady.push(job);
          } else {
            finished.push({ outcome: { ...outcome, kind: OutcomeKind.Failed }, job });
          }
          break;
        case OutcomeKind.Quota:
        case OutcomeKind.Unreachable:
          // Not the job's fault: it keeps its place (front of the line) and its attempt count.
          heldBack.push(job);
          if (outcome.kind === OutcomeKind.Quota) this.startHold('quota', outcome.errmsg ?? 'daily quota reached');
          else this.startHold('unreachable', outcome.reason ?? 'connection failed');
          break;
        case OutcomeKind.Retry:
          job.attempts++;
          if (job.attempts > this.retryMax) {
            finished.push({ outcome: this.giveUp(outcome, job), job });
          } else {
            this.scheduleRetry(job);
          }
          break;
      }
    }

    // Back to the front of the line together, in queue order (ids rise in FIFO order).
    this.retryReady.unshift(...heldBack.sort((a, b) => a.message.id - b.message.id));

    for (const { outcome, job } of finished) {
      const awaited = outcome.replyKey !== undefined && (this.options.isAwaited?.(outcome.replyKey) ?? false);
      if (outcome.kind === OutcomeKind.Failed && !awaited) dead.push(this.deadLetter(outcome, job));
    }
    try {
      this.options.deadLetters.append(dead);
    } catch (err) {
      // Not recorded, so not acknowledged: the jobs stay queued and are tried again after a restart.
      this.options.logger.error({ err, jobs: dead.length }, 'cannot write the dead-letter log; failed jobs stay queued');
      const unrecorded = new Set(dead.map((d) => d.id));
      for (const { job } of finished) if (unrecorded.has(job.message.id)) this.held.delete(job.message.id);
      finished.splice(0, finished.length, ...finished.filter(({ job }) => !unrecorded.has(job.message.id)));
    }

    for (const { outcome } of finished) {
      this.held.delete(outcome.id);
      this.options.queue.ack(outcome.id);
      if (outcome.kind === OutcomeKind.Ok) {
        this.sent++;
        this.sendRate.record(1, Date.now());
      } else {
        this.failed++;
        const code = String(outcome.errcode ?? 'transport');
        this.failedByErrcode[code] = (this.failedByErrcode[code] ?? 0) + 1;
        this.options.logger.warn(
          { id: outcome.id, openid: outcome.openid, key: outcome.key, errcode: outcome.errcode, errmsg: outcome.errmsg ?? outcome.reason },
          'template message failed',
        );
      }
      if (outcome.replyKey !== undefined) this.emit('settled', { outcome, message: clientMessage(outcome) } satisfies Settlement);
    }
    if (this.held.size === 0) this.emit('drained');
    this.pump();
  }

  private giveUp(outcome: JobOutcome, job: HeldJob): JobOutcome {
    const errcode = outcome.errcode ?? -1;
    const errmsg = outcome.errmsg ?? `gave up after ${job.attempts} attempts: ${outcome.reason ?? 'unknown error'}`;
    return {
      ...outcome,
      kind: OutcomeKind.Failed,
      errcode,
      errmsg,
      raw: outcome.raw ?? JSON.stringify({ errcode, errmsg }),
    };
  }

  private deadLetter(outcome: JobOutcome, job: HeldJob): DeadLetter {
    let record: Partial<JobRecord> = {};
    try {
      record = decodeJobRecord(job.message.payload);
    } catch {
      // an undecodable record is still recorded, with what the outcome says of it
    }
    return {
      id: outcome.id,
      openid: record.o ?? outcome.openid ?? '',
      key: record.t ?? outcome.key ?? '',
      clientMsgId: record.m,
      errcode: outcome.errcode ?? -1,
      errmsg: outcome.errmsg ?? outcome.reason ?? '',
      time: new Date().toISOString(),
      attempts: job.sends,
      job: job.message.payload,
    };
  }

  private scheduleRetry(job: HeldJob): void {
    const exp = Math.min(this.retryCapMs, this.retryBaseMs * 2 ** (job.attempts - 1));
    // Full jitter spreads a burst of failures so they do not all come back at once.
    const delay = Math.round(exp / 2 + this.random() * (exp / 2));
    const timer = setTimeout(() => {
      this.retryTimers.delete(timer);
      this.retryReady.push(job);
      this.pump();
    }, delay);
    this.retryTimers.add(timer);
  }

  /**
   * Stops handing out jobs and waits up to `timeoutMs` for running calls to finish.
   * Jobs not finished stay in the queue and are sent again after the next start.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    if (this.tokenWait) clearTimeout(this.tokenWait);
    if (this.probeTimer) clearTimeout(this.probeTimer);
    if (this.rateTimer) clearTimeout(this.rateTimer);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    if (this.options.pool.inFlight === 0) return;
    const pool = this.options.pool;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        pool.off('outcomes', onOutcomes);
        resolve();
      };
      const onOutcomes = (): void => {
        if (pool.inFlight === 0) done();
      };
      const timer = setTimeout(done, timeoutMs);
      pool.on('outcomes', onOutcomes);
    });
  }
}

/** The Result message for a Send: WeChat's JSON, with the openid added when it failed. */
function clientMessage(outcome: JobOutcome): string {
  const raw = outcome.raw ?? JSON.stringify({ errcode: outcome.errcode ?? -1, errmsg: outcome.errmsg ?? outcome.reason ?? '' });
  if (outcome.kind === OutcomeKind.Ok) return raw;
  try {
    const parsed = JSON.parse(raw) as Record<string, unknown>;
    return JSON.stringify({ ...parsed, openid: outcome.openid });
  } catch {
    return JSON.stringify({ errcode: outcome.errcode ?? -1, errmsg: raw, openid: outcome.openid });
  }
}
