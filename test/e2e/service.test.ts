/**
 * Three daemons as one service on a 3-node NATS cluster (replicas 3) with one MariaDB template
 * table: they share the work, one access token, one quota pause and TSet; a Send is answered on
 * the connection that received it whichever daemon delivered it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePush, encodeSend, encodeTset } from '../../src/protocol/index.js';
import type { DaemonStatus } from '../../src/server/control-protocol.js';
import { eventually, type Stack } from '../helpers/stack.js';
import { natsAvailable } from '../helpers/nats.js';
import { mysqlAvailable } from '../helpers/mysql.js';
import { runMega } from '../helpers/processes.js';
import { startService, type Service } from '../helpers/service.js';

const HELLO = { touser: '${OPENID}', template_id: 'tmpl-hello', data: { first: { value: 'hello ${name}' } } };

async function status(d: Stack): Promise<DaemonStatus> {
  const r = await runMega(['wechat', 'status', '--json', '--config-dir', d.configDir]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as DaemonStatus;
}

const skip = !natsAvailable() || !(await mysqlAvailable());

describe('three daemons as one service (JetStream, replicas 3)', { skip: skip && 'nats-server or MariaDB missing' }, () => {
  let svc: Service;

  before(async () => {
    svc = await startService({ daemons: 3, templates: { hello: HELLO }, ini: { wechat: { quota_retry_interval: 1 } } });
  });
  after(async () => {
    await svc?.stop();
  });

  it('share the work and one access token; status lists the three members', async () => {
    const clients = await Promise.all(svc.daemons.map((d) => d.connect()));
    clients.forEach((c, i) => {
      for (let n = 0; n < 100; n++) c.write(encodePush(n + 1, `oSVC${i}`, 'hello', { name: `${i}-${n}` }));
    });
    for (const c of clients) assert.ok((await c.waitFor(100)).every((r) => r.code === 200));
    await eventually(async () => (await svc.sim.messages()).filter((m) => m.touser?.startsWith('oSVC')).length === 300, 20000, '300 delivered');
    const stats = await svc.sim.get<{ tokenRequests: number }>('/_sim/stats');
    assert.equal(stats.tokenRequests, 1, 'one token fetch for the whole service');
    const all = await Promise.all(svc.daemons.map(status));
    for (const s of all) {
      assert.equal(s.service?.members.length, 3, 'each sees the three');
      assert.equal(s.queue.backend, 'jetstream');
    }
    assert.equal(
      all.reduce((n, s) => n + s.token.fetches, 0),
      1,
      'one daemon fetched it',
    );
    for (const c of clients) c.close();
  });

  it('TSet on one daemon reaches all three', async () => {
    await svc.putTemplate('hello', { ...HELLO, data: { first: { value: 'v2 ${name}' } } });
    const a = await svc.daemons[0]!.connect();
    const answer = await a.request(encodeTset(1, 'hello'), 1);
    assert.equal(answer.code, 200, answer.message.toString());
    a.close();
    // every daemon now renders v2, whichever of them delivers
    for (const [i, d] of svc.daemons.entries()) {
      const c = await d.connect();
      const r = await c.request(encodeSend(1, `oV2-${i}`, 'hello', { name: String(i) }), 1);
      assert.equal(r.code, 200);
      c.close();
    }
    const texts = (await svc.sim.messages()).filter((m) => m.touser?.startsWith('oV2-')).map((m) => m.data?.first?.value);
    assert.deepEqual(texts.sort(), ['v2 0', 'v2 1', 'v2 2']);
  });

  it('answers every Send on the connection that received it, whichever daemon delivered it', async () => {
    const before = await Promise.all(svc.daemons.map(status));
    const clients = await Promise.all(svc.daemons.map((d) => d.connect()));
    clients.forEach((c, i) => {
      for (let n = 0; n < 60; n++) c.write(encodeSend(n + 1, `oSEND${i}`, 'hello', { name: `${i}-${n}` }));
    });
    for (const c of clients) {
      const answers = await c.waitFor(60, 30000);
      assert.ok(answers.every((r) => r.code === 200 && JSON.parse(r.message.toString()).errcode === 0));
    }
    const afterward = await Promise.all(svc.daemons.map(status));
    const deliveredBy = afterward.map((s, i) => s.sent - before[i]!.sent);
    assert.equal(deliveredBy.reduce((a, b) => a + b, 0), 180);
    for (const c of clients) c.close();
  });

  it('a 45009 seen by one daemon pauses all three; resume on another resumes all', async () => {
    await svc.sim.post('/_sim/config', { quotaAfter: 0 });
    const c = await svc.daemons[0]!.connect();
    for (let n = 0; n < 30; n++) c.write(encodePush(n + 1, 'oQUOTA', 'hello', { name: String(n) }));
    assert.ok((await c.waitFor(30)).every((r) => r.code === 200));
    const paused = await eventually(async () => {
      const all = await Promise.all(svc.daemons.map(status));
      return all.every((s) => s.paused?.reason === 'quota') ? all : undefined;
    }, 5000, 'all three paused');
    assert.ok(paused.every((s) => s.service?.pause?.reason === 'quota'));
    await svc.sim.post('/_sim/config', { quotaAfter: null });
    const r = await runMega(['wechat', 'resume', '--config-dir', svc.daemons[2]!.configDir]);
    assert.equal(r.code, 0, r.stderr);
    await eventually(async () => (await Promise.all(svc.daemons.map(status))).every((s) => s.paused === null && !s.service?.pause), 5000, 'all three resumed');
    await eventually(async () => new Set((await svc.sim.messages()).filter((m) => m.touser === 'oQUOTA' && m.errcode === 0).map((m) => m.client_msg_id)).size === 30, 20000, 'the 30 kept jobs delivered');
    c.close();
  });
  it('dead letters are kept in JetStream: listed and retried from any daemon', async () => {
    await svc.sim.post('/_sim/config', { failOpenids: [{ pattern: '^oDEAD', errcode: 40003, errmsg: 'invalid openid' }] });
    const c = await svc.daemons[0]!.connect();
    for (let n = 0; n < 3; n++) c.write(encodePush(n + 1, `oDEAD${n}`, 'hello', { name: String(n) }, `dead-${n}`));
    assert.ok((await c.waitFor(3)).every((r) => r.code === 200));
    c.close();
    const list = async (d: Stack): Promise<Array<{ id: number; openid: string; errcode: number }>> => {
      const r = await runMega(['wechat', 'dlq', 'list', '--json', '--config-dir', d.configDir]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as Array<{ id: number; openid: string; errcode: number }>;
    };
    const seen = await eventually(async () => {
      const l = await list(svc.daemons[1]!);
      return l.length === 3 ? l : undefined;
    }, 10000, 'three dead letters seen from another daemon');
    assert.deepEqual(seen.map((d) => d.openid).sort(), ['oDEAD0', 'oDEAD1', 'oDEAD2']);
    assert.ok(seen.every((d) => d.errcode === 40003));
    await svc.sim.post('/_sim/config', { failOpenids: [] });
    const r = await runMega(['wechat', 'dlq', 'retry', '--all', '--config-dir', svc.daemons[2]!.configDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /3 dead letter\(s\) queued again/);
    await eventually(async () => (await svc.sim.messages()).filter((m) => m.touser?.startsWith('oDEAD') && m.errcode === 0).length === 3, 10000, 'the three delivered');
    assert.deepEqual(await list(svc.daemons[0]!), [], 'gone from the stream');
  });
});
