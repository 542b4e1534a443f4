import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ConfigError } from '../../src/errors.js';
import { openTaskStore, ProgressTracker, TaskStoreError, type NewTask, type TaskStore } from '../../src/tasks/index.js';
import { decodeDoneAbove, encodeDoneAbove } from '../../src/tasks/store.js';
import { tempDir } from '../helpers/processes.js';
import { mysqlAvailable, mysqlTestConfig, mysqlTestConnection, mysqlTestDsn, mysqlTestTarget, uniqueTablePrefix } from '../helpers/mysql.js';

const NEW: NewTask = {
  key: 'order_paid',
  name: '双十一 users.csv',
  file: '/var/mega/tasks/task-abc.recipients.jsonl',
  source: '/home/ops/users.csv',
  checksum: 'a'.repeat(64),
  nonce: 'abc123xy',
  total: 1000,
  report: '/var/mega/tasks/task-abc.failures.csv',
  reportSize: 22,
};

/** The same behaviour on both databases. */
function storeContract(open: () => Promise<TaskStore>): void {
  it('creates a pending task with nothing done, and reads it back', async () => {
    const store = await open();
    const t = await store.create(NEW);
    assert.ok(t.id > 0);
    assert.equal(t.status, 'pending');
    assert.equal(t.key, 'order_paid');
    assert.equal(t.name, '双十一 users.csv');
    assert.equal(t.total, 1000);
    assert.equal(t.success + t.fail + t.position, 0);
    assert.deepEqual(t.doneAbove, []);
    assert.equal(t.reportSize, 22);
    assert.equal(t.owner, '');
    assert.ok(Math.abs(t.createdAt - Date.now() / 1000) < 5);
    assert.deepEqual(await store.get(t.id), t);
    assert.equal(await store.get(t.id + 1000), undefined);
    const t2 = await store.create({ ...NEW, name: 'second' });
    assert.ok(t2.id > t.id);
    assert.deepEqual(
      (await store.list()).slice(0, 2).map((x) => x.id),
      [t2.id, t.id],
      'newest first',
    );
    assert.equal((await store.list(1)).length, 1);
    await store.close();
  });

  it('claims with a compare-and-set on (status, owner): only one process wins', async () => {
    const store = await open();
    const t = await store.create(NEW);
    const results = await Promise.all([
      store.transition(t.id, { status: 'pending', owner: '' }, { status: 'running', owner: 'hostA:1', started: true }),
      store.transition(t.id, { status: 'pending', owner: '' }, { status: 'running', owner: 'hostB:2', started: true }),
    ]);
    assert.deepEqual(results.sort(), [false, true]);
    const row = (await store.get(t.id))!;
    assert.equal(row.status, 'running');
    assert.ok(row.owner === 'hostA:1' || row.owner === 'hostB:2');
    assert.ok(row.startedAt > 0);
    assert.ok(Date.now() - row.heartbeatAt < 5000);
    await store.close();
  });

  it('saves progress only for the owner, and reads back a pause made by another process', async () => {
    const store = await open();
    const t = await store.create(NEW);
    assert.ok(await store.transition(t.id, { status: 'pending', owner: '' }, { status: 'running', owner: 'me:1' }));
    const tracker = new ProgressTracker(1000);
    for (const i of [0, 1, 2, 5, 7]) tracker.finish(i, i !== 5);
    let control = await store.saveProgress(t.id, 'me:1', tracker.snapshot(80));
    assert.deepEqual(control, { status: 'running', message: '', owner: 'me:1' });
    let row = (await store.get(t.id))!;
    assert.deepEqual([row.success, row.fail, row.position, row.doneAbove, row.reportSize], [4, 1, 3, [5, 7], 80]);
    // the saved state rebuilds the same tracker
    const again = new ProgressTracker(row.total, row);
    assert.equal(again.finished, 5);
    assert.ok(again.isFinished(7) && !again.isFinished(6));

    // `task pause` from another shell: status changes, the owner stays until the runner lets go
    assert.ok(await store.transition(t.id, { status: 'running', owner: 'me:1' }, { status: 'paused', message: 'paused by ops' }));
    tracker.finish(3, true);
    control = await store.saveProgress(t.id, 'me:1', tracker.snapshot(80));
    assert.deepEqual(control, { status: 'paused', message: 'paused by ops', owner: 'me:1' });
    row = (await store.get(t.id))!;
    assert.equal(row.status, 'paused', 'a save never overwrites the status');
    assert.equal(row.position, 4);

    // a process that is not the owner saves nothing
    control = await store.saveProgress(t.id, 'intruder:9', new ProgressTracker(1000).snapshot(0));
    assert.equal(control!.owner, 'me:1');
    assert.equal((await store.get(t.id))!.position, 4);

    // the runner's last word: status and progress in one statement
    tracker.finish(4, false);
    assert.equal(
      await store.transition(t.id, { status: 'running', owner: 'me:1' }, { status: 'stopped', owner: '', progress: tracker.snapshot(99) }),
      false,
      'stale status: refused',
    );
    assert.ok(await store.transition(t.id, { status: 'paused', owner: 'me:1' }, { status: 'paused', owner: '', progress: tracker.snapshot(99) }));
    row = (await store.get(t.id))!;
    assert.deepEqual([row.status, row.owner, row.position, row.fail, row.reportSize, row.message], ['paused', '', 6, 2, 99, 'paused by ops']);
    assert.equal(await store.saveProgress(t.id + 999, 'me:1', tracker.snapshot(0)), undefined, 'a deleted task');
    await store.close();
  });

  it('keeps a large set of finished indexes above the position', async () => {
    const store = await open();
    const t = await store.create({ ...NEW, total: 1_000_000 });
    assert.ok(await store.transition(t.id, { status: 'pending', owner: '' }, { status: 'running', owner: 'me:1' }));
    const tracker = new ProgressTracker(1_000_000);
    for (let i = 1; i < 20_000; i += 2) tracker.finish(i, true);
    await store.saveProgress(t.id, 'me:1', tracker.snapshot(22));
    const row = (await store.get(t.id))!;
    assert.equal(row.doneAbove.length, 10_000);
    assert.equal(row.doneAbove[9999], 19_999);
    await store.close();
  });

  it('refuses bad rows and use before init / after close', async () => {
    const store = await open();
    await assert.rejects(store.create({ ...NEW, key: '' }), RangeError);
    await assert.rejects(store.create({ ...NEW, key: 'k'.repeat(33) }), RangeError);
    await assert.rejects(store.create({ ...NEW, total: 0 }), RangeError);
    await store.close();
    await store.close();
    await assert.rejects(store.get(1), (e: unknown) => e instanceof TaskStoreError && /closed/.test(e.message));
  });
}

