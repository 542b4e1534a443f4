/**
 * `mega <name> push|send|tset` and `mega <name> template list|get|set|rm` as real processes,
 * against a real daemon and the simulator.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runMega, tempDir, writeIni } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, baseIni, eventually, putTemplates, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import { freePort } from './fake-server.js';

const HELLO = { touser: '${OPENID}', template_id: 't-hello', data: { first: { value: 'hello ${name}' } } };
const OTHER = { template_id: 't-other', data: { first: { value: 'other' } } };

describe('mega <name> push|send|tset|template', () => {
  let sim: SimulatorHandle;
  let stack: Stack;
  let dir: string;

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    // listen[] keeps port 0: the commands ask the running daemon which port it got
    stack = await startStack({
      simulator: sim,
      templates: { hello: HELLO, other: OTHER },
      ini: { server: { table_size: 3, template_size: 512 } },
    });
    dir = tempDir();
  });

  after(async () => {
    await stack?.stop();
    await sim?.stop();
  });

  const mega = (...args: string[]) => runMega([stack.name, ...args, '--config-dir', stack.configDir]);
  const messageTo = (openid: string) =>
    eventually(async () => (await sim.messages()).find((m) => m.touser === openid), 10000, `a message to ${openid}`);
  const file = (name: string, text: string): string => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };

  it('finding the daemon costs WeChat nothing: push asks the control socket where it listens, not for the status (and its quota/get)', async () => {
    const before = (await sim.get<{ quotaRequests: number }>('/_sim/stats')).quotaRequests;
    for (let i = 0; i < 3; i++) assert.equal((await mega('push', `oCLIQUOTA${i}`, 'hello', '--data', '{"name":"Q"}')).code, 0);
    assert.equal((await sim.get<{ quotaRequests: number }>('/_sim/stats')).quotaRequests, before);
  });

  it('push: exit 0 on result 200, 1 on another result', async () => {
    const ok = await mega('push', 'oCLIPUSH1', 'hello', '--data', '{"name":"Ann"}', '--msgid', 'cli-push-1');
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'result 200\n');
    const m = await messageTo('oCLIPUSH1');
    assert.equal(m.data!.first!.value, 'hello Ann');
    assert.equal(m.client_msg_id, 'cli-push-1');

    const unknown = await mega('push', 'oCLIPUSH2', 'no_such_key');
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stdout, 'result 400 template key not exists\n');
    assert.match(unknown.stderr, /push failed with result 400/);
  });

  it("send prints WeChat's answer; a refusal exits 1 with WeChat's JSON", async () => {
    const ok = await mega('send', 'oCLISEND1', 'hello', '--data', '{"name":"Bob"}');
    assert.equal(ok.code, 0, ok.stderr);
    const match = /^result 200 (\{.*\})\n$/.exec(ok.stdout);
    assert.ok(match, ok.stdout);
    const answer = JSON.parse(match[1]!) as { errcode: number; errmsg: string; msgid: number };
    assert.equal(answer.errcode, 0);
    assert.equal(answer.errmsg, 'ok');
    assert.equal((await messageTo('oCLISEND1')).data!.first!.value, 'hello Bob');

    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oCLIREFUSED', errcode: 43004, errmsg: 'require subscribe' }] });
    try {
      const refused = await mega('send', 'oCLIREFUSED1', 'hello');
      assert.equal(refused.code, 1);
      const body = JSON.parse(/^result 400 (\{.*\})\n$/.exec(refused.stdout)![1]!) as { errcode: number; openid: string };
      assert.equal(body.errcode, 43004);
      assert.equal(body.openid, 'oCLIREFUSED1');
    } finally {
      await sim.post('/_sim/config', { failOpenids: [] });
    }
  });

  it('bad --data or --msgid: a clear error, exit 1, nothing sent', async () => {
    const before = (await sim.messages()).length;
    const notJson = await mega('send', 'oCLIBAD1', 'hello', '--data', '{name: Ann}');
    assert.equal(notJson.code, 1);
    assert.match(notJson.stderr, /--data is not valid JSON/);
    assert.equal(notJson.stdout, '');
    const array = await mega('push', 'oCLIBAD2', 'hello', '--data', '[1,2]');
    assert.equal(array.code, 1);
    assert.match(array.stderr, /--data must be a JSON object of template variables \(or null\), got an array/);
    const msgid = await mega('push', 'oCLIBAD3', 'hello', '--msgid', 'not valid!');
    assert.equal(msgid.code, 1);
    assert.match(msgid.stderr, /msgid must be 1-64 characters/);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!(await sim.messages()).slice(before).some((m) => m.touser?.startsWith('oCLIBAD')));
  });

  it('tset: exit 0 on 200, 1 for an unknown key', async () => {
    const ok = await mega('tset', 'hello');
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'result 200\n');
    const unknown = await mega('tset', 'no_such_key');
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stdout, 'result 400 template key not exists\n');
  });

  it('--host/--port override the config, and need no config file', async () => {
    const ok = await runMega([stack.name, 'push', 'oCLIPORT1', 'hello', '--host', '127.0.0.1', '--port', String(stack.port), '--config-dir', path.join(dir, 'none')]);
    assert.equal(ok.code, 0, ok.stderr);
    const closed = await freePort();
    const refused = await mega('push', 'oCLIPORT2', 'hello', '--port', String(closed));
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`cannot reach wechat: cannot connect to 127\\.0\\.0\\.1:${closed}: .*ECONNREFUSED`));
    const badPort = await mega('push', 'oCLIPORT3', 'hello', '--port', 'http');
    assert.equal(badPort.code, 1);
    assert.match(badPort.stderr, /--port must be a port number/);
  });

  it('template list and get', async () => {
    const list = await mega('template', 'list');
    assert.equal(list.code, 0, list.stderr);
    const lines = list.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^KEY\s+KIND\s+TITLE\s+UPDATED$/);
    assert.match(list.stdout, /^hello\s+template\s+hello\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/m);
    assert.match(list.stdout, /^other\s+template\s+other\s+\d{4}-/m);

    const json = await mega('template', 'list', '--json');
    const rows = JSON.parse(json.stdout) as Array<{ key: string; title: string; updatedAt: number }>;
    assert.deepEqual(rows.map((r) => r.key).filter((k) => k === 'hello' || k === 'other'), ['hello', 'other']);

    const get = await mega('template', 'get', 'other');
    assert.equal(get.code, 0, get.stderr);
    assert.deepEqual(JSON.parse(get.stdout), OTHER);
    const missing = await mega('template', 'get', 'no_such_key');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no template "no_such_key"/);
  });

  it('template set refuses bad JSON, an oversize template and malformed placeholders, and leaves the row alone', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['bad.json', '{"template_id": "t", "data": {', /template hello not saved: template "hello" is not valid JSON/],
      ['array.json', '[1, 2]', /must be a JSON object, got an array/],
      ['big.json', JSON.stringify({ template_id: 't', data: { first: { value: 'x'.repeat(600) } } }), /is \d+ bytes, longer than template_size 512 bytes/],
      ['space.json', JSON.stringify({ template_id: 't', data: { first: { value: 'hi ${a b}' } } }), /data\.first\.value: malformed placeholder "\$\{a b\}"/],
      ['open.json', JSON.stringify({ template_id: 't', data: { first: { value: 'hi ${name' } } }), /data\.first\.value: placeholder "\$\{name" is not closed/],
      ['empty.json', '{}', /template hello not saved: template "hello" has no "template_id"/],
      ['blank-id.json', JSON.stringify({ template_id: '', data: {} }), /template "hello" has a "template_id" that is not a non-empty string/],
      ['number-id.json', JSON.stringify({ template_id: 7, data: {} }), /template "hello" has a "template_id" that is not a non-empty string/],
    ];
    for (const [name, text, message] of cases) {
      const r = await mega('template', 'set', 'hello', '--file', file(name, text));
      assert.equal(r.code, 1, `${name}: ${r.stdout}`);
      assert.match(r.stderr, message, name);
    }
    const longKey = await mega('template', 'set', 'k'.repeat(33), '--file', file('ok.json', JSON.stringify(HELLO)));
    assert.equal(longKey.code, 1);
    assert.match(longKey.stderr, /the key must be 1-32 printable ASCII characters/);
    const missingFile = await mega('template', 'set', 'hello', '--file', path.join(dir, 'nope.json'));
    assert.equal(missingFile.code, 1);
    assert.match(missingFile.stderr, /cannot read .*nope\.json: ENOENT/);
    assert.deepEqual(JSON.parse((await mega('template', 'get', 'hello')).stdout), HELLO);
  });

  it('template set stores the row and TSets the running daemon: the next send uses the new text', async () => {
    const v2 = { touser: '${OPENID}', template_id: 't-hello', data: { first: { value: 'version 2 for ${name}' } } };
    const set = await mega('template', 'set', 'hello', '--file', file('v2.json', JSON.stringify(v2, null, 2)), '--title', 'Hello v2');
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /template hello saved \(\d+ bytes; placeholders: OPENID, name\)/);
    assert.match(set.stdout, /wechat \(pid \d+\) reloaded hello: result 200/);

    const send = await mega('send', 'oCLIV2', 'hello', '--data', '{"name":"Cy"}');
    assert.equal(send.code, 0, send.stderr);
    assert.equal((await messageTo('oCLIV2')).data!.first!.value, 'version 2 for Cy');
    assert.match((await mega('template', 'list')).stdout, /^hello\s+template\s+Hello v2\s+/m);
  });

  it('template set of a new key: TSet loads it; over table_size the refused TSet exits 1', async () => {
    const third = await mega('template', 'set', 'third', '--file', file('third.json', JSON.stringify(OTHER)));
    assert.equal(third.code, 0, third.stderr);
    assert.match(third.stdout, /reloaded third: result 200/);
    assert.equal((await mega('push', 'oCLITHIRD', 'third')).code, 0);

    const fourth = await mega('template', 'set', 'fourth', '--file', file('fourth.json', JSON.stringify(OTHER)));
    assert.equal(fourth.code, 1);
    assert.match(fourth.stdout, /template fourth saved/);
    assert.match(fourth.stderr, /template fourth saved, but wechat \(pid \d+\) refused the TSet: result 400 over table size/);
  });

  it('template rm: exit 0 when removed, 1 when there is no such template', async () => {
    const rm = await mega('template', 'rm', 'fourth');
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout, /template fourth removed; wechat \(pid \d+\) no longer sends it/);
    const again = await mega('template', 'rm', 'fourth');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no template "fourth"/);
    assert.equal((await mega('template', 'get', 'fourth')).code, 1);
  });

  it('template rm with the daemon running: the cached template is dropped at once, a Push of it is refused', async () => {
    assert.equal((await mega('push', 'oCLIRM1', 'third')).code, 0, 'cached before the rm');
    const rm = await mega('template', 'rm', 'third');
    assert.equal(rm.code, 0, rm.stderr);
    assert.match(rm.stdout, /template third removed; wechat \(pid \d+\) no longer sends it/);
    const push = await mega('push', 'oCLIRM2', 'third');
    assert.equal(push.code, 1);
    assert.equal(push.stdout, 'result 400 template key not exists\n');
  });

  it('with no daemon running: template set only stores; push cannot guess port 0', async () => {
    const other = tempDir();
    const configDir = path.join(other, 'config');
    const dbFile = path.join(other, 'mega.db');
    await putTemplates(dbFile, {});
    writeIni(configDir, 'idle', baseIni(other, dbFile, sim.url));
    const set = await runMega(['idle', 'template', 'set', 'fresh', '--file', file('fresh.json', JSON.stringify(HELLO)), '--config-dir', configDir]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /template fresh saved/);
    assert.match(set.stdout, /idle is not running: it loads the template when it starts/);
    const list = await runMega(['idle', 'template', 'list', '--config-dir', configDir]);
    assert.match(list.stdout, /^fresh\s+/m);
    const got = await runMega(['idle', 'template', 'get', 'fresh', '--config-dir', configDir]);
    assert.deepEqual(JSON.parse(got.stdout), HELLO);

    const push = await runMega(['idle', 'push', 'oIDLE', 'fresh', '--config-dir', configDir]);
    assert.equal(push.code, 1);
    assert.match(push.stderr, /idle is not running, and \[server\] listen\[\] has port 0: give --port/);
  });
});
