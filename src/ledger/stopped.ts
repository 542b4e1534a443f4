import type { LedgerReader, MessageFilter, MessageRecord } from '../protocol/message-record.js';
import { applyChange, coalesce, fitsFilter, latestSubscriptions, receiptsByWechatMsgid, withReceipts, type LedgerChange, type LedgerReceipt, type LedgerSubscription } from './change.js';
import { journalSegmentFile, journalSegments, readJournalFile } from './journal.js';
import { withKeptReceipt, type LedgerStore } from './store.js';

/** What the journal holds: changes merged per message, receipts by WeChat's msgid. */
interface Journal {
  changes: Map<string, LedgerChange>;
  receipts: Map<string, LedgerReceipt[]>;
  subscriptions: LedgerSubscription[];
}

/**
 * The ledger of a stopped daemon (`mega <name> msg show|list` with no daemon to ask): its table,
 * with what the journal still holds over it. A daemon stopped while its database was down, or
 * killed, leaves changes the table does not have yet; they are written at its next start, and
 * meanwhile read from here. Read-only: nothing is written or deleted.
 */
export class StoppedLedger implements LedgerReader {
  constructor(
    private readonly store: LedgerStore,
    private readonly journalDir: string,
  ) {}

  async get(msgid: string): Promise<MessageRecord | undefined> {
    const journal = this.journal();
    const record = await this.recordOf(msgid, journal);
    if (!record || record.openid === '') return record;
    const stored = this.store.subscriptionsOf ? await this.store.subscriptionsOf(record.openid) : [];
    const subscriptions = latestSubscriptions([...stored, ...journal.subscriptions.filter((s) => s.subscription === record.openid)]);
    return subscriptions.length > 0 ? { ...record, subscriptions } : record;
  }

  /** The table's rows that fit, and every message the journal names, each as get() sees it. */
  async list(filter: MessageFilter): Promise<MessageRecord[]> {
    const limit = Math.max(1, Math.min(1000, Math.floor(filter.limit ?? 50)));
    const journal = this.journal();
    const rows = await this.store.list({ ...filter, limit });
    // a state the journal's receipts give: looked for among the newest rows of any state
    if (filter.state !== undefined && journal.receipts.size > 0) rows.push(...(await this.store.list({ ...filter, state: undefined, limit: 1000 })));
    const ids = new Set([...rows.map((r) => r.msgid), ...journal.changes.keys()]);
    const out: MessageRecord[] = [];
    for (const id of ids) {
      const r = await this.recordOf(id, journal);
      if (r !== undefined && fitsFilter(r, filter)) out.push(r);
    }
    return out.sort((a, b) => b.queuedAt - a.queuedAt || (a.msgid < b.msgid ? 1 : -1)).slice(0, limit);
  }

  private async recordOf(msgid: string, journal: Journal): Promise<MessageRecord | undefined> {
    const stored = await this.store.get(msgid);
    const mine = journal.changes.get(msgid);
    const record = mine ? applyChange(stored, mine) : stored;
    return record && withReceipts(await withKeptReceipt(this.store, record, stored), journal.receipts);
  }

  /** Every segment, oldest first: changes merged per message, receipts by WeChat's msgid. */
  private journal(): Journal {
    const changes = new Map<string, LedgerChange>();
    const receipts = new Map<string, LedgerReceipt[]>();
    const subscriptions: LedgerSubscription[] = [];
    let segments: number[];
    try {
      segments = journalSegments(this.journalDir);
    } catch {
      return { changes, receipts, subscriptions }; // no journal: the daemon never ran with the ledger here
    }
    for (const n of segments) {
      let read;
      try {
        read = readJournalFile(journalSegmentFile(this.journalDir, n));
      } catch {
        continue;
      }
      coalesce(read.changes, changes);
      receiptsByWechatMsgid(read.receipts, receipts);
      subscriptions.push(...read.subscriptions);
    }
    return { changes, receipts, subscriptions };
  }
}
