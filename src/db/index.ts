/**
 * The database behind `[pdo] dsn`, shared by the template store and the task store: DSN
 * parsing, SQLite and MySQL connections, table names and store errors.
 */
export { parseDsn, type ParsedDsn, type MysqlDsn, type SqliteDsn } from './dsn.js';
export {
  tableName,
  textColumn,
  unixNow,
  SqlStore,
  openSqlite,
  sqliteLocation,
  MysqlStore,
  type StoreErrorClass,
} from './sql.js';
