import fs from 'node:fs';
import path from 'node:path';
import type { LedgerReader, MessageFilter, MessageRecord } from '../protocol/message-record.js';
import { applyChange, applyReceipt, mergeChange, type LedgerChange, type LedgerReceipt } from './change.js';
import { readJournalFile } from './journal.js';
import type { LedgerStore } from './store.js';

/** What the journal holds: changes merged per message, receipts by WeChat's msgid. */
interface Journal {
  changes: Map<string, LedgerChange>;
  receipts: Map<string, LedgerReceipt[]>;
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
    return this.recordOf(msgid, this.journal());
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
      const fits =
        r !== undefined &&
        (filter.openid === undefined || r.openid === filter.openid) &&
        (filter.state === undefined || r.state === filter.state) &&
        (filter.since === undefined || r.queuedAt >= filter.since);
      if (fits) out.push(r);
    }
    return out.sort((a, b) => b.queuedAt - a.queuedAt || (a.msgid < b.msgid ? 1 : -1)).slice(0, limit);
  }

  private async recordOf(msgid: string, journal: Journal): Promise<MessageRecord | undefined> {
    const stored = await this.store.get(msgid);
    const mine = journal.changes.get(msgid);
    const record = mine ? applyChange(stored, mine) : stored;
    return record && this.complete(record, stored, journal.receipts);
  }

  /** The receipts over a record: one kept in the table for a send only journaled, then the journal's. */
  private async complete(record: MessageRecord, stored: MessageRecord | undefined, receipts: Map<string, LedgerReceipt[]>): Promise<MessageRecord> {
    let r = record;
    if (r.wechatMsgid !== null && stored?.wechatMsgid !== r.wechatMsgid) {
      const kept = await this.store.receiptOf(r.wechatMsgid);
      if (kept) r = applyReceipt(r, kept);
    }
    for (const receipt of (r.wechatMsgid === null ? undefined : receipts.get(r.wechatMsgid)) ?? []) r = applyReceipt(r, receipt);
    return r;
  }

  /** Every segment, oldest first: changes merged per message, receipts by WeChat's msgid. */
  private journal(): Journal {
    const changes = new Map<string, LedgerChange>();
    const receipts = new Map<string, LedgerReceipt[]>();
    let files: string[] = [];
    try {
      files = fs.readdirSync(this.journalDir).filter((f) => /^\d{12}\.jsonl$/.test(f)).sort();
    } catch {
      return { changes, receipts }; // no journal: the daemon never ran with the ledger here
    }
    for (const f of files) {
      let read;
      try {
        read = readJournalFile(path.join(this.journalDir, f));
      } catch {
        continue;
      }
      for (const c of read.changes) {
        const old = changes.get(c.msgid);
        changes.set(c.msgid, old ? mergeChange(old, c) : c);
      }
      for (const r of read.receipts) {
        const all = receipts.get(r.receipt);
        if (all) all.push(r);
        else receipts.set(r.receipt, [r]);
      }
    }
    return { changes, receipts };
  }
}
