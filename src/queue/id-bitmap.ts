/**
 * A sliding bitmap of "done" job ids above the low-water mark.
 *
 * A set bit means the id needs no delivery any more: it was acknowledged, or it does not exist
 * (an append whose write failed, a record lost in a corrupt region). Every id below the
 * low-water mark counts as set. Memory is one bit per id between the low-water mark and the
 * highest set id — 125 KB for a window of a million ids — instead of a Set entry per ack.
 */

export class IdBitmap {
  /** Id of bit 0 of words[0]; a multiple of 32. */
  private base: number;
  private words: Uint32Array;
  /** Words at index >= used are all zero. */
  private used = 0;
  /** Every id below this is set; the first id at or after it is unset. */
  private lwm: number;
  /** Number of set bits at or above `lwm`. */
  private above = 0;

  constructor(lowWaterMark: number) {
    this.lwm = lowWaterMark;
    this.base = lowWaterMark - (lowWaterMark % 32);
    this.words = new Uint32Array(64);
  }

  get lowWaterMark(): number {
    return this.lwm;
  }

  /** Number of set ids at or above the low-water mark. */
  get setAbove(): number {
    return this.above;
  }

  has(id: number): boolean {
    if (id < this.lwm) return true;
    const bit = id - this.base;
    const w = Math.floor(bit / 32);
    if (w >= this.used) return false;
    return (this.words[w]! & (1 << (bit & 31))) !== 0;
  }

  /** Set `id`; returns true if it was not set before. Advances the low-water mark when possible. */
  set(id: number): boolean {
    if (id < this.lwm) return false;
    const bit = id - this.base;
    const w = Math.floor(bit / 32);
    if (w >= this.words.length) this.grow(w + 1);
    const mask = 1 << (bit & 31);
    const word = this.words[w]!;
    if ((word & mask) !== 0) return false;
    this.words[w] = word | mask;
    if (w >= this.used) this.used = w + 1;
    this.above++;
    if (id === this.lwm) this.advance();
    return true;
  }

  /** Set every id in [from, to); returns how many were newly set. */
  setRange(from: number, to: number): number {
    let n = 0;
    for (let id = Math.max(from, this.lwm); id < to; id++) if (this.set(id)) n++;
    return n;
  }

  /** Ids that are set at or above the low-water mark, ascending. */
  setIds(): number[] {
    const out: number[] = [];
    const start = Math.floor((this.lwm - this.base) / 32);
    for (let w = start; w < this.used; w++) {
      let word = this.words[w]!;
      while (word !== 0) {
        const low = word & -word;
        const b = 31 - Math.clz32(low);
        const id = this.base + w * 32 + b;
        if (id >= this.lwm) out.push(id);
        word = (word ^ low) >>> 0;
      }
    }
    return out;
  }

  private advance(): void {
    let id = this.lwm;
    let bit = id - this.base;
    // bit by bit until word aligned, then whole words of ones, then bit by bit
    for (;;) {
      const w = bit >>> 5;
      if (w >= this.used) break;
      const word = this.words[w]!;
      if ((bit & 31) === 0 && word === 0xffff_ffff) {
        bit += 32;
        continue;
      }
      if ((word & (1 << (bit & 31))) === 0) break;
      bit++;
    }
    id = this.base + bit;
    this.above -= id - this.lwm;
    this.lwm = id;
    this.slide();
  }

  /** Drop whole words below the low-water mark once they are a large part of the array. */
  private slide(): void {
    const drop = Math.floor((this.lwm - this.base) / 32);
    if (drop < 1024 || drop * 2 < this.words.length) return;
    if (drop >= this.used) {
      this.words.fill(0, 0, this.used);
      this.used = 0;
    } else {
      this.words.copyWithin(0, drop, this.used);
      this.words.fill(0, this.used - drop, this.used);
      this.used -= drop;
    }
    this.base += drop * 32;
    // shrink an array that grew for a burst and is now mostly empty
    if (this.words.length > 4096 && this.used * 4 < this.words.length) {
      this.words = this.words.slice(0, Math.max(64, this.used * 2));
    }
  }

  private grow(minWords: number): void {
    let n = this.words.length;
    while (n < minWords) n *= 2;
    const next = new Uint32Array(n);
    next.set(this.words.subarray(0, this.used));
    this.words = next;
  }
}
