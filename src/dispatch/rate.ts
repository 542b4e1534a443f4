/**
 * Pacing for the whole daemon (`[wechat] rate_limit`): a token bucket refilled continuously
 * at `ratePerSecond`, holding at most a few milliseconds' worth, so messages leave evenly
 * spaced instead of in bursts at the top of each second.
 */
export class RateLimiter {
  private tokens: number;
  private last: number;
  private readonly capacity: number;

  /**
   * @param ratePerSecond messages per second; 0 = unlimited
   * @param burstMs how much unused time may be saved up, in ms of traffic. @defaultValue 50
   */
  constructor(
    readonly ratePerSecond: number,
    now: number,
    burstMs = 50,
  ) {
    if (!Number.isFinite(ratePerSecond) || ratePerSecond < 0) {
      throw new RangeError(`RateLimiter ratePerSecond must be >= 0, got ${ratePerSecond}`);
    }
    this.capacity = Math.max(1, (ratePerSecond * burstMs) / 1000);
    this.tokens = this.capacity;
    this.last = now;
  }

  get unlimited(): boolean {
    return this.ratePerSecond === 0;
  }

  /** Takes up to `wanted` permits now; returns how many were granted. */
  take(wanted: number, now: number): number {
    if (this.unlimited) return wanted;
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) * this.ratePerSecond) / 1000);
    this.last = now;
    const granted = Math.min(wanted, Math.floor(this.tokens));
    this.tokens -= granted;
    return granted;
  }

  /** Milliseconds until the next permit. */
  waitMs(): number {
    if (this.unlimited || this.tokens >= 1) return 0;
    return Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSecond);
  }
}

/** Events per second over a sliding window of whole seconds (for `status`). */
export class RateMeter {
  private readonly counts: number[];
  private second = 0;

  constructor(private readonly windowSeconds = 10) {
    this.counts = new Array<number>(windowSeconds).fill(0);
  }

  private advance(now: number): void {
    const s = Math.floor(now / 1000);
    if (this.second === 0) this.second = s;
    for (let gap = Math.min(s - this.second, this.windowSeconds); gap > 0; gap--) {
      this.second++;
      this.counts[this.second % this.windowSeconds] = 0;
    }
    this.second = s;
  }

  record(n: number, now: number): void {
    this.advance(now);
    this.counts[this.second % this.windowSeconds]! += n;
  }

  /** Average per second over the last full seconds of the window (the current one is partial). */
  perSecond(now: number): number {
    this.advance(now);
    let total = 0;
    for (let i = 1; i < this.windowSeconds; i++) total += this.counts[(this.second - i + this.windowSeconds * 2) % this.windowSeconds]!;
    return total / (this.windowSeconds - 1);
  }
}
