/**
 * Faults a production host sees: the template database going away and coming back, the
 * WeChat API unreachable for a while, and logrotate (SIGHUP reopens the log file).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import type { Connection } from 'mysql2/promise';
import { encodePush, encodeSend, encodeTset } from '../../src/protocol/index.js';
import { mysqlAvailable, mysqlTestConfig, mysqlTestConnection, mysqlTestTarget, uniqueTablePrefix } from '../helpers/mysql.js';
import { spawnMega, stopChild, tempDir, writeIni } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, baseIni, eventually, startSimulator, startStack } from '../helpers/stack.js';
import { RawClient } from '../helpers/client.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import type { DaemonStatus } from '../../src/server/control-protocol.js';

const available = await mysqlAvailable();
const TEMPLATE = JSON.stringify({ template_id: 't', data: { first: { value: '${v}' } } });

describe('faults', () => {
  it('template database down at TSet: 500 to that client, the cache keeps serving, TSet works again when it returns', { skip: available ? false : `MySQL not reachable at ${mysqlTestTarget}` }, async (t) => {
    const table = `${uniqueTablePrefix()}wechat_template`;
    const prefix = table.replace(/wechat_template$/, '');
    const db: Connection = await mysqlTestConnection();
    const proxy = new TcpProxy(mysqlTestConfig.host, mysqlTestConfig.port);
    const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    t.after(async () => {
      await proxy.down();
      await sim.stop();
      await db.query(`DROP TABLE IF EXISTS \`${table}\``);
      await db.end();
    });
    await db.query(`CREATE TABLE \`${table}\` (tmpl_key char(32) NOT NULL PRIMARY KEY, title varchar(100) NOT NULL DEFAULT '', template text NOT NULL, created_at int NOT NULL DEFAULT 0, updated_at int NOT NULL DEFAULT 0)`);
    await db.query(`INSERT INTO \`${table}\` (tmpl_key, template) VALUES ('k', ?)`, [TEMPLATE]);
    await proxy.up();

    const dir = tempDir();
    const ini = baseIni(dir, path.join(dir, 'unused.db'), sim.url);
    ini.pdo = { dsn: `mysql:host=127.0.0.1;port=${proxy.port};dbname=${mysqlTestConfig.database}`, username: mysqlTestConfig.user, password: mysqlTestConfig.password, table_prefix: prefix };
    writeIni(path.join(dir, 'config'), 'wechat', ini);
    const daemon = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', path.join(dir, 'config')], /listening on [^:\s]+:(\d+)/);
    t.after(() => stopChild(daemon.child));
    const client = await RawClient.connect(Number(daemon.match[1]));

    await proxy.down();
    const failed = await client.request(encodeTset(1, 'k'), 1);
    assert.equal(failed.code, 500);
    assert.equal(failed.message.toString(), 'template store unavailable');
    // still serving from the cache, on the same connection
    assert.equal((await client.request(encodeSend(2, 'oCACHED', 'k', { v: 'from cache' }), 2)).code, 200);

    await proxy.up();
    await db.query(`UPDATE \`${table}\` SET template = ? WHERE tmpl_key = 'k'`, [TEMPLATE.replace('${v}', 'v2 ${v}')]);
    let opaque = 100;
    const back = await eventually(async () => {
      opaque++;
      const r = await client.request(encodeTset(opaque, 'k'), opaque);
      return r.code === 200 ? r : undefined;
    }, 15000, 'TSet to succeed once the database is back');
    assert.equal(back.code, 200);
    assert.equal((await client.request(encodeSend(3, 'oAFTER', 'k', { v: 'x' }), 3)).code, 200);
    const m = (await sim.messages()).find((x) => x.touser === 'oAFTER');
    assert.equal(m?.data?.first?.value, 'v2 x');
    client.close();
  });

  it('WeChat unreachable for a while: jobs are held (none dead-lettered) and delivered when it returns', async (t) => {
    let sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    const port = sim.port;
    // retry_max 2 with 50 ms backoff would dead-letter within a second if an outage burned attempts
    const stack = await startStack({ simulator: sim, templates: { k: JSON.parse(TEMPLATE) }, ini: { wechat: { retry_base_ms: 50, retry_max: 2 } } });
    t.after(async () => {
      await stack.stop();
      await sim.stop();
    });
    const client = await stack.connect();
    assert.equal((await client.request(encodeSend(1, 'oBEFORE', 'k', { v: 1 }), 1)).code, 200, 'token cached, API reachable');

    await sim.stop();
    for (let i = 0; i < 50; i++) client.write(encodePush(100 + i, `oHELD${i}`, 'k', { v: i }));
    await client.waitFor(51);
    assert.ok(client.results.every((r) => r.code === 200), 'pushes are accepted while WeChat is unreachable');
    // the outage: 3 s by default; MEGA_OUTAGE_S=60 shows a one-minute outage
    await new Promise((r) => setTimeout(r, Number(process.env.MEGA_OUTAGE_S ?? 3) * 1000));

    const status = JSON.parse((await runStatus(stack.configDir)).stdout) as DaemonStatus;
    assert.equal(status.paused?.reason, 'unreachable');
    assert.equal(status.failed, 0);

    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET, '--port', String(port)]);
    await eventually(async () => {
      const got = new Set((await sim.messages()).filter((m) => m.touser?.startsWith('oHELD') && m.errcode === 0).map((m) => m.touser));
      return got.size === 50;
    }, 60000, 'all 50 held pushes delivered after the outage');
    assert.ok(!existsSync(path.join(stack.dir, 'wechat.dead-letter.jsonl')) || readFileSync(path.join(stack.dir, 'wechat.dead-letter.jsonl'), 'utf8') === '');
    client.close();
  });

  it('SIGHUP reopens the log file (logrotate)', async (t) => {
    const stack = await startStack({ templates: { k: JSON.parse(TEMPLATE) } });
    t.after(() => stack.stop());
    const log = path.join(stack.dir, 'logs', 'mega.log');
    renameSync(log, `${log}.1`);
    stack.daemon.kill('SIGHUP');
    await eventually(() => existsSync(log) && readFileSync(log, 'utf8').includes('log file reopened'), 15000, 'a new log file');
    const client = await stack.connect();
    assert.equal((await client.request(encodePush(1, 'oROTATED', 'k', { v: 1 }), 1)).code, 200);
    client.close();
  });
});

async function runStatus(configDir: string) {
  const { runMega } = await import('../helpers/processes.js');
  return runMega(['wechat', 'status', '--json', '--config-dir', configDir]);
}
