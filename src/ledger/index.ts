/**
 * The message ledger (docs/LEDGER.md): every accepted message's state, journaled locally and
 * written in batches to `{table_prefix}message` in the `[pdo]` store.
 */
import path from 'node:path';
import type { MegaConfig } from '../config/config.js';
import { deadLetterFile } from '../config/service-files.js';

export { Ledger, type LedgerOptions, type LedgerStatus } from './ledger.js';
export { LedgerJournal } from './journal.js';
export { openLedgerStore, type LedgerStore, type LedgerStoreOptions } from './store.js';
export { ThreadedLedgerStore } from './threaded-store.js';
export { StoppedLedger } from './stopped.js';
export {
  mergeChange,
  applyChange,
  recordOf,
  receiptStateOf,
  applyReceipt,
  ledgerSubscription,
  latestSubscriptions,
  subscribeSentStateOf,
  subscribeSentStatus,
  SUBSCRIPTION_EVENTS,
  type LedgerChange,
  type LedgerReceipt,
  type LedgerSubscription,
  type ReceiptState,
  type SubscriptionEvent,
} from './change.js';

/** The journal's folder: beside the dead-letter log (and the pid file), outside the queue's own folder. */
export function ledgerJournalDir(config: MegaConfig): string {
  return path.join(path.dirname(deadLetterFile(config)), `${config.name}.ledger-journal`);
}
