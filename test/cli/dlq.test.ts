/**
 * Dead letters and the queue from the shell: `mega <name> dlq list|retry` and `mega <name> queue`,
 * with the daemon running (through its control socket) and stopped (on the files).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePush } from '../../src/protocol/index.js';
import { runMega, spawnMega, stopChild } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle } from '../helpers/stack.js';
import type { DeadLetter as Dead, QueueSummary } from '../../src/server/control-protocol.js';

describe('mega <name> dlq and queue', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  it('lists permanent failures, retries one live and the rest offline, with the same client_msg_id', async () => {
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oDEAD', errcode: 43004, errmsg: 'require subscribe' }] });
    const stack = await startStack({ simulator: sim, templates: { k: { template_id: 't', data: {} } } });
    const cli = (...args: string[]) => runMega(['wechat', ...args, '--config-dir', stack.configDir]);
    const client = await stack.connect();
    for (let i = 1; i <= 3; i++) assert.equal((await client.request(encodePush(i, `oDEAD${i}`, 'k', null), i)).code, 200);
    assert.equal((await client.request(encodePush(9, 'oALIVE', 'k', null), 9)).code, 200);
    client.close();

    const listed = await eventually(async () => {
      const r = await cli('dlq', 'list', '--json');
      const entries = JSON.parse(r.stdout) as Dead[];
      return entries.length === 3 ? entries : undefined;
    }, 10000, 'three dead letters');
    assert.deepEqual(listed.map((e) => [e.openid, e.key, e.errcode, e.errmsg, e.attempts]).sort(), [
      ['oDEAD1', 'k', 43004, 'require subscribe', 1],
      ['oDEAD2', 'k', 43004, 'require subscribe', 1],
      ['oDEAD3', 'k', 43004, 'require subscribe', 1],
    ]);
    // permanent: each was tried exactly once
    const tries = (await sim.messages()).filter((m) => m.touser?.startsWith('oDEAD'));
    assert.equal(tries.length, 3);
    const table = await cli('dlq', 'list');
    assert.match(table.stdout, /oDEAD2\tk\t43004\t1\trequire subscribe/);

    const queue = await cli('queue');
    assert.equal(queue.code, 0, queue.stderr);
    assert.match(queue.stdout, /depth:\s+0/);
    assert.match(queue.stdout, /segments:\s+1/);
    assert.match(queue.stdout, /disk use:\s+\d/);

    // live retry of one
    await sim.post('/_sim/config', { failOpenids: [] });
    const one = listed.find((e) => e.openid === 'oDEAD1')!;
    const retried = await cli('dlq', 'retry', String(one.id));
    assert.equal(retried.code, 0, retried.stderr);
    assert.match(retried.stdout, /1 dead letter\(s\) queued again/);
    const delivered = await eventually(async () => (await sim.messages()).find((m) => m.touser === 'oDEAD1' && m.errcode === 0), 10000, 'oDEAD1 delivered');
    assert.equal(delivered.client_msg_id, one.clientMsgId);
    assert.equal((JSON.parse((await cli('dlq', 'list', '--json')).stdout) as Dead[]).length, 2);

    const unknown = await cli('dlq', 'retry', '999999');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no dead letter with id 999999/);
    const neither = await cli('dlq', 'retry');
    assert.equal(neither.code, 1);
    assert.match(neither.stderr, /either --all or one job id/);

    // offline: retry the rest into the stopped daemon's queue, then start it
    await stopChild(stack.daemon);
    const offline = await cli('dlq', 'retry', '--all');
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stdout, /2 dead letter\(s\) queued again/);
    const q = JSON.parse((await cli('queue', '--json')).stdout) as QueueSummary & { running: boolean };
    assert.deepEqual([q.running, q.depth], [false, 2]);
    assert.match((await cli('dlq', 'list')).stdout, /no dead letters/);

    const again = await spawnMega(['wechat', 'start', '--foreground', '--config-dir', stack.configDir], /listening on/);
    await eventually(async () => {
      const ok = (await sim.messages()).filter((m) => /^oDEAD[23]$/.test(m.touser ?? '') && m.errcode === 0);
      return ok.length === 2;
    }, 10000, 'oDEAD2 and oDEAD3 delivered after the offline retry');
    await stopChild(again.child);
    await sim.post('/_sim/reset', {});
  });
});
