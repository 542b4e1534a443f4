/** MegaClient's reconnection delays: the project's backoff (src/backoff.ts), with jitter so that clients cut off together do not reconnect in lockstep. */

import { backoffDelay } from '../backoff.js';
import type { MegaReconnectOptions } from './options.js';

/** The delay before reconnection attempt `attempt` (0 for the first). */
export function reconnectDelay(attempt: number, options: Required<MegaReconnectOptions>, random: () => number = Math.random): number {
  return backoffDelay(attempt, { baseMs: options.initialDelayMs, maxMs: options.maxDelayMs }, random);
}

/** One pending reconnection at most, and the count of failed attempts since the last stable connection. */
export class ReconnectTimer {
  #attempts = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: Required<MegaReconnectOptions>) {}

  /** Runs `attempt` after the next delay of the sequence. */
  schedule(attempt: () => void): void {
    this.cancel();
    const delay = reconnectDelay(this.#attempts++, this.options);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      attempt();
    }, delay);
  }

  cancel(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** A connection lived long enough: the next delay is the shortest again. */
  reset(): void {
    this.#attempts = 0;
  }
}
