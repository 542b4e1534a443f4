import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { parseConfig, loadConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/errors.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { tempDir, writeIni } from '../helpers/processes.js';

const FILE = '/etc/mega/wechat.ini';
const MINIMAL = '[wechat]\napp_id = wx1\napp_secret = s3cr3t-value\n';

function parse(text: string) {
  return parseConfig('wechat', FILE, text);
}

function rejects(text: string, pattern: RegExp): void {
  assert.throws(() => parse(text), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'MEGA_ERR_CONFIG');
    assert.match(err.message, pattern);
    return true;
  });
}

describe('config', () => {
  it('fills documented defaults, resolving paths against the config folder', () => {
    const c = parse(MINIMAL);
    assert.deepEqual(c.server.listen, [{ host: '127.0.0.1', port: 9501 }]);
    assert.equal(c.server.tableSize, 100);
    assert.equal(c.server.templateSize, 4048);
    assert.equal(c.server.queueFilePath, '/etc/logs/queue');
    assert.equal(c.server.pidFile, '/etc/logs/wechat.pid');
    assert.equal(c.server.controlSocket, '/etc/logs/wechat.sock');
    assert.equal(c.setting.taskWorkerNum, Math.min(8, os.availableParallelism()));
    assert.equal(c.setting.taskConcurrency, Math.ceil(512 / c.setting.taskWorkerNum));
    assert.equal(c.setting.packageMaxLength, 2465792);
    assert.equal(c.setting.daemonize, false);
    assert.equal(c.pdo.dsn, 'sqlite:../data/wechat.db');
    assert.equal(c.pdo.tablePrefix, 'mega_');
    assert.equal(c.wechat.apiBase, 'https://api.weixin.qq.com');
    assert.equal(c.wechat.tokenEndpoint, 'stable');
    assert.equal(c.queue.fsync, 'always');
    assert.equal(c.queue.segmentSize, 40 * 1024 * 1024);
    assert.equal(c.log.logFile, '/etc/logs/wechat.log');
    assert.equal(c.log.logLevel, 'info');
  });

  it('accepts the original seed config, Swoole-only keys included', () => {
    const seed = `[server]
class = "Server\\MegaWechatServer"
protocol = "Network\\MegaWechatProtocol"
listen[] = 127.0.0.1:9501
listen[] = [::1]:9601
table_size = 100;
template_size = 4048
queue_file_path = "/Mega-Wechat/logs/queue"
[setting]
dispatch_mode = 2
worker_num = 2
task_worker_num = 8
open_eof_check = true
package_length_type = N
package_length_offset = 0
package_body_offset = 4
package_max_length = 2465792
daemonize = 1
[pdo]
dsn = "mysql:host=127.0.0.1;dbname=mega"
username = root
password = i201314
table_prefix = mega_
[wechat]
app_id = wx10c4b54cf0aae125
app_secret = e01207cc547f62d73f5099aae83a9f15
token = e01207cd547f62d73f5099cae83a9f15
[log]
log_file = /Mega-Wechat/logs/mega.log
log_level = warning
log_prefix = mega
`;
    const c = parse(seed);
    assert.deepEqual(c.server.listen, [
      { host: '127.0.0.1', port: 9501 },
      { host: '::1', port: 9601 },
    ]);
    assert.equal(c.server.tableSize, 100);
    assert.equal(c.server.queueFilePath, '/Mega-Wechat/logs/queue');
    assert.equal(c.setting.daemonize, true);
    assert.equal(c.pdo.dsn, 'mysql:host=127.0.0.1;dbname=mega');
    assert.equal(c.pdo.password, 'i201314');
    assert.equal(c.log.logLevel, 'warn');
  });

  it('names the key of every invalid value', () => {
    rejects('[server]\ntable_size = lots\n' + MINIMAL, /\[server\] table_size must be a whole number/);
    rejects('[server]\ntable_size = 0\n' + MINIMAL, /\[server\] table_size must be between 1 and/);
    rejects('[server]\nlisten[] = nowhere\n' + MINIMAL, /\[server\] listen\[\] must be host:port/);
    rejects('[server]\nlisten[] = 127.0.0.1:70000\n' + MINIMAL, /\[server\] listen\[\]/);
    rejects('[setting]\ndaemonize = maybe\n' + MINIMAL, /\[setting\] daemonize must be 0\/1/);
    rejects('[setting]\ntask_worker_num = -2\n' + MINIMAL, /\[setting\] task_worker_num/);
    rejects('[wechat]\napp_id = wx1\n', /\[wechat\] app_secret is required/);
    rejects('[wechat]\napp_secret = x\n', /\[wechat\] app_id is required/);
    rejects(MINIMAL + 'api_base = ftp://x\n', /\[wechat\] api_base must be an http/);
    rejects(MINIMAL + 'token_endpoint = magic\n', /\[wechat\] token_endpoint must be one of stable, token/);
    rejects('[pdo]\ndsn = "postgres:host=x"\n' + MINIMAL, /\[pdo\] dsn must start with sqlite: or mysql:/);
    rejects('[pdo]\ntable_prefix = "x; drop"\n' + MINIMAL, /\[pdo\] table_prefix/);
    rejects('[queue]\nfsync = sometimes\n' + MINIMAL, /\[queue\] fsync must be one of always, none/);
    rejects('[log]\nlog_level = loud\n' + MINIMAL, /\[log\] log_level must be one of/);
  });

  it('[queue] backend and [jetstream]: defaults, servers repeatable or comma-separated, secrets from the environment, checked', () => {
    const d = parse(MINIMAL);
    assert.equal(d.queue.backend, 'file');
    assert.deepEqual(d.jetstream.servers, ['nats://127.0.0.1:4222']);
    assert.equal(d.jetstream.replicas, 1);
    assert.equal(d.jetstream.publishTimeoutMs, 10000);
    const js = parseConfig('wechat', '/etc/mega/wechat.ini', MINIMAL + '[queue]\nbackend = jetstream\n[jetstream]\nservers[] = nats://10.0.0.1:4222\nservers[] = nats://10.0.0.2:4222,nats://10.0.0.3:4222\nreplicas = 3\nuser = mega\npassword = in-file\ntls_ca = ca.pem\n', { MEGA_NATS_PASSWORD: 'from-env' });
    assert.equal(js.queue.backend, 'jetstream');
    assert.deepEqual(js.jetstream.servers, ['nats://10.0.0.1:4222', 'nats://10.0.0.2:4222', 'nats://10.0.0.3:4222']);
    assert.equal(js.jetstream.replicas, 3);
    assert.equal(js.jetstream.password, 'from-env');
    assert.equal(js.jetstream.tlsCa, '/etc/mega/ca.pem');
    rejects(MINIMAL + '[queue]\nbackend = redis\n', /\[queue\] backend must be one of file, jetstream/);
    rejects(MINIMAL + '[jetstream]\nservers[] = http://x:1\n', /\[jetstream\] servers\[\] must be nats:\/\/host:port/);
    rejects(MINIMAL + '[jetstream]\nreplicas = 7\n', /\[jetstream\] replicas must be between 1 and 5/);
    rejects(MINIMAL + '[jetstream]\npassword = p\n', /\[jetstream\] password needs \[jetstream\] user/);
    rejects(MINIMAL + '[jetstream]\ntls_cert = c.pem\n', /\[jetstream\] tls_key is required/);
    assert.throws(
      () => parse(MINIMAL + '[jetstream]\nservers[] = nats://u:hunter2-secret@h:x\n'),
      (err: unknown) => err instanceof ConfigError && !err.message.includes('hunter2'),
    );
  });

  it('refuses unknown keys and sections, so a typo never silently falls back to a default', () => {
    rejects('[server]\ntable_sise = 10\n' + MINIMAL, /unknown key \[server\] table_sise/);
    rejects('[servr]\nx = 1\n' + MINIMAL, /unknown section \[servr\]/);
    rejects('stray = 1\n' + MINIMAL, /stray is outside any section/);
  });

  it('never echoes a secret in an error', () => {
    assert.throws(
      () => parse('[pdo]\npassword[] = hunter2-secret\n' + MINIMAL),
      (err: unknown) => err instanceof ConfigError && /\[pdo\] password/.test(err.message) && !err.message.includes('hunter2'),
    );
  });

  it('reports a missing file with its path', () => {
    assert.throws(() => loadConfig('nope', '/nonexistent-dir'), /cannot read config file \/nonexistent-dir\/nope\.ini: ENOENT/);
    assert.throws(() => loadConfig('../etc/passwd', '/tmp'), /service name/);
  });

  it('loadConfig reads <dir>/<name>.ini and resolves its relative paths against <dir>', () => {
    const dir = path.join(tempDir(), 'config');
    writeIni(dir, 'svc', {
      server: { listen: ['127.0.0.1:9611', '[::1]:9612'], queue_file_path: '../spool/queue', table_size: 7 },
      setting: { worker_num: 2, daemonize: 1 },
      pdo: { dsn: 'sqlite:../data/svc.db' },
      wechat: { app_id: 'wx_test', app_secret: 'file-secret', api_base: 'http://127.0.0.1:9613' },
      log: { log_file: 'svc.log' },
    });
    const c = loadConfig('svc', dir, {});
    assert.equal(c.file, path.join(dir, 'svc.ini'));
    assert.deepEqual(c.server.listen, [
      { host: '127.0.0.1', port: 9611 },
      { host: '::1', port: 9612 },
    ]);
    assert.equal(c.server.tableSize, 7);
    assert.equal(c.server.queueFilePath, path.join(path.dirname(dir), 'spool/queue'));
    assert.equal(c.server.pidFile, path.join(path.dirname(dir), 'spool/svc.pid'));
    assert.equal(c.setting.daemonize, true);
    assert.equal(c.pdo.dsn, 'sqlite:../data/svc.db');
    assert.equal(c.wechat.apiBase, 'http://127.0.0.1:9613');
    assert.equal(c.wechat.appSecret, 'file-secret');
    assert.equal(c.log.logFile, path.join(dir, 'svc.log'));
  });

  // The shipped file is the user's to edit (a port clash is fixed there), so only its validity
  // is checked here, never its values.
  it('the shipped config/wechat.ini loads', () => {
    const c = loadConfig('wechat', path.join(REPO_ROOT, 'config'));
    assert.equal(c.name, 'wechat');
  });
});
