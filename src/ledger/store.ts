import type Database from 'better-sqlite3';
import type { ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { LedgerStoreError } from '../errors.js';
import { MysqlStore, openSqlite, parseDsn, sqliteLocation, SqlStore, tableName, textColumn, type MysqlDsn, type SqliteDsn } from '../db/index.js';
import { MESSAGE_STATES, type LedgerReader, type MessageFilter, type MessageRecord, type MessageState } from '../protocol/message-record.js';
import { applyReceipt, ERRMSG_MAX, type LedgerChange, type LedgerReceipt, type LedgerSubscription, type SubscriptionEvent } from './change.js';

/**
 * The table `{table_prefix}message` (default `mega_message`) in the `[pdo]` store: one row per
 * message, keyed by its msgid, indexed by WeChat's msgid (receipts) and by openid + queued time
 * (`msg list --openid`); on MySQL also by last change (retention; SQLite's retention walks the
 * rows in rowid order instead, see purge). Written only by the Ledger, in batches.
 */
export interface LedgerStore extends LedgerReader {
  readonly kind: 'sqlite' | 'mysql';
  readonly location: string;
  readonly table: string;
  /** Connects and creates the table and its indexes if missing. Idempotent; may be called again after a failure. */
  init(): Promise<void>;
  /**
   * Applies the changes (at most one per msgid), all or none on SQLite, in statements of up to
   * 256 rows on MySQL. A change carrying WeChat's msgid picks up a receipt that came first.
   * @returns the records these changes made final (`rejected`, `dead`, or a receipt's state)
   */
  upsert(changes: readonly LedgerChange[]): Promise<MessageRecord[]>;
  /**
   * Records receipts (table `{table_prefix}receipt`, by WeChat's msgid) and applies each to the
   * message sent with that msgid, if written yet; one not written yet gets it from upsert().
   * @returns the records they made final
   */
  applyReceipts(receipts: readonly LedgerReceipt[]): Promise<MessageRecord[]>;
  /** The receipt kept for WeChat's msgid, if any (for a message whose `sent` is not written yet). */
  receiptOf(wechatMsgid: string): Promise<LedgerReceipt | undefined>;
  /**
   * Keeps each user's latest subscription status per template id (table
   * `{table_prefix}subscription`): one not later than the kept one changes nothing, so a replay
   * of older journal lines never takes a status back. Optional for stores made elsewhere (tests).
   */
  applySubscriptions?(subscriptions: readonly LedgerSubscription[]): Promise<void>;
  /** The kept subscription statuses of an openid, one per template id. */
  subscriptionsOf?(openid: string): Promise<LedgerSubscription[]>;
  /**
   * Applies journal files (see applyJournalFiles), where the store can do it off the main
   * thread; the Ledger reads them itself otherwise.
   */
  applyJournal?(files: readonly string[]): Promise<JournalApplied>;
  /**
   * Deletes up to `limit` rows that are no longer `queued` and last changed before `before`, and
   * receipts that arrived before it; returns how many rows went.
   */
  purge(before: number, limit: number): Promise<number>;
  close(): Promise<void>;
}

export interface LedgerStoreOptions {
  dsn: string;
  username?: string;
  password?: string;
  /** @defaultValue 'mega_' */
  tablePrefix?: string;
  baseDir?: string;
}

const COLUMNS = 'msgid, openid, tmpl_key, kind, state, attempts, wechat_msgid, errcode, errmsg, queued_at, sent_at, final_at, updated_at';
const WIDTH = 13;
/** Rows per MySQL statement, as powers of two so that only a handful of prepared statements exist. */
const MYSQL_CHUNK = 256;
/**
 * Rows per SQLite upsert statement (the rest of a batch goes one by one): one statement per
 * row cost better-sqlite3's call and SQLite's statement run per row, about as much as the row
 * itself (bench/ledger-store.ts).
 */
const SQLITE_ROWS = 32;
/** Rows a SQLite retention window looks at, as a multiple of the rows it may delete. */
const PURGE_WINDOW = 4;
/** Rows one SQLite purge() call looks at at most, as a multiple of the rows it may delete. */
const PURGE_SCAN = 20;
const LIST_MAX = 1000;

/**
 * `record` (the table's row `stored` with changes not written yet over it) with the receipt the
 * table keeps for its WeChat msgid, when its `sent` is not written yet but its receipt is.
 */
export async function withKeptReceipt(store: Pick<LedgerStore, 'receiptOf'>, record: MessageRecord, stored: MessageRecord | undefined): Promise<MessageRecord> {
  if (record.wechatMsgid === null || stored?.wechatMsgid === record.wechatMsgid) return record;
  const kept = await store.receiptOf(record.wechatMsgid);
  return kept ? applyReceipt(record, kept) : record;
}

/** What applying journal files did: torn tails ignored, records made final. */
export interface JournalApplied {
  torn: Array<{ file: string; torn: number }>;
  finals: MessageRecord[];
}

/**
 * The `sent` of a send WeChat already reported on (the receipt was written first): the state and
 * errmsg stay the receipt's. Mirrors keepsState() of change.ts; in the old row's terms.
 */
const KEEPS_RECEIPT = (v: (col: string) => string) =>
  `(${v('state')} = 'sent' AND state IN ('delivered', 'failed_user_block', 'failed_system') AND wechat_msgid = ${v('wechat_msgid')})`;

/**
 * The kept receipt's time: the first one's while the state is the same, so that WeChat's retry
 * of a receipt applied again after a restart is the same fact (same final time, same webhook
 * event id). Comes first in MySQL's assignments, which see the values assigned before them.
 */
const SAME_RECEIPT_KEEPS_AT = (dialect: 'excluded' | 'mysql'): string =>
  dialect === 'excluded' ? 'CASE WHEN state = excluded.state THEN at ELSE excluded.at END' : 'IF(state = VALUES(state), at, VALUES(at))';

/** Creates the store the DSN names. No I/O: call init(). @throws ConfigError for a bad DSN or prefix. */
export function openLedgerStore(options: LedgerStoreOptions): LedgerStore {
  const table = tableName(options.tablePrefix, 'message');
  const dsn = parseDsn(options.dsn, options.baseDir);
  return dsn.driver === 'sqlite' ? new SqliteLedgerStore(dsn, table) : new MysqlLedgerStore(dsn, table, options.username, options.password);
}

/** '' / 0 / null say "this change does not know": the stored value stays (see the upserts). */
function values(c: LedgerChange): unknown[] {
  return putValues(c, new Array<unknown>(WIDTH), 0);
}

/** values() of `c` into `into` from `at`: a batch of rows binds one array, reused. */
function putValues(c: LedgerChange, into: unknown[], at: number): unknown[] {
  into[at] = c.msgid;
  into[at + 1] = c.openid ?? '';
  into[at + 2] = c.key ?? '';
  into[at + 3] = c.kind ?? '';
  into[at + 4] = c.state;
  into[at + 5] = c.attempts ?? 0;
  into[at + 6] = c.wechatMsgid ?? null;
  into[at + 7] = c.errcode ?? null;
  into[at + 8] = c.errmsg === undefined ? null : c.errmsg.slice(0, ERRMSG_MAX);
  into[at + 9] = c.queuedAt ?? 0;
  into[at + 10] = c.sentAt ?? null;
  into[at + 11] = c.finalAt ?? null;
  into[at + 12] = c.at;
  return into;
}

function marks(n: number): string {
  return Array(n).fill('?').join(',');
}

/**
 * `fn` over slices of `list` of up to 256, each a power of two long, so that MySQL prepares only
 * a handful of statement shapes.
 */
async function inChunks<T>(list: readonly T[], fn: (chunk: readonly T[]) => Promise<void>): Promise<void> {
  for (let i = 0; i < list.length; ) {
    let n = MYSQL_CHUNK;
    while (n > list.length - i) n >>= 1;
    await fn(list.slice(i, i + n));
    i += n;
  }
}

/** `{prefix}receipt` beside `{prefix}message`. */
function receiptTableOf(messageTable: string): string {
  return messageTable.replace(/message$/, 'receipt');
}

/** `{prefix}subscription` beside `{prefix}message`. */
function subscriptionTableOf(messageTable: string): string {
  return messageTable.replace(/message$/, 'subscription');
}

const SUBSCRIPTION_MAX = 256;

function keptSubscription(row: Record<string, unknown>): LedgerSubscription {
  return {
    subscription: textColumn(row.openid),
    templateId: textColumn(row.template_id),
    status: textColumn(row.status) === 'accept' ? 'accept' : 'reject',
    event: textColumn(row.event) as SubscriptionEvent,
    at: Number(row.at),
  };
}

function keptReceipt(row: Record<string, unknown>): LedgerReceipt {
  const state = textColumn(row.state);
  return {
    receipt: textColumn(row.wechat_msgid),
    state: state === 'delivered' || state === 'failed_user_block' ? state : 'failed_system',
    status: textColumn(row.status),
    openid: textColumn(row.openid) || undefined,
    at: Number(row.at),
  };
}

/** A failure's Status is kept as the record's errmsg; a delivery keeps the send's own. */
function receiptErrmsg(state: string, status: string): string | null {
  return state === 'delivered' ? null : status.slice(0, ERRMSG_MAX);
}

function num(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

function toRecord(r: Record<string, unknown>): MessageRecord {
  const state = textColumn(r.state) as MessageState;
  return {
    msgid: textColumn(r.msgid),
    openid: textColumn(r.openid),
    key: textColumn(r.tmpl_key),
    kind: textColumn(r.kind) === 'send' ? 'send' : 'push',
    state: MESSAGE_STATES.includes(state) ? state : 'queued',
    attempts: Number(r.attempts ?? 0),
    wechatMsgid: r.wechat_msgid === null || r.wechat_msgid === undefined ? null : textColumn(r.wechat_msgid),
    errcode: num(r.errcode),
    errmsg: r.errmsg === null || r.errmsg === undefined ? null : textColumn(r.errmsg),
    queuedAt: Number(r.queued_at ?? 0),
    sentAt: num(r.sent_at),
    finalAt: num(r.final_at),
  };
}

function where(filter: MessageFilter): { sql: string; args: unknown[]; limit: number } {
  const parts: string[] = [];
  const args: unknown[] = [];
  if (filter.openid !== undefined) {
    parts.push('openid = ?');
    args.push(filter.openid);
  }
  if (filter.state !== undefined) {
    parts.push('state = ?');
    args.push(filter.state);
  }
  if (filter.since !== undefined) {
    parts.push('queued_at >= ?');
    args.push(filter.since);
  }
  const limit = Math.max(1, Math.min(LIST_MAX, Math.floor(filter.limit ?? 50)));
  return { sql: parts.length ? `WHERE ${parts.join(' AND ')}` : '', args, limit };
}

// ------------------------------------------------------------------ SQLite

/**
 * The SQLite indexes of this version, over what an earlier one made: WeChat's msgid indexed only
 * where there is one (a `queued` row then costs no entry, and its `sent` adds one instead of
 * moving one), and no index on updated_at (retention walks rowids instead: one index less to
 * keep per row written). Rebuilding the index of an old table is paid once, at the first init.
 */
function migrateSqliteIndexes(db: Database.Database, t: string): void {
  db.transaction(() => {
    db.exec(`DROP INDEX IF EXISTS ${t}_updated`);
    const old = db.prepare(`SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?`).pluck().get(`${t}_wechat_msgid`) as string | undefined;
    if (old !== undefined && !/\bWHERE\b/i.test(old)) db.exec(`DROP INDEX ${t}_wechat_msgid`);
    db.exec(`CREATE INDEX IF NOT EXISTS ${t}_wechat_msgid ON ${t} (wechat_msgid) WHERE wechat_msgid IS NOT NULL`);
  })();
}

class SqliteLedgerStore extends SqlStore implements LedgerStore {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  private db: Database.Database | undefined;
  private upsertOne: Database.Statement | undefined;
  private applyAll: ((changes: readonly LedgerChange[]) => MessageRecord[]) | undefined;
  private receiveAll: ((receipts: readonly LedgerReceipt[]) => MessageRecord[]) | undefined;
  private readonly receiptTable: string;
  private readonly subscriptionTable: string;
  private keepSubscriptions: ((subs: readonly LedgerSubscription[]) => void) | undefined;
  /** Where the next retention window starts (a rowid; see purge). */
  private purgeFrom = 0;

  constructor(
    private readonly dsn: SqliteDsn,
    readonly table: string,
  ) {
    super(LedgerStoreError, 'ledger store');
    this.location = sqliteLocation(dsn);
    this.receiptTable = receiptTableOf(table);
    this.subscriptionTable = subscriptionTableOf(table);
  }

  async init(): Promise<void> {
    if (this.state === 'open') return;
    this.checkOpenable();
    const t = this.table;
    const rt = this.receiptTable;
    const st = this.subscriptionTable;
    try {
      const { db } = openSqlite(this.dsn, (db) => {
        db.exec(`CREATE TABLE IF NOT EXISTS ${t} (
  msgid TEXT NOT NULL PRIMARY KEY,
  openid TEXT NOT NULL DEFAULT '',
  tmpl_key TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  wechat_msgid TEXT,
  errcode INTEGER,
  errmsg TEXT,
  queued_at INTEGER NOT NULL DEFAULT 0,
  sent_at INTEGER,
  final_at INTEGER,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ${t}_openid_queued ON ${t} (openid, queued_at);
CREATE TABLE IF NOT EXISTS ${rt} (
  wechat_msgid TEXT NOT NULL PRIMARY KEY,
  state TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT '',
  openid TEXT NOT NULL DEFAULT '',
  at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ${rt}_at ON ${rt} (at);
CREATE TABLE IF NOT EXISTS ${st} (
  openid TEXT NOT NULL,
  template_id TEXT NOT NULL,
  status TEXT NOT NULL,
  event TEXT NOT NULL DEFAULT '',
  at INTEGER NOT NULL,
  PRIMARY KEY (openid, template_id)
);`);
        migrateSqliteIndexes(db, t);
        return undefined;
      });
      this.db = db;
      const upsertSql = (rows: number): string =>
        `INSERT INTO ${t} (${COLUMNS}) VALUES ${Array(rows).fill(`(${Array(WIDTH).fill('?').join(', ')})`).join(', ')}
ON CONFLICT(msgid) DO UPDATE SET
  openid = CASE WHEN excluded.openid = '' THEN openid ELSE excluded.openid END,
  tmpl_key = CASE WHEN excluded.tmpl_key = '' THEN tmpl_key ELSE excluded.tmpl_key END,
  kind = CASE WHEN excluded.kind = '' THEN kind ELSE excluded.kind END,
  state = CASE WHEN excluded.state = 'queued' AND excluded.attempts = 0 AND state <> 'queued' THEN state WHEN ${KEEPS_RECEIPT((c) => `excluded.${c}`)} THEN state ELSE excluded.state END,
  attempts = MAX(attempts, excluded.attempts),
  wechat_msgid = COALESCE(excluded.wechat_msgid, wechat_msgid),
  errcode = COALESCE(excluded.errcode, errcode),
  errmsg = CASE WHEN ${KEEPS_RECEIPT((c) => `excluded.${c}`)} THEN errmsg ELSE COALESCE(excluded.errmsg, errmsg) END,
  queued_at = CASE WHEN excluded.queued_at = 0 THEN queued_at ELSE excluded.queued_at END,
  sent_at = COALESCE(excluded.sent_at, sent_at),
  final_at = COALESCE(excluded.final_at, final_at),
  updated_at = MAX(updated_at, excluded.updated_at)`;
      this.upsertOne = db.prepare(upsertSql(1));
      // rows of one statement apply in order, as separate statements would (a msgid twice: the second updates the first)
      const upsertMany = db.prepare(upsertSql(SQLITE_ROWS));
      const bound = new Array<unknown>(WIDTH * SQLITE_ROWS);
      const stmt = this.upsertOne;
      const rowOf = db.prepare(`SELECT ${COLUMNS} FROM ${t} WHERE msgid = ?`);
      const rowsOfWechat = db.prepare(`SELECT ${COLUMNS} FROM ${t} WHERE wechat_msgid = ?`);
      const anyReceipt = db.prepare(`SELECT 1 FROM ${rt} LIMIT 1`).pluck();
      const receiptOf = db.prepare(`SELECT state, status, at FROM ${rt} WHERE wechat_msgid = ?`);
      const keepReceipt = db.prepare(
        `INSERT INTO ${rt} (wechat_msgid, state, status, openid, at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(wechat_msgid) DO UPDATE SET at = ${SAME_RECEIPT_KEEPS_AT('excluded')}, state = excluded.state, status = excluded.status, openid = excluded.openid`,
      );
      const finalise = db.prepare(
        `UPDATE ${t} SET state = ?, final_at = ?, errmsg = COALESCE(?, errmsg), updated_at = MAX(updated_at, ?) WHERE wechat_msgid = ?`,
      );
      const records = (ids: Iterable<string>): MessageRecord[] => {
        const out: MessageRecord[] = [];
        for (const id of ids) {
          const row = rowOf.get(id) as Record<string, unknown> | undefined;
          if (row) out.push(toRecord(row));
        }
        return out;
      };
      this.applyAll = db.transaction((changes: readonly LedgerChange[]) => {
        let i = 0;
        for (; i + SQLITE_ROWS <= changes.length; i += SQLITE_ROWS) {
          for (let k = 0; k < SQLITE_ROWS; k++) putValues(changes[i + k]!, bound, k * WIDTH);
          upsertMany.run(bound);
        }
        for (; i < changes.length; i++) stmt.run(values(changes[i]!));
        const finals = new Set<string>();
        const receipts = anyReceipt.get() !== undefined;
        for (const c of changes) {
          if (c.state === 'rejected' || c.state === 'dead') finals.add(c.msgid);
          if (receipts && c.wechatMsgid !== undefined) {
            const r = receiptOf.get(c.wechatMsgid) as { state: string; status: string; at: number } | undefined;
            if (r && finalise.run(r.state, r.at, receiptErrmsg(r.state, r.status), r.at, c.wechatMsgid).changes > 0) finals.add(c.msgid);
          }
        }
        return records(finals);
      });
      const keepSubscription = db.prepare(
        `INSERT INTO ${st} (openid, template_id, status, event, at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(openid, template_id) DO UPDATE SET status = excluded.status, event = excluded.event, at = excluded.at WHERE excluded.at >= at`,
      );
      this.keepSubscriptions = db.transaction((subs: readonly LedgerSubscription[]) => {
        for (const x of subs) keepSubscription.run(x.subscription, x.templateId.slice(0, SUBSCRIPTION_MAX), x.status, x.event, x.at);
      });
      this.receiveAll = db.transaction((receipts: readonly LedgerReceipt[]) => {
        const finals: MessageRecord[] = [];
        for (const r of receipts) {
          keepReceipt.run(r.receipt, r.state, r.status.slice(0, ERRMSG_MAX), r.openid ?? '', r.at);
          // what is kept: a receipt applied again (WeChat's retry after a restart) keeps the first one's time
          const k = receiptOf.get(r.receipt) as { state: string; status: string; at: number };
          if (finalise.run(k.state, k.at, receiptErrmsg(k.state, k.status), k.at, r.receipt).changes === 0) continue;
          for (const row of rowsOfWechat.all(r.receipt) as Array<Record<string, unknown>>) finals.push(toRecord(row));
        }
        return finals;
      });
    } catch (err) {
      throw this.fail('init', err);
    }
    this.state = 'open';
  }

  private checkOpenable(): void {
    if (this.state === 'closed') this.checkOpen();
  }

  private handle(): Database.Database {
    this.checkOpen();
    return this.db!;
  }

  async upsert(changes: readonly LedgerChange[]): Promise<MessageRecord[]> {
    this.handle();
    try {
      return this.applyAll!(changes);
    } catch (err) {
      throw this.fail('write', err);
    }
  }

  async applyReceipts(receipts: readonly LedgerReceipt[]): Promise<MessageRecord[]> {
    this.handle();
    try {
      return this.receiveAll!(receipts);
    } catch (err) {
      throw this.fail('write', err);
    }
  }

  async applySubscriptions(subscriptions: readonly LedgerSubscription[]): Promise<void> {
    this.handle();
    try {
      this.keepSubscriptions!(subscriptions);
    } catch (err) {
      throw this.fail('write', err);
    }
  }

  async subscriptionsOf(openid: string): Promise<LedgerSubscription[]> {
    try {
      const rows = this.handle().prepare(`SELECT openid, template_id, status, event, at FROM ${this.subscriptionTable} WHERE openid = ?`).all(openid) as Array<
        Record<string, unknown>
      >;
      return rows.map(keptSubscription);
    } catch (err) {
      throw this.fail('read', err);
    }
  }

  async receiptOf(wechatMsgid: string): Promise<LedgerReceipt | undefined> {
    try {
      const row = this.handle().prepare(`SELECT wechat_msgid, state, status, openid, at FROM ${this.receiptTable} WHERE wechat_msgid = ?`).get(wechatMsgid) as
        | Record<string, unknown>
        | undefined;
      return row && keptReceipt(row);
    } catch (err) {
      throw this.fail('read', err);
    }
  }

  async get(msgid: string): Promise<MessageRecord | undefined> {
    try {
      const row = this.handle().prepare(`SELECT ${COLUMNS} FROM ${this.table} WHERE msgid = ?`).get(msgid) as Record<string, unknown> | undefined;
      return row ? toRecord(row) : undefined;
    } catch (err) {
      throw this.fail('read', err);
    }
  }

  async list(filter: MessageFilter): Promise<MessageRecord[]> {
    const w = where(filter);
    try {
      const rows = this.handle()
        .prepare(`SELECT ${COLUMNS} FROM ${this.table} ${w.sql} ORDER BY queued_at DESC, msgid DESC LIMIT ${w.limit}`)
        .all(...w.args) as Array<Record<string, unknown>>;
      return rows.map(toRecord);
    } catch (err) {
      throw this.fail('read', err);
    }
  }

  /**
   * Retention without an index on updated_at: the rows are walked in rowid order, which is the
   * order they were first written in, from where the last call stopped, a window at a time. The
   * rows a window keeps (`queued`, or changed since `before`) are not looked at again until the
   * walk starts over, which it does at the end of the table or at a window with no row older than
   * `before` (the rows after it are newer still). One call looks at no more than 20 × `limit`
   * rows, so a pass is bounded whatever the table holds; it deletes at most `limit`, and fewer
   * only when it found no more or used up its look (the Ledger's pass then ends; the next one
   * goes on from there).
   */
  async purge(before: number, limit: number): Promise<number> {
    try {
      const db = this.handle();
      const t = this.table;
      const n = Math.max(1, Math.floor(limit));
      const window = db.prepare(
        `SELECT count(*) AS rows, max(rowid) AS last, coalesce(sum(updated_at < ?), 0) AS old FROM (SELECT rowid, updated_at FROM ${t} WHERE rowid > ? ORDER BY rowid LIMIT ?)`,
      );
      const cut = db.prepare(
        `DELETE FROM ${t} WHERE rowid IN (SELECT rowid FROM ${t} WHERE rowid > ? AND rowid <= ? AND updated_at < ? AND state <> 'queued' ORDER BY rowid LIMIT ?)`,
      );
      let deleted = 0;
      for (let looked = 0; deleted < n && looked < PURGE_SCAN * n; ) {
        const w = window.get(before, this.purgeFrom, PURGE_WINDOW * n) as { rows: number; last: number | null; old: number };
        if (w.rows === 0) {
          this.purgeFrom = 0;
          break;
        }
        deleted += cut.run(this.purgeFrom, w.last, before, n - deleted).changes;
        looked += w.rows;
        // the window may hold more: the next call looks at it again
        if (deleted >= n) break;
        if (w.rows < PURGE_WINDOW * n || w.old === 0) {
          this.purgeFrom = 0;
          break;
        }
        this.purgeFrom = w.last!;
      }
      const rt = this.receiptTable;
      const k = db.prepare(`DELETE FROM ${rt} WHERE rowid IN (SELECT rowid FROM ${rt} WHERE at < ? LIMIT ${n})`).run(before);
      return deleted + k.changes;
    } catch (err) {
      throw this.fail('purge', err);
    }
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    try {
      this.db?.close();
    } catch (err) {
      throw this.fail('close', err);
    }
  }
}

// ------------------------------------------------------------------ MySQL

class MysqlLedgerStore extends MysqlStore implements LedgerStore {
  readonly kind = 'mysql' as const;

  private readonly receiptTable: string;
  private receiptsReady = false;
  private readonly subscriptionTable: string;
  private subscriptionsReady = false;

  constructor(
    dsn: MysqlDsn,
    readonly table: string,
    username: string | undefined,
    password: string | undefined,
  ) {
    super(LedgerStoreError, 'ledger store', dsn, username, password);
    this.receiptTable = receiptTableOf(table);
    this.subscriptionTable = subscriptionTableOf(table);
  }

  async init(): Promise<void> {
    await this.openMessageTable();
    if (this.receiptsReady) return;
    await this.run<ResultSetHeader>(
      `create table ${this.receiptTable}`,
      `CREATE TABLE IF NOT EXISTS \`${this.receiptTable}\` (
  \`wechat_msgid\` varchar(32) NOT NULL,
  \`state\` varchar(20) NOT NULL,
  \`status\` varchar(${ERRMSG_MAX}) NOT NULL DEFAULT '',
  \`openid\` varchar(128) NOT NULL DEFAULT '',
  \`at\` bigint NOT NULL,
  PRIMARY KEY (\`wechat_msgid\`),
  KEY \`at\` (\`at\`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      [],
    );
    this.receiptsReady = true;
    await this.openSubscriptionTable();
  }

  private async openSubscriptionTable(): Promise<void> {
    if (this.subscriptionsReady) return;
    await this.run<ResultSetHeader>(
      `create table ${this.subscriptionTable}`,
      `CREATE TABLE IF NOT EXISTS \`${this.subscriptionTable}\` (
  \`openid\` varchar(128) NOT NULL,
  \`template_id\` varchar(${SUBSCRIPTION_MAX}) NOT NULL,
  \`status\` varchar(16) NOT NULL,
  \`event\` varchar(64) NOT NULL DEFAULT '',
  \`at\` bigint NOT NULL,
  PRIMARY KEY (\`openid\`, \`template_id\`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      [],
    );
    this.subscriptionsReady = true;
  }

  private openMessageTable(): Promise<void> {
    const t = this.table;
    return this.openTable(
      t,
      `CREATE TABLE IF NOT EXISTS \`${t}\` (
  \`msgid\` varchar(64) NOT NULL,
  \`openid\` varchar(128) NOT NULL DEFAULT '',
  \`tmpl_key\` varchar(64) NOT NULL DEFAULT '',
  \`kind\` varchar(8) NOT NULL DEFAULT '',
  \`state\` varchar(20) NOT NULL,
  \`attempts\` int NOT NULL DEFAULT 0,
  \`wechat_msgid\` varchar(32) DEFAULT NULL,
  \`errcode\` int DEFAULT NULL,
  \`errmsg\` varchar(${ERRMSG_MAX}) DEFAULT NULL,
  \`queued_at\` bigint NOT NULL DEFAULT 0,
  \`sent_at\` bigint DEFAULT NULL,
  \`final_at\` bigint DEFAULT NULL,
  \`updated_at\` bigint NOT NULL,
  PRIMARY KEY (\`msgid\`),
  KEY \`wechat_msgid\` (\`wechat_msgid\`),
  KEY \`openid_queued\` (\`openid\`, \`queued_at\`),
  KEY \`updated\` (\`updated_at\`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      COLUMNS,
    );
  }

  async upsert(changes: readonly LedgerChange[]): Promise<MessageRecord[]> {
    await inChunks(changes, async (chunk) => {
      const n = chunk.length;
      const row = `(${Array(WIDTH).fill('?').join(',')})`;
      // VALUES(col) rather than an alias: MariaDB knows no `AS new` row alias.
      await this.run<ResultSetHeader>(
        'write',
        `INSERT INTO \`${this.table}\` (${COLUMNS}) VALUES ${Array(n).fill(row).join(',')}
ON DUPLICATE KEY UPDATE
  openid = IF(VALUES(openid) = '', openid, VALUES(openid)),
  tmpl_key = IF(VALUES(tmpl_key) = '', tmpl_key, VALUES(tmpl_key)),
  kind = IF(VALUES(kind) = '', kind, VALUES(kind)),
  state = IF(VALUES(state) = 'queued' AND VALUES(attempts) = 0 AND state <> 'queued', state, IF(${KEEPS_RECEIPT((c) => `VALUES(${c})`)}, state, VALUES(state))),
  attempts = GREATEST(attempts, VALUES(attempts)),
  errcode = COALESCE(VALUES(errcode), errcode),
  errmsg = IF(${KEEPS_RECEIPT((c) => `VALUES(${c})`)}, errmsg, COALESCE(VALUES(errmsg), errmsg)),
  wechat_msgid = COALESCE(VALUES(wechat_msgid), wechat_msgid),
  queued_at = IF(VALUES(queued_at) = 0, queued_at, VALUES(queued_at)),
  sent_at = COALESCE(VALUES(sent_at), sent_at),
  final_at = COALESCE(VALUES(final_at), final_at),
  updated_at = GREATEST(updated_at, VALUES(updated_at))`,
        chunk.flatMap(values),
      );
    });
    const finals = new Set(changes.filter((c) => c.state === 'rejected' || c.state === 'dead').map((c) => c.msgid));
    const sent = changes.filter((c) => c.wechatMsgid !== undefined).map((c) => c.msgid);
    const t = this.table;
    const rt = this.receiptTable;
    if (sent.length > 0 && (await this.run<RowDataPacket[]>('read', `SELECT 1 FROM \`${rt}\` LIMIT 1`, [])).length > 0) {
      // receipts that came before these sends were written
      await inChunks(sent, async (ids) => {
        const matched = await this.run<RowDataPacket[]>(
          'read',
          `SELECT m.msgid FROM \`${t}\` m JOIN \`${rt}\` r ON r.wechat_msgid = m.wechat_msgid WHERE m.msgid IN (${marks(ids.length)})`,
          [...ids],
        );
        if (matched.length === 0) return;
        const found = matched.map((r) => textColumn(r.msgid));
        await inChunks(found, (m) => this.finaliseWhere('m.msgid', m));
        for (const id of found) finals.add(id);
      });
    }
    return this.records('msgid', [...finals]);
  }

  async applyReceipts(receipts: readonly LedgerReceipt[]): Promise<MessageRecord[]> {
    const finals: MessageRecord[] = [];
    await inChunks(receipts, async (chunk) => {
      await this.run<ResultSetHeader>(
        'write',
        `INSERT INTO \`${this.receiptTable}\` (wechat_msgid, state, status, openid, at) VALUES ${Array(chunk.length).fill('(?,?,?,?,?)').join(',')}
ON DUPLICATE KEY UPDATE at = ${SAME_RECEIPT_KEEPS_AT('mysql')}, state = VALUES(state), status = VALUES(status), openid = VALUES(openid)`,
        chunk.flatMap((r) => [r.receipt, r.state, r.status.slice(0, ERRMSG_MAX), r.openid ?? '', r.at]),
      );
      const ids = [...new Set(chunk.map((r) => r.receipt))];
      await this.finaliseWhere('r.wechat_msgid', ids);
      finals.push(...(await this.records('wechat_msgid', ids)));
    });
    return finals;
  }

  async applySubscriptions(subscriptions: readonly LedgerSubscription[]): Promise<void> {
    await this.openSubscriptionTable();
    // one at a time, in order: a later one of the same openid and template must see the earlier
    for (const x of subscriptions) {
      // the IF()s compare with the kept `at` before it is assigned, so `at` goes last
      await this.run<ResultSetHeader>(
        'write',
        `INSERT INTO \`${this.subscriptionTable}\` (openid, template_id, status, event, at) VALUES (?,?,?,?,?)
ON DUPLICATE KEY UPDATE status = IF(VALUES(at) >= at, VALUES(status), status), event = IF(VALUES(at) >= at, VALUES(event), event), at = GREATEST(at, VALUES(at))`,
        [x.subscription, x.templateId.slice(0, SUBSCRIPTION_MAX), x.status, x.event, x.at],
      );
    }
  }

  async subscriptionsOf(openid: string): Promise<LedgerSubscription[]> {
    await this.openSubscriptionTable();
    const rows = await this.run<RowDataPacket[]>('read', `SELECT openid, template_id, status, event, at FROM \`${this.subscriptionTable}\` WHERE openid = ?`, [openid]);
    return rows.map(keptSubscription);
  }

  async receiptOf(wechatMsgid: string): Promise<LedgerReceipt | undefined> {
    const rows = await this.run<RowDataPacket[]>('read', `SELECT wechat_msgid, state, status, openid, at FROM \`${this.receiptTable}\` WHERE wechat_msgid = ?`, [wechatMsgid]);
    return rows[0] && keptReceipt(rows[0]);
  }

  /** Applies the kept receipts to the messages where `column` is one of `ids`. */
  private async finaliseWhere(column: string, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.run<ResultSetHeader>(
      'write',
      `UPDATE \`${this.table}\` m JOIN \`${this.receiptTable}\` r ON r.wechat_msgid = m.wechat_msgid
SET m.state = r.state, m.final_at = r.at, m.errmsg = IF(r.state = 'delivered', m.errmsg, r.status), m.updated_at = GREATEST(m.updated_at, r.at)
WHERE ${column} IN (${marks(ids.length)})`,
      [...ids],
    );
  }

  private async records(column: 'msgid' | 'wechat_msgid', ids: readonly string[]): Promise<MessageRecord[]> {
    const out: MessageRecord[] = [];
    await inChunks(ids, async (chunk) => {
      const rows = await this.run<RowDataPacket[]>('read', `SELECT ${COLUMNS} FROM \`${this.table}\` WHERE ${column} IN (${marks(chunk.length)})`, [...chunk]);
      out.push(...rows.map(toRecord));
    });
    return out;
  }

  async get(msgid: string): Promise<MessageRecord | undefined> {
    const rows = await this.run<RowDataPacket[]>('read', `SELECT ${COLUMNS} FROM \`${this.table}\` WHERE msgid = ?`, [msgid]);
    return rows[0] ? toRecord(rows[0]) : undefined;
  }

  async list(filter: MessageFilter): Promise<MessageRecord[]> {
    const w = where(filter);
    const rows = await this.run<RowDataPacket[]>(
      'read',
      `SELECT ${COLUMNS} FROM \`${this.table}\` ${w.sql} ORDER BY queued_at DESC, msgid DESC LIMIT ${w.limit}`,
      w.args,
    );
    return rows.map(toRecord);
  }

  async purge(before: number, limit: number): Promise<number> {
    const r = await this.run<ResultSetHeader>(
      'purge',
      `DELETE FROM \`${this.table}\` WHERE updated_at < ? AND state <> 'queued' LIMIT ${Math.floor(limit)}`,
      [before],
    );
    const k = await this.run<ResultSetHeader>('purge', `DELETE FROM \`${this.receiptTable}\` WHERE at < ? LIMIT ${Math.floor(limit)}`, [before]);
    return r.affectedRows + k.affectedRows;
  }
}
