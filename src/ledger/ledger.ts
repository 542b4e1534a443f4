import type { Logger } from 'pino';
import { backoffDelay } from '../backoff.js';
import type { LedgerReader, MessageFilter, MessageRecord } from '../protocol/message-record.js';
import { applyChange, mergeChange, recordOf, type LedgerChange } from './change.js';
import { applyJournalFiles, LedgerJournal } from './journal.js';
import type { LedgerStore } from './store.js';

export interface LedgerOptions {
  store: LedgerStore;
  /** The journal's folder (see ledgerJournalDir). */
  journalDir: string;
  /** fdatasync the journal (`[queue] fsync = always`). */
  fsync: boolean;
  logger: Logger;
  /** `[ledger] retention_days`. */
  retentionDays: number;
  /** ms between writes to the database. @defaultValue 100 */
  flushIntervalMs?: number;
  /** Messages changed that start a write before the interval is up. @defaultValue 20000 */
  flushChanges?: number;
  /** Messages whose changes get() merges from memory while the database is down; beyond, only the journal keeps them. @defaultValue 200000 */
  memoryLimit?: number;
  /** ms between retention passes. @defaultValue 60000 */
  purgeIntervalMs?: number;
  /** Rows per retention DELETE. @defaultValue 500 */
  purgeBatch?: number;
  /** Longest wait between two attempts while the database fails. @defaultValue 30000 */
  retryCapMs?: number;
}

export interface LedgerStatus {
  /** Changes in the journal the database is not known to hold yet. */
  backlog: number;
  /** The last database failure, while it lasts. */
  error: string | null;
}

/** Journal segments read back per write (after an outage there may be thousands). */
const SEGMENTS_PER_WRITE = 100;

/**
 * The message ledger: every state change of every message, fed by the daemon off the hot path,
 * journaled locally (durable before the job's queue ack, see {@link record}), coalesced per msgid
 * in memory and written to the database in batches. A database that is down only grows the
 * journal: nothing waits for it.
 */
export class Ledger implements LedgerReader {
  /** Changes not written to the database yet, merged per msgid. */
  private pending = new Map<string, LedgerChange>();
  /** The batch being written right now (read by get() too). */
  private writing: Map<string, LedgerChange> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private purgeTimer: NodeJS.Timeout | undefined;
  private cycle: Promise<void> | undefined;
  private failures = 0;
  private lastError: string | null = null;
  private closed = false;
  private readonly flushIntervalMs: number;
  private readonly flushChanges: number;
  private readonly memoryLimit: number;
  private readonly retryCapMs: number;

  private constructor(
    private readonly options: LedgerOptions,
    private readonly journal: LedgerJournal,
  ) {
    this.flushIntervalMs = options.flushIntervalMs ?? 100;
    this.flushChanges = options.flushChanges ?? 20_000;
    this.memoryLimit = options.memoryLimit ?? 200_000;
    this.retryCapMs = options.retryCapMs ?? 30_000;
  }

  /**
   * Opens the journal and starts writing in the background. The database is not needed now:
   * a store that cannot be opened is tried again like any failed write.
   */
  static open(options: LedgerOptions): Ledger {
    const ledger = new Ledger(options, LedgerJournal.open(options.journalDir, options.fsync));
    ledger.schedule(0);
    const every = options.purgeIntervalMs ?? 60_000;
    ledger.purgeTimer = setInterval(() => void ledger.purge(), every);
    ledger.purgeTimer.unref();
    return ledger;
  }

  status(): LedgerStatus {
    return { backlog: this.journal.backlog, error: this.lastError };
  }

  /** A message accepted and durable in the queue. Not durable itself until the next {@link record} resolves. */
  queued(msgid: string, openid: string, key: string, kind: 'push' | 'send', at: number): void {
    this.note({ msgid, state: 'queued', openid, key, kind, attempts: 0, queuedAt: at, at });
  }

