import type { Logger } from 'pino';
import { backoffDelay } from '../backoff.js';
import { LedgerStoreError } from '../errors.js';
import type { LedgerReader, MessageFilter, MessageRecord } from '../protocol/message-record.js';
import { applyChange, coalesce, fitsFilter, latestSubscriptions, receiptsByWechatMsgid, recordOf, withReceipts, type LedgerChange, type LedgerReceipt, type LedgerSubscription } from './change.js';
import { applyJournalFiles, LedgerJournal, queuedLine, sentLine } from './journal.js';
import { withKeptReceipt, type LedgerStore } from './store.js';

export interface LedgerOptions {
  store: LedgerStore;
  /** The journal's folder (see ledgerJournalDir). */
  journalDir: string;
  /** fdatasync the journal (`[queue] fsync = always`). */
  fsync: boolean;
  logger: Logger;
  /** `[ledger] retention_days`. */
  retentionDays: number;
  /**
   * ms between writes to the database. Small writes often: a write of a second's worth (tens of
   * thousands of rows under load) takes the store's thread long enough to compete with the main
   * thread for a core, and Push answers got slower (bench: ACK p99 66 ms against 19 ms at
   * 50,000 Push/s). @defaultValue 100
   */
  flushIntervalMs?: number;
  /** Changes journaled that start a write before the interval is up. @defaultValue 20000 */
  flushChanges?: number;
  /** ms between retention passes. @defaultValue 60000 */
  purgeIntervalMs?: number;
  /** Rows per retention DELETE. @defaultValue 500 */
  purgeBatch?: number;
  /** Longest wait between two attempts while the database fails. @defaultValue 30000 */
  retryCapMs?: number;
  /**
   * ms a {@link Ledger.commit} waits for others before the journal write they share. Each write
   * is an fdatasync beside the queue's own; committing every outcome batch at once kept the disk
   * syncing back to back and cost end to end 3% (bench: 0.87 → 0.91 of the bare loop with 5 ms).
   * It only delays the queue's acks (and a Send's answer does not wait for those). Receipts use
   * {@link Ledger.sync}, which does not wait. @defaultValue 5
   */
  commitDelayMs?: number;
  /**
   * Gets the records each write made final (`delivered`, `failed_*`, `rejected`, `dead`), in
   * order, and must make them durable before it resolves: the journal that holds their changes
   * is deleted after (the webhook's outbox). A rejection keeps the journal and the write is
   * tried again, so a record may be handed over more than once.
   */
  onFinal?: (records: MessageRecord[]) => Promise<void>;
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
 * journaled locally (durable before the job's queue ack, see {@link record}), then read back
 * from the journal, coalesced per msgid and written to the database in batches. A database that
 * is down only grows the journal: nothing waits for it, and nothing per message stays in memory.
 */
export class Ledger implements LedgerReader {
  private timer: NodeJS.Timeout | undefined;
  private purgeTimer: NodeJS.Timeout | undefined;
  private cycle: Promise<void> | undefined;
  private failures = 0;
  private lastError: string | null = null;
  private closed = false;
  private readonly flushIntervalMs: number;
  private readonly flushChanges: number;
  private readonly retryCapMs: number;
  private readonly commitDelayMs: number;
  /** The journal write the commits of the current window wait for. */
  private pendingCommit: Promise<void> | undefined;

  private constructor(
    private readonly options: LedgerOptions,
    private readonly journal: LedgerJournal,
  ) {
    this.flushIntervalMs = options.flushIntervalMs ?? 100;
    this.flushChanges = options.flushChanges ?? 20_000;
    this.retryCapMs = options.retryCapMs ?? 30_000;
    this.commitDelayMs = options.commitDelayMs ?? 5;
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

  /**
   * Opens the database now (and with it the store's thread, its modules and its connection), so
   * that this start-up cost is not paid under the first load. Waits at most `timeoutMs`; never
   * rejects: a database that cannot be opened is tried again by every write.
   */
  async ready(timeoutMs = 3000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.options.store.init().catch((err: unknown) => this.setError(err instanceof Error ? err.message : String(err))),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  status(): LedgerStatus {
    return { backlog: this.journal.backlog, error: this.lastError };
  }

  /** A message accepted and durable in the queue. Not durable itself until the next {@link record} resolves. */
  queued(msgid: string, openid: string, key: string, kind: 'push' | 'send', at: number): void {
    if (this.closed) return;
    // once per message: a compact line, not an object to stringify (and to parse back)
    this.line(queuedLine(msgid, openid, key, kind, at));
  }

  /**
   * WeChat accepted the message (the common outcome, so its line is written directly);
   * durable once the next {@link commit} resolves.
   */
  sent(msgid: string, wechatMsgid: string | undefined, attempts: number, at: number): void {
    if (this.closed) return;
    this.line(sentLine(msgid, wechatMsgid, attempts, at));
  }

  /**
   * A delivery receipt, applied to its message when written (or when its message is, if the
   * receipt came first); durable once the next {@link commit} resolves.
   */
  receipt(receipt: LedgerReceipt): void {
    if (this.closed) return;
    this.journal.appendReceipt(receipt);
    this.maybeWrite();
  }

  /**
   * A user's subscription status for a template (a subscribe popup or settings event), kept per
   * openid and template id; durable once the next {@link sync} resolves.
   */
  subscription(subscription: LedgerSubscription): void {
    if (this.closed) return;
    this.journal.appendSubscription(subscription);
    this.maybeWrite();
  }

  /** Any other change; durable once the next {@link commit} resolves. */
  note(change: LedgerChange): void {
    if (this.closed) return;
    this.journal.append(change);
    this.maybeWrite();
  }

  private line(text: string): void {
    this.journal.appendLine(text);
    this.maybeWrite();
  }

  private maybeWrite(): void {
    if (this.journal.appended >= this.flushChanges && !this.cycle && this.failures === 0) this.schedule(0);
  }

  /**
   * Resolves once every change noted so far is in the journal on disk; never rejects: a journal
   * that cannot be written is shown in status and delivery goes on (the ledger misses those
   * changes, the messages do not wait for it).
   */
  async commit(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.commitDelayMs === 0) return await this.journal.sync();
      // one journal write for every commit of the next few ms (see commitDelayMs)
      this.pendingCommit ??= new Promise<void>((resolve) => setTimeout(resolve, this.commitDelayMs)).then(() => {
        this.pendingCommit = undefined;
        return this.closed ? undefined : this.journal.sync();
      });
      await this.pendingCommit;
    } catch (err) {
      // logged once by setError: delivery goes on without the ledger rather than wait for a disk
      this.setError(`journal: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /**
   * commit() for a caller that must not claim a durability it does not have (a receipt is
   * answered `success` only once recorded): rejects when the journal cannot be written.
   */
  async sync(): Promise<void> {
    if (this.closed) throw new LedgerStoreError('the ledger is closed');
    await this.journal.sync();
  }

  /** Changes from the dispatcher's outcomes: note() each, then commit(). */
  async record(changes: readonly LedgerChange[]): Promise<void> {
    for (const c of changes) this.note(c);
    await this.commit();
  }

  /**
   * The row with the changes not written yet applied over it. Those are read from the journal
   * (nothing per message is kept in memory): a query costs a scan of the last ~100 ms of
   * changes, a message costs nothing.
   */
  async get(msgid: string): Promise<MessageRecord | undefined> {
    const mem = coalesce(this.journal.scan(msgid)).get(msgid);
    let stored: MessageRecord | undefined;
    try {
      await this.options.store.init();
      stored = await this.options.store.get(msgid);
    } catch (err) {
      if (mem) return this.withSubscriptions(this.withReceipt(recordOf(mem)), false);
      throw err;
    }
    const record = mem ? applyChange(stored, mem) : stored;
    if (!record) return undefined;
    // its send not written yet, and its receipt written first: kept in the receipt table
    return this.withSubscriptions(this.withReceipt(await withKeptReceipt(this.options.store, record, stored).catch(() => record)), true);
  }

  /** The openid's latest subscription statuses, from the table (when it can be read) and the journal over it. */
  private async withSubscriptions(record: MessageRecord, readStore: boolean): Promise<MessageRecord> {
    if (record.openid === '') return record;
    const stored = readStore && this.options.store.subscriptionsOf ? await this.options.store.subscriptionsOf(record.openid).catch(() => []) : [];
    const subscriptions = latestSubscriptions([...stored, ...this.journal.scanSubscriptions(record.openid)]);
    return subscriptions.length > 0 ? { ...record, subscriptions } : record;
  }

  /** A receipt still in the journal applied over the record (one written is in the row already). */
  private withReceipt(record: MessageRecord): MessageRecord {
    if (record.wechatMsgid === null) return record;
    return withReceipts(record, receiptsByWechatMsgid(this.journal.scanReceipts(record.wechatMsgid)));
  }

  async list(filter: MessageFilter): Promise<MessageRecord[]> {
    const limit = Math.max(1, Math.min(1000, Math.floor(filter.limit ?? 50)));
    await this.options.store.init();
    const stored = await this.options.store.list({ ...filter, limit });
    const byId = new Map(stored.map((r) => [r.msgid, r]));
    // the changes not written yet over the rows, including messages the database has not seen
    const unwritten = coalesce(this.journal.scan());
    const receipts = receiptsByWechatMsgid(this.journal.scanReceipts());
    // rows the journal has only a receipt for: the state filter must see the receipt's state
    for (const [id, row] of byId) if (!unwritten.has(id)) byId.set(id, withReceipts(row, receipts));
    for (const [id, mem] of unwritten) byId.set(id, withReceipts(applyChange(byId.get(id), mem), receipts));
    for (const [id, r] of byId) if (!fitsFilter(r, filter)) byId.delete(id);
    return [...byId.values()].sort((a, b) => b.queuedAt - a.queuedAt || (a.msgid < b.msgid ? 1 : -1)).slice(0, limit);
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
   */
  private async writeOnce(): Promise<void> {
    const { store, logger } = this.options;
    if (this.journal.backlog === 0) return this.schedule(this.flushIntervalMs);
    let next = this.flushIntervalMs;
    try {
      const all = await this.journal.rotate();
      await store.init();
      const sealed = all.slice(0, SEGMENTS_PER_WRITE);
      const files = sealed.map((n) => this.journal.file(n));
      const applied = store.applyJournal ? await store.applyJournal(files) : await applyJournalFiles(store, files);
      for (const t of applied.torn) logger.warn({ file: t.file, ignored: t.torn }, 'ledger journal: a torn tail was ignored');
      if (applied.finals.length > 0 && this.options.onFinal) await this.options.onFinal(applied.finals);
      await this.journal.remove(sealed);
      if (this.lastError !== null) logger.info({ backlog: this.journal.backlog }, 'ledger: the database is written again');
      this.lastError = null;
      this.failures = 0;
      if (sealed.length < all.length) next = 0;
    } catch (err) {
      this.setError(err instanceof Error ? err.message : String(err));
      next = backoffDelay(this.failures++, { baseMs: this.flushIntervalMs, maxMs: this.retryCapMs });
    }
    this.schedule(this.journal.appended >= this.flushChanges && this.failures === 0 ? 0 : next);
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
    return this.lastError === null && this.journal.backlog === 0;
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
