/**
 * The ledger store's thread (see threaded-store.ts): runs each call on the real store, in order,
 * and answers with its result or its error message (which never holds a password: the store's
 * errors are scrubbed where they are made).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openLedgerStore, type LedgerStore, type LedgerStoreOptions } from './store.js';
import type { LedgerChange } from './change.js';
import { applyJournalFiles } from './journal.js';

export interface StoreCall {
  id: number;
  /** `stage`: the first chunks of a batch, applied with the `upsert` that ends it. */
  method: 'init' | 'stage' | 'upsert' | 'applyReceipts' | 'applyJournal' | 'get' | 'list' | 'purge' | 'close';
  args: unknown[];
}

export interface StoreReply {
  id: number;
  result?: unknown;
  error?: string;
}

if (parentPort) {
  const port = parentPort;
  const store: LedgerStore = openLedgerStore(workerData as LedgerStoreOptions);
  let chain: Promise<unknown> = Promise.resolve();
  let staged: LedgerChange[] = [];
  port.on('message', (call: StoreCall) => {
    chain = chain.then(async () => {
      try {
        if (call.method === 'stage') {
          staged = staged.concat(call.args[0] as LedgerChange[]);
          return port.postMessage({ id: call.id } satisfies StoreReply);
        }
        if (call.method === 'upsert' && staged.length > 0) {
          call.args = [staged.concat(call.args[0] as LedgerChange[])];
          staged = [];
        }
        if (call.method === 'applyJournal') {
          const applied = await applyJournalFiles(store, call.args[0] as string[]);
          return port.postMessage({ id: call.id, result: applied } satisfies StoreReply);
        }
        const fn = store[call.method] as (...a: unknown[]) => Promise<unknown>;
        const result = await fn.apply(store, call.args);
        port.postMessage({ id: call.id, result } satisfies StoreReply);
      } catch (err) {
        staged = [];
        port.postMessage({ id: call.id, error: err instanceof Error ? err.message : String(err) } satisfies StoreReply);
      }
    });
  });
}
