/**
 * One daemon with `[queue] backend = jetstream` on a nats-server of its own: Push, Send and TSet
 * behave as with the file queue; a resent Push (same msgid) is stored once; jobs left in the
 * stream when the daemon stops are delivered after it starts again; `queue` reads the stream.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePush, encodeSend, encodeTset } from '../../src/protocol/index.js';
import { eventually, startSimulator, startStack, APP_ID, APP_SECRET, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import { natsAvailable, startNats, type NatsCluster } from '../helpers/nats.js';
import { runMega, type IniSections } from '../helpers/processes.js';

const HELLO = { touser: '${OPENID}', template_id: 'tmpl-hello', data: { first: { value: 'hello ${name}' } } };

describe('daemon on JetStream', { skip: !natsAvailable() && 'nats-server not installed' }, () => {
  let nats: NatsCluster;
  let sim: SimulatorHandle;
  let stack: Stack;
  const jetstreamIni = (): IniSections => ({
    queue: { backend: 'jetstream' },
    jetstream: { servers: nats.servers },
  });

  before(async () => {
    nats = await startNats();
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    stack = await startStack({ simulator: sim, templates: { hello: HELLO }, ini: jetstreamIni() });
  });

  after(async () => {
    await stack?.stop();
    await sim?.stop();
    await nats?.stop();
  });

  it('delivers every Push and answers a Send with WeChat\'s answer', async () => {
    const client = await stack.connect();
    for (let i = 0; i < 50; i++) client.write(encodePush(i + 1, 'oJS', 'hello', { name: `n${i}` }));
    const acks = await client.waitFor(50);
    assert.ok(acks.every((r) => r.code === 200));
    const sent = await eventually(async () => {
      const m = (await sim.messages()).filter((x) => x.touser === 'oJS');
      return m.length >= 50 ? m : undefined;
    });
    // handed out in order; calls run side by side, so they may arrive in any order
    assert.deepEqual(
      sent.map((m) => m.data?.first?.value).sort(),
      Array.from({ length: 50 }, (_, i) => `hello n${i}`).sort(),
    );
    const answer = await client.request(encodeSend(100, 'oJS-send', 'hello', { name: 'S' }), 100);
    assert.equal(answer.code, 200);
    assert.equal(JSON.parse(answer.message.toString()).errcode, 0);
    client.close();
  });

  it('stores a resent Push (same msgid) once', async () => {
    const client = await stack.connect();
    const first = await client.request(encodePush(1, 'oDUP', 'hello', { name: 'd' }, 'dup-msgid-1'), 1);
    const again = await client.request(encodePush(2, 'oDUP', 'hello', { name: 'd' }, 'dup-msgid-1'), 2);
    assert.equal(first.code, 200);
    assert.equal(again.code, 200);
    // a later Push that is delivered after both: once it arrived, a second copy would have too
    await client.request(encodePush(3, 'oDUP', 'hello', { name: 'after' }), 3);
    const m = await eventually(async () => {
      const all = (await sim.messages()).filter((x) => x.touser === 'oDUP');
      return all.some((x) => x.data?.first?.value === 'hello after') ? all : undefined;
    });
    assert.equal(m.filter((x) => x.client_msg_id === 'dup-msgid-1').length, 1);
    client.close();
  });

  it('TSet reloads a template', async () => {
    await stack.putTemplate('hello', { ...HELLO, data: { first: { value: 'v2 ${name}' } } });
    const client = await stack.connect();
    assert.equal((await client.request(encodeTset(1, 'hello'), 1)).code, 200);
    assert.equal((await client.request(encodeSend(2, 'oV2', 'hello', { name: 'x' }), 2)).code, 200);
    const [m] = (await sim.messages()).filter((x) => x.touser === 'oV2');
    assert.equal(m?.data?.first?.value, 'v2 x');
    client.close();
  });

  it('keeps jobs in the stream while the daemon is stopped and delivers them after a start', async () => {
    // a dead letter, for `dlq` while the daemon is stopped
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oDLQ', errcode: 40003, errmsg: 'invalid openid' }] });
    const first = await stack.connect();
    assert.equal((await first.request(encodePush(1, 'oDLQ1', 'hello', { name: 'dead' }, 'dlq-1'), 1)).code, 200);
    first.close();
    await eventually(async () => (await sim.messages()).some((m) => m.touser === 'oDLQ1'), 10000, 'the failing send');
    await sim.post('/_sim/config', { failOpenids: [] });
    // slow calls, so that most of the jobs are still queued when the daemon stops
    await sim.post('/_sim/config', { latencyMs: 1500 });
    const client = await stack.connect();
    for (let i = 0; i < 60; i++) client.write(encodePush(i + 1, 'oLATER', 'hello', { name: `l${i}` }));
    assert.ok((await client.waitFor(60)).every((r) => r.code === 200));
    client.close();
    await stack.stop();
    await sim.post('/_sim/config', { latencyMs: 0 });
    // the service's dead letters, read and queued again from the CLI of a stopped daemon
    const dlq = await runMega(['wechat', 'dlq', 'list', '--json', '--config-dir', stack.configDir]);
    assert.equal(dlq.code, 0, dlq.stderr);
    assert.deepEqual((JSON.parse(dlq.stdout) as Array<{ openid: string }>).map((d) => d.openid), ['oDLQ1']);
    const retried = await runMega(['wechat', 'dlq', 'retry', '--all', '--config-dir', stack.configDir]);
    assert.equal(retried.code, 0, retried.stderr);
    const q = await runMega(['wechat', 'queue', '--json', '--config-dir', stack.configDir]);
    assert.equal(q.code, 0, q.stderr);
    const summary = JSON.parse(q.stdout) as { backend: string; depth: number; running: boolean };
    assert.equal(summary.backend, 'jetstream');
    assert.equal(summary.running, false);
    const delivered = new Set((await sim.messages()).filter((x) => x.touser === 'oLATER').map((x) => x.data?.first?.value)).size;
    assert.ok(summary.depth > 0, 'jobs were left in the stream');
    assert.equal(summary.depth + delivered, 61, `depth ${summary.depth} + delivered ${delivered} (60 Pushes and the retried dead letter)`);
    stack = await startStack({ simulator: sim, templates: { hello: { ...HELLO, data: { first: { value: 'hello ${name}' } } } }, ini: jetstreamIni() });
    await eventually(async () => {
      const names = new Set((await sim.messages()).filter((x) => x.touser === 'oLATER').map((x) => x.data?.first?.value));
      return names.size === 60;
    }, 20000, 'all 60 jobs delivered');
    await eventually(async () => (await sim.messages()).some((m) => m.touser === 'oDLQ1' && m.errcode === 0), 10000, 'the retried dead letter delivered');
  });
});
