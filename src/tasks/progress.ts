import type { TaskProgress } from './store.js';

/**
 * Which recipients of a task are finished, and the counts, as one consistent state.
 *
 * A recipient is *finished* once its answer (200, or a WeChat refusal) has been counted. The
 * state is the contiguous prefix `position` (every index below it finished) plus the finished
 * indexes above it (answers come back out of order, so there are at most about a window's worth).
 * The runner saves a {@link snapshot} in one statement, so the counts and the finished set always
 * agree in the store: after a crash, exactly the recipients not recorded as finished are sent
 * again (same msgid, so WeChat drops a repeat of one that did go out), and each is counted once,
 * when its answer comes.
 */
export class ProgressTracker {
  #position: number;
  readonly #above: Set<number>;
  #success: number;
  #fail: number;
  /** Bumped on every change, so a saver knows whether there is anything new. */
  #version = 0;

  constructor(
    readonly total: number,
    start: { position: number; doneAbove: readonly number[]; success: number; fail: number } = {
      position: 0,
      doneAbove: [],
      success: 0,
      fail: 0,
    },
  ) {
    if (!Number.isSafeInteger(total) || total < 0) throw new RangeError('total must be a non-negative integer');
    if (!(start.position >= 0 && start.position <= total)) throw new RangeError(`position ${start.position} is outside 0..${total}`);
    this.#position = start.position;
    this.#above = new Set();
    for (const i of start.doneAbove) {
      if (!Number.isSafeInteger(i) || i < start.position || i >= total) throw new RangeError(`finished index ${i} is outside ${start.position}..${total - 1}`);
      this.#above.add(i);
    }
    this.#success = start.success;
    this.#fail = start.fail;
    this.#advance();
    if (this.finished !== this.#success + this.#fail) {
      throw new RangeError(
        `inconsistent progress: ${this.finished} recipients finished but success ${this.#success} + fail ${this.#fail} = ${this.#success + this.#fail}`,
      );
    }
  }

  get position(): number {
    return this.#position;
  }
  get success(): number {
    return this.#success;
  }
  get fail(): number {
    return this.#fail;
  }
  get version(): number {
    return this.#version;
  }
  /** Recipients finished. */
  get finished(): number {
    return this.#position + this.#above.size;
  }
  get complete(): boolean {
    return this.#position === this.total;
  }

  isFinished(index: number): boolean {
    return index < this.#position || this.#above.has(index);
  }

  /**
   * Counts the answer for `index`.
   * @returns false (and counts nothing) when `index` was already finished.
   */
  finish(index: number, ok: boolean): boolean {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.total) throw new RangeError(`index ${index} is outside 0..${this.total - 1}`);
    if (this.isFinished(index)) return false;
    this.#above.add(index);
    if (ok) this.#success++;
    else this.#fail++;
    this.#advance();
    this.#version++;
    return true;
  }

  #advance(): void {
    while (this.#above.has(this.#position)) {
      this.#above.delete(this.#position);
      this.#position++;
    }
  }

  /** The state to save; `reportSize` is the report's length that holds exactly the failures counted. */
  snapshot(reportSize: number): TaskProgress {
    return {
      success: this.#success,
      fail: this.#fail,
      position: this.#position,
      doneAbove: [...this.#above].sort((a, b) => a - b),
      reportSize,
    };
  }
}
