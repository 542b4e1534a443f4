import type Database from 'better-sqlite3';
import { MESSAGE_KINDS, isMessageKind, type MessageKind } from '../wechat/kinds.js';
import type { ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { ConfigError, TemplateStoreError } from '../errors.js';
import {
  MysqlStore,
  openSqlite,
  parseDsn,
  sqliteLocation,
  SqlStore,
  tableName,
  textColumn as text,
  unixNow,
  type MysqlDsn,
  type SqliteDsn,
} from '../db/index.js';

/**
 * The table operators edit templates in: `${prefix}wechat_template`, as the original's
 * `mega_wechat_template`. The store reads and writes rows; it knows nothing about JSON.
 */

export interface TemplateRow {
  key: string;
  title: string;
  template: string;
  /** Which WeChat message the row is (column `kind`, added to older tables with `template`). */
  kind: MessageKind;
  /** Unix seconds. */
  createdAt: number;
  /** Unix seconds. */
  updatedAt: number;
}

export interface TemplateStore {
  readonly kind: 'sqlite' | 'mysql';
  /** Where the store lives, for logs and messages: `sqlite /abs/path.db`, `mysql host:port/db`. Never holds a password. */
  readonly location: string;
  /** The table name, prefix included. */
  readonly table: string;
  /**
   * Connects and creates the table if it is missing. An existing table is used as it is, never
   * altered. Idempotent.
   * @throws TemplateStoreError when the database cannot be opened or reached, or the table lacks a column.
   * @throws ConfigError when mysql2 refuses an option (an unknown `charset=` in the DSN).
   */
  init(): Promise<void>;
  /**
   * The row whose `tmpl_key` equals `key`. With MySQL the comparison follows the column's
   * collation (usually case-insensitive and ignoring trailing spaces), so `get('ABC')` may return
   * the row `abc`; with SQLite it is exact.
   */
  get(key: string): Promise<TemplateRow | undefined>;
  /** Rows ordered by `tmpl_key`; at most `limit` of them. @defaultValue limit: no limit */
  list(limit?: number): Promise<TemplateRow[]>;
  /**
   * Inserts or updates a row. `updated_at` is set to now, `created_at` too on insert.
   * An omitted title is `''` on insert and left as it is on update; an omitted kind is
   * `template` on insert and left as it is on update.
   * @throws RangeError when the key is empty or longer than 32 characters, or the title longer than 100.
   */
  put(row: TemplatePut): Promise<void>;
  /** @returns whether a row was deleted. */
  remove(key: string): Promise<boolean>;
  /** Releases the connection(s). Idempotent; any later call fails with TemplateStoreError. */
  close(): Promise<void>;
}

/** What put() writes; title and kind may be left out (see put). */
export interface TemplatePut {
  key: string;
  title?: string;
  template: string;
  kind?: MessageKind;
}

export interface StoreOptions {
  /** `[pdo] dsn`: `sqlite:<path>` or `mysql:host=...;port=...;dbname=...`. */
  dsn: string;
  /** `[pdo] username` (MySQL only). @defaultValue '' (the server's anonymous user) */
  username?: string;
  /** `[pdo] password` (MySQL only). Never appears in messages. @defaultValue '' */
  password?: string;
  /** `[pdo] table_prefix`. Letters, digits and `_` only: it becomes part of SQL text. @defaultValue 'mega_' */
  tablePrefix?: string;
  /** Directory a relative `sqlite:` path is resolved against. @defaultValue process.cwd() */
  baseDir?: string;
}

/** The seed's column sizes; enforced by `put` so that MySQL cannot silently truncate a key. */
const KEY_MAX_CHARS = 32;
const TITLE_MAX_CHARS = 100;
const TABLE_SUFFIX = 'wechat_template';
const COLUMNS = 'tmpl_key, title, template, created_at, updated_at, kind';
/** The original's table has no `kind`: it is added, with the default every existing row keeps. */
const KIND_COLUMN = "kind varchar(16) NOT NULL DEFAULT 'template'";

/**
 * Creates the store named by the DSN. Does no I/O: call {@link TemplateStore.init}.
 * @throws ConfigError for a bad DSN or table prefix (message names the `[pdo]` key).
 */
export function openTemplateStore(options: StoreOptions): TemplateStore {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
  const { username, password, baseDir } = options;
  if (typeof options.dsn !== 'string') throw new ConfigError('[pdo] dsn (options.dsn) must be a string');
  if (username !== undefined && typeof username !== 'string') {
    throw new ConfigError('[pdo] username (options.username) must be a string');
  }
  if (password !== undefined && typeof password !== 'string') {
    throw new ConfigError('[pdo] password (options.password) must be a string');
  }
  if (baseDir !== undefined && typeof baseDir !== 'string') throw new TypeError('options.baseDir must be a string');
  const table = tableName(options.tablePrefix, TABLE_SUFFIX);
  const dsn = parseDsn(options.dsn, baseDir);
  return dsn.driver === 'sqlite'
    ? new SqliteTemplateStore(dsn, table)
    : new MysqlTemplateStore(dsn, table, username, password);
}

function checkPut(row: TemplatePut): string {
  if (row === null || typeof row !== 'object') throw new TypeError('row must be an object');
  const { key, title, template } = row;
  if (row.kind !== undefined && !isMessageKind(row.kind)) throw new RangeError(`row.kind must be one of ${MESSAGE_KINDS.join(', ')}`);
  if (typeof key !== 'string' || key.length === 0 || [...key].length > KEY_MAX_CHARS) {
    throw new RangeError(`row.key must be 1-${KEY_MAX_CHARS} characters (tmpl_key char(${KEY_MAX_CHARS}))`);
  }
  if (title !== undefined && (typeof title !== 'string' || [...title].length > TITLE_MAX_CHARS)) {
    throw new RangeError(`row.title must be at most ${TITLE_MAX_CHARS} characters (title varchar(${TITLE_MAX_CHARS}))`);
  }
  if (typeof template !== 'string') throw new TypeError('row.template must be a string');
  return key;
}

function checkLimit(limit: number | undefined): void {
  if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 0)) {
    throw new RangeError(`limit must be a non-negative integer, got ${String(limit)}`);
  }
}

