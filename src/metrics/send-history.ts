/**
 * Sends and failures per interval over the last minutes, for the console's chart: a ring of
 * fixed buckets, so recording is two array writes and memory does not grow with traffic.
 */
export class SendHistory {
  private readonly sent: number[];
  private readonly failed: number[];
  /** Start (ms) of the interval each slot holds; a slot from an older lap is stale. */
  private readonly starts: number[];

  constructor(
    readonly intervalSeconds = 10,
    readonly intervals = 90,
    private readonly now: () => number = Date.now,
  ) {
    this.sent = new Array<number>(intervals).fill(0);
    this.failed = new Array<number>(intervals).fill(0);
    this.starts = new Array<number>(intervals).fill(-1);
  }

  record(what: 'sent' | 'failed'): void {
    const slot = this.slot(this.now());
    if (what === 'sent') this.sent[slot]++;
    else this.failed[slot]++;
  }

  /** Every interval of the window, oldest first, empty ones included (a chart needs the gaps). */
  snapshot(): { intervalSeconds: number; points: Array<{ t: number; sent: number; failed: number }> } {
    const ms = this.intervalSeconds * 1000;
    const current = Math.floor(this.now() / ms) * ms;
    const points: Array<{ t: number; sent: number; failed: number }> = [];
    for (let i = this.intervals - 1; i >= 0; i--) {
      const t = current - i * ms;
      const slot = (t / ms) % this.intervals;
      const fresh = this.starts[slot] === t;
      points.push({ t, sent: fresh ? this.sent[slot]! : 0, failed: fresh ? this.failed[slot]! : 0 });
    }
    return { intervalSeconds: this.intervalSeconds, points };
  }

  private slot(now: number): number {
    const ms = this.intervalSeconds * 1000;
    const t = Math.floor(now / ms) * ms;
    const slot = (t / ms) % this.intervals;
    if (this.starts[slot] !== t) {
      this.starts[slot] = t;
      this.sent[slot] = 0;
      this.failed[slot] = 0;
    }
    return slot;
  }
}
