import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { parseDsn } from '../../src/db/dsn.js';
import { ConfigError } from '../../src/errors.js';

function configError(re: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'MEGA_ERR_CONFIG');
    assert.match(err.message, /\[pdo\] dsn/);
    assert.match(err.message, re);
    return true;
  };
}

describe('parseDsn', () => {
  it('parses a full mysql DSN', () => {
    assert.deepEqual(parseDsn('mysql:host=127.0.0.1;port=3307;dbname=mega;charset=utf8mb4'), {
      driver: 'mysql',
      host: '127.0.0.1',
      port: 3307,
      socketPath: undefined,
      database: 'mega',
      charset: 'utf8mb4',
    });
  });

  it('applies the defaults of the seed config (mysql:host=127.0.0.1;dbname=mega)', () => {
    assert.deepEqual(parseDsn('mysql:host=127.0.0.1;dbname=mega'), {
      driver: 'mysql',
      host: '127.0.0.1',
      port: 3306,
      socketPath: undefined,
      database: 'mega',
      charset: 'utf8mb4',
    });
    assert.equal((parseDsn('mysql:dbname=mega') as { host: string }).host, 'localhost');
  });

  it('accepts unix_socket, spaces around parts, a trailing semicolon and a capitalised driver', () => {
    assert.deepEqual(parseDsn('MySQL: unix_socket=/run/mysqld/mysqld.sock ; dbname = mega ;'), {
      driver: 'mysql',
      host: 'localhost',
      port: 3306,
      socketPath: '/run/mysqld/mysqld.sock',
      database: 'mega',
      charset: 'utf8mb4',
    });
  });

  it('parses sqlite paths: absolute, relative to baseDir, :memory:', () => {
    assert.deepEqual(parseDsn('sqlite:/var/lib/mega/t.db', '/ignored'), { driver: 'sqlite', filename: '/var/lib/mega/t.db', memory: false });
    assert.deepEqual(parseDsn('sqlite:../data/wechat.db', '/opt/mega/config'), {
      driver: 'sqlite',
      filename: '/opt/mega/data/wechat.db',
      memory: false,
    });
    assert.deepEqual(parseDsn('sqlite:data.db'), { driver: 'sqlite', filename: resolve(process.cwd(), 'data.db'), memory: false });
    assert.deepEqual(parseDsn('sqlite::memory:'), { driver: 'sqlite', filename: ':memory:', memory: true });
  });

  it('rejects unknown drivers and bad syntax with a message naming [pdo] dsn', () => {
    assert.throws(() => parseDsn(''), configError(/empty/));
    assert.throws(() => parseDsn('host=127.0.0.1;dbname=mega'), configError(/must start with sqlite: or mysql:/));
    assert.throws(() => parseDsn('pgsql:host=x;dbname=y'), configError(/driver "pgsql" is not supported/));
    assert.throws(() => parseDsn('sqlite:'), configError(/needs a file path/));
    assert.throws(() => parseDsn('mysql:host=127.0.0.1'), configError(/needs dbname=/));
    assert.throws(() => parseDsn('mysql:host=127.0.0.1;dbname'), configError(/expected key=value/));
    assert.throws(() => parseDsn('mysql:host=127.0.0.1;prot=3307;dbname=m'), configError(/unknown key "prot"/));
    assert.throws(() => parseDsn('mysql:host=a;host=b;dbname=m'), configError(/host= given twice/));
    assert.throws(() => parseDsn('mysql:host=;dbname=m'), configError(/host= is empty/));
    assert.throws(() => parseDsn('mysql:port=0;dbname=m'), configError(/port must be an integer 1-65535, got "0"/));
    assert.throws(() => parseDsn('mysql:port=65536;dbname=m'), configError(/port must be/));
    assert.throws(() => parseDsn('mysql:port=33o6;dbname=m'), configError(/port must be/));
    assert.throws(() => parseDsn('mysql:charset=utf8;x;dbname=m'), configError(/key=value/));
    assert.throws(() => parseDsn('mysql:charset=utf-8;dbname=m'), configError(/not a character set name/));
  });

  it('refuses a password in the DSN without repeating it', () => {
    assert.throws(
      () => parseDsn('mysql:host=h;dbname=m;password=hunter2'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.message, '[pdo] dsn must not hold password=; set [pdo] username / [pdo] password instead');
        assert.ok(!err.message.includes('hunter2'));
        return true;
      },
    );
  });
});
