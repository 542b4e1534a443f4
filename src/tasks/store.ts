import type Database from 'better-sqlite3';
import type { ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { TaskStoreError } from '../errors.js';
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
 * The table of bulk tasks, `{table_prefix}task` (default `mega_task`), on the same `[pdo] dsn`
 * as the templates: any process with the config can see every task's progress.
 *
 * A running task is owned by one process (`owner` = `host:pid`); the owner writes its progress
 * several times a second with {@link TaskStore.saveProgress} and `heartbeat_at`. Every change of
 * status is a compare-and-set on (status, owner), so two processes can never both run a task,
 * and a `pause` from another shell is never overwritten by the runner.
 */

export type TaskStatus = 'pending' | 'running' | 'done' | 'failed' | 'paused' | 'stopped';

export const TASK_STATUSES: readonly TaskStatus[] = ['pending', 'running', 'done', 'failed', 'paused', 'stopped'];

export interface TaskRow {
  id: number;
  /** The template key (`tmpl_key`). */
  key: string;
  /** A label for people (`--name`, default the source file's name). */
  name: string;
  /** The normalised recipient list the task runs from. */
  file: string;
  /** The file given to `create`, for information. */
  source: string;
  /** SHA-256 (hex) of {@link file}. */
  checksum: string;
  /** Random, chosen at create: part of every msgid, so two tasks never share a client_msg_id. */
  nonce: string;
  total: number;
  success: number;
  fail: number;
  /** Every recipient below this index is finished (answered and counted). */
  position: number;
  /** Recipients above `position` that are finished too (ascending). */
  doneAbove: number[];
  status: TaskStatus;
  /** Why it is paused, stopped or failed ('' otherwise). */
  message: string;
  /** The failure report (CSV: openid, errcode, errmsg). */
  report: string;
  /** Bytes of {@link report} that belong to the counted failures; a run truncates anything after. */
  reportSize: number;
  /** `host:pid` of the process running it, '' when none. */
  owner: string;
  /** When the owner last wrote (ms since the epoch). */
  heartbeatAt: number;
  /** Unix seconds; 0 = never. */
  createdAt: number;
  updatedAt: number;
  startedAt: number;
  finishedAt: number;
}

export interface NewTask {
  key: string;
  name: string;
  file: string;
  source: string;
  checksum: string;
  nonce: string;
  total: number;
  report: string;
  reportSize: number;
}

/** What a runner saves, all in one statement: the counts and the set of finished recipients always agree. */
export interface TaskProgress {
  success: number;
  fail: number;
  position: number;
  doneAbove: readonly number[];
  reportSize: number;
}

/** The part of a row another process may change under a runner. */
export interface TaskControl {
  status: TaskStatus;
  message: string;
  owner: string;
}

export interface TaskTransition {
  status: TaskStatus;
  /** @defaultValue unchanged */
  owner?: string;
  /** @defaultValue unchanged */
  message?: string;
  /** Set started_at to now. */
  started?: boolean;
  /** Set finished_at to now. */
  finished?: boolean;
  /** Also save this progress in the same statement. */
  progress?: TaskProgress;
}

export interface TaskStore {
  readonly kind: 'sqlite' | 'mysql';
  /** `sqlite /abs/path.db` or `mysql host:port/db`; never holds a password. */
  readonly location: string;
  readonly table: string;
  /** Connects and creates the table if missing (an existing one is used as is). Idempotent. */
  init(): Promise<void>;
  /** Inserts a task (status `pending`, nothing done) and returns it with its id. */
  create(task: NewTask): Promise<TaskRow>;
  get(id: number): Promise<TaskRow | undefined>;
  /** Newest first; at most `limit`. @defaultValue no limit */
  list(limit?: number): Promise<TaskRow[]>;
  /**
   * Compare-and-set: applies `to` only if the task's status and owner are still `from`'s.
   * @returns whether it did.
   */
  transition(id: number, from: { status: TaskStatus; owner: string }, to: TaskTransition): Promise<boolean>;
  /**
   * Saves the owner's progress and heartbeat (only while `owner` still owns the task), and reads
   * back what others may have changed: a `pause` sets status `paused`.
   * @returns the task's status, message and owner after the save; undefined if it was deleted.
   */
  saveProgress(id: number, owner: string, progress: TaskProgress): Promise<TaskControl | undefined>;
  /** Releases the connection(s). Idempotent. */
  close(): Promise<void>;
}

export interface TaskStoreOptions {
  /** `[pdo] dsn`. */
  dsn: string;
  username?: string;
  password?: string;
  /** @defaultValue 'mega_' */
  tablePrefix?: string;
  /** Directory a relative `sqlite:` path is resolved against. @defaultValue process.cwd() */
  baseDir?: string;
}

const TABLE_SUFFIX = 'task';
const COLUMNS =
  'id, tmpl_key, name, file, source, checksum, nonce, total, success, fail, position, done_above, status, message, ' +
  'report, report_size, owner, heartbeat_at, created_at, updated_at, started_at, finished_at';
const NAME_MAX = 255;
const PATH_MAX = 1024;

/**
 * Creates the store named by the DSN. Does no I/O: call {@link TaskStore.init}.
 * @throws ConfigError for a bad DSN or table prefix.
 */
export function openTaskStore(options: TaskStoreOptions): TaskStore {
  const table = tableName(options.tablePrefix, TABLE_SUFFIX);
  const dsn = parseDsn(options.dsn, options.baseDir);
  return dsn.driver === 'sqlite' ? new SqliteTaskStore(dsn, table) : new MysqlTaskStore(dsn, table, options.username, options.password);
}

// ------------------------------------------------------------------ shared

/**
 * `done_above` as text: ascending indexes with runs written as ranges, `5,7-120,122`. A slow
 * answer holds `position` back while later ones finish: the runs keep the text as short as the
 * number of gaps (about a window), however many recipients finished meanwhile.
 */
export function encodeDoneAbove(list: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < list.length; ) {
    let j = i;
    while (j + 1 < list.length && list[j + 1] === list[j]! + 1) j++;
    parts.push(j === i ? String(list[i]) : `${list[i]}-${list[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

export function decodeDoneAbove(text: string): number[] {
  if (text === '') return [];
  const out: number[] = [];
  for (const part of text.split(',')) {
    const m = /^(\d{1,15})(?:-(\d{1,15}))?$/.exec(part);
    const from = m ? Number(m[1]) : NaN;
    const to = m?.[2] === undefined ? from : Number(m[2]);
    if (!m || to < from || (out.length > 0 && from <= out[out.length - 1]!)) {
      throw new TaskStoreError(`done_above holds ${JSON.stringify(part.slice(0, 20))}, not an ascending index or range`);
    }
    for (let i = from; i <= to; i++) out.push(i);
  }
  return out;
}

function toRow(r: Record<string, unknown>): TaskRow {
  const status = text(r.status) as TaskStatus;
  return {
    id: Number(r.id),
    key: text(r.tmpl_key),
    name: text(r.name),
    file: text(r.file),
    source: text(r.source),
    checksum: text(r.checksum),
    nonce: text(r.nonce),
    total: Number(r.total) || 0,
    success: Number(r.success) || 0,
    fail: Number(r.fail) || 0,
    position: Number(r.position) || 0,
    doneAbove: decodeDoneAbove(text(r.done_above)),
    status: TASK_STATUSES.includes(status) ? status : 'failed',
    message: text(r.message),
    report: text(r.report),
    reportSize: Number(r.report_size) || 0,
    owner: text(r.owner),
    heartbeatAt: Number(r.heartbeat_at) || 0,
    createdAt: Number(r.created_at) || 0,
    updatedAt: Number(r.updated_at) || 0,
    startedAt: Number(r.started_at) || 0,
    finishedAt: Number(r.finished_at) || 0,
  };
}

function checkNew(t: NewTask): void {
  if (typeof t.key !== 'string' || t.key.length === 0 || t.key.length > 32) throw new RangeError('task key must be 1-32 characters');
  if ([...t.name].length > NAME_MAX) throw new RangeError(`task name must be at most ${NAME_MAX} characters`);
  for (const [what, p] of [['file', t.file], ['source', t.source], ['report', t.report]] as const) {
    if ([...p].length > PATH_MAX) throw new RangeError(`task ${what} path must be at most ${PATH_MAX} characters`);
  }
  if (!Number.isSafeInteger(t.total) || t.total < 1) throw new RangeError('task total must be a positive integer');
}

/** SET clause and values of a transition (column names are the same on both databases). */
function transitionSet(to: TaskTransition, q: (c: string) => string): { set: string; values: unknown[] } {
  const parts = [`${q('status')} = ?`, `${q('updated_at')} = ?`];
  const values: unknown[] = [to.status, unixNow()];
  if (to.owner !== undefined) {
    parts.push(`${q('owner')} = ?`, `${q('heartbeat_at')} = ?`);
    values.push(to.owner, Date.now());
  }
  if (to.message !== undefined) {
    parts.push(`${q('message')} = ?`);
    values.push(to.message);
  }
  if (to.started) {
    parts.push(`${q('started_at')} = ?`);
    values.push(unixNow());
  }
  if (to.finished) {
    parts.push(`${q('finished_at')} = ?`);
    values.push(unixNow());
  }
  if (to.progress) {
    const p = progressSet(to.progress, q);
    parts.push(p.set);
    values.push(...p.values);
  }
  return { set: parts.join(', '), values };
}

function progressSet(p: TaskProgress, q: (c: string) => string): { set: string; values: unknown[] } {
  return {
    set: ['success', 'fail', 'position', 'done_above', 'report_size'].map((c) => `${q(c)} = ?`).join(', '),
    values: [p.success, p.fail, p.position, encodeDoneAbove(p.doneAbove), p.reportSize],
  };
}

// ------------------------------------------------------------------ SQLite

const sq = (c: string): string => `"${c}"`;

class SqliteTaskStore extends SqlStore implements TaskStore {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  #db: Database.Database | undefined;

  constructor(
    private readonly dsn: SqliteDsn,
    readonly table: string,
  ) {
    super(TaskStoreError, 'task store');
    this.location = sqliteLocation(dsn);
  }

  get #t(): string {
    return `"${this.table}"`;
  }

  async init(): Promise<void> {
    if (this.state === 'open') return;
    if (this.state === 'closed') this.checkOpen();
    try {
      // WAL: `task show` in another shell reads while the runner writes several times a second.
      const { db } = openSqlite(this.dsn, (db) => {
        db.exec(`CREATE TABLE IF NOT EXISTS ${this.#t} (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  tmpl_key char(32) NOT NULL,
  name varchar(255) NOT NULL DEFAULT '',
  file varchar(1024) NOT NULL,
  source varchar(1024) NOT NULL DEFAULT '',
  checksum char(64) NOT NULL,
  nonce varchar(16) NOT NULL,
  total int NOT NULL DEFAULT 0,
  success int NOT NULL DEFAULT 0,
  fail int NOT NULL DEFAULT 0,
  position int NOT NULL DEFAULT 0,
  done_above text NOT NULL DEFAULT '',
  status varchar(16) NOT NULL DEFAULT 'pending',
  message text NOT NULL DEFAULT '',
  report varchar(1024) NOT NULL DEFAULT '',
  report_size bigint NOT NULL DEFAULT 0,
  owner varchar(255) NOT NULL DEFAULT '',
  heartbeat_at bigint NOT NULL DEFAULT 0,
  created_at int NOT NULL DEFAULT 0,
  updated_at int NOT NULL DEFAULT 0,
  started_at int NOT NULL DEFAULT 0,
  finished_at int NOT NULL DEFAULT 0
)`);
        db.prepare(`SELECT ${COLUMNS} FROM ${this.#t} LIMIT 0`).all();
      });
      this.#db = db;
      this.state = 'open';
    } catch (err) {
      throw this.fail('open', err);
    }
  }

  #do<T>(what: string, fn: (db: Database.Database) => T): T {
    this.checkOpen();
    try {
      return fn(this.#db!);
    } catch (err) {
      throw this.fail(what, err);
    }
  }

  async create(task: NewTask): Promise<TaskRow> {
    checkNew(task);
    return this.#do('create task', (db) => {
      const now = unixNow();
      const r = db
        .prepare(
          `INSERT INTO ${this.#t} (tmpl_key, name, file, source, checksum, nonce, total, done_above, status, message, report, report_size, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, '', 'pending', '', ?, ?, ?, ?)`,
        )
        .run(task.key, task.name, task.file, task.source, task.checksum, task.nonce, task.total, task.report, task.reportSize, now, now);
      const row = db.prepare(`SELECT ${COLUMNS} FROM ${this.#t} WHERE id = ?`).get(Number(r.lastInsertRowid)) as Record<string, unknown>;
      return toRow(row);
    });
  }

  async get(id: number): Promise<TaskRow | undefined> {
    return this.#do(`get task ${id}`, (db) => {
      const r = db.prepare(`SELECT ${COLUMNS} FROM ${this.#t} WHERE id = ?`).get(id) as Record<string, unknown> | undefined;
      return r === undefined ? undefined : toRow(r);
    });
  }

  async list(limit?: number): Promise<TaskRow[]> {
    return this.#do('list tasks', (db) => {
      const sql = `SELECT ${COLUMNS} FROM ${this.#t} ORDER BY id DESC${limit === undefined ? '' : ` LIMIT ${Math.max(0, Math.floor(limit))}`}`;
      return (db.prepare(sql).all() as Record<string, unknown>[]).map(toRow);
    });
  }

  async transition(id: number, from: { status: TaskStatus; owner: string }, to: TaskTransition): Promise<boolean> {
    return this.#do(`update task ${id}`, (db) => {
      const { set, values } = transitionSet(to, sq);
      const r = db.prepare(`UPDATE ${this.#t} SET ${set} WHERE id = ? AND status = ? AND owner = ?`).run(...values, id, from.status, from.owner);
      return r.changes === 1;
    });
  }

  async saveProgress(id: number, owner: string, progress: TaskProgress): Promise<TaskControl | undefined> {
    return this.#do(`save progress of task ${id}`, (db) => {
      const { set, values } = progressSet(progress, sq);
      return db.transaction(() => {
        db.prepare(`UPDATE ${this.#t} SET ${set}, updated_at = ?, heartbeat_at = ? WHERE id = ? AND owner = ?`).run(
          ...values,
          unixNow(),
          Date.now(),
          id,
          owner,
        );
        const r = db.prepare(`SELECT status, message, owner FROM ${this.#t} WHERE id = ?`).get(id) as Record<string, unknown> | undefined;
        return r === undefined ? undefined : { status: text(r.status) as TaskStatus, message: text(r.message), owner: text(r.owner) };
      })();
    });
  }

  async close(): Promise<void> {
    const db = this.#db;
    this.state = 'closed';
    this.#db = undefined;
    if (!db) return;
    try {
      db.close();
    } catch (err) {
      throw this.fail('close', err);
    }
  }
}

