import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { mergeInto, type LedgerChange, type LedgerReceipt, type LedgerSubscription } from './change.js';
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

/** The segments in a journal folder, oldest first (their numbers). @throws when the folder cannot be read */
export function journalSegments(dir: string): number[] {
  return fs
    .readdirSync(dir)
    .map((f) => SEGMENT_RE.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/** The file of segment `n` in a journal folder. */
export function journalSegmentFile(dir: string, n: number): string {
  return path.join(dir, segmentName(n));
}

/*
 * The journal's lines. The two of every message (`queued`, `sent`) are compact, tab-separated
 * in a fixed order after the msgid and a one-letter tag, because the store's thread reads every
 * line back and JSON.parse was a quarter of its work per message:
 *
 *   <msgid> TAB Q TAB <at> TAB <openid> TAB <key> TAB <kind>          queued: attempts 0, queuedAt = at
 *   <msgid> TAB S TAB <at> TAB <attempts> TAB <WeChat's msgid or ''>  sent: errcode 0, errmsg ok, sentAt = at
 *
 * Every other change is one JSON object with `msgid` first, a receipt one with `receipt` first,
 * a subscription (subscribe popup or settings event) one with `subscription` first, and journals left by earlier versions hold only JSON: a line starting with `{` is JSON. A
 * line starts with its msgid either way, which is how scan() finds a message's lines.
 */

/** A msgid the compact lines can carry (the protocol's; never starts with `{`, holds no tab). */
const COMPACT_MSGID = /^[A-Za-z0-9_-]{1,64}$/;
/** What a compact field may hold: printable ASCII (openid and template key are that, checked at the door). */
const NOT_PRINTABLE = /[^\x20-\x7e]/;
const DIGITS = /^\d{1,32}$/;

/** The journal line of a message accepted (see Ledger.queued). */
export function queuedLine(msgid: string, openid: string, key: string, kind: 'push' | 'send', at: number): string {
  if (COMPACT_MSGID.test(msgid) && !NOT_PRINTABLE.test(openid) && !NOT_PRINTABLE.test(key) && (kind === 'push' || kind === 'send') && Number.isSafeInteger(at) && at >= 0) {
    return `${msgid}\tQ\t${at}\t${openid}\t${key}\t${kind}`;
  }
  return JSON.stringify({ msgid, state: 'queued', openid, key, kind, attempts: 0, queuedAt: at, at } satisfies LedgerChange);
}

/** The journal line of a message WeChat accepted (see Ledger.sent); a WeChat msgid that is not digits is left out. */
export function sentLine(msgid: string, wechatMsgid: string | undefined, attempts: number, at: number): string {
  const w = wechatMsgid !== undefined && DIGITS.test(wechatMsgid) ? wechatMsgid : '';
  if (COMPACT_MSGID.test(msgid) && Number.isSafeInteger(at) && at >= 0 && Number.isSafeInteger(attempts) && attempts >= 0) {
    return `${msgid}\tS\t${at}\t${attempts}\t${w}`;
  }
  const change: LedgerChange = { msgid, state: 'sent', attempts, errcode: 0, errmsg: 'ok', sentAt: at, at };
  if (w !== '') change.wechatMsgid = w;
  return JSON.stringify(change);
}

/** A change with every member present, in one order: what the compact parser makes, so merging stays on one object shape. */
function change(msgid: string, state: LedgerChange['state']): LedgerChange {
  return {
    msgid,
    state,
    openid: undefined,
    key: undefined,
    kind: undefined,
    attempts: undefined,
    wechatMsgid: undefined,
    errcode: undefined,
    errmsg: undefined,
    queuedAt: undefined,
    sentAt: undefined,
    finalAt: undefined,
    at: 0,
  };
}

/** The non-negative integer `text[from, to)` spells in decimal, or -1. */
function digitsAt(text: string, from: number, to: number): number {
  if (to <= from || to - from > 16) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/** Whether `text[from, to)` is a msgid of [A-Za-z0-9_-]{1,64}. */
function msgidAt(text: string, from: number, to: number): boolean {
  if (to <= from || to - from > 64) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (!((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 95)) return false;
  }
  return true;
}

/**
 * The change or receipt of the line `text[start, end)` (no newline), or undefined for a line
 * that is not whole: a torn tail, or garbage.
 */
export function parseJournalLine(text: string, start: number, end: number): JournalLine | undefined {
  if (text.charCodeAt(start) === 0x7b) return parseJsonLine(text.slice(start, end));
  const t1 = text.indexOf('\t', start);
  if (t1 < 0 || t1 + 3 > end || text.charCodeAt(t1 + 2) !== 9 || !msgidAt(text, start, t1)) return undefined;
  const tag = text.charCodeAt(t1 + 1);
  const t2 = text.indexOf('\t', t1 + 3);
  if (t2 < 0 || t2 >= end) return undefined;
  const at = digitsAt(text, t1 + 3, t2);
  if (at < 0) return undefined;
  if (tag === 0x51 /* Q */) {
    const t3 = text.indexOf('\t', t2 + 1);
    if (t3 < 0 || t3 >= end) return undefined;
    const t4 = text.indexOf('\t', t3 + 1);
    if (t4 < 0 || t4 >= end) return undefined;
    const kind = end - t4 === 5 ? text.slice(t4 + 1, end) : '';
    if (kind !== 'push' && kind !== 'send') return undefined;
    const c = change(text.slice(start, t1), 'queued');
    c.openid = text.slice(t2 + 1, t3);
    c.key = text.slice(t3 + 1, t4);
    c.kind = kind;
    c.attempts = 0;
    c.queuedAt = at;
    c.at = at;
    return c;
  }
  if (tag === 0x53 /* S */) {
    const t3 = text.indexOf('\t', t2 + 1);
    if (t3 < 0 || t3 >= end) return undefined;
    const attempts = digitsAt(text, t2 + 1, t3);
    if (attempts < 0 || end - t3 - 1 > 32) return undefined;
    for (let i = t3 + 1; i < end; i++) {
      const d = text.charCodeAt(i);
      if (d < 48 || d > 57) return undefined;
    }
    const c = change(text.slice(start, t1), 'sent');
    c.attempts = attempts;
    if (end > t3 + 1) c.wechatMsgid = text.slice(t3 + 1, end);
    c.errcode = 0;
    c.errmsg = 'ok';
    c.sentAt = at;
    c.at = at;
    return c;
  }
  return undefined;
}

/** What one journal line holds. */
export type JournalLine = LedgerChange | LedgerReceipt | LedgerSubscription;

function parseJsonLine(line: string): JournalLine | undefined {
  let value: (LedgerChange & LedgerReceipt & LedgerSubscription) | null;
  try {
    value = JSON.parse(line) as LedgerChange & LedgerReceipt & LedgerSubscription;
  } catch {
    return undefined;
  }
  if (typeof value?.subscription === 'string') {
    return typeof value.templateId === 'string' && (value.status === 'accept' || value.status === 'reject') && typeof value.at === 'number' ? value : undefined;
  }
  if (typeof value?.state !== 'string') return undefined;
  if (typeof value.msgid === 'string' || typeof value.receipt === 'string') return value;
  return undefined;
}

function isChange(line: JournalLine): line is LedgerChange {
  return (line as LedgerChange).msgid !== undefined;
}

function isSubscription(line: JournalLine): line is LedgerSubscription {
  return (line as LedgerSubscription).subscription !== undefined;
}

function kindOf(line: JournalLine): 'change' | 'receipt' | 'subscription' {
  return isChange(line) ? 'change' : isSubscription(line) ? 'subscription' : 'receipt';
}

/**
 * Every whole line of a journal's text, in order, to `onChange` or `onReceipt`. A torn tail (a
 * line cut short by a crash, or garbage after the last whole line) ends it.
 * @returns how many characters were ignored
 */
export function parseJournal(
  text: string,
  onChange: (c: LedgerChange) => void,
  onReceipt: (r: LedgerReceipt) => void,
  onSubscription: (s: LedgerSubscription) => void = () => {},
): number {
  let start = 0;
  for (;;) {
    const end = text.indexOf('\n', start);
    if (end < 0) break;
    const line = parseJournalLine(text, start, end);
    if (line === undefined) break;
    if (isChange(line)) onChange(line);
    else if (isSubscription(line)) onSubscription(line);
    else onReceipt(line);
    start = end + 1;
  }
  return text.length - start;
}

/**
 * The ledger's local write-ahead journal: every state change is appended here (one line)
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
    return new LedgerJournal(dir, fsync, journalSegments(dir));
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

  /** A subscription: one line, `subscription` its first member (see LedgerSubscription). */
  appendSubscription(subscription: LedgerSubscription): void {
    this.buffer.push(JSON.stringify(subscription));
  }

  /** A change already serialised (queuedLine, sentLine): starting with its msgid, no newline. */
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
    // a message's lines start with its msgid: compact, or JSON (older versions, and note())
    return this.scanLines<LedgerChange>(msgid === undefined ? undefined : [`${msgid}\t`, `{"msgid":${JSON.stringify(msgid)},`], 'change', maxBytes);
  }

  /** The receipts not known to be in the database, oldest first: for one WeChat msgid, or all. */
  scanReceipts(wechatMsgid?: string, maxBytes = 64 * 1024 * 1024): LedgerReceipt[] {
    return this.scanLines<LedgerReceipt>([wechatMsgid === undefined ? '{"receipt":' : `{"receipt":${JSON.stringify(wechatMsgid)},`], 'receipt', maxBytes);
  }

  /** The subscriptions not known to be in the database, oldest first: of one openid, or all. */
  scanSubscriptions(openid?: string, maxBytes = 64 * 1024 * 1024): LedgerSubscription[] {
    return this.scanLines<LedgerSubscription>([openid === undefined ? '{"subscription":' : `{"subscription":${JSON.stringify(openid)},`], 'subscription', maxBytes);
  }

  /**
   * The changes (or receipts) of the newest segments (up to `maxBytes`) and the buffer: those
   * on lines starting with one of `needles`, or every one without needles.
   */
  private scanLines<T>(needles: readonly string[] | undefined, want: ReturnType<typeof kindOf>, maxBytes: number): T[] {
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
    const take = (text: string): void => collect(text, needles, want, out as JournalLine[]);
    for (const f of chosen) {
      let text: string;
      try {
        text = fs.readFileSync(f, 'utf8');
      } catch {
        continue;
      }
      take(text);
    }
    // lines being written may be in the active file already: applying a change twice is harmless
    take(this.inWrite.join('\n') + '\n');
    take(this.buffer.join('\n') + '\n');
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
export function readJournalFile(file: string): { changes: LedgerChange[]; receipts: LedgerReceipt[]; subscriptions: LedgerSubscription[]; torn: number } {
  const changes: LedgerChange[] = [];
  const receipts: LedgerReceipt[] = [];
  const subscriptions: LedgerSubscription[] = [];
  const torn = parseJournal(
    fs.readFileSync(file, 'utf8'),
    (c) => changes.push(c),
    (r) => receipts.push(r),
    (s) => subscriptions.push(s),
  );
  return { changes, receipts, subscriptions, torn };
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
    applySubscriptions?(subscriptions: readonly LedgerSubscription[]): Promise<void>;
  },
  files: readonly string[],
): Promise<{ torn: Array<{ file: string; torn: number }>; finals: MessageRecord[] }> {
  const torn: Array<{ file: string; torn: number }> = [];
  const finals: MessageRecord[] = [];
  const receipts: LedgerReceipt[] = [];
  let merged = new Map<string, LedgerChange>();
  // the parsed changes are this function's own: the later ones of a msgid merge into its first in place
  const onChange = (c: LedgerChange): void => {
    const old = merged.get(c.msgid);
    if (old === undefined) merged.set(c.msgid, c);
    else mergeInto(old, c);
  };
  const onReceipt = (r: LedgerReceipt): void => {
    receipts.push(r);
  };
  const subscriptions: LedgerSubscription[] = [];
  const onSubscription = (s: LedgerSubscription): void => {
    subscriptions.push(s);
  };
  for (const file of files) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    const ignored = parseJournal(text, onChange, onReceipt, onSubscription);
    if (ignored > 0) torn.push({ file, torn: ignored });
    if (merged.size >= APPLY_BATCH) {
      finals.push(...(await store.upsert([...merged.values()])));
      merged = new Map();
    }
  }
  if (merged.size > 0) finals.push(...(await store.upsert([...merged.values()])));
  for (let i = 0; i < receipts.length; i += APPLY_BATCH) finals.push(...(await store.applyReceipts(receipts.slice(i, i + APPLY_BATCH))));
  // a store without the table (none today) would drop them: they change no message
  if (store.applySubscriptions) {
    for (let i = 0; i < subscriptions.length; i += APPLY_BATCH) await store.applySubscriptions(subscriptions.slice(i, i + APPLY_BATCH));
  }
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

/**
 * The changes (or receipts) of the whole lines of `text` that start with one of `needles` (every
 * line without needles), parsed, onto `out` in the order of the text. Unlike replay, a line that
 * does not parse is skipped, not the end: it is one being written, or torn.
 */
function collect(text: string, needles: readonly string[] | undefined, want: ReturnType<typeof kindOf>, out: JournalLine[]): void {
  const keep = (start: number, end: number): void => {
    const line = parseJournalLine(text, start, end);
    if (line !== undefined && kindOf(line) === want) out.push(line);
  };
  if (needles === undefined) {
    for (let start = 0; ; ) {
      const end = text.indexOf('\n', start);
      if (end < 0) return; // a line still being written
      if (end > start) keep(start, end);
      start = end + 1;
    }
  }
  // the next line start of each needle, taken in the order of the text
  const next = needles.map((n) => lineStart(text, n, 0));
  for (;;) {
    let k = -1;
    for (let i = 0; i < next.length; i++) if (next[i]! >= 0 && (k < 0 || next[i]! < next[k]!)) k = i;
    if (k < 0) return;
    const hit = next[k]!;
    const end = text.indexOf('\n', hit);
    if (end < 0) return; // a line still being written
    keep(hit, end);
    next[k] = lineStart(text, needles[k]!, end + 1);
  }
}

/** The first position from `pos` where `needle` starts a line of `text`, or -1. */
function lineStart(text: string, needle: string, pos: number): number {
  for (;;) {
    const hit = text.indexOf(needle, pos);
    if (hit <= 0 || text.charCodeAt(hit - 1) === 0x0a) return hit;
    pos = hit + 1;
  }
}
