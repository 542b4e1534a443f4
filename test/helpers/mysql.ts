import mysql from 'mysql2/promise';

/**
 * The MySQL/MariaDB server integration tests use. Outside CI a missing server skips those tests
 * (with a visible notice); under CI (`process.env.CI` set) they must run, so a missing server
 * fails them.
 */
export const mysqlTestConfig = {
  /** @defaultValue '127.0.0.1' (MEGA_TEST_MYSQL_HOST) */
  host: process.env.MEGA_TEST_MYSQL_HOST || '127.0.0.1',
  /** @defaultValue 3306 (MEGA_TEST_MYSQL_PORT) */
  port: Number(process.env.MEGA_TEST_MYSQL_PORT || 3306),
  /** @defaultValue 'root' (MEGA_TEST_MYSQL_USER) */
  user: process.env.MEGA_TEST_MYSQL_USER || 'root',
  /** @defaultValue '' (MEGA_TEST_MYSQL_PASSWORD) */
  password: process.env.MEGA_TEST_MYSQL_PASSWORD ?? '',
  /** @defaultValue 'test' (MEGA_TEST_MYSQL_DATABASE) */
  database: process.env.MEGA_TEST_MYSQL_DATABASE || 'test',
} as const;

/** `[pdo] dsn` for {@link mysqlTestConfig}. */
export const mysqlTestDsn = `mysql:host=${mysqlTestConfig.host};port=${mysqlTestConfig.port};dbname=${mysqlTestConfig.database}`;

/** For skip notices: `root@127.0.0.1:3306/test`. */
export const mysqlTestTarget = `${mysqlTestConfig.user}@${mysqlTestConfig.host}:${mysqlTestConfig.port}/${mysqlTestConfig.database}`;

let probe: Promise<boolean> | undefined;

/**
 * Whether the MySQL tests should run: true when the server answers. When it does not, false
 * outside CI (skip the tests: `t.skip(\`MySQL not reachable at ${mysqlTestTarget}\`)`), and
 * under CI a rejection with the connection error, so the suite fails instead of passing empty.
 */
export function mysqlAvailable(): Promise<boolean> {
  probe ??= (async () => {
    try {
      const conn = await mysql.createConnection({ ...mysqlTestConfig, connectTimeout: 2000 });
      await conn.end();
      return true;
    } catch (err) {
      if (process.env.CI) {
        throw new Error(`MySQL not reachable at ${mysqlTestTarget} and CI is set: ${(err as Error).message}`);
      }
      return false;
    }
  })();
  return probe;
}

/** A connection for test setup and checks (DDL, SHOW CREATE TABLE, DROP TABLE). Close it. */
export function mysqlTestConnection(): Promise<mysql.Connection> {
  return mysql.createConnection({ ...mysqlTestConfig, connectTimeout: 2000, charset: 'utf8mb4' });
}

/** A table prefix unique to this run, so parallel runs and leftovers never collide. */
export function uniqueTablePrefix(): string {
  return `t${process.pid.toString(36)}${Math.random().toString(36).slice(2, 8)}_`;
}

/** Drops every table whose name starts with `prefix` (a daemon's templates, ledger, tasks). */
export async function dropTablesWithPrefix(prefix: string): Promise<void> {
  if (!/^\w+$/.test(prefix)) throw new Error(`not a table prefix: ${prefix}`);
  const db = await mysqlTestConnection();
  try {
    const [rows] = await db.query(`SHOW TABLES LIKE '${prefix}%'`);
    for (const r of rows as Array<Record<string, string>>) await db.query(`DROP TABLE IF EXISTS \`${Object.values(r)[0]}\``);
  } finally {
    await db.end();
  }
}