// ------------------------------------------------------------------ MySQL

const mq = (c: string): string => `\`${c}\``;
const MYSQL_COLUMNS = COLUMNS.split(', ').map(mq).join(', ');

class MysqlTaskStore extends MysqlStore implements TaskStore {
  readonly kind = 'mysql' as const;

  constructor(
    dsn: MysqlDsn,
    readonly table: string,
    username: string | undefined,
    password: string | undefined,
  ) {
    super(TaskStoreError, 'task store', dsn, username, password);
  }

  get #t(): string {
    return `\`${this.table}\``;
  }

  async init(): Promise<void> {
    // TEXT columns cannot have a DEFAULT on older servers: every insert gives them a value.
    await this.openTable(
      this.table,
      `CREATE TABLE IF NOT EXISTS ${this.#t} (
  \`id\` int unsigned NOT NULL AUTO_INCREMENT,
  \`tmpl_key\` char(32) NOT NULL COMMENT '模板key',
  \`name\` varchar(255) NOT NULL DEFAULT '' COMMENT '任务名称',
  \`file\` varchar(1024) NOT NULL COMMENT 'normalised recipient list',
  \`source\` varchar(1024) NOT NULL DEFAULT '' COMMENT 'file given to create',
  \`checksum\` char(64) NOT NULL,
  \`nonce\` varchar(16) NOT NULL,
  \`total\` int unsigned NOT NULL DEFAULT '0' COMMENT '发送数量',
  \`success\` int unsigned NOT NULL DEFAULT '0' COMMENT '成功数',
  \`fail\` int unsigned NOT NULL DEFAULT '0' COMMENT '失败数',
  \`position\` int unsigned NOT NULL DEFAULT '0',
  \`done_above\` mediumtext NOT NULL,
  \`status\` varchar(16) NOT NULL DEFAULT 'pending',
  \`message\` text NOT NULL,
  \`report\` varchar(1024) NOT NULL DEFAULT '',
  \`report_size\` bigint unsigned NOT NULL DEFAULT '0',
  \`owner\` varchar(255) NOT NULL DEFAULT '',
  \`heartbeat_at\` bigint NOT NULL DEFAULT '0',
  \`created_at\` int NOT NULL DEFAULT '0',
  \`updated_at\` int NOT NULL DEFAULT '0',
  \`started_at\` int NOT NULL DEFAULT '0',
  \`finished_at\` int NOT NULL DEFAULT '0',
  PRIMARY KEY (\`id\`)
) DEFAULT CHARSET=utf8mb4`,
      MYSQL_COLUMNS,
    );
  }

  async create(task: NewTask): Promise<TaskRow> {
    checkNew(task);
    this.checkOpen();
    const now = unixNow();
    const r = await this.run<ResultSetHeader>(
      'create task',
      `INSERT INTO ${this.#t} (\`tmpl_key\`, \`name\`, \`file\`, \`source\`, \`checksum\`, \`nonce\`, \`total\`, \`done_above\`, \`status\`, \`message\`, \`report\`, \`report_size\`, \`created_at\`, \`updated_at\`)
       VALUES (?, ?, ?, ?, ?, ?, ?, '', 'pending', '', ?, ?, ?, ?)`,
      [task.key, task.name, task.file, task.source, task.checksum, task.nonce, task.total, task.report, task.reportSize, now, now],
    );
    const row = await this.get(r.insertId);
    if (!row) throw new TaskStoreError(`${this.location}: task ${r.insertId} vanished right after its insert`);
    return row;
  }

  async get(id: number): Promise<TaskRow | undefined> {
    this.checkOpen();
    const rows = await this.run<RowDataPacket[]>(`get task ${id}`, `SELECT ${MYSQL_COLUMNS} FROM ${this.#t} WHERE \`id\` = ?`, [id]);
    return rows[0] === undefined ? undefined : toRow(rows[0]);
  }

  async list(limit?: number): Promise<TaskRow[]> {
    this.checkOpen();
    const rows = await this.run<RowDataPacket[]>(
      'list tasks',
      `SELECT ${MYSQL_COLUMNS} FROM ${this.#t} ORDER BY \`id\` DESC${limit === undefined ? '' : ` LIMIT ${Math.max(0, Math.floor(limit))}`}`,
      [],
    );
    return rows.map(toRow);
  }

  async transition(id: number, from: { status: TaskStatus; owner: string }, to: TaskTransition): Promise<boolean> {
    this.checkOpen();
    const { set, values } = transitionSet(to, mq);
    const r = await this.run<ResultSetHeader>(
      `update task ${id}`,
      `UPDATE ${this.#t} SET ${set} WHERE \`id\` = ? AND \`status\` = ? AND \`owner\` = ?`,
      [...values, id, from.status, from.owner],
    );
    return r.affectedRows === 1;
  }

  async saveProgress(id: number, owner: string, progress: TaskProgress): Promise<TaskControl | undefined> {
    this.checkOpen();
    const { set, values } = progressSet(progress, mq);
    await this.run<ResultSetHeader>(
      `save progress of task ${id}`,
      `UPDATE ${this.#t} SET ${set}, \`updated_at\` = ?, \`heartbeat_at\` = ? WHERE \`id\` = ? AND \`owner\` = ?`,
      [...values, unixNow(), Date.now(), id, owner],
    );
    const rows = await this.run<RowDataPacket[]>(
      `read task ${id}`,
      `SELECT \`status\`, \`message\`, \`owner\` FROM ${this.#t} WHERE \`id\` = ?`,
      [id],
    );
    const r = rows[0];
    return r === undefined ? undefined : { status: text(r.status) as TaskStatus, message: text(r.message), owner: text(r.owner) };
  }
}
