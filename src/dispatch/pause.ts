/**
 * The dispatcher's pause while WeChat's daily quota is used up (45009) or its API cannot be
 * reached: nothing is dispatched but one probe job at a time, after a delay; the probe's answer
 * ends the pause, or sets the next probe. The jobs themselves stay with the dispatcher.
 */

import type { Logger } from 'pino';
import { backoffDelay } from '../backoff.js';
import { OutcomeKind, type JobOutcome } from '../jobs/outcome.js';
import type { Clock, Timer } from './ports.js';

/** Longest wait between two probes of an unreachable WeChat API. */
const UNREACHABLE_PROBE_MAX_MS = 30_000;

/** Why dispatch is on hold. */
export interface PauseState {
  reason: 'quota' | 'token' | 'unreachable';
  /** ISO time the hold began */
  since: string;
  detail: string;
}

/**
 * The quota pause of a whole service: several daemons taking jobs from one JetStream stream
 * spend one daily quota, so a 45009 seen by one of them holds them all (the daemon implements
 * this over cluster/shared-pause.ts). The dispatcher tells it what it saw; the daemon tells the
 * dispatcher what the others saw (`pauseForService`, `resumeForService`).
 */
export interface ServicePause {
  /** This daemon met the daily quota: pause the others too. */
  announce(state: PauseState): void;
  /** This daemon's quota pause ended (its probe was answered, or `resume`): resume the others too. */
  clear(): void;
  /** Whether this daemon sends the probes of a quota pause: one daemon of the service does. */
  isProber(): boolean;
}

export interface PauseOptions {
  clock: Clock;
  logger: Logger;
  /** ms between quota probes (`quota_retry_interval`) */
  quotaRetryIntervalMs: number;
  /** first delay before probing an unreachable API (`retry_base_ms`); doubles up to 30 s */
  retryBaseMs: number;
  /** A probe may go now: the dispatcher pumps. */
  onProbeDue: () => void;
  /** The pause is over: the dispatcher puts back the jobs it kept. `ended` is the pause that ended. */
  onEnd: (ended: PauseState | undefined) => void;
  /**
   * Whether this process may send the probe now. Several daemons sharing one quota pause (the
   * JetStream backend) let one of them probe; the others look again an interval later, in case
   * the prober left. @defaultValue always
   */
  mayProbe?: () => boolean;
}

export class Pause {
  private current: PauseState | undefined;
  /** Probes of an unreachable API that got no answer: the backoff's attempt number. */
  private failedProbes = 0;
  private timer: Timer | undefined;
  private due = false;
  private probeId: number | undefined;
  private stopped = false;

  constructor(private readonly o: PauseOptions) {}

  /** Why dispatch is paused; undefined when it is not. */
  get state(): PauseState | undefined {
    return this.current;
  }

  /** Paused, and no probe may go now. */
  get blocking(): boolean {
    return this.current !== undefined && !this.due;
  }

  /**
   * Quota: probe every quota_retry_interval. Unreachable: probe after retry_base_ms, doubling
   * up to 30 s. A quota answer while unreachable turns the hold into a quota hold.
   */
  start(reason: 'quota' | 'unreachable', detail: string, since = new Date(this.o.clock.now()).toISOString()): void {
    if (this.current?.reason === reason || (this.current?.reason === 'quota' && reason === 'unreachable')) return;
    this.current = { reason, since, detail };
    this.failedProbes = 0;
    if (reason === 'quota') {
      this.o.logger.warn(
        { probeEverySeconds: this.o.quotaRetryIntervalMs / 1000 },
        'daily quota reached (45009): dispatch paused, every job kept; probing with one message at a time',
      );
    } else {
      this.o.logger.error({ reason: detail }, 'WeChat API unreachable: dispatch paused, every job kept; probing with one message at a time');
    }
    this.scheduleProbe();
  }

  /** Job `id` went as the probe. */
  probing(id: number): void {
    this.due = false;
    this.probeId = id;
  }

  isProbe(id: number): boolean {
    return id === this.probeId;
  }

  /** What a probe's answer means for the pause it was sent to test. */
  answer(outcome: JobOutcome): void {
    this.probeId = undefined;
    if (outcome.kind === OutcomeKind.Quota) {
      if (this.current?.reason !== 'quota') {
        this.current = undefined;
        this.start('quota', outcome.errmsg ?? 'daily quota reached');
      } else {
        this.scheduleProbe();
      }
    } else if (outcome.kind === OutcomeKind.Unreachable || (outcome.kind === OutcomeKind.Retry && outcome.errcode === undefined)) {
      // no answer at all tells nothing about the quota; for an unreachable API, wait longer
      if (this.current?.reason === 'unreachable') this.failedProbes++;
      this.scheduleProbe();
    } else {
      this.o.logger.info({ hold: this.current?.reason }, 'WeChat answers again: dispatch resumes');
      this.end();
    }
  }

  end(): void {
    const ended = this.current;
    this.current = undefined;
    this.due = false;
    this.probeId = undefined;
    this.timer?.cancel();
    this.timer = undefined;
    this.o.onEnd(ended);
  }

  /** No probe is scheduled from now on. */
  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** One probe per quota_retry_interval; for an unreachable API the shared backoff, without jitter (one probe at a time). */
  private probeDelayMs(): number {
    if (this.current?.reason === 'quota') return this.o.quotaRetryIntervalMs;
    const base = this.o.retryBaseMs;
    return backoffDelay(this.failedProbes, { baseMs: base, maxMs: Math.max(base, UNREACHABLE_PROBE_MAX_MS), jitter: false });
  }

  private scheduleProbe(): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (this.stopped) return;
    this.timer = this.o.clock.setTimer(this.probeDelayMs(), () => {
      this.timer = undefined;
      if (this.o.mayProbe && !this.o.mayProbe()) return this.scheduleProbe();
      this.due = true;
      this.o.onProbeDue();
    });
  }
}
