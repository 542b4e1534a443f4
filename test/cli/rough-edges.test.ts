/**
 * The command line's rough edges a new user hits (issue 10): refused arguments say why, a port
 * clash names the key that moves it, restart gives the terminal back, help lists everything,
 * status --json always prints JSON, a failing token endpoint is logged once, and a stopped
 * foreground daemon says where its queue is. Real `mega` processes, real daemons, the simulator.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { describeFailure } from '../../src/cli/main.js';
import { SAMPLE_TEMPLATE_KEY } from '../../src/cli/demo.js';
import { encodePush, encodeSend } from '../../src/protocol/index.js';
import { openTemplateStore } from '../../src/templates/index.js';
import { RawClient } from '../helpers/client.js';
import { runMega, spawnMega, stopChild, tempDir, writeIni, type IniSections } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, baseIni, eventually, putTemplates, startSimulator, type SimulatorHandle } from '../helpers/stack.js';
import { pidAlive } from '../../src/config/service-files.js';
import { freePort, takenPort } from '../helpers/ports.js';

interface Env {
  dir: string;
  configDir: string;
  iniFile: string;
  dbFile: string;
  queueDir: string;
  pidFile: string;
  logFile: string;
  port: number;
}

/** A config folder with `wechat.ini` on a free port (or `listen`), against `apiBase`. */
async function setup(apiBase: string, extra: IniSections = {}, templates: Record<string, unknown> = {}): Promise<Env> {
  const dir = tempDir();
  const configDir = path.join(dir, 'config');
  const dbFile = path.join(dir, 'mega.db');
  if (Object.keys(templates).length > 0) await putTemplates(dbFile, templates);
  const port = await freePort();
  const ini = baseIni(dir, dbFile, apiBase);
  ini.server!.listen = [`127.0.0.1:${port}`];
  for (const [s, v] of Object.entries(extra)) ini[s] = { ...(ini[s] ?? {}), ...v };
  const iniFile = writeIni(configDir, 'wechat', ini);
  return {
    dir,
    configDir,
    iniFile,
    dbFile,
    queueDir: path.join(dir, 'queue'),
    pidFile: path.join(dir, 'wechat.pid'),
    logFile: path.join(dir, 'logs', 'mega.log'),
    port,
  };
}

async function templateKeys(dbFile: string): Promise<string[]> {
  const store = openTemplateStore({ dsn: `sqlite:${dbFile}`, tablePrefix: 'mega_' });
  try {
    await store.init();
    return (await store.list(100)).map((t) => t.key);
  } finally {
    await store.close();
  }
}

/** Parsed pino lines of a log file. */
function logLines(file: string): Array<{ level: number; msg: string; [k: string]: unknown }> {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { level: number; msg: string });
}

const HELLO = { template_id: 't-hello', data: { first: { value: 'hi ${OPENID}' } } };

describe('refused arguments say why', () => {
  for (const command of ['run', 'resume', 'pause', 'show']) {
    it(`task ${command} abc prints what is wrong and exits non-zero`, async () => {
      const env = await setup('http://127.0.0.1:9');
      const r = await runMega(['wechat', 'task', command, 'abc', '--config-dir', env.configDir]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /'abc' is invalid for argument 'id'/);
      assert.match(r.stderr, /task id is a positive integer/);
    });
  }

  it('an argument error thrown inside a command handler is printed, not swallowed', () => {
    const refused = describeFailure(new InvalidArgumentError('--window expects a number'), false);
    assert.equal(refused.exitCode, 1);
    assert.equal(refused.message, '--window expects a number');
    // what commander printed itself is not printed twice
    assert.equal(describeFailure(new InvalidArgumentError('x'), true).message, undefined);
  });
});

