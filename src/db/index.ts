/**
 * The database behind `[pdo] dsn`, shared by the template store and the task store: DSN
 * parsing, SQLite and MySQL connections, table names and store errors.
 */
export { parseDsn, type ParsedDsn, type MysqlDsn, type SqliteDsn } from './dsn.js';
export {
  tableName,
  describeDbError,
  textColumn,
  unixNow,
  SqlStore,
  openSqlite,
  sqliteLocation,
  MysqlPool,
  MysqlStore,
  type StoreErrorClass,
} from './sql.js';