/** Rows may come from a table an operator created by hand: tolerate NULLs, Buffers, strings for ints. */
function toRow(r: Record<string, unknown>): TemplateRow {
  return {
    key: text(r.tmpl_key),
    title: text(r.title),
    template: text(r.template),
    createdAt: Number(r.created_at) || 0,
    updatedAt: Number(r.updated_at) || 0,
    // a value written by hand that is no kind is read as the default, like a NULL
    kind: isMessageKind(text(r.kind)) ? (text(r.kind) as MessageKind) : 'template',
  };
}

// ---------------------------------------------------------------- SQLite

class SqliteTemplateStore extends SqlStore implements TemplateStore {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  readonly table: string;
  readonly #dsn: SqliteDsn;
  #db: Database.Database | undefined;
  #stmts:
    | {
        get: Database.Statement<[string]>;
        list: Database.Statement<[]>;
        listLimit: Database.Statement<[number]>;
        update: Database.Statement<[string, number, string]>;
        updateTitle: Database.Statement<[string, string, number, string]>;
        updateKind: Database.Statement<[string, string]>;
        insert: Database.Statement<[string, string, string, number, number, string]>;
        remove: Database.Statement<[string]>;
      }
    | undefined;

  constructor(dsn: SqliteDsn, table: string) {
    super(TemplateStoreError, 'store');
    this.#dsn = dsn;
    this.table = table;
    this.location = sqliteLocation(dsn);
  }

