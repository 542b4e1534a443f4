import type Database from 'better-sqlite3';
import type { ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { LedgerStoreError } from '../errors.js';
import { MysqlStore, openSqlite, parseDsn, sqliteLocation, SqlStore, tableName, textColumn, type MysqlDsn, type SqliteDsn } from '../db/index.js';
import { MESSAGE_STATES, type LedgerReader, type MessageFilter, type MessageRecord, type MessageState } from '../protocol/message-record.js';
import { ERRMSG_MAX, type LedgerChange } from './change.js';

/**
 * The table `{table_prefix}message` (default `mega_message`) in the `[pdo]` store: one row per
 * message, keyed by its msgid, indexed by WeChat's msgid (receipts), by openid + queued time
 * (`msg list --openid`) and by last change (retention). Written only by the Ledger, in batches.
 */
export interface LedgerStore extends LedgerReader {
  readonly kind: 'sqlite' | 'mysql';
  readonly location: string;
  readonly table: string;
  /** Connects and creates the table and its indexes if missing. Idempotent; may be called again after a failure. */
  init(): Promise<void>;
  /** Applies the changes (at most one per msgid), all or none on SQLite, in statements of up to 256 rows on MySQL. */
  upsert(changes: readonly LedgerChange[]): Promise<void>;
  /**
   * Applies journal files (see applyJournalFiles), where the store can do it off the main
   * thread; the Ledger reads them itself otherwise.
   */
  applyJournal?(files: readonly string[]): Promise<Array<{ file: string; torn: number }>>;
  /** Deletes up to `limit` rows that are no longer `queued` and last changed before `before`; returns how many. */
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
const LIST_MAX = 1000;

/** Creates the store the DSN names. No I/O: call init(). @throws ConfigError for a bad DSN or prefix. */
export function openLedgerStore(options: LedgerStoreOptions): LedgerStore {
  const table = tableName(options.tablePrefix, 'message');
  const dsn = parseDsn(options.dsn, options.baseDir);
  return dsn.driver === 'sqlite' ? new SqliteLedgerStore(dsn, table) : new MysqlLedgerStore(dsn, table, options.username, options.password);
}

/** '' / 0 / null say "this change does not know": the stored value stays (see the upserts). */
function values(c: LedgerChange): unknown[] {
  return [
    c.msgid,
    c.openid ?? '',
    c.key ?? '',
    c.kind ?? '',
    c.state,
    c.attempts ?? 0,
    c.wechatMsgid ?? null,
    c.errcode ?? null,
    c.errmsg === undefined ? null : c.errmsg.slice(0, ERRMSG_MAX),
    c.queuedAt ?? 0,
    c.sentAt ?? null,
    c.finalAt ?? null,
    c.at,
  ];
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

class SqliteLedgerStore extends SqlStore implements LedgerStore {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  private db: Database.Database | undefined;
  private upsertOne: Database.Statement | undefined;
  private applyAll: ((changes: readonly LedgerChange[]) => void) | undefined;

  constructor(
    private readonly dsn: SqliteDsn,
    readonly table: string,
  ) {
    super(LedgerStoreError, 'ledger store');
    this.location = sqliteLocation(dsn);
  }

  async init(): Promise<void> {
    if (this.state === 'open') return;
    this.checkOpenable();
    const t = this.table;
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
CREATE INDEX IF NOT EXISTS ${t}_wechat_msgid ON ${t} (wechat_msgid);
CREATE INDEX IF NOT EXISTS ${t}_openid_queued ON ${t} (openid, queued_at);
CREATE INDEX IF NOT EXISTS ${t}_updated ON ${t} (updated_at);`);
        return undefined;
      });
      this.db = db;
      this.upsertOne = db.prepare(
        `INSERT INTO ${t} (${COLUMNS}) VALUES (${Array(WIDTH).fill('?').join(', ')})
ON CONFLICT(msgid) DO UPDATE SET
  openid = CASE WHEN excluded.openid = '' THEN openid ELSE excluded.openid END,
  tmpl_key = CASE WHEN excluded.tmpl_key = '' THEN tmpl_key ELSE excluded.tmpl_key END,
  kind = CASE WHEN excluded.kind = '' THEN kind ELSE excluded.kind END,
  state = CASE WHEN excluded.state = 'queued' AND excluded.attempts = 0 AND state <> 'queued' THEN state ELSE excluded.state END,
  attempts = MAX(attempts, excluded.attempts),
  wechat_msgid = COALESCE(excluded.wechat_msgid, wechat_msgid),
  errcode = COALESCE(excluded.errcode, errcode),
  errmsg = COALESCE(excluded.errmsg, errmsg),
  queued_at = CASE WHEN excluded.queued_at = 0 THEN queued_at ELSE excluded.queued_at END,
  sent_at = COALESCE(excluded.sent_at, sent_at),
  final_at = COALESCE(excluded.final_at, final_at),
  updated_at = MAX(updated_at, excluded.updated_at)`,
      );
      const stmt = this.upsertOne;
      this.applyAll = db.transaction((changes: readonly LedgerChange[]) => {
        for (const c of changes) stmt.run(values(c));
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

  async upsert(changes: readonly LedgerChange[]): Promise<void> {
    this.handle();
    try {
      this.applyAll!(changes);
    } catch (err) {
      throw this.fail('write', err);
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

  async purge(before: number, limit: number): Promise<number> {
    try {
      const t = this.table;
      const r = this.handle()
        .prepare(`DELETE FROM ${t} WHERE rowid IN (SELECT rowid FROM ${t} WHERE updated_at < ? AND state <> 'queued' LIMIT ${Math.floor(limit)})`)
        .run(before);
      return r.changes;
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

  constructor(
    dsn: MysqlDsn,
    readonly table: string,
    username: string | undefined,
    password: string | undefined,
  ) {
    super(LedgerStoreError, 'ledger store', dsn, username, password);
  }

  init(): Promise<void> {
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

  async upsert(changes: readonly LedgerChange[]): Promise<void> {
    for (let i = 0; i < changes.length; ) {
      let n = MYSQL_CHUNK;
      while (n > changes.length - i) n >>= 1;
      const chunk = changes.slice(i, i + n);
      i += n;
      const row = `(${Array(WIDTH).fill('?').join(',')})`;
      // VALUES(col) rather than an alias: MariaDB knows no `AS new` row alias.
      await this.run<ResultSetHeader>(
        'write',
        `INSERT INTO \`${this.table}\` (${COLUMNS}) VALUES ${Array(n).fill(row).join(',')}
ON DUPLICATE KEY UPDATE
  openid = IF(VALUES(openid) = '', openid, VALUES(openid)),
  tmpl_key = IF(VALUES(tmpl_key) = '', tmpl_key, VALUES(tmpl_key)),
  kind = IF(VALUES(kind) = '', kind, VALUES(kind)),
  state = IF(VALUES(state) = 'queued' AND VALUES(attempts) = 0 AND state <> 'queued', state, VALUES(state)),
  attempts = GREATEST(attempts, VALUES(attempts)),
  wechat_msgid = COALESCE(VALUES(wechat_msgid), wechat_msgid),
  errcode = COALESCE(VALUES(errcode), errcode),
  errmsg = COALESCE(VALUES(errmsg), errmsg),
  queued_at = IF(VALUES(queued_at) = 0, queued_at, VALUES(queued_at)),
  sent_at = COALESCE(VALUES(sent_at), sent_at),
  final_at = COALESCE(VALUES(final_at), final_at),
  updated_at = GREATEST(updated_at, VALUES(updated_at))`,
        chunk.flatMap(values),
      );
    }
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
    return r.affectedRows;
  }
}
