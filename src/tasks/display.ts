import cliProgress from 'cli-progress';
import type { ProgressInfo } from './runner.js';

/**
 * How `task run` shows its progress: a cli-progress bar with rate, ETA, success and failure
 * counts on a terminal; a plain line every second when stdout is a file or a pipe (cron, CI,
 * `nohup`), so the log stays readable.
 */
export interface ProgressDisplay {
  update(p: ProgressInfo): void;
  /** Draws the last state and releases the terminal line. */
  stop(): void;
}

export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function rateText(rate: number): string {
  return rate >= 100 ? rate.toFixed(0) : rate.toFixed(1);
}

/** `task 3: 5234/10000 (52.3%) ok 5000 fail 234 | 812/s | ETA 6s` */
export function progressLine(p: ProgressInfo): string {
  const pct = p.total === 0 ? 100 : (p.finished / p.total) * 100;
  const note = p.note ? ` | ${p.note}` : '';
  return `task ${p.id}: ${p.finished}/${p.total} (${pct.toFixed(1)}%) ok ${p.success} fail ${p.fail} | ${rateText(p.rate)}/s | ETA ${formatDuration(p.etaSeconds)}${note}`;
}

class PlainDisplay implements ProgressDisplay {
  #last: ProgressInfo | undefined;
  #printedAt = 0;
  #printed: string | undefined;

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly everyMs: number,
  ) {}

  update(p: ProgressInfo): void {
    this.#last = p;
    const now = Date.now();
    if (now - this.#printedAt >= this.everyMs) {
      this.#printedAt = now;
      this.#print(p);
    }
  }

  #print(p: ProgressInfo): void {
    const line = progressLine(p);
    this.#printed = line;
    this.out.write(line + '\n');
  }

  stop(): void {
    if (this.#last && progressLine(this.#last) !== this.#printed) this.#print(this.#last);
  }
}

class BarDisplay implements ProgressDisplay {
  readonly #bar: cliProgress.SingleBar;
  #started = false;

  constructor(out: NodeJS.WritableStream, label: string) {
    this.#bar = new cliProgress.SingleBar(
      {
        format: `${label} [{bar}] {percentage}% {value}/{total} | ok {success} fail {fail} | {rate}/s | ETA {eta_text}{note}`,
        stream: out,
        hideCursor: true,
        barsize: 30,
        fps: 5,
        linewrap: false,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  update(p: ProgressInfo): void {
    const payload = {
      success: p.success,
      fail: p.fail,
      rate: rateText(p.rate),
      eta_text: formatDuration(p.etaSeconds),
      note: p.note ? ` | ${p.note}` : '',
    };
    if (!this.#started) {
      this.#started = true;
      this.#bar.start(p.total, p.finished, payload);
    } else {
      this.#bar.update(p.finished, payload);
    }
  }

  stop(): void {
    if (this.#started) this.#bar.stop();
  }
}

class QuietDisplay implements ProgressDisplay {
  update(): void {}
  stop(): void {}
}

export interface DisplayOptions {
  /** @defaultValue process.stdout */
  stream?: NodeJS.WriteStream;
  /** Print nothing while running. */
  quiet?: boolean;
  /** Plain lines even on a terminal. */
  plain?: boolean;
  /** @defaultValue 'task' */
  label?: string;
  /** Plain mode: one line per this many ms. @defaultValue 1000 */
  everyMs?: number;
}

export function createProgressDisplay(options: DisplayOptions = {}): ProgressDisplay {
  const stream = options.stream ?? process.stdout;
  if (options.quiet) return new QuietDisplay();
  if (options.plain || !stream.isTTY) return new PlainDisplay(stream, options.everyMs ?? 1000);
  return new BarDisplay(stream, options.label ?? 'task');
}
