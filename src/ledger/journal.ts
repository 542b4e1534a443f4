import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { mergeChange, type LedgerChange, type LedgerReceipt } from './change.js';
import type { MessageRecord } from '../protocol/message-record.js';

const write = promisify(fs.write);
const fdatasync = promisify(fs.fdatasync);
const close = promisify(fs.close);
const rm = fs.promises.rm;
const open = promisify(fs.open);

/** Largest scratch buffer kept between writes. */
const SCRATCH_KEEP = 4 * 1024 * 1024;

const SEGMENT_RE = /^(\d{12})\.jsonl$/;

function segmentName(n: number): string {
  return `${String(n).padStart(12, '0')}.jsonl`;
}

/**
 * The ledger's local write-ahead journal: every state change is appended here (one JSON line)
 * before its job's queue ack may be persisted, so a kill -9 loses none, and while the database
 * is down the changes wait here, bounded only by the disk.
 *
 * A folder of numbered segments. Writes go to the newest; {@link rotate} starts a new one, and
 * the sealed ones are deleted once the database holds everything they say. Appends are
 * group-committed like the queue's: one write() and one fdatasync for every change appended
 * since the last one.
 */
export class LedgerJournal {
  private fd: number;
  private active: number;
  /** Sealed segments (numbers) not deleted yet, with the changes each holds. */
  private readonly sealed = new Map<number, number>();
  private activeLines = 0;
  private buffer: string[] = [];
  /** What writeLines encodes into (see encode). */
  private scratch: Buffer = Buffer.allocUnsafe(64 * 1024);
  /** Lines taken from the buffer by the write under way: in neither the buffer nor surely the file. */
  private inWrite: string[] = [];
  private flushing: Promise<void> | undefined;
  private next: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | undefined;

  private constructor(
    readonly dir: string,
    private readonly fsync: boolean,
    existing: number[],
  ) {
    // what an earlier run left: counted once, for the backlog in status
    for (const n of existing) this.sealed.set(n, readJournalFile(path.join(dir, segmentName(n))).changes.length);
    this.active = (existing.length ? Math.max(...existing) : 0) + 1;
    this.fd = fs.openSync(path.join(dir, segmentName(this.active)), 'a');
  }

  /** Opens the journal folder (created if missing); segments left by an earlier run are sealed, for replay. */
  static open(dir: string, fsync: boolean): LedgerJournal {
    fs.mkdirSync(dir, { recursive: true });
    const existing = fs
      .readdirSync(dir)
      .map((f) => SEGMENT_RE.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    return new LedgerJournal(dir, fsync, existing);
  }

  /** Changes in the journal that the database is not known to hold. */
  get backlog(): number {
    let n = this.activeLines + this.buffer.length;
    for (const lines of this.sealed.values()) n += lines;
    return n;
  }

  /** Sealed segments, oldest first. */
  sealedSegments(): number[] {
    return [...this.sealed.keys()].sort((a, b) => a - b);
  }

  /**
   * Queues a change for the next write; not on disk until a sync() resolves. The msgid must be
   * its first member: {@link scan} finds a message's lines by their start.
   */
  append(change: LedgerChange): void {
    this.buffer.push(JSON.stringify(change));
  }

  /** A receipt: one line, `receipt` its first member (see LedgerReceipt). */
  appendReceipt(receipt: LedgerReceipt): void {
    this.buffer.push(JSON.stringify(receipt));
  }

  /** A change already serialised (see Ledger.queued): one JSON object, msgid first, no newline. */
  appendLine(line: string): void {
    this.buffer.push(line);
  }

  /** Changes in the active segment and the buffer: what may start a write early. */
  get appended(): number {
    return this.activeLines + this.buffer.length + this.inWrite.length;
  }

  /**
   * Writes (and with fsync, fdatasyncs) every change appended so far. Callers arriving while a
   * write runs share the next one.
   */
  sync(): Promise<void> {
    if (!this.next) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.next = { promise, resolve, reject };
      if (!this.flushing) this.kick();
      return promise;
    }
    return this.next.promise;
  }

  private kick(): void {
    const waiter = this.next!;
    this.next = undefined;
    const lines = this.buffer;
    this.buffer = [];
    this.inWrite = lines;
    this.flushing = this.writeLines(lines).then(waiter.resolve, (err: unknown) => {
      // Not written: put them back in front so a later sync tries again, in order.
      this.buffer = lines.concat(this.buffer);
      waiter.reject(err);
    });
    void this.flushing.finally(() => {
      this.flushing = undefined;
      this.inWrite = [];
      if (this.next) this.kick();
    });
  }

