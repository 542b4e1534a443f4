import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import type { Pool, PoolOptions, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { ConfigError, TemplateStoreError } from '../errors.js';
import { parseDsn, type MysqlDsn, type SqliteDsn } from './dsn.js';

/**
 * The table operators edit templates in: `${prefix}wechat_template`, as the original's
 * `mega_wechat_template`. The store reads and writes rows; it knows nothing about JSON.
 */

export interface TemplateRow {
  key: string;
  title: string;
  template: string;
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
   * An omitted title is `''` on insert and left as it is on update.
   * @throws RangeError when the key is empty or longer than 32 characters, or the title longer than 100.
   */
  put(row: { key: string; title?: string; template: string }): Promise<void>;
  /** @returns whether a row was deleted. */
  remove(key: string): Promise<boolean>;
  /** Releases the connection(s). Idempotent; any later call fails with TemplateStoreError. */
  close(): Promise<void>;
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
/** MySQL identifiers are at most 64 characters. */
const TABLE_NAME_MAX = 64;
const COLUMNS = 'tmpl_key, title, template, created_at, updated_at';

/** Waits this long for a MySQL connection before failing. */
const MYSQL_CONNECT_TIMEOUT_MS = 5000;
/** A query slower than this fails instead of hanging a TSet forever. */
const MYSQL_QUERY_TIMEOUT_MS = 10_000;
/**
 * The store serves start-up and TSet only (messages render from the cache), so two connections
 * are plenty.
 */
const MYSQL_POOL_SIZE = 2;
/**
 * Idle connections are closed after a minute, so a TSet after hours of quiet opens a fresh one
 * instead of finding a connection the server (wait_timeout) or a firewall dropped silently.
 */
const MYSQL_IDLE_TIMEOUT_MS = 60_000;
/** SQLite waits this long for a lock held by an operator's sqlite3 shell before failing. */
const SQLITE_BUSY_TIMEOUT_MS = 5000;

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
  const prefix = options.tablePrefix ?? 'mega_';
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_]*$/.test(prefix)) {
    throw new ConfigError('[pdo] table_prefix (options.tablePrefix) may hold only letters, digits and _');
  }
  const table = prefix + TABLE_SUFFIX;
  if (table.length > TABLE_NAME_MAX) {
    throw new ConfigError(
      `[pdo] table_prefix (options.tablePrefix) is too long: ${table.length} characters, the table name may have ${TABLE_NAME_MAX}`,
    );
  }
  const dsn = parseDsn(options.dsn, baseDir);
  return dsn.driver === 'sqlite'
    ? new SqliteTemplateStore(dsn, table)
    : new MysqlTemplateStore(dsn, table, username, password);
}

function checkPut(row: { key: string; title?: string; template: string }): string {
  if (row === null || typeof row !== 'object') throw new TypeError('row must be an object');
  const { key, title, template } = row;
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

function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

/** Rows may come from a table an operator created by hand: tolerate NULLs, Buffers, strings for ints. */
function toRow(r: Record<string, unknown>): TemplateRow {
  return {
    key: text(r.tmpl_key),
    title: text(r.title),
    template: text(r.template),
    createdAt: Number(r.created_at) || 0,
    updatedAt: Number(r.updated_at) || 0,
  };
}

function text(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  return String(v);
}

/** The most useful one-line description of a driver error (AggregateError has an empty message). */
function describe(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return describe(err.errors[0]);
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    if (err.message) return err.message;
    if (typeof code === 'string') return code;
    return err.name;
  }
  return String(err);
}

abstract class BaseStore {
  abstract readonly location: string;
  protected state: 'new' | 'open' | 'closed' = 'new';
  /** Filled by MySQL only: a password to scrub from any message. */
  protected secret: string | undefined;

  protected fail(what: string, err: unknown): TemplateStoreError {
    let message = `${this.location}: ${what}: ${describe(err)}`;
    let cause: unknown = err;
    // No driver is known to echo the password, but a message must never carry it; the cause
    // (the driver's own error) is dropped too, since loggers print it.
    if (this.secret && message.includes(this.secret)) {
      message = message.split(this.secret).join('***');
      cause = undefined;
    }
    return new TemplateStoreError(message, cause === undefined ? undefined : { cause });
  }

  protected checkOpen(): void {
    if (this.state === 'new') throw new TemplateStoreError(`${this.location}: store is not initialised; call init() first`);
    if (this.state === 'closed') throw new TemplateStoreError(`${this.location}: store is closed`);
  }
}

