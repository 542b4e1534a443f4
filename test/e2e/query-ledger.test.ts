/**
 * `query <msgid>` and `mega <name> msg show|list` against a real daemon with its ledger: a pushed
 * message is found by its msgid with the state WeChat's answer gave it (sent, or dead for a
 * permanent refusal of a Push), an unknown one is 404 (`msg show` exits 1), and the CLI shows the
 * same records through the running daemon and, once it is stopped, from the store.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MegaClient } from '../../src/index.js';
import { runMega } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';

describe('query and msg show|list with the ledger', () => {
  let stack: Stack;
  let sim: SimulatorHandle;
  const cli = (...args: string[]) => runMega(['wechat', ...args, '--config-dir', stack.configDir]);
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oDEAD', errcode: 43004, errmsg: 'require subscribe' }] });
    stack = await startStack({ simulator: sim, templates: { k: { template_id: 't', data: {} } }, ini: { ledger: { enabled: 1 } } });
  });
  after(async () => {
    await stack?.stop();
    await sim?.stop();
  });

  it('a pushed message is found by its msgid, sent, with WeChat msgid; an unknown one is 404', async () => {
    const client = await MegaClient.connect({ port: stack.port });
    try {
      assert.equal((await client.push('oUser1', 'k', { a: 'b' }, { msgid: 'order-42' })).code, 200);
      assert.equal((await client.push('oDEAD1', 'k', null, { msgid: 'dead-1' })).code, 200);
      const sent = await eventually(async () => {
        const r = await client.query('order-42');
        return r?.state === 'sent' ? r : undefined;
      }, 10000, 'order-42 sent');
      assert.deepEqual([sent.msgid, sent.openid, sent.key, sent.kind, sent.attempts, sent.errcode], ['order-42', 'oUser1', 'k', 'push', 1, 0]);
      assert.equal(typeof sent.wechatMsgid, 'string');
      const delivered = (await sim.messages()).find((m) => m.client_msg_id === 'order-42');
      assert.ok(delivered, 'WeChat got order-42');
      assert.ok(sent.sentAt !== null && sent.sentAt >= sent.queuedAt && sent.queuedAt > 0);
      assert.equal(await client.query('unknown-1'), undefined);
      const dead = await eventually(async () => {
        const r = await client.query('dead-1');
        return r?.state === 'dead' ? r : undefined;
      }, 10000, 'dead-1 dead');
      assert.deepEqual([dead.errcode, dead.errmsg, dead.finalAt !== null], [43004, 'require subscribe', true]);
    } finally {
      await client.close();
    }
  });

  it('msg show and msg list read the same records, through the daemon and, stopped, from the store', async () => {
    const viaQuery = await MegaClient.connect({ port: stack.port }).then(async (c) => {
      try {
        return await c.query('order-42');
      } finally {
        await c.close();
      }
    });
    const show = await cli('msg', 'show', 'order-42', '--json');
    assert.equal(show.code, 0, show.stderr);
    assert.deepEqual(JSON.parse(show.stdout), viaQuery);
    const text = await cli('msg', 'show', 'order-42');
    assert.match(text.stdout, /^state:\s+sent$/m);
    assert.match(text.stdout, /^openid:\s+oUser1$/m);
    const missing = await cli('msg', 'show', 'nope');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no message nope in the ledger of wechat/);

    const byOpenid = JSON.parse((await cli('msg', 'list', '--openid', 'oUser1', '--json')).stdout) as Array<{ msgid: string }>;
    assert.deepEqual(byOpenid.map((r) => r.msgid), ['order-42']);
    const byState = await cli('msg', 'list', '--state', 'dead');
    assert.match(byState.stdout, /\tdead-1\tdead\toDEAD1\tk\t1\t43004\trequire subscribe$/m);
    assert.match(byState.stdout, /^1 message\(s\)$/m);

    await stack.stop();
    const stopped = await cli('msg', 'show', 'order-42', '--json');
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.deepEqual(JSON.parse(stopped.stdout), viaQuery);
    const recent = JSON.parse((await cli('msg', 'list', '--since', '1h', '--json')).stdout) as Array<{ msgid: string }>;
    assert.deepEqual(recent.map((r) => r.msgid).sort(), ['dead-1', 'order-42']);
    const future = await cli('msg', 'list', '--since', new Date(Date.now() + 3_600_000).toISOString());
    assert.equal(future.stdout, 'no messages\n');
    const one = await cli('msg', 'list', '--limit', '1');
    assert.match(one.stdout, /^1 message\(s\) \(the newest 1; --limit for more\)$/m);
  });
});