  private async writeLines(lines: string[]): Promise<void> {
    if (lines.length > 0) {
      const buf = this.encode(lines);
      for (let off = 0; off < buf.length; ) off += (await write(this.fd, buf, off, buf.length - off)).bytesWritten;
      this.activeLines += lines.length;
    }
    if (this.fsync && lines.length > 0) await fdatasync(this.fd);
  }

  /**
   * The lines as UTF-8, one per line, in a buffer reused from write to write (one write runs at
   * a time). Joining them into one string first made a string of megabytes per write under
   * load, and copied it once more: garbage that lengthened the main thread's GC pauses.
   */
  private encode(lines: readonly string[]): Buffer {
    let need = 0;
    for (const line of lines) need += line.length * 3 + 1;
    if (this.scratch.length < need) this.scratch = Buffer.allocUnsafe(Math.max(need, this.scratch.length * 2));
    const buf = this.scratch;
    let off = 0;
    for (const line of lines) {
      off += buf.write(line, off, 'utf8');
      buf[off++] = 0x0a;
    }
    // a large scratch left over from a burst is not kept for good
    if (this.scratch.length > SCRATCH_KEEP && need < SCRATCH_KEEP / 4) this.scratch = Buffer.allocUnsafe(SCRATCH_KEEP);
    return buf.subarray(0, off);
  }

  /**
   * Writes what is buffered, then seals the active segment and starts a new one; `atSeal` runs
   * at the switch, synchronously (what was appended before it is in a sealed segment or still
   * buffered for the new one).
   * @returns the sealed segments (all of them, oldest first): delete them with {@link remove}
   *   once the database holds every change appended before this call.
   */
  async rotate(atSeal: () => void = () => {}): Promise<number[]> {
    // created first, off the main thread (a file create can wait on the disk's own journal)
    const nextFd = await open(path.join(this.dir, segmentName(this.active + 1)), 'a');
    await this.sync();
    while (this.flushing) await this.flushing.catch(() => {});
    // no write runs from here to the switch: nothing appended before atSeal() can reach the new segment unless it was still buffered
    atSeal();
    const old = this.fd;
    this.sealed.set(this.active, this.activeLines);
    this.active++;
    this.activeLines = 0;
    this.fd = nextFd;
    await close(old);
    return this.sealedSegments();
  }

  /**
   * Deletes sealed segments the database now holds. Off the main thread: unlinking a segment of
   * many megabytes can take tens of milliseconds, and every Push and receipt waiting for a
   * journal sync would wait with it (bench: a 71 ms stall).
   */
  async remove(segments: readonly number[]): Promise<void> {
    const gone: Promise<void>[] = [];
    for (const n of segments) {
      if (!this.sealed.has(n)) continue;
      this.sealed.delete(n);
      gone.push(rm(path.join(this.dir, segmentName(n)), { force: true }));
    }
    await Promise.all(gone);
  }

  /** The file of a segment. */
  file(segment: number): string {
    return path.join(this.dir, segmentName(segment));
  }

  /**
   * The changes not known to be in the database, oldest first: of one message (`msgid`), or of
   * all. Reads the newest segments up to `maxBytes` (the database being down for long, older
   * ones are skipped: their changes are then seen once written).
   */
  scan(msgid?: string, maxBytes = 64 * 1024 * 1024): LedgerChange[] {
    return this.scanLines<LedgerChange>(msgid === undefined ? '{"msgid":' : `{"msgid":${JSON.stringify(msgid)},`, maxBytes);
  }

  /** The receipts not known to be in the database, oldest first: for one WeChat msgid, or all. */
  scanReceipts(wechatMsgid?: string, maxBytes = 64 * 1024 * 1024): LedgerReceipt[] {
    return this.scanLines<LedgerReceipt>(wechatMsgid === undefined ? '{"receipt":' : `{"receipt":${JSON.stringify(wechatMsgid)},`, maxBytes);
  }

  /** Lines starting with `needle` of the newest segments (up to `maxBytes`) and the buffer. */
  private scanLines<T>(needle: string, maxBytes: number): T[] {
    const files = [...this.sealedSegments(), this.active].map((n) => this.file(n));
    const chosen: string[] = [];
    let budget = maxBytes;
    for (let i = files.length - 1; i >= 0; i--) {
      let size = 0;
      try {
        size = fs.statSync(files[i]!).size;
      } catch {
        continue; // deleted meanwhile: the database has it
      }
      if (size > budget) break;
      budget -= size;
      chosen.unshift(files[i]!);
    }
    const out: T[] = [];
    for (const f of chosen) {
      let text: string;
      try {
        text = fs.readFileSync(f, 'utf8');
      } catch {
        continue;
      }
      collect(text, needle, out);
    }
    // lines being written may be in the active file already: applying a change twice is harmless
    collect(this.inWrite.join('\n') + '\n', needle, out);
    collect(this.buffer.join('\n') + '\n', needle, out);
    return out;
  }