// ---------------------------------------------------------------- SQLite

class SqliteTemplateStore extends BaseStore implements TemplateStore {
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
        insert: Database.Statement<[string, string, string, number, number]>;
        remove: Database.Statement<[string]>;
      }
    | undefined;

  constructor(dsn: SqliteDsn, table: string) {
    super();
    this.#dsn = dsn;
    this.table = table;
    this.location = `sqlite ${dsn.filename}`;
  }

  async init(): Promise<void> {
    if (this.state === 'open') return;
    if (this.state === 'closed') this.checkOpen();
    let db: Database.Database | undefined;
    try {
      if (!this.#dsn.memory) mkdirSync(dirname(this.#dsn.filename), { recursive: true });
      db = new Database(this.#dsn.filename, { timeout: SQLITE_BUSY_TIMEOUT_MS });
      // WAL lets an operator's sqlite3 shell read and write while the daemon holds the file open.
      db.pragma('journal_mode = WAL');
      const t = `"${this.table}"`;
      db.exec(
        `CREATE TABLE IF NOT EXISTS ${t} (
  tmpl_key char(32) NOT NULL PRIMARY KEY,
  title varchar(100) NOT NULL DEFAULT '',
  template text NOT NULL,
  created_at int NOT NULL DEFAULT 0,
  updated_at int NOT NULL DEFAULT 0
)`,
      );
      // Preparing these also checks that an existing table has every column we need.
      // The upsert is UPDATE-then-INSERT (not ON CONFLICT) so a hand-made table without a
      // primary key still works.
      this.#stmts = {
        get: db.prepare(`SELECT ${COLUMNS} FROM ${t} WHERE tmpl_key = ?`),
        list: db.prepare(`SELECT ${COLUMNS} FROM ${t} ORDER BY tmpl_key`),
        listLimit: db.prepare(`SELECT ${COLUMNS} FROM ${t} ORDER BY tmpl_key LIMIT ?`),
        update: db.prepare(`UPDATE ${t} SET template = ?, updated_at = ? WHERE tmpl_key = ?`),
        updateTitle: db.prepare(`UPDATE ${t} SET title = ?, template = ?, updated_at = ? WHERE tmpl_key = ?`),
        insert: db.prepare(`INSERT INTO ${t} (${COLUMNS}) VALUES (?, ?, ?, ?, ?)`),
        remove: db.prepare(`DELETE FROM ${t} WHERE tmpl_key = ?`),
      };
      this.#db = db;
      this.state = 'open';
    } catch (err) {
      try {
        db?.close();
      } catch {
        // the open failure is the one worth reporting
      }
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

  async put(row: { key: string; title?: string; template: string }): Promise<void> {
    const key = checkPut(row);
    this.checkOpen();
    const now = unixNow();
    const s = this.#stmts!;
    try {
      this.#db!.transaction(() => {
        const changed =
          row.title === undefined ? s.update.run(row.template, now, key) : s.updateTitle.run(row.title, row.template, now, key);
        if (changed.changes === 0) s.insert.run(key, row.title ?? '', row.template, now, now);
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

/** Errors after which the same statement on a new connection may succeed. */
const RETRYABLE = new Set(['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'EPIPE']);

class MysqlTemplateStore extends BaseStore implements TemplateStore {
  readonly kind = 'mysql' as const;
  readonly location: string;
  readonly table: string;
  readonly #config: PoolOptions;
  // Created by init(), not the constructor: a mysql2 pool runs a timer that would keep the
  // process alive for a store that is never used.
  #pool: Pool | undefined;

  constructor(dsn: MysqlDsn, table: string, username: string | undefined, password: string | undefined) {
    super();
    this.table = table;
    this.secret = password || undefined;
    const where = dsn.socketPath !== undefined ? `unix:${dsn.socketPath}` : `${dsn.host}:${dsn.port}`;
    this.location = `mysql ${where}/${dsn.database}`;
    this.#config = {
      host: dsn.host,
      port: dsn.port,
      socketPath: dsn.socketPath,
      database: dsn.database,
      user: username,
      password: password ?? '',
      charset: dsn.charset,
      connectTimeout: MYSQL_CONNECT_TIMEOUT_MS,
      connectionLimit: MYSQL_POOL_SIZE,
      // With maxIdle below connectionLimit mysql2 closes connections idle for idleTimeout.
      maxIdle: 1,
      idleTimeout: MYSQL_IDLE_TIMEOUT_MS,
      enableKeepAlive: true,
      multipleStatements: false,
    };
  }

  /** Runs one statement; on a connection dropped under it, runs it once more on a fresh connection. */
  async #run<T extends RowDataPacket[] | ResultSetHeader>(what: string, sql: string, values: unknown[]): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        const [result] = await this.#pool!.execute<T>({ sql, values, timeout: MYSQL_QUERY_TIMEOUT_MS });
        return result;
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if (attempt === 0 && typeof code === 'string' && RETRYABLE.has(code) && this.state !== 'closed') continue;
        throw this.fail(what, err);
      }
    }
  }

  async init(): Promise<void> {
    if (this.state === 'open') return;
    if (this.state === 'closed') this.checkOpen();
    if (!this.#pool) {
      try {
        this.#pool = mysql.createPool(this.#config);
      } catch (err) {
        // createPool does not connect; it throws only for a bad option, such as an unknown charset.
        throw new ConfigError(`[pdo] dsn: ${describe(err)}`);
      }
    }
    try {
      const t = `\`${this.table}\``;
      const exists = await this.#run<RowDataPacket[]>(
        'init',
        'SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?',
        [this.table],
      );
      // Checked first so that an account without CREATE privilege can use an existing table.
      if (Number(exists[0]?.n) === 0) {
        // The seed's DDL, with utf8mb4 spelled out: an old server defaulting to latin1 would
        // mangle the Chinese text templates hold. tmpl_key gets the charset's default collation,
        // which compares case-insensitively: `abc` and `ABC` are the same key, as in the original.
        await this.#run<ResultSetHeader>(
          `create table ${this.table}`,
          `CREATE TABLE IF NOT EXISTS ${t} (
  \`tmpl_key\` char(32) NOT NULL COMMENT '模板key',
  \`title\` varchar(100) NOT NULL DEFAULT '' COMMENT '模板标题',
  \`template\` text NOT NULL COMMENT '模板内容',
  \`created_at\` int(11) NOT NULL DEFAULT '0',
  \`updated_at\` int(11) NOT NULL DEFAULT '0',
  PRIMARY KEY (\`tmpl_key\`)
) DEFAULT CHARSET=utf8mb4`,
          [],
        );
      }
      // Fails now, at start, if an existing table lacks a column, rather than at the first TSet.
      await this.#run<RowDataPacket[]>(`check table ${this.table}`, `SELECT ${COLUMNS} FROM ${t} LIMIT 0`, []);
    } catch (err) {
      // Without this a failed start would leave the pool's timer keeping the process alive.
      const pool = this.#pool;
      this.#pool = undefined;
      await pool?.end().catch(() => {});
      throw err;
    }
    this.state = 'open';
  }

  async get(key: string): Promise<TemplateRow | undefined> {
    this.checkOpen();
    const rows = await this.#run<RowDataPacket[]>(
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
    const rows = await this.#run<RowDataPacket[]>(
      'list',
      `SELECT ${COLUMNS} FROM \`${this.table}\` ORDER BY tmpl_key${limit === undefined ? '' : ` LIMIT ${limit}`}`,
      [],
    );
    return rows.map(toRow);
  }

  async put(row: { key: string; title?: string; template: string }): Promise<void> {
    const key = checkPut(row);
    this.checkOpen();
    const now = unixNow();
    const title = row.title;
    // Values bound twice instead of VALUES(col), which MySQL 8.0.20+ deprecates.
    const sql =
      `INSERT INTO \`${this.table}\` (${COLUMNS}) VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE ` +
      (title === undefined ? 'template = ?, updated_at = ?' : 'title = ?, template = ?, updated_at = ?');
    const values: unknown[] = [key, title ?? '', row.template, now, now];
    if (title !== undefined) values.push(title);
    values.push(row.template, now);
    await this.#run<ResultSetHeader>(`put ${JSON.stringify(key)}`, sql, values);
  }

  async remove(key: string): Promise<boolean> {
    this.checkOpen();
    const result = await this.#run<ResultSetHeader>(
      `remove ${JSON.stringify(key)}`,
      `DELETE FROM \`${this.table}\` WHERE tmpl_key = ?`,
      [key],
    );
    return result.affectedRows > 0;
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    const pool = this.#pool;
    this.#pool = undefined;
    if (!pool) return;
    try {
      await pool.end();
    } catch (err) {
      throw this.fail('close', err);
    }
  }
}