describe('start --demo on ports already taken', () => {
  it("names the demo's simulator and [wechat] api_base, and writes no template", async () => {
    const blocker = await takenPort();
    try {
      const env = await setup(`http://127.0.0.1:${blocker.port}`);
      const r = await runMega(['wechat', 'start', '--foreground', '--demo', '--config-dir', env.configDir]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /WeChat API simulator at \[wechat\] api_base = http:\/\/127\.0\.0\.1:\d+/);
      assert.match(r.stderr, new RegExp(`port ${blocker.port} is already in use`));
      assert.ok(r.stderr.includes(`change [wechat] api_base in ${env.iniFile}`), r.stderr);
      assert.deepEqual(await templateKeys(env.dbFile), [], 'no sample template written by a failed start');
      assert.ok(!existsSync(env.pidFile));
    } finally {
      blocker.close();
    }
  });

  it("names [server] listen[] when the daemon's own port is taken, and writes no template", async () => {
    const blocker = await takenPort();
    try {
      const env = await setup(`http://127.0.0.1:${await freePort()}`, { server: { listen: [`127.0.0.1:${blocker.port}`] } });
      const r = await runMega(['wechat', 'start', '--foreground', '--demo', '--config-dir', env.configDir]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${blocker.port}: address already in use`));
      assert.ok(r.stderr.includes(`change [server] listen[] in ${env.iniFile}`), r.stderr);
      assert.deepEqual(await templateKeys(env.dbFile), [], 'no sample template written by a failed start');
    } finally {
      blocker.close();
    }
  });

  it('with free ports the sample template is installed after the start and is served at once; Ctrl-C says where the queue is', async () => {
    const simPort = await freePort();
    const env = await setup(`http://127.0.0.1:${simPort}`, { wechat: { app_id: 'wx_demo_app', app_secret: 'demo_secret' } });
    const fg = await spawnMega(['wechat', 'start', '--foreground', '--demo', '--config-dir', env.configDir], /console: .*\n/);
    assert.deepEqual(await templateKeys(env.dbFile), [SAMPLE_TEMPLATE_KEY]);
    // the console is on, with a token made for this run: it logs in, and it is in no log line
    const consoleLine = /console: (http:\/\/127\.0\.0\.1:\d+)\/ \(log in with the one-time token ([\w-]{20,})\)/.exec(fg.output());
    assert.ok(consoleLine, fg.output());
    const login = await fetch(`${consoleLine[1]}/api/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: consoleLine[2] }) });
    assert.equal(login.status, 200);
    assert.equal((await fetch(`${consoleLine[1]}/api/v1/status`)).status, 401, 'the token is required');
    const client = await RawClient.connect(env.port);
    const r = await client.request(encodeSend(1, 'oDemo', SAMPLE_TEMPLATE_KEY, { product: 'tea', price: '1', time: 'now' }), 1);
    assert.equal(r.code, 200, r.message.toString());
    client.close();
    const res = await fetch(`http://127.0.0.1:${simPort}/_sim/messages`);
    const rec = (await res.json()) as { messages: Array<{ touser: string }> };
    assert.deepEqual(rec.messages.map((m) => m.touser), ['oDemo']);

    const code = await stopChild(fg.child, 'SIGINT');
    assert.equal(code, 0);
    assert.ok(fg.output().includes(`wechat stopped; 0 jobs left queued in ${env.queueDir}`), fg.output());
    assert.ok(!readFileSync(env.logFile, 'utf8').includes(consoleLine[2]!), 'the one-time token never reaches the log');
  });
});

describe('with a simulator', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  it('restart with daemonize = 0 returns: the new daemon runs in the background, status and stop work', async (t) => {
    const env = await setup(sim.url, { setting: { daemonize: 0 } }, { hello: HELLO });
    t.after(() => runMega(['wechat', 'stop', '--config-dir', env.configDir]));
    const fg = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir], /listening on/);
    const exited = once(fg.child, 'exit');

    // runMega waits for the process to end: a restart that kept the terminal would time out here
    const r = await runMega(['wechat', 'restart', '--config-dir', env.configDir], { timeoutMs: 60000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wechat started in the background \(pid \d+\)/);
    const [oldCode] = (await exited) as [number];
    assert.equal(oldCode, 0, 'the foreground daemon stopped gracefully');
    const pid = Number(readFileSync(env.pidFile, 'utf8'));
    assert.notEqual(pid, fg.child.pid);
    assert.ok(pidAlive(pid), 'the restarted daemon keeps running after restart returned');

    const status = await runMega(['wechat', 'status', '--config-dir', env.configDir]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`pid:\\s+${pid}`));
    const json = await runMega(['wechat', 'status', '--json', '--config-dir', env.configDir]);
    assert.equal(json.code, 0);
    assert.deepEqual(
      (({ state, pid: p }) => ({ state, pid: p }))(JSON.parse(json.stdout) as { state: string; pid: number }),
      { state: 'running', pid },
    );

    const stopped = await runMega(['wechat', 'stop', '--config-dir', env.configDir]);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.ok(!pidAlive(pid), 'stop ends the restarted daemon');
  });

  it('status --json prints JSON when the daemon is not running, and exits 3', async () => {
    const env = await setup(sim.url);
    const r = await runMega(['wechat', 'status', '--json', '--config-dir', env.configDir]);
    assert.equal(r.code, 3);
    assert.deepEqual(JSON.parse(r.stdout), { name: 'wechat', state: 'not running', pid: null });
  });

  it('task run --quiet prints only the outcome line', async (t) => {
    const env = await setup(sim.url, {}, { hello: HELLO });
    const fg = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir], /listening on/);
    t.after(() => stopChild(fg.child));
    const list = path.join(env.dir, 'to.txt');
    writeFileSync(list, 'oQuiet1\noQuiet2\noQuiet3\n');
    const created = await runMega(['wechat', 'task', 'create', '--key', 'hello', '--to', list, '--config-dir', env.configDir]);
    assert.equal(created.code, 0, created.stderr);
    const id = /task (\d+) created/.exec(created.stdout)![1]!;
    const r = await runMega(['wechat', 'task', 'run', id, '--quiet', '--config-dir', env.configDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `task ${id} done: 3 recipients, 3 sent, 0 failed\n`);
  });

  it('a token endpoint refusing the secret is logged once and its recovery once; Ctrl-C counts the jobs left', async () => {
    await sim.post('/_sim/config', { tokenErrcode: 40125 });
    try {
      const env = await setup(sim.url, {}, { hello: HELLO });
      const fg = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir], /listening on/);
      const client = await RawClient.connect(env.port);
      for (let i = 1; i <= 3; i++) assert.equal((await client.request(encodePush(i, `oTok${i}`, 'hello', null), i)).code, 200);
      client.close();
      const before = (await sim.get<{ tokenRequests: number }>('/_sim/stats')).tokenRequests;
      // two more failed attempts (backoff 1 s, then 2 s) while the jobs wait
      await eventually(async () => (await sim.get<{ tokenRequests: number }>('/_sim/stats')).tokenRequests >= before + 2, 20000, "2 token retries");
      const errors = logLines(env.logFile).filter((l) => l.level >= 50);
      assert.equal(errors.length, 1, JSON.stringify(errors));
      assert.match(errors[0]!.msg, /access token refresh failed: .*40125/);
      assert.ok(logLines(env.logFile).some((l) => l.level === 20 && /refresh failed again/.test(l.msg)), 'the retries are debug lines');

      const code = await stopChild(fg.child, 'SIGINT');
      assert.equal(code, 0);
      assert.ok(fg.output().includes(`wechat stopped; 3 jobs left queued in ${env.queueDir}`), fg.output());

      // the next start, still refused, delivers them once the endpoint answers again, and says so once
      const seen = logLines(env.logFile).length;
      const again = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', env.configDir], /listening on/);
      await eventually(() => logLines(env.logFile).slice(seen).some((l) => l.level >= 50), 10000, 'the refusal logged');
      await sim.post('/_sim/config', { tokenErrcode: null });
      await eventually(async () => (await sim.messages()).filter((m) => m.touser?.startsWith('oTok')).length === 3, 15000, 'delivery');
      await stopChild(again.child, 'SIGINT');
      const second = logLines(env.logFile).slice(seen);
      assert.equal(second.filter((l) => l.level >= 50).length, 1);
      assert.equal(second.filter((l) => /access token obtained again after \d+ failed attempt/.test(l.msg)).length, 1);
      assert.equal(second.filter((l) => /dispatch resumes/.test(l.msg)).length, 1);
      assert.equal(second.filter((l) => /dispatch waits/.test(l.msg)).length, 1);
      assert.ok(again.output().includes(`wechat stopped; 0 jobs left queued in ${env.queueDir}`), again.output());
    } finally {
      await sim.post('/_sim/config', { tokenErrcode: null });
    }
  });
});

