import { Worker } from 'node:worker_threads';
import { LedgerStoreError } from '../errors.js';
import type { MessageFilter, MessageRecord } from '../protocol/message-record.js';
import type { LedgerChange, LedgerReceipt, LedgerSubscription } from './change.js';
import { openLedgerStore, type JournalApplied, type LedgerStore, type LedgerStoreOptions } from './store.js';
import type { StoreCall, StoreReply } from './store-worker.js';

const WORKER_URL = new URL('./store-worker.js', import.meta.url);
/** Changes per message to the thread. */
const POST_CHUNK = 2000;

/**
 * The ledger store run in its own thread. better-sqlite3 is synchronous: a batch of thousands
 * of upserts on the main thread would stall every connection for tens of milliseconds (at
 * 50,000 Push/s, half the main thread). Here the main thread only posts the batch; the thread
 * is started at the first call, and again after it died.
 */
export class ThreadedLedgerStore implements LedgerStore {
  readonly kind: 'sqlite' | 'mysql';
  readonly location: string;
  readonly table: string;
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private closed = false;

  /** @throws ConfigError for a bad DSN or table prefix, at once (no thread needed to know). */
  constructor(private readonly options: LedgerStoreOptions) {
    const probe = openLedgerStore(options);
    this.kind = probe.kind;
    this.location = probe.location;
    this.table = probe.table;
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_URL, { workerData: this.options });
    worker.unref();
    worker.on('message', (reply: StoreReply) => {
      const call = this.calls.get(reply.id);
      if (!call) return;
      this.calls.delete(reply.id);
      if (reply.error !== undefined) call.reject(new LedgerStoreError(reply.error));
      else call.resolve(reply.result);
    });
    const fail = (reason: string): void => {
      if (this.worker === worker) this.worker = undefined;
      for (const call of this.calls.values()) call.reject(new LedgerStoreError(`${this.location}: ledger store thread ${reason}`));
      this.calls.clear();
    };
    worker.on('error', (err) => fail(`failed: ${err.message}`));
    worker.on('exit', (code) => fail(`exited with code ${code}`));
    this.worker = worker;
    return worker;
  }

  private call<T>(method: StoreCall['method'], args: unknown[]): Promise<T> {
    if (this.closed) return Promise.reject(new LedgerStoreError(`${this.location}: ledger store is closed`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.thread().postMessage({ id, method, args } satisfies StoreCall);
    });
  }

  init(): Promise<void> {
    return this.call('init', []);
  }

  /**
   * Posted in chunks (cloning a big batch in one message would hold the main thread as long),
   * applied by the thread in one transaction once the last chunk arrived.
   */
  async upsert(changes: readonly LedgerChange[]): Promise<MessageRecord[]> {
    let i = 0;
    for (; changes.length - i > POST_CHUNK; i += POST_CHUNK) await this.call('stage', [changes.slice(i, i + POST_CHUNK)]);
    return this.call('upsert', [i === 0 ? changes : changes.slice(i)]);
  }

  applyReceipts(receipts: readonly LedgerReceipt[]): Promise<MessageRecord[]> {
    return this.call('applyReceipts', [receipts]);
  }

  receiptOf(wechatMsgid: string): Promise<LedgerReceipt | undefined> {
    return this.call('receiptOf', [wechatMsgid]);
  }

  applySubscriptions(subscriptions: readonly LedgerSubscription[]): Promise<void> {
    return this.call('applySubscriptions', [subscriptions]);
  }

  subscriptionsOf(openid: string): Promise<LedgerSubscription[]> {
    return this.call('subscriptionsOf', [openid]);
  }

  /** Read, coalesced and written by the thread: no change crosses between the threads. */
  applyJournal(files: readonly string[]): Promise<JournalApplied> {
    return this.call('applyJournal', [files]);
  }

  get(msgid: string): Promise<MessageRecord | undefined> {
    return this.call('get', [msgid]);
  }

  list(filter: MessageFilter): Promise<MessageRecord[]> {
    return this.call('list', [filter]);
  }

  purge(before: number, limit: number): Promise<number> {
    return this.call('purge', [before, limit]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const worker = this.worker;
    if (worker) await this.call('close', []).catch(() => {});
    this.closed = true;
    if (worker) await worker.terminate();
  }
}
