/** Small statistics helpers for the benchmark: medians of runs, percentiles of samples. */

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Percentile by nearest rank (p in 0..100) of the first `count` samples. Sorts a copy. */
export function percentile(samples: Float64Array | readonly number[], p: number, count = samples.length): number {
  if (count === 0) return NaN;
  const sorted = Float64Array.from(samples.slice(0, count) as ArrayLike<number>).sort();
  const rank = Math.min(count - 1, Math.max(0, Math.ceil((p / 100) * count) - 1));
  return sorted[rank]!;
}

/** Several percentiles of the same samples with one sort. */
export function percentiles(samples: Float64Array, count: number, ps: readonly number[]): number[] {
  if (count === 0) return ps.map(() => NaN);
  const sorted = samples.slice(0, count).sort();
  return ps.map((p) => sorted[Math.min(count - 1, Math.max(0, Math.ceil((p / 100) * count) - 1))]!);
}

/** A growable Float64Array of samples. */
export class Samples {
  private buf: Float64Array;
  count = 0;
  constructor(initial = 1 << 16) {
    this.buf = new Float64Array(initial);
  }
  push(v: number): void {
    if (this.count === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.count++] = v;
  }
  percentiles(ps: readonly number[]): number[] {
    return percentiles(this.buf, this.count, ps);
  }
  mean(): number {
    let sum = 0;
    for (let i = 0; i < this.count; i++) sum += this.buf[i]!;
    return this.count === 0 ? NaN : sum / this.count;
  }
}

export function fmtInt(n: number): string {
  if (!Number.isFinite(n)) return 'n/a';
  return Math.round(n).toLocaleString('en-US');
}

export function fmtMs(n: number, digits?: number): string {
  if (!Number.isFinite(n)) return 'n/a';
  const d = digits ?? (n < 1 ? 3 : n < 10 ? 2 : n < 100 ? 1 : 0);
  return `${n.toFixed(d)} ms`;
}

export function fmtRatio(n: number): string {
  return Number.isFinite(n) ? n.toFixed(2) : 'n/a';
}

export function fmtMiB(bytes: number): string {
  return Number.isFinite(bytes) ? `${(bytes / 1024 / 1024).toFixed(0)} MiB` : 'n/a';
}

export function fmtRuns(values: readonly number[], fmt: (n: number) => string): string {
  return values.map(fmt).join(' / ');
}