  async init(): Promise<void> {
    if (this.state === 'open') return;
    if (this.state === 'closed') this.checkOpen();
    try {
      const t = `"${this.table}"`;
      const { db, value } = openSqlite(this.#dsn, (db) => {
        db.exec(
          `CREATE TABLE IF NOT EXISTS ${t} (
  tmpl_key char(32) NOT NULL PRIMARY KEY,
  title varchar(100) NOT NULL DEFAULT '',
  template text NOT NULL,
  created_at int NOT NULL DEFAULT 0,
  updated_at int NOT NULL DEFAULT 0,
  ${KIND_COLUMN}
)`,
        );
        const columns = db.prepare(`PRAGMA table_info(${t})`).all() as Array<{ name: string }>;
        if (!columns.some((c) => c.name === 'kind')) db.exec(`ALTER TABLE ${t} ADD COLUMN ${KIND_COLUMN}`);
        // Preparing these also checks that an existing table has every column we need.
        // The upsert is UPDATE-then-INSERT (not ON CONFLICT) so a hand-made table without a
        // primary key still works.
        return {
          get: db.prepare<[string]>(`SELECT ${COLUMNS} FROM ${t} WHERE tmpl_key = ?`),
          list: db.prepare<[]>(`SELECT ${COLUMNS} FROM ${t} ORDER BY tmpl_key`),
          listLimit: db.prepare<[number]>(`SELECT ${COLUMNS} FROM ${t} ORDER BY tmpl_key LIMIT ?`),
          update: db.prepare<[string, number, string]>(`UPDATE ${t} SET template = ?, updated_at = ? WHERE tmpl_key = ?`),
          updateTitle: db.prepare<[string, string, number, string]>(
            `UPDATE ${t} SET title = ?, template = ?, updated_at = ? WHERE tmpl_key = ?`,
          ),
          updateKind: db.prepare<[string, string]>(`UPDATE ${t} SET kind = ? WHERE tmpl_key = ?`),
          insert: db.prepare<[string, string, string, number, number, string]>(`INSERT INTO ${t} (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`),
          remove: db.prepare<[string]>(`DELETE FROM ${t} WHERE tmpl_key = ?`),
        };
      });
      this.#db = db;
      this.#stmts = value;
      this.state = 'open';
    } catch (err) {
      throw this.fail('open', err);
    }
  }

  async get(key: string): Promise<TemplateRow | undefined> {
    this.checkOpen();
    try {
      const r = this.#stmts!.get.get(key) as Record<string, unknown> | undefined;
      return r === undefined ? undefined : toRow(r);
    } catch (err) {
      throw this.fail(`get ${JSON.stringify(key)}`, err);
    }
  }

  async list(limit?: number): Promise<TemplateRow[]> {
    checkLimit(limit);
    this.checkOpen();
    try {
      const rows = (limit === undefined ? this.#stmts!.list.all() : this.#stmts!.listLimit.all(limit)) as Record<string, unknown>[];
      return rows.map(toRow);
    } catch (err) {
      throw this.fail('list', err);
    }
  }

  async put(row: TemplatePut): Promise<void> {
    const key = checkPut(row);
    this.checkOpen();
    const now = unixNow();
    const s = this.#stmts!;
    try {
      this.#db!.transaction(() => {
        const changed =
          row.title === undefined ? s.update.run(row.template, now, key) : s.updateTitle.run(row.title, row.template, now, key);
        if (changed.changes === 0) s.insert.run(key, row.title ?? '', row.template, now, now, row.kind ?? 'template');
        else if (row.kind !== undefined) s.updateKind.run(row.kind, key);
      })();
    } catch (err) {
      throw this.fail(`put ${JSON.stringify(key)}`, err);
    }
  }

  async remove(key: string): Promise<boolean> {
    this.checkOpen();
    try {
      return this.#stmts!.remove.run(key).changes > 0;
    } catch (err) {
      throw this.fail(`remove ${JSON.stringify(key)}`, err);
    }
  }

  async close(): Promise<void> {
    const db = this.#db;
    this.state = 'closed';
    this.#db = undefined;
    this.#stmts = undefined;
    if (!db) return;
    try {
      db.close();
    } catch (err) {
      throw this.fail('close', err);
    }
  }
}

