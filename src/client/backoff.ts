/** MegaClient's reconnection delays: exponential, capped, with jitter. */

import type { MegaReconnectOptions } from './options.js';

/**
 * The delay before reconnection attempt `attempt` (0 for the first): `initialDelayMs` doubled
 * per failed attempt, capped at `maxDelayMs`, then "equal jitter" (between half and all of
 * it) so that clients cut off together do not reconnect in lockstep.
 */
export function backoffDelay(attempt: number, options: Required<MegaReconnectOptions>, random: () => number = Math.random): number {
  const base = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(base / 2 + (random() * base) / 2);
}

/** One pending reconnection at most, and the count of failed attempts since the last stable connection. */
export class ReconnectTimer {
  #attempts = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: Required<MegaReconnectOptions>) {}

  /** Runs `attempt` after the next delay of the sequence. */
  schedule(attempt: () => void): void {
    this.cancel();
    const delay = backoffDelay(this.#attempts++, this.options);
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