  async close(): Promise<void> {
    await this.sync().catch(() => {});
    while (this.flushing) await this.flushing.catch(() => {});
    await close(this.fd).catch(() => {});
  }
}

/**
 * The changes and receipts of a journal file, in order. A torn tail (a line cut short by a
 * crash, or garbage after the last whole line) ends it: `torn` says how many characters were
 * ignored.
 */
export function readJournalFile(file: string): { changes: LedgerChange[]; receipts: LedgerReceipt[]; torn: number } {
  const text = fs.readFileSync(file, 'utf8');
  const changes: LedgerChange[] = [];
  const receipts: LedgerReceipt[] = [];
  let start = 0;
  for (;;) {
    const end = text.indexOf('\n', start);
    if (end < 0) break;
    let line: (LedgerChange & LedgerReceipt) | null;
    try {
      line = JSON.parse(text.slice(start, end)) as LedgerChange & LedgerReceipt;
    } catch {
      break;
    }
    if (typeof line?.state !== 'string') break;
    if (typeof line.msgid === 'string') changes.push(line);
    else if (typeof line.receipt === 'string') receipts.push(line);
    else break;
    start = end + 1;
  }
  return { changes, receipts, torn: text.length - start };
}

/** Changes applied per store write while reading the journal back. */
const APPLY_BATCH = 50_000;

/**
 * Applies journal files, oldest first, to the store: changes coalesced per msgid, in writes of
 * up to 50,000 messages, then the receipts (which find their messages written by then).
 * Idempotent, so a crash in the middle only means applying them again (and reporting the same
 * final states again: the webhook is at least once).
 * @returns the files whose tail was torn, with the characters ignored, and the records made final
 */
export async function applyJournalFiles(
  store: {
    upsert(changes: readonly LedgerChange[]): Promise<MessageRecord[]>;
    applyReceipts(receipts: readonly LedgerReceipt[]): Promise<MessageRecord[]>;
  },
  files: readonly string[],
): Promise<{ torn: Array<{ file: string; torn: number }>; finals: MessageRecord[] }> {
  const torn: Array<{ file: string; torn: number }> = [];
  const finals: MessageRecord[] = [];
  const receipts: LedgerReceipt[] = [];
  let merged = new Map<string, LedgerChange>();
  for (const file of files) {
    let read: ReturnType<typeof readJournalFile>;
    try {
      read = readJournalFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (read.torn > 0) torn.push({ file, torn: read.torn });
    for (const c of read.changes) {
      const old = merged.get(c.msgid);
      merged.set(c.msgid, old ? mergeChange(old, c) : c);
    }
    for (const r of read.receipts) receipts.push(r);
    if (merged.size >= APPLY_BATCH) {
      finals.push(...(await store.upsert([...merged.values()])));
      merged = new Map();
    }
  }
  if (merged.size > 0) finals.push(...(await store.upsert([...merged.values()])));
  for (let i = 0; i < receipts.length; i += APPLY_BATCH) finals.push(...(await store.applyReceipts(receipts.slice(i, i + APPLY_BATCH))));
  return { torn, finals: distinctFinals(finals) };
}

/** Each final state once (a receipt can be found both by its send's change and by itself), in order. */
function distinctFinals(records: readonly MessageRecord[]): MessageRecord[] {
  const seen = new Set<string>();
  return records.filter((r) => {
    const key = `${r.msgid}:${r.state}:${r.finalAt}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Whole lines of `text` that start with `needle`, parsed, onto `out`. */
function collect<T>(text: string, needle: string, out: T[]): void {
  let pos = 0;
  for (;;) {
    const hit = text.indexOf(needle, pos);
    if (hit < 0) return;
    if (hit > 0 && text[hit - 1] !== '\n') {
      pos = hit + 1;
      continue;
    }
    const end = text.indexOf('\n', hit);
    if (end < 0) return; // a line still being written
    try {
      out.push(JSON.parse(text.slice(hit, end)) as T);
    } catch {
      // a torn line: replay ignores it too
    }
    pos = end + 1;
  }
}