// ---------------------------------------------------------------- MySQL

class MysqlTemplateStore extends MysqlStore implements TemplateStore {
  readonly kind = 'mysql' as const;
  readonly table: string;

  constructor(dsn: MysqlDsn, table: string, username: string | undefined, password: string | undefined) {
    super(TemplateStoreError, 'store', dsn, username, password);
    this.table = table;
  }

  async init(): Promise<void> {
    // The seed's DDL, with utf8mb4 spelled out: an old server defaulting to latin1 would
    // mangle the Chinese text templates hold. tmpl_key gets the charset's default collation,
    // which compares case-insensitively: `abc` and `ABC` are the same key, as in the original.
    await this.openTable(
      this.table,
      `CREATE TABLE IF NOT EXISTS \`${this.table}\` (
  \`tmpl_key\` char(32) NOT NULL COMMENT '模板key',
  \`title\` varchar(100) NOT NULL DEFAULT '' COMMENT '模板标题',
  \`template\` text NOT NULL COMMENT '模板内容',
  \`created_at\` int(11) NOT NULL DEFAULT '0',
  \`updated_at\` int(11) NOT NULL DEFAULT '0',
  \`kind\` varchar(16) NOT NULL DEFAULT 'template' COMMENT 'template, subscribe or miniprogram',
  PRIMARY KEY (\`tmpl_key\`)
) DEFAULT CHARSET=utf8mb4`,
      COLUMNS,
      [{ column: 'kind', ddl: KIND_COLUMN }],
    );
  }

  async get(key: string): Promise<TemplateRow | undefined> {
    this.checkOpen();
    const rows = await this.run<RowDataPacket[]>(
      `get ${JSON.stringify(key)}`,
      `SELECT ${COLUMNS} FROM \`${this.table}\` WHERE tmpl_key = ?`,
      [key],
    );
    return rows[0] === undefined ? undefined : toRow(rows[0]);
  }

  async list(limit?: number): Promise<TemplateRow[]> {
    checkLimit(limit);
    this.checkOpen();
    // LIMIT is inlined (already checked to be a safe integer): some servers reject it as a
    // prepared-statement parameter.
    const rows = await this.run<RowDataPacket[]>(
      'list',
      `SELECT ${COLUMNS} FROM \`${this.table}\` ORDER BY tmpl_key${limit === undefined ? '' : ` LIMIT ${limit}`}`,
      [],
    );
    return rows.map(toRow);
  }

  async put(row: TemplatePut): Promise<void> {
    const key = checkPut(row);
    this.checkOpen();
    const now = unixNow();
    const { title, kind } = row;
    // Values bound twice instead of VALUES(col), which MySQL 8.0.20+ deprecates.
    const sets = [...(title === undefined ? [] : ['title = ?']), 'template = ?', 'updated_at = ?', ...(kind === undefined ? [] : ['kind = ?'])];
    const sql = `INSERT INTO \`${this.table}\` (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE ${sets.join(', ')}`;
    const values: unknown[] = [key, title ?? '', row.template, now, now, kind ?? 'template'];
    if (title !== undefined) values.push(title);
    values.push(row.template, now);
    if (kind !== undefined) values.push(kind);
    await this.run<ResultSetHeader>(`put ${JSON.stringify(key)}`, sql, values);
  }

  async remove(key: string): Promise<boolean> {
    this.checkOpen();
    const result = await this.run<ResultSetHeader>(
      `remove ${JSON.stringify(key)}`,
      `DELETE FROM \`${this.table}\` WHERE tmpl_key = ?`,
      [key],
    );
    return result.affectedRows > 0;
  }
}
