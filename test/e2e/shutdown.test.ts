/**
 * Graceful stop: running WeChat calls finish and are answered, new requests get 503,
 * queued jobs that were not started stay in the queue and go out after the next start.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import path from 'node:path';
import { encodePush, encodeSend } from '../../src/protocol/index.js';
import { spawnMega } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle } from '../helpers/stack.js';

const TEMPLATE = { template_id: 't-stop', data: { first: { value: '${n}' } } };

describe('graceful stop', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  it('finishes running calls, refuses new work with 503, keeps the rest queued for the next start', async () => {
    // one worker, two calls at a time, 600 ms per call: most of 40 pushes are still queued at SIGTERM
    const stack = await startStack({
      simulator: sim,
      templates: { stop: TEMPLATE },
      ini: { setting: { task_worker_num: 1, task_concurrency: 2 } },
    });
    await sim.post('/_sim/config', { latencyMs: 600 });
    const client = await stack.connect();
    const sendResult = client.request(encodeSend(1, 'oRUNNING', 'stop', { n: 'send' }), 1);
    for (let i = 0; i < 40; i++) client.write(encodePush(100 + i, `oQUEUED${i}`, 'stop', { n: i }));
    await client.waitFor(40);
    assert.ok(client.results.filter((r) => r.opaque >= 100).every((r) => r.code === 200));

    // SIGTERM while WeChat calls are running
    await eventually(async () => (await sim.get<{ inFlight: number }>('/_sim/stats')).inFlight > 0, 10000, 'a call in flight');
    const exit = once(stack.daemon, 'exit');
    stack.daemon.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 100));
    const late = await client.request(encodePush(500, 'oLATE', 'stop', null), 500).catch(() => undefined);
    if (late) {
      assert.equal(late.code, 503, 'a request during shutdown is refused');
      assert.equal(late.message.toString(), 'shutting down');
    }
    const running = await sendResult;
    assert.equal(running.code, 200, 'the running Send finished and was answered before the exit');
    const [code] = (await exit) as [number];
    assert.equal(code, 0);

    const deliveredBefore = (await sim.messages()).filter((m) => m.touser?.startsWith('oQUEUED')).length;
    assert.ok(deliveredBefore < 40, `some pushes were still queued at stop (delivered ${deliveredBefore})`);

    // the same config again: the rest goes out
    await sim.post('/_sim/config', { latencyMs: 0 });
    const again = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', path.join(stack.dir, 'config')], /listening on/);
    await eventually(async () => {
      const got = new Set((await sim.messages()).filter((m) => m.touser?.startsWith('oQUEUED')).map((m) => m.touser));
      return got.size === 40;
    }, 15000, 'all 40 queued pushes delivered after restart');
    assert.equal((await sim.messages()).filter((m) => m.touser === 'oLATE').length, 0, 'the refused push was never sent');
    again.child.kill('SIGTERM');
    await once(again.child, 'exit');
  });
});
