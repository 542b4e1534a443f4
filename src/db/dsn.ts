import { isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors.js';

/**
 * PDO-style data source names, as the original's `[pdo] dsn` (`mysql:host=...;dbname=...`),
 * plus `sqlite:<path>` for the embedded default store.
 */

/** A parsed `mysql:` DSN. */
export interface MysqlDsn {
  readonly driver: 'mysql';
  /** @defaultValue 'localhost' (as PDO) */
  readonly host: string;
  /** @defaultValue 3306 */
  readonly port: number;
  /** From `unix_socket=`; when set, mysql2 connects through it and ignores host/port. */
  readonly socketPath: string | undefined;
  readonly database: string;
  /** Connection character set. @defaultValue 'utf8mb4' (templates hold Chinese text and emoji) */
  readonly charset: string;
}

/** A parsed `sqlite:` DSN. */
export interface SqliteDsn {
  readonly driver: 'sqlite';
  /** An absolute path, or `:memory:`. */
  readonly filename: string;
  readonly memory: boolean;
}

export type ParsedDsn = MysqlDsn | SqliteDsn;

// The keys PDO_MYSQL understands. Anything else is refused rather than ignored as PDO does,
// because a typo such as `prot=3307` would otherwise silently connect to the wrong server.
const MYSQL_KEYS = new Set(['host', 'port', 'dbname', 'unix_socket', 'charset']);

/**
 * Parses `[pdo] dsn`. Messages name `[pdo] dsn` and quote only the offending key or value,
 * never the whole string, so that nothing secret a user may have put there reaches a log.
 *
 * @param baseDir - directory a relative `sqlite:` path is resolved against.
 *   @defaultValue process.cwd()
 * @throws ConfigError for an unknown driver or bad syntax.
 */
export function parseDsn(dsn: string, baseDir: string = process.cwd()): ParsedDsn {
  if (typeof dsn !== 'string' || dsn.trim() === '') {
    throw new ConfigError('[pdo] dsn is empty; expected sqlite:<path> or mysql:host=...;dbname=...');
  }
  const colon = dsn.indexOf(':');
  const driver = colon < 0 ? '' : dsn.slice(0, colon).trim().toLowerCase();
  const rest = dsn.slice(colon + 1);
  if (driver === 'sqlite') return parseSqlite(rest, baseDir);
  if (driver === 'mysql') return parseMysql(rest);
  if (colon < 0 || !/^[a-z0-9_]+$/.test(driver)) {
    throw new ConfigError('[pdo] dsn must start with sqlite: or mysql:');
  }
  throw new ConfigError(`[pdo] dsn driver ${JSON.stringify(driver)} is not supported; use sqlite: or mysql:`);
}

function parseSqlite(rest: string, baseDir: string): SqliteDsn {
  const path = rest.trim();
  if (path === '') throw new ConfigError('[pdo] dsn sqlite: needs a file path (or :memory:)');
  if (path === ':memory:') return { driver: 'sqlite', filename: ':memory:', memory: true };
  if (path.includes('\0')) throw new ConfigError('[pdo] dsn sqlite: path contains a NUL byte');
  return { driver: 'sqlite', filename: isAbsolute(path) ? resolve(path) : resolve(baseDir, path), memory: false };
}

function parseMysql(rest: string): MysqlDsn {
  const values = new Map<string, string>();
  for (const segment of rest.split(';')) {
    if (segment.trim() === '') continue; // tolerate `;;` and a trailing `;`, as PDO does
    const eq = segment.indexOf('=');
    if (eq < 0) {
      throw new ConfigError(`[pdo] dsn: expected key=value, got ${JSON.stringify(segment.trim().slice(0, 32))}`);
    }
    const key = segment.slice(0, eq).trim().toLowerCase();
    const value = segment.slice(eq + 1).trim();
    if (key === 'user' || key === 'password') {
      throw new ConfigError(`[pdo] dsn must not hold ${key}=; set [pdo] username / [pdo] password instead`);
    }
    if (!MYSQL_KEYS.has(key)) {
      throw new ConfigError(
        `[pdo] dsn: unknown key ${JSON.stringify(key.slice(0, 32))} (expected ${[...MYSQL_KEYS].join(', ')})`,
      );
    }
    if (values.has(key)) throw new ConfigError(`[pdo] dsn: ${key}= given twice`);
    if (value === '') throw new ConfigError(`[pdo] dsn: ${key}= is empty`);
    values.set(key, value);
  }

  const database = values.get('dbname');
  if (database === undefined) throw new ConfigError('[pdo] dsn: mysql: needs dbname=');

  let port = 3306;
  const portText = values.get('port');
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) {
      throw new ConfigError(`[pdo] dsn: port must be an integer 1-65535, got ${JSON.stringify(portText.slice(0, 16))}`);
    }
  }

  const charset = values.get('charset') ?? 'utf8mb4';
  if (!/^[A-Za-z0-9_]+$/.test(charset)) {
    throw new ConfigError(`[pdo] dsn: charset ${JSON.stringify(charset.slice(0, 32))} is not a character set name`);
  }

  return {
    driver: 'mysql',
    host: values.get('host') ?? 'localhost',
    port,
    socketPath: values.get('unix_socket'),
    database,
    charset,
  };
}