describe('done_above encoding', () => {
  it('writes runs as ranges and reads them back', () => {
    assert.equal(encodeDoneAbove([]), '');
    assert.equal(encodeDoneAbove([5]), '5');
    assert.equal(encodeDoneAbove([5, 7, 8, 9, 10, 12, 14, 15]), '5,7-10,12,14-15');
    const many = Array.from({ length: 100_000 }, (_, i) => 1000 + i).filter((i) => i % 40_000 !== 0);
    const text = encodeDoneAbove(many);
    assert.ok(text.length < 40, text);
    assert.deepEqual(decodeDoneAbove(text), many);
    assert.deepEqual(decodeDoneAbove('5,7-10,12'), [5, 7, 8, 9, 10, 12]);
    for (const bad of ['x', '5,4', '3-1', '1,,2', '2,2', '1-3,3']) assert.throws(() => decodeDoneAbove(bad), TaskStoreError, bad);
  });
});

describe('task store: SQLite', () => {
  const dir = tempDir('mega-taskstore-');
  const dbFile = path.join(dir, 'data', 'mega.db');
  const open = async (): Promise<TaskStore> => {
    const s = openTaskStore({ dsn: `sqlite:${dbFile}`, tablePrefix: 'mega_' });
    await s.init();
    return s;
  };
  storeContract(open);

  it('creates {table_prefix}task beside the template table, in WAL mode', async () => {
    const s = openTaskStore({ dsn: 'sqlite:data/other.db', tablePrefix: 'shop_', baseDir: dir });
    assert.equal(s.table, 'shop_task');
    assert.equal(s.location, `sqlite ${path.join(dir, 'data', 'other.db')}`);
    await s.init();
    await s.init();
    await s.close();
    const db = new Database(path.join(dir, 'data', 'other.db'));
    const cols = (db.prepare('PRAGMA table_info(shop_task)').all() as Array<{ name: string }>).map((c) => c.name);
    db.close();
    for (const c of ['id', 'tmpl_key', 'name', 'file', 'total', 'success', 'fail', 'position', 'status', 'message', 'created_at', 'updated_at']) {
      assert.ok(cols.includes(c), `column ${c}`);
    }
  });

  it('refuses a bad prefix or dsn with a ConfigError', () => {
    assert.throws(() => openTaskStore({ dsn: 'sqlite:x.db', tablePrefix: 'a-b' }), ConfigError);
    assert.throws(() => openTaskStore({ dsn: 'pgsql:host=x' }), ConfigError);
  });

  it('an existing table that lacks a column fails init with a TaskStoreError', async () => {
    const f = path.join(dir, 'broken.db');
    const db = new Database(f);
    db.exec('CREATE TABLE mega_task (id INTEGER PRIMARY KEY, tmpl_key text)');
    db.close();
    await assert.rejects(openTaskStore({ dsn: `sqlite:${f}` }).init(), TaskStoreError);
  });
});

describe('task store: MySQL', async () => {
  const available = await mysqlAvailable();
  const prefix = uniqueTablePrefix();
  const open = async (): Promise<TaskStore> => {
    const s = openTaskStore({ dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, tablePrefix: prefix });
    await s.init();
    return s;
  };
  after(async () => {
    if (!available) return;
    const conn = await mysqlTestConnection();
    await conn.query(`DROP TABLE IF EXISTS \`${prefix}task\``);
    await conn.end();
  });

  if (!available) {
    it('needs MySQL', (t) => t.skip(`MySQL not reachable at ${mysqlTestTarget}`));
    return;
  }
  storeContract(open);

  it('creates the table with utf8mb4', async () => {
    (await open()).close();
    const conn = await mysqlTestConnection();
    const [rows] = await conn.query(`SHOW CREATE TABLE \`${prefix}task\``);
    await conn.end();
    const ddl = String((rows as Array<Record<string, unknown>>)[0]!['Create Table']);
    assert.match(ddl, /utf8mb4/);
    assert.match(ddl, /AUTO_INCREMENT/);
  });

  it('never puts the password in an error', async () => {
    const s = openTaskStore({ dsn: mysqlTestDsn, username: 'nobody_here', password: 'S3cret-pw', tablePrefix: prefix });
    await assert.rejects(s.init(), (e: unknown) => e instanceof TaskStoreError && !e.message.includes('S3cret-pw'));
    await s.close();
  });
});