  /**
   * Changes from the dispatcher's outcomes. Resolves once they (and every change noted before)
   * are in the journal on disk; never rejects: a journal that cannot be written is logged and
   * delivery goes on (the ledger misses those changes, the messages do not wait for it).
   */
  async record(changes: readonly LedgerChange[]): Promise<void> {
    if (this.closed) return;
    for (const c of changes) this.note(c);
    try {
      await this.journal.sync();
    } catch (err) {
      // logged once by setError: delivery goes on without the ledger rather than wait for a disk
      this.setError(`journal: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private note(change: LedgerChange): void {
    if (this.closed) return;
    this.journal.append(change);
    const old = this.pending.get(change.msgid);
    this.pending.set(change.msgid, old ? mergeChange(old, change) : change);
    if (this.pending.size >= this.flushChanges && !this.cycle && this.failures === 0) this.schedule(0);
  }

  async get(msgid: string): Promise<MessageRecord | undefined> {
    const mem = this.memory(msgid);
    let stored: MessageRecord | undefined;
    try {
      await this.options.store.init();
      stored = await this.options.store.get(msgid);
    } catch (err) {
      if (mem) return recordOf(mem);
      throw err;
    }
    return mem ? applyChange(stored, mem) : stored;
  }

  async list(filter: MessageFilter): Promise<MessageRecord[]> {
    const limit = Math.max(1, Math.min(1000, Math.floor(filter.limit ?? 50)));
    await this.options.store.init();
    const stored = await this.options.store.list({ ...filter, limit });
    const byId = new Map(stored.map((r) => [r.msgid, r]));
    // memory over the store, including messages the store has not seen yet
    const ids = new Set<string>([...(this.writing?.keys() ?? []), ...this.pending.keys()]);
    for (const id of ids) {
      const mem = this.memory(id)!;
      const r = applyChange(byId.get(id), mem);
      if (filter.openid !== undefined && r.openid !== filter.openid) continue;
      if (filter.state !== undefined && r.state !== filter.state) {
        byId.delete(id);
        continue;
      }
      if (filter.since !== undefined && r.queuedAt < filter.since) continue;
      byId.set(id, r);
    }
    return [...byId.values()].sort((a, b) => b.queuedAt - a.queuedAt || (a.msgid < b.msgid ? 1 : -1)).slice(0, limit);
  }

  private memory(msgid: string): LedgerChange | undefined {
    const w = this.writing?.get(msgid);
    const p = this.pending.get(msgid);
    if (w && p) return mergeChange(w, p);
    return p ?? w;
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.cycle ??= this.writeOnce().finally(() => {
        this.cycle = undefined;
      });
    }, ms);
    this.timer.unref();
  }

  private setError(message: string): void {
    if (this.lastError === null) this.options.logger.warn({ reason: message }, 'ledger: the database cannot be written; changes wait in the journal');
    this.lastError = message;
  }

  /**
   * One write to the database: the journal's sealed segments, read back and coalesced (in the
   * store's thread when it has one: the main thread only seals a segment and deletes it after).
   * The journal, not memory, is what is written: memory is only what get() merges over the
   * rows, so it may be let go when it grows too big while the database is down.
   */
  private async writeOnce(): Promise<void> {
    const { store, logger } = this.options;
    if (this.pending.size === 0 && this.journal.backlog === 0) return this.schedule(this.flushIntervalMs);
    let batch = new Map<string, LedgerChange>();
    let next = this.flushIntervalMs;
    try {
      // Taken at the moment the segment is sealed: every change in memory until then is in a
      // sealed segment (or still buffered for the new one), none is lost by deleting them after.
      const all = await this.journal.rotate(() => {
        batch = this.pending;
        this.pending = new Map();
        this.writing = batch;
      });
      await store.init();
      const sealed = all.slice(0, SEGMENTS_PER_WRITE);
      const files = sealed.map((n) => this.journal.file(n));
      const torn = store.applyJournal ? await store.applyJournal(files) : await applyJournalFiles(store, files);
      for (const t of torn) logger.warn({ file: t.file, ignored: t.torn }, 'ledger journal: a torn tail was ignored');
      this.journal.remove(sealed);
      if (sealed.length < all.length) this.keep(batch); // more to read back: memory still answers for those
      if (this.lastError !== null) logger.info({ backlog: this.journal.backlog }, 'ledger: the database is written again');
      this.lastError = null;
      this.failures = 0;
      if (sealed.length < all.length) next = 0;
    } catch (err) {
      this.keep(batch);
      this.setError(err instanceof Error ? err.message : String(err));
      next = backoffDelay(this.failures++, { baseMs: this.flushIntervalMs, maxMs: this.retryCapMs });
    } finally {
      this.writing = undefined;
    }
    this.schedule(this.pending.size >= this.flushChanges && this.failures === 0 ? 0 : next);
  }

  /** Puts changes not known to be written back under what came since (the newer win), memory permitting. */
  private keep(batch: Map<string, LedgerChange>): void {
    for (const [id, c] of batch) {
      const newer = this.pending.get(id);
      this.pending.set(id, newer ? mergeChange(c, newer) : c);
    }
    // the journal has every one of them; get() may show an older state until they are written
    if (this.pending.size > this.memoryLimit) this.pending = new Map();
  }

  /** Retention: rows done with for longer than retention_days go, a batch at a time. */
  async purge(now = Date.now()): Promise<number> {
    if (this.closed || this.lastError !== null) return 0;
    const before = now - this.options.retentionDays * 86_400_000;
    const batch = this.options.purgeBatch ?? 500;
    let total = 0;
    try {
      await this.options.store.init();
      // a bounded pass: small DELETEs that never hold the table for long
      for (let i = 0; i < 100 && !this.closed; i++) {
        const n = await this.options.store.purge(before, batch);
        total += n;
        if (n < batch) break;
        await new Promise((r) => setTimeout(r, 10));
      }
    } catch (err) {
      this.options.logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'ledger retention pass failed');
    }
    return total;
  }

  /** Waits for the current write and makes one more attempt (no retry). @returns whether the database has everything. */
  async flush(): Promise<boolean> {
    while (this.cycle) await this.cycle;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.cycle = this.writeOnce().finally(() => {
      this.cycle = undefined;
    });
    await this.cycle;
    return this.lastError === null && this.pending.size === 0;
  }

  /**
   * Writes what it can and stops. Whatever the database did not take stays in the journal, for
   * the next start.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => false);
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    await this.journal.close();
    await this.options.store.close().catch(() => {});
  }
}
