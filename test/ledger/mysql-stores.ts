/** Ledger stores on the test MariaDB, each under a prefix of its own, all closed and dropped by `cleanup`. */
import { openLedgerStore, type LedgerStore } from '../../src/ledger/index.js';
import { dropTablesWithPrefix, mysqlTestConfig, mysqlTestDsn, uniqueTablePrefix } from '../helpers/mysql.js';

export function mysqlLedgerStores(): { open(): Promise<LedgerStore>; prefixOf(store: LedgerStore): string; cleanup(): Promise<void> } {
  const stores: LedgerStore[] = [];
  const prefixes: string[] = [];
  return {
    async open() {
      const prefix = uniqueTablePrefix();
      prefixes.push(prefix);
      const s = openLedgerStore({ dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, tablePrefix: prefix });
      stores.push(s);
      await s.init();
      return s;
    },
    /** The table prefix `store` was opened with. */
    prefixOf(store) {
      return prefixes[stores.indexOf(store)]!;
    },
    async cleanup() {
      for (const s of stores) await s.close();
      for (const p of prefixes) await dropTablesWithPrefix(p);
    },
  };
}
