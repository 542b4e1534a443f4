/**
 * The CLI as an operator uses it: real `mega` processes, a real daemon, the simulator.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { runMega, spawnMega, stopChild, tempDir, writeIni } from '../helpers/processes.js';
import { baseIni, putTemplates, startSimulator, type SimulatorHandle, APP_ID, APP_SECRET } from '../helpers/stack.js';
import { RawClient } from '../helpers/client.js';
import { encodeSend } from '../../src/protocol/index.js';
import { TEST_DB_PASSWORD } from '../helpers/secrets.js';
import type { DaemonStatus } from '../../src/server/control-protocol.js';
import { pidAlive } from '../../src/config/service-files.js';
import { freePort } from '../helpers/ports.js';

describe('mega CLI', () => {
  let sim: SimulatorHandle;

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  async function setup(extra: Record<string, Record<string, string | number | string[]>> = {}) {
    const dir = tempDir();
    const configDir = path.join(dir, 'config');
    const dbFile = path.join(dir, 'mega.db');
    await putTemplates(dbFile, { hello: { template_id: 't-hello', data: { first: { value: 'hi ${OPENID}' } } } });
    const port = await freePort();
    const ini = baseIni(dir, dbFile, sim.url);
    ini.server!.listen = [`127.0.0.1:${port}`];
    for (const [s, v] of Object.entries(extra)) ini[s] = { ...(ini[s] ?? {}), ...v };
    writeIni(configDir, 'wechat', ini);
    return { dir, configDir, port, pidFile: path.join(dir, 'wechat.pid'), logFile: path.join(dir, 'logs', 'mega.log') };
  }

  it('daemonized start returns once the daemon listens; status, restart and stop work against it', async (t) => {
    const env = await setup({ setting: { daemonize: 1 } });
    // the daemon is not our child: make sure a failing assertion does not leave it running
    t.after(() => runMega(['wechat', 'stop', '--config-dir', env.configDir]));
    const started = await runMega(['wechat', 'start', '--config-dir', env.configDir]);
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stdout, /started in the background \(pid \d+\)/);
    const pid = Number(readFileSync(env.pidFile, 'utf8'));
    assert.ok(pidAlive(pid), 'daemon process is alive after start returned');

    // it really serves
    const client = await RawClient.connect(env.port);
    const r = await client.request(encodeSend(1, 'oCLI', 'hello', null), 1);
    assert.equal(r.code, 200);
    client.close();

    const status = await runMega(['wechat', 'status', '--config-dir', env.configDir]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`pid:\\s+${pid}`));
    assert.match(status.stdout, /uptime:\s+\d+ s/);
    assert.match(status.stdout, /queue depth:\s+0/);
    assert.match(status.stdout, /sent:\s+1/);
    assert.match(status.stdout, /failed:\s+0/);

    const json = await runMega(['wechat', 'status', '--json', '--config-dir', env.configDir]);
    const parsed = JSON.parse(json.stdout) as DaemonStatus;
    assert.equal(parsed.pid, pid);
    assert.equal(parsed.sent, 1);
    assert.equal(parsed.queue.depth, 0);

    const again = await runMega(['wechat', 'start', '--config-dir', env.configDir]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already running \(pid \d+\)/);

    const restarted = await runMega(['wechat', 'restart', '--config-dir', env.configDir]);
    assert.equal(restarted.code, 0, restarted.stderr);
    const pid2 = Number(readFileSync(env.pidFile, 'utf8'));
    assert.notEqual(pid2, pid);
    assert.ok(!pidAlive(pid), 'the old daemon is gone after restart');
    assert.ok(pidAlive(pid2));

    const stopped = await runMega(['wechat', 'stop', '--config-dir', env.configDir]);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stdout, /stopped/);
    assert.ok(!pidAlive(pid2), 'daemon process is gone after stop returned');
    assert.ok(!existsSync(env.pidFile), 'pid file removed');

    const down = await runMega(['wechat', 'status', '--config-dir', env.configDir]);
    assert.equal(down.code, 3);
    assert.match(down.stderr, /wechat is not running/);
  });

  it('foreground start writes a pid file; stop from another process ends it gracefully', async () => {
    const env = await setup({ setting: { daemonize: 1 } });
    const fg = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir], /listening on/);
    assert.equal(Number(readFileSync(env.pidFile, 'utf8')), fg.child.pid);
    const status = await runMega(['wechat', 'status', '--config-dir', env.configDir]);
    assert.equal(status.code, 0, status.stderr);
    const exit = once(fg.child, 'exit');
    const stopped = await runMega(['wechat', 'stop', '--config-dir', env.configDir]);
    assert.equal(stopped.code, 0, stopped.stderr);
    const [code] = (await exit) as [number];
    assert.equal(code, 0, 'graceful stop exits 0');
    assert.ok(!existsSync(env.pidFile));
    const log = readFileSync(env.logFile, 'utf8');
    assert.match(log, /mega-wechat started/);
    assert.match(log, /mega-wechat stopped/);
  });

  it('MEGA_CONFIG_DIR selects the config folder', async () => {
    const env = await setup();
    const fg = await spawnMega(['wechat', 'start', '--foreground'], /listening on/, { env: { MEGA_CONFIG_DIR: env.configDir } });
    const status = await runMega(['wechat', 'status'], { env: { MEGA_CONFIG_DIR: env.configDir } });
    assert.equal(status.code, 0, status.stderr);
    await stopChild(fg.child);
  });

  it('start fails clearly on a bad config, naming the key', async () => {
    const env = await setup({ server: { table_size: 'many' } });
    const r = await runMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /\[server\] table_size must be a whole number/);

    const missing = await runMega(['nosuch', 'start', '--config-dir', env.configDir]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read config file .*nosuch\.ini/);
  });

  it('start fails clearly when the port is in use, in the foreground and daemonized', async () => {
    const blocker = net.createServer().listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const env = await setup({ server: { listen: [`127.0.0.1:${port}`] }, setting: { daemonize: 1 } });
      const fg = await runMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir]);
      assert.equal(fg.code, 1);
      assert.match(fg.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: address already in use`));
      assert.ok(!existsSync(env.pidFile), 'no pid file left by a failed start');

      const bg = await runMega(['wechat', 'start', '--config-dir', env.configDir]);
      assert.equal(bg.code, 1);
      assert.match(bg.stderr, /address already in use/);
    } finally {
      blocker.close();
    }
  });

  it('start fails clearly when the template database cannot be opened', async () => {
    const env = await setup({ pdo: { dsn: 'mysql:host=127.0.0.1;port=1;dbname=mega', password: TEST_DB_PASSWORD } });
    const r = await runMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /template store: .*127\.0\.0\.1:1/);
    assert.ok(!r.stderr.includes(TEST_DB_PASSWORD));
    assert.ok(!readFileSync(env.logFile, 'utf8').includes(TEST_DB_PASSWORD));
  });

  it('stop is a no-op when not running; an unknown command prints help and fails', async () => {
    const env = await setup();
    const r = await runMega(['wechat', 'stop', '--config-dir', env.configDir]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /not running/);
    const bad = await runMega(['wechat', 'explode', '--config-dir', env.configDir]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /unknown command 'explode'/);
  });

  it('a stale pid file (process gone) does not block start', async () => {
    const env = await setup();
    writeFileSync(env.pidFile, '999999\n');
    const fg = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir], /listening on/);
    assert.equal(Number(readFileSync(env.pidFile, 'utf8')), fg.child.pid);
    await stopChild(fg.child);
  });
});
