/**
 * What the template store and the task store share about the database a `[pdo] dsn` names:
 * the table name a `table_prefix` gives, opening SQLite, a MySQL pool that runs a statement
 * once more on a fresh connection when the old one dropped, and errors that say which
 * database failed but never carry its password.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import type { Pool, PoolOptions, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { ConfigError, type MegaError } from '../errors.js';
import type { MysqlDsn, SqliteDsn } from './dsn.js';

/** MySQL identifiers are at most 64 characters. */
const TABLE_NAME_MAX = 64;
/** SQLite waits this long for a lock held by an operator's sqlite3 shell before failing. */
const SQLITE_BUSY_TIMEOUT_MS = 5000;
/** Waits this long for a MySQL connection before failing. */
const MYSQL_CONNECT_TIMEOUT_MS = 5000;
/** A query slower than this fails instead of hanging a TSet or a task forever. */
const MYSQL_QUERY_TIMEOUT_MS = 10_000;
/** The stores serve start-up, TSet and task bookkeeping, not messages: two connections are plenty. */
const MYSQL_POOL_SIZE = 2;
/**
 * Idle connections are closed after a minute, so a TSet after hours of quiet opens a fresh one
 * instead of finding a connection the server (wait_timeout) or a firewall dropped silently.
 */
const MYSQL_IDLE_TIMEOUT_MS = 60_000;
/** Errors after which the same statement on a new connection may succeed. */
const RETRYABLE = new Set(['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'EPIPE']);

/**
 * `prefix + suffix`, the name of one of the project's tables.
 * @throws ConfigError naming `[pdo] table_prefix` when the prefix holds anything but letters,
 *   digits and `_` (it becomes part of SQL text) or makes the name too long for MySQL.
 */
export function tableName(prefix: unknown, suffix: string): string {
  const p = prefix ?? 'mega_';
  if (typeof p !== 'string' || !/^[A-Za-z0-9_]*$/.test(p)) {
    throw new ConfigError('[pdo] table_prefix (options.tablePrefix) may hold only letters, digits and _');
  }
  const table = p + suffix;
  if (table.length > TABLE_NAME_MAX) {
    throw new ConfigError(
      `[pdo] table_prefix (options.tablePrefix) is too long: ${table.length} characters, the table name may have ${TABLE_NAME_MAX}`,
    );
  }
  return table;
}

/** The most useful one-line description of a driver error (AggregateError has an empty message). */
function describeDbError(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return describeDbError(err.errors[0]);
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    if (err.message) return err.message;
    if (typeof code === 'string') return code;
    return err.name;
  }
  return String(err);
}

/** A text column as a string: rows may come from a table made by hand, with NULLs or BLOBs. */
export function textColumn(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  return String(v);
}

export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

/** How a store reports its failures: its own MegaError subclass. */
export type StoreErrorClass = new (message: string, options?: { cause?: unknown }) => MegaError;

/**
 * The life cycle and error reporting every store has: `init()` opens, `close()` closes, and
 * every failure is one error of the store's class, prefixed with the database's location.
 */
export abstract class SqlStore {
  abstract readonly location: string;
  protected state: 'new' | 'open' | 'closed' = 'new';
  /** Filled for MySQL: a password to scrub from any message. */
  protected secret: string | undefined;

  /** @param noun what `checkOpen` calls the store in its messages ("store", "task store") */
  constructor(
    private readonly ErrorClass: StoreErrorClass,
    private readonly noun: string,
  ) {}

  protected fail(what: string, err: unknown): MegaError {
    if (err instanceof this.ErrorClass) return err;
    let message = `${this.location}: ${what}: ${describeDbError(err)}`;
    let cause: unknown = err;
    // No driver is known to echo the password, but a message must never carry it; the cause
    // (the driver's own error) is dropped too, since loggers print it.
    if (this.secret && message.includes(this.secret)) {
      message = message.split(this.secret).join('***');
      cause = undefined;
    }
    return new this.ErrorClass(message, cause === undefined ? undefined : { cause });
  }

  protected checkOpen(): void {
    if (this.state === 'new') throw new this.ErrorClass(`${this.location}: ${this.noun} is not initialised; call init() first`);
    if (this.state === 'closed') throw new this.ErrorClass(`${this.location}: ${this.noun} is closed`);
  }
}

export function sqliteLocation(dsn: SqliteDsn): string {
  return `sqlite ${dsn.filename}`;
}

/**
 * Opens the SQLite file (creating its folder), in WAL mode so an operator's sqlite3 shell or
 * another mega process can read and write while this one holds it open, then runs `setup`
 * (create tables, prepare statements). The database is closed again if `setup` throws.
 */
export function openSqlite<T>(dsn: SqliteDsn, setup: (db: Database.Database) => T): { db: Database.Database; value: T } {
  let db: Database.Database | undefined;
  try {
    if (!dsn.memory) mkdirSync(dirname(dsn.filename), { recursive: true });
    db = new Database(dsn.filename, { timeout: SQLITE_BUSY_TIMEOUT_MS });
    db.pragma('journal_mode = WAL');
    return { db, value: setup(db) };
  } catch (err) {
    try {
      db?.close();
    } catch {
      // the open failure is the one worth reporting
    }
    throw err;
  }
}

/**
 * A small mysql2 pool for one store. The pool is created by {@link MysqlPool.open}, not the
 * constructor: a mysql2 pool runs a timer that would keep the process alive for a store that is
 * never used.
 */
class MysqlPool {
  readonly location: string;
  readonly #config: PoolOptions;
  #pool: Pool | undefined;
  #ended = false;

  constructor(dsn: MysqlDsn, username: string | undefined, password: string | undefined) {
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

  get isOpen(): boolean {
    return this.#pool !== undefined;
  }

  /**
   * Creates the pool (no connection yet).
   * @throws ConfigError for an option mysql2 refuses, such as an unknown charset.
   */
  open(): void {
    if (this.#pool) return;
    try {
      this.#pool = mysql.createPool(this.#config);
      this.#ended = false;
    } catch (err) {
      throw new ConfigError(`[pdo] dsn: ${describeDbError(err)}`);
    }
  }

  /**
   * Runs one statement; on a connection dropped under it, runs it once more on a fresh
   * connection. Rejects with the driver's error.
   */
  async run<T extends RowDataPacket[] | ResultSetHeader>(sql: string, values: unknown[]): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const pool = this.#pool;
      if (!pool) throw new Error('the MySQL pool is not open');
      try {
        const [result] = await pool.execute<T>({ sql, values, timeout: MYSQL_QUERY_TIMEOUT_MS });
        return result;
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if (attempt === 0 && typeof code === 'string' && RETRYABLE.has(code) && !this.#ended) continue;
        throw err;
      }
    }
  }

  /** Ends the pool once its statements have finished; `open()` may create a new one later. */
  async end(): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    this.#ended = true;
    await pool?.end();
  }
}

/**
 * A store on MySQL: one {@link MysqlPool}, statements run with the store's error class, and the
 * start-up every table gets.
 */
export abstract class MysqlStore extends SqlStore {
  readonly location: string;
  private readonly pool: MysqlPool;

  constructor(
    ErrorClass: StoreErrorClass,
    noun: string,
    dsn: MysqlDsn,
    username: string | undefined,
    password: string | undefined,
  ) {
    super(ErrorClass, noun);
    this.secret = password || undefined;
    this.pool = new MysqlPool(dsn, username, password);
    this.location = this.pool.location;
  }

  /** Runs one statement; every failure is the store's error, `what` saying what was being done. */
  protected async run<T extends RowDataPacket[] | ResultSetHeader>(what: string, sql: string, values: unknown[]): Promise<T> {
    if (this.state === 'closed' || !this.pool.isOpen) this.checkOpen();
    try {
      return await this.pool.run<T>(sql, values);
    } catch (err) {
      throw this.fail(what, err);
    }
  }

  /**
   * `init()` for a store of one table: opens the pool, creates `table` with `createSql` when it
   * does not exist (checked first, so that an account without CREATE privilege can use an
   * existing table), then reads `columns` from it, so a table lacking one fails now, at start,
   * rather than at its first use. A failure ends the pool again: its timer would keep the
   * process alive.
   */
  /**
   * Creates the table if missing, adds the `added` columns an older table lacks (two processes
   * adding one at once: the loser's "duplicate column" is ignored), then checks every column.
   */
  protected async openTable(table: string, createSql: string, columns: string, added: ReadonlyArray<{ column: string; ddl: string }> = []): Promise<void> {
    if (this.state === 'open') return;
    if (this.state === 'closed') this.checkOpen();
    this.pool.open();
    try {
      const exists = await this.run<RowDataPacket[]>(
        'init',
        'SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?',
        [table],
      );
      if (Number(exists[0]?.n) === 0) await this.run<ResultSetHeader>(`create table ${table}`, createSql, []);
      for (const { column, ddl } of added) {
        const has = await this.run<RowDataPacket[]>(
          'init',
          'SELECT COUNT(*) AS n FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?',
          [table, column],
        );
        if (Number(has[0]?.n) > 0) continue;
        await this.run<ResultSetHeader>(`add column ${column} to ${table}`, `ALTER TABLE \`${table}\` ADD COLUMN ${ddl}`, []).catch((err: unknown) => {
          if ((err as { cause?: { errno?: number } }).cause?.errno !== 1060) throw err; // ER_DUP_FIELDNAME
        });
      }
      await this.run<RowDataPacket[]>(`check table ${table}`, `SELECT ${columns} FROM \`${table}\` LIMIT 0`, []);
    } catch (err) {
      await this.pool.end().catch(() => {});
      throw err;
    }
    this.state = 'open';
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    try {
      await this.pool.end();
    } catch (err) {
      throw this.fail('close', err);
    }
  }
}