describe('help', () => {
  it('mega --help lists every command, within 80 columns', async () => {
    const r = await runMega(['--help']);
    assert.equal(r.code, 0);
    for (const term of [
      'start',
      'stop',
      'restart',
      'status',
      'resume',
      'queue',
      'dlq list',
      'dlq retry',
      'push <openid> <key>',
      'send <openid> <key>',
      'tset <key>',
      'template list',
      'template set <key>',
      'task create',
      'task run <id>',
      'task show <id>',
      'msg show <msgid>',
      'msg list',
    ]) {
      assert.ok(r.stdout.includes(`  <name> ${term} `), `mega --help lists ${term}:\n${r.stdout}`);
    }
    assert.match(r.stdout, /^ {2}simulator {2,}/m);
    for (const line of r.stdout.split('\n')) assert.ok(line.length <= 80, `line longer than 80 columns: ${line}`);
  });

  it('mega simulator --help and mega help simulator print its options within 80 columns', async () => {
    for (const args of [['simulator', '--help'], ['help', 'simulator']]) {
      const r = await runMega(args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /--daily-limit N/);
      assert.match(r.stdout, /docs\/SIMULATOR\.md/);
      for (const line of r.stdout.split('\n')) assert.ok(line.length <= 80, `line longer than 80 columns: ${line}`);
    }
  });
});
