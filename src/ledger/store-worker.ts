/**
 * The ledger store's thread (see threaded-store.ts): runs each call on the real store, in order,
 * and answers with its result or its error message (which never holds a password: the store's
 * errors are scrubbed where they are made).
 */
import { readlinkSync } from 'node:fs';
import os from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { openLedgerStore, type LedgerStore, type LedgerStoreOptions } from './store.js';
import type { LedgerChange } from './change.js';
import { applyJournalFiles } from './journal.js';

export interface StoreCall {
  id: number;
  /** `stage`: the first chunks of a batch, applied with the `upsert` that ends it. */
  method: 'init' | 'stage' | 'upsert' | 'applyReceipts' | 'receiptOf' | 'applySubscriptions' | 'subscriptionsOf' | 'applyJournal' | 'get' | 'list' | 'purge' | 'close';
  args: unknown[];
}

export interface StoreReply {
  id: number;
  result?: unknown;
  error?: string;
}

/**
 * The ledger's writes are background work: they may lag by seconds (the journal holds them), a
 * Push answer may not. On a busy machine this thread would take a core's share from the main
 * thread and the task workers; at the lowest priority it gets what they leave. Linux lets a
 * thread have its own nice value; elsewhere this does nothing.
 */
function lowerPriority(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) os.setPriority(tid, 19);
  } catch {
    // not Linux, or not allowed: the thread runs at the process's priority
  }
}

if (parentPort) {
  lowerPriority();
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
