/**
 * TaskService (the daemon running bulk tasks for the HTTP side) against a real daemon process
 * over real TCP and the simulator over real HTTP, with the task store in the daemon's SQLite file.
 * The service runs in the test process, as it would inside the daemon: it reaches the daemon by
 * the address it is given, with the config's auth token and TLS.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { taskDir } from '../../src/config/service-files.js';
import { MegaError, RecipientFileError, TaskStateError } from '../../src/errors.js';
import type { TaskView } from '../../src/http/index.js';
import { TaskService } from '../../src/server/task-service.js';
import { openTaskStore, REPORT_HEADER } from '../../src/tasks/index.js';
import { tempDir } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimMessage, type SimulatorHandle, type Stack } from '../helpers/stack.js';

const TEMPLATE = {
  touser: '${OPENID}',
  template_id: 'tmpl-bulk',
  data: { first: { value: 'Hello ${name}' }, remark: { value: '${shop}' } },
};

function logger(lines: string[]): pino.Logger {
  return pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
}

function byOpenid(messages: SimMessage[], prefix: string): Map<string, SimMessage[]> {
  const out = new Map<string, SimMessage[]>();
  for (const m of messages) {
    if (!m.touser?.startsWith(prefix)) continue;
    out.set(m.touser, [...(out.get(m.touser) ?? []), m]);
  }
  return out;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  return assert.fail('expected a rejection');
}

describe('TaskService', () => {
  let sim: SimulatorHandle;
  let stack: Stack;
  let service: TaskService;
  const services: TaskService[] = [];
  const logs: string[] = [];

  const newService = (): TaskService => {
    const s = new TaskService({
      config: loadConfig(stack.name, stack.configDir),
      logger: logger(logs),
      daemonAddress: () => ({ host: '127.0.0.1', port: stack.port }),
    });
    services.push(s);
    return s;
  };

  const finished = (s: TaskService, id: number, status: TaskView['status'] = 'done', timeoutMs = 30_000): Promise<TaskView> =>
    eventually(async () => {
      const v = await s.get(id);
      return v.status === status && !v.runningHere ? v : undefined;
    }, timeoutMs, `task ${id} ${status}`);

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    stack = await startStack({ simulator: sim, templates: { bulk: TEMPLATE }, ini: { queue: { fsync: 'none' }, log: { log_level: 'info' } } });
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oBAD', errcode: 43004, errmsg: 'require subscribe' }] });
    service = newService();
  });

  after(async () => {
    for (const s of services) await s.close();
    await stack?.stop();
    await sim?.stop();
  });

  it('close() of a service never used is fine, twice', async () => {
    const s = newService();
    await s.close();
    await s.close();
  });

  it('CSV with start: runs to done in the daemon; every recipient gets its own and the common variables', { timeout: 60_000 }, async () => {
    const n = 200;
    const csv = 'openid,name\n' + Array.from({ length: n }, (_, i) => `oCSV${i},"User ${i}, VIP"`).join('\n') + '\n';
    const v = await service.create({ key: 'bulk', name: 'spring sale', format: 'csv', content: Buffer.from(csv), variables: { shop: 'Tea House', name: 'nobody' }, start: true });
    assert.equal(v.name, 'spring sale');
    assert.equal(v.key, 'bulk');
    assert.equal(v.total, n);
    assert.equal(v.runningHere, true);
    assert.match(v.createdAt, /^\d{4}-\d\d-\d\dT/);
    const done = await finished(service, v.id);
    assert.deepEqual([done.success, done.fail, done.message, done.rate, done.etaSeconds], [n, 0, '', 0, null]);

    const got = byOpenid(await sim.messages(), 'oCSV');
    assert.equal(got.size, n);
    for (let i = 0; i < n; i++) {
      const ms = got.get(`oCSV${i}`)!;
      assert.equal(ms.length, 1, `oCSV${i} once`);
      assert.equal(ms[0]!.data?.first?.value, `Hello User ${i}, VIP`);
      assert.equal(ms[0]!.data?.remark?.value, 'Tea House');
      assert.match(ms[0]!.client_msg_id ?? '', new RegExp(`^t${v.id}-[a-z0-9]+-${i}$`));
    }
    // the upload and the vars file are gone; the normalised list and the report stay
    const left = readdirSync(taskDir(loadConfig(stack.name, stack.configDir)));
    assert.deepEqual(left.filter((f) => f.startsWith('upload-')), []);
    assert.ok(logs.some((l) => l.includes('"task run ended"') && l.includes(`"task":${v.id}`) && l.includes('"end":"done"')));
    assert.equal((await service.list())[0]!.id, v.id, 'newest first');
  });

  it('refuses bad lines naming them (nothing created), creates from the good ones with skipInvalid; unknown template and key', async () => {
    const before = (await service.list()).length;
    const content = Buffer.from('oINV1\noINV 2\noINV3\n\n# comment\nbad\u00e9id\n');
    const err = await rejection(service.create({ key: 'bulk', name: 'list.txt', format: 'plain', content }));
    assert.ok(err instanceof RecipientFileError, String(err));
    assert.equal((err as MegaError).code, 'MEGA_ERR_TASK_RECIPIENTS');
    assert.match(err.message, /^list\.txt: 2 bad lines \(nothing created; fix them, or pass skipInvalid to leave them out\):\n {2}line 2: openid "oINV 2" contains white space\n {2}line 6: /);
    assert.doesNotMatch(err.message, /upload-/, 'the temporary file name stays inside');
    assert.deepEqual((err as RecipientFileError).problems.map((p) => p.line), [2, 6]);
    assert.equal((await service.list()).length, before);

    const v = await service.create({ key: 'bulk', format: 'plain', content, skipInvalid: true });
    assert.deepEqual([v.status, v.total, v.runningHere], ['pending', 2, false]);
    assert.match(v.name, /^plain upload /);

    const missing = await rejection(service.create({ key: 'no_such', format: 'plain', content: Buffer.from('oX\n') }));
    assert.equal((missing as MegaError).code, 'MEGA_ERR_BAD_REQUEST');
    assert.match(missing.message, /there is no template "no_such"/);
    const badKey = await rejection(service.create({ key: 'has space', format: 'plain', content: Buffer.from('oX\n') }));
    assert.equal((badKey as MegaError).code, 'MEGA_ERR_BAD_REQUEST');
    const empty = await rejection(service.create({ key: 'bulk', format: 'csv', content: Buffer.from('openid,name\n') }));
    assert.ok(empty instanceof RecipientFileError);
    assert.match(empty.message, /no recipients/);
    assert.deepEqual(readdirSync(taskDir(loadConfig(stack.name, stack.configDir))).filter((f) => f.startsWith('upload-')), []);
  });

  it('plain and JSONL uploads; start() of a pending task; start of a done one is refused', { timeout: 60_000 }, async () => {
    const plain = await service.create({ key: 'bulk', format: 'plain', content: Buffer.from('oPL1\noPL2\r\noPL3'), variables: { name: 'Ann' } });
    assert.equal(plain.status, 'pending');
    const started = await service.start(plain.id);
    assert.equal(started.runningHere, true);
    const jsonl = await service.create({
      key: 'bulk',
      format: 'jsonl',
      content: Buffer.from('{"openid":"oJL1","name":"Bo","shop":"Mall"}\n{"openid":"oJL2"}\n'),
      variables: { shop: 'Kiosk' },
      start: true,
    });
    assert.equal((await finished(service, plain.id)).success, 3);
    assert.equal((await finished(service, jsonl.id)).success, 2);
    const msgs = await sim.messages();
    for (const o of ['oPL1', 'oPL2', 'oPL3']) assert.equal(msgs.find((m) => m.touser === o)?.data?.first?.value, 'Hello Ann');
    assert.deepEqual(
      ['oJL1', 'oJL2'].map((o) => [msgs.find((m) => m.touser === o)?.data?.first?.value, msgs.find((m) => m.touser === o)?.data?.remark?.value]),
      [['Hello Bo', 'Mall'], ['Hello ${name}', 'Kiosk']],
    );
    const again = await rejection(service.start(plain.id));
    assert.ok(again instanceof TaskStateError);
    assert.match(again.message, /is done/);
  });

  it('pause stops a running task; start resumes it without sending anyone twice; live rate and ETA meanwhile', { timeout: 90_000 }, async () => {
    await sim.post('/_sim/config', { latencyMs: 40 });
    try {
      const n = 1500;
      const v = await service.create({ key: 'bulk', format: 'plain', content: Buffer.from(Array.from({ length: n }, (_, i) => `oPAUSE${i}`).join('\n')), start: true });
      const twice = await rejection(service.start(v.id));
      assert.ok(twice instanceof TaskStateError);
      assert.match(twice.message, /already running in this daemon/);
      const live = await eventually(async () => {
        const x = await service.get(v.id);
        return x.success >= 200 && x.rate > 0 && x.etaSeconds !== null ? x : undefined;
      }, 30_000, 'progress with a rate');
      assert.deepEqual([live.status, live.runningHere], ['running', true]);
      assert.ok(live.etaSeconds! > 0);

      const paused = await service.pause(v.id);
      assert.equal(paused.status, 'paused');
      assert.match(paused.message, /^paused over HTTP at /);
      const p = await finished(service, v.id, 'paused');
      assert.ok(p.success > 0 && p.success < n, `paused at ${p.success}`);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await service.get(v.id)).success, p.success, 'nothing is sent after the pause');

      await service.start(v.id);
      const done = await finished(service, v.id);
      assert.deepEqual([done.success, done.fail], [n, 0]);
      const got = byOpenid(await sim.messages(), 'oPAUSE');
      assert.equal(got.size, n);
      for (const [openid, ms] of got) assert.equal(ms.length, 1, `${openid} sent ${ms.length} times`);
    } finally {
      await sim.post('/_sim/config', { latencyMs: 0 });
    }
  });

  it('the failure report lists the recipients WeChat refused', { timeout: 60_000 }, async () => {
    const openids = Array.from({ length: 60 }, (_, i) => (i % 7 === 3 ? `oBAD${i}` : `oREP${i}`));
    const v = await service.create({ key: 'bulk', format: 'plain', content: Buffer.from(openids.join('\n')), start: true });
    const done = await finished(service, v.id);
    const bad = openids.filter((o) => o.startsWith('oBAD'));
    assert.deepEqual([done.success, done.fail], [openids.length - bad.length, bad.length]);
    const report = await service.report(v.id);
    assert.ok(report.startsWith(REPORT_HEADER), report);
    const lines = report.slice(REPORT_HEADER.length).trim().split('\n');
    assert.deepEqual(lines.sort(), bad.map((o) => `${o},43004,require subscribe`).sort());
    // a task without failures has the header only
    const clean = await service.create({ key: 'bulk', format: 'plain', content: Buffer.from('oCLEAN1\n') });
    assert.equal(await service.report(clean.id), REPORT_HEADER);
  });

  it('an unknown id is "no task" for get, start, pause and report', async () => {
    for (const call of [() => service.get(987654), () => service.start(987654), () => service.pause(987654), () => service.report(987654), () => service.get(-1)]) {
      const err = await rejection(call());
      assert.ok(err instanceof TaskStateError, String(err));
      assert.match(err.message, /^no task /);
    }
  });

  it('a task owned by another live process is refused; one whose runner died shows stopped and is taken over', { timeout: 60_000 }, async () => {
    const v = await service.create({ key: 'bulk', format: 'plain', content: Buffer.from('oOWN1\noOWN2\n') });
    const store = openTaskStore({ dsn: `sqlite:${stack.dbFile}` });
    await store.init();
    try {
      // the daemon's pid: a live process on this host that is not the service's
      assert.ok(await store.transition(v.id, { status: 'pending', owner: '' }, { status: 'running', owner: `${os.hostname()}:${stack.daemon.pid}` }));
      const err = await rejection(service.start(v.id));
      assert.ok(err instanceof TaskStateError);
      assert.match(err.message, /is being run by .*:\d+/);
      assert.equal((await service.get(v.id)).status, 'running');
      // a pid that does not exist: its run was interrupted
      assert.ok(await store.transition(v.id, { status: 'running', owner: `${os.hostname()}:${stack.daemon.pid}` }, { status: 'running', owner: `${os.hostname()}:999999999` }));
      const shown = await service.get(v.id);
      assert.equal(shown.status, 'stopped');
      assert.match(shown.message, /interrupted/);
    } finally {
      await store.close();
    }
    await service.start(v.id);
    assert.equal((await finished(service, v.id)).success, 2);
  });

  it('close() while running leaves the task stopped; a new service finishes it, nobody twice', { timeout: 90_000 }, async () => {
    await sim.post('/_sim/config', { latencyMs: 40 });
    try {
      const s = newService();
      const n = 1200;
      const v = await s.create({ key: 'bulk', format: 'plain', content: Buffer.from(Array.from({ length: n }, (_, i) => `oCLOSE${i}`).join('\n')), start: true });
      await eventually(async () => (await s.get(v.id)).success >= 100, 30_000, 'some progress');
      await s.close();
      const stopped = await service.get(v.id);
      assert.equal(stopped.status, 'stopped');
      assert.equal(stopped.runningHere, false);
      assert.match(stopped.message, /interrupted by the daemon stopping/);
      assert.ok(stopped.success < n, `stopped at ${stopped.success}`);
      const closed = await rejection(s.start(v.id));
      assert.match(closed.message, /stopping/);

      const later = newService();
      await later.start(v.id);
      const done = await finished(later, v.id);
      assert.deepEqual([done.success, done.fail], [n, 0]);
      const got = byOpenid(await sim.messages(), 'oCLOSE');
      assert.equal(got.size, n);
      // a Send cut off by close() is sent again with its msgid: WeChat (the simulator) drops the repeat
      for (const [openid, ms] of got) assert.equal(ms.filter((m) => !m.duplicate && m.errcode === 0).length, 1, `${openid} delivered once`);
    } finally {
      await sim.post('/_sim/config', { latencyMs: 0 });
    }
  });
});

describe('TaskService with auth_token and TLS (client certificates required)', () => {
  let sim: SimulatorHandle;
  let stack: Stack | undefined;
  let service: TaskService | undefined;

  after(async () => {
    await service?.close();
    await stack?.stop();
    await sim?.stop();
  });

  it('dials its own port on 127.0.0.1 although the certificate names another host', { timeout: 60_000 }, async () => {
    const dir = tempDir('mega-task-tls-');
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=mega-task-test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
    writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:mega.example\n');
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=mega.example', '-keyout', 'server.key', '-out', 'server.csr');
    openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'san.ext', '-out', 'server.pem');
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    const server = { auth_token: 'tok-Task-Service-42', tls_cert: path.join(dir, 'server.pem'), tls_key: path.join(dir, 'server.key'), tls_ca: path.join(dir, 'ca.pem') };
    stack = await startStack({ simulator: sim, templates: { bulk: TEMPLATE }, ini: { server } });
    const port = stack.port;
    service = new TaskService({ config: loadConfig(stack.name, stack.configDir), logger: logger([]), daemonAddress: () => ({ host: '0.0.0.0', port }) });
    const v = await service.create({ key: 'bulk', format: 'plain', content: Buffer.from('oTLS1\noTLS2\n'), variables: { name: 'T', shop: 'S' }, start: true });
    const done = await eventually(async () => {
      const x = await service!.get(v.id);
      return x.status === 'done' && !x.runningHere ? x : undefined;
    }, 30_000, 'the TLS task done');
    assert.equal(done.success, 2);
    assert.equal(byOpenid(await sim.messages(), 'oTLS').size, 2);
  });
});
