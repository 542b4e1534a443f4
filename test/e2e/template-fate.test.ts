/**
 * What becomes of messages whose template cannot be filled or is gone, end to end on a real
 * daemon: a deleted template stops being sent at the TSet, `[setting] missing_variable`,
 * deeply nested variables refused at ingest, and render failures that are permanent.
 *
 * Jobs are held in the queue by a token endpoint that refuses the secret (dispatch waits
 * without spending any job), so a test can change templates under queued jobs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePush, encodeSend, encodeTset, MAX_VARIABLES_DEPTH } from '../../src/protocol/index.js';
import { runMega } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import type { QueueSummary } from '../../src/server/control-protocol.js';

const ORDER = {
  touser: '${OPENID}',
  template_id: 'tmpl-order',
  data: { product: { value: '${product}' }, price: { value: '${price}' }, time: { value: '${time}' } },
};

interface Dead {
  openid: string;
  key: string;
  errcode: number;
  errmsg: string;
  attempts: number;
}

describe('template fate end to end', () => {
  let sim: SimulatorHandle;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
  });
  after(async () => {
    await sim?.stop();
  });

  const deadLetters = async (stack: Stack): Promise<Dead[]> => {
    const r = await runMega([stack.name, 'dlq', 'list', '--json', '--config-dir', stack.configDir]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Dead[];
  };
  const received = async (prefix: string) => (await sim.messages()).filter((m) => m.touser?.startsWith(prefix));
  /** The messages to `openid`, once there is one. */
  const arrived = (openid: string) => eventually(async () => {
    const found = await received(openid);
    return found.length > 0 ? found : undefined;
  }, 10000, `a message to ${openid}`);
  /** Token fetches fail (40125): the daemon holds every job until the endpoint recovers. */
  const holdDispatch = () => sim.post('/_sim/config', { tokenErrcode: 40125 });
  const releaseDispatch = () => sim.post('/_sim/config', { tokenErrcode: null });

  it('a TSet of a deleted template drops it: Push is refused, queued jobs fail for good with the reason', async () => {
    await sim.post('/_sim/reset', {});
    await holdDispatch();
    const stack = await startStack({ simulator: sim, templates: { order: ORDER, keep: ORDER } });
    try {
      const client = await stack.connect();
      for (let i = 1; i <= 3; i++) assert.equal((await client.request(encodePush(i, `oDROP${i}`, 'order', { product: 'p' }), i)).code, 200);
      assert.equal((await client.request(encodePush(4, 'oKEEP1', 'keep', { product: 'p' }), 4)).code, 200);
      const send = client.request(encodeSend(5, 'oDROPSEND', 'order', { product: 'p' }), 5, 30000);

      const rm = await runMega([stack.name, 'template', 'rm', 'order', '--config-dir', stack.configDir]);
      assert.equal(rm.code, 0, rm.stderr);
      assert.match(rm.stdout, /template order removed; wechat \(pid \d+\) no longer sends it/);
      const push = await client.request(encodePush(6, 'oDROP9', 'order', {}), 6);
      assert.deepEqual([push.code, push.message.toString()], [400, 'template key not exists']);
      const tset = await client.request(encodeTset(7, 'order'), 7);
      assert.deepEqual([tset.code, tset.message.toString()], [400, 'template key not exists']);

      await releaseDispatch();
      const answer = await send;
      assert.equal(answer.code, 400);
      assert.deepEqual(JSON.parse(answer.message.toString()), { errcode: -2, errmsg: 'template key not exists', openid: 'oDROPSEND' });
      const dead = await eventually(async () => {
        const d = await deadLetters(stack);
        return d.length === 3 ? d : undefined;
      }, 15000, 'three dead letters');
      assert.deepEqual(dead.map((d) => [d.openid, d.key, d.errcode, d.errmsg, d.attempts]).sort(), [
        ['oDROP1', 'order', -2, 'template key not exists', 1],
        ['oDROP2', 'order', -2, 'template key not exists', 1],
        ['oDROP3', 'order', -2, 'template key not exists', 1],
      ]);
      await eventually(async () => (await received('oKEEP')).length === 1, 10000, 'the other template still delivered');
      assert.equal((await received('oDROP')).length, 0, 'nothing of the dropped template reached WeChat');
      client.close();
    } finally {
      await releaseDispatch();
      await stack.stop();
    }
  });

  it('missing_variable = reject: 400 naming the missing placeholders, nothing queued; a null variable is ""', async () => {
    await sim.post('/_sim/reset', {});
    const stack = await startStack({ simulator: sim, templates: { order: ORDER }, ini: { setting: { missing_variable: 'reject' } } });
    try {
      const client = await stack.connect();
      const refused = await client.request(encodePush(1, 'oREJ1', 'order', { product: 'tea' }), 1);
      assert.deepEqual([refused.code, refused.message.toString()], [400, 'missing variables: price, time']);
      const refusedSend = await client.request(encodeSend(2, 'oREJ2', 'order', null), 2);
      assert.deepEqual([refusedSend.code, refusedSend.message.toString()], [400, 'missing variables: product, price, time']);
      const queue = await runMega([stack.name, 'queue', '--json', '--config-dir', stack.configDir]);
      assert.equal((JSON.parse(queue.stdout) as QueueSummary).depth, 0, 'nothing was queued');

      const ok = await client.request(encodePush(3, 'oREJ3', 'order', { product: 'tea', price: null, time: 7 }), 3);
      assert.equal(ok.code, 200);
      const [m] = await arrived('oREJ3');
      assert.deepEqual(m!.data, { product: { value: 'tea' }, price: { value: '' }, time: { value: '7' } });
      assert.equal((await received('oREJ1')).length + (await received('oREJ2')).length, 0);
      client.close();
    } finally {
      await stack.stop();
    }
  });

  it('missing_variable = empty fills "", the default keep leaves ${NAME} as written', async () => {
    await sim.post('/_sim/reset', {});
    for (const [mode, expected] of [
      ['empty', { product: { value: 'tea' }, price: { value: '' }, time: { value: '' } }],
      [undefined, { product: { value: 'tea' }, price: { value: '' }, time: { value: '${time}' } }],
    ] as const) {
      const stack = await startStack({ simulator: sim, templates: { order: ORDER }, ini: mode ? { setting: { missing_variable: mode } } : {} });
      try {
        const client = await stack.connect();
        const openid = `oMODE${mode ?? 'keep'}`;
        assert.equal((await client.request(encodePush(1, openid, 'order', { product: 'tea', price: null }), 1)).code, 200);
        const [m] = await arrived(openid);
        assert.deepEqual(m!.data, expected, mode ?? 'keep');
        client.close();
      } finally {
        await stack.stop();
      }
    }
  });

  it('variables nested deeper than the limit are refused at ingest, and the daemon keeps serving at once', async () => {
    await sim.post('/_sim/reset', {});
    const stack = await startStack({ simulator: sim, templates: { order: ORDER } });
    try {
      const client = await stack.connect();
      const deep = Buffer.from(`{"product":${'['.repeat(20_000)}${']'.repeat(20_000)}}`);
      const refused = `variables nest deeper than ${MAX_VARIABLES_DEPTH} levels`;
      for (let i = 1; i <= 50; i++) {
        const r = await client.request(encodePush(i, `oDEEP${i}`, 'order', deep), i);
        assert.deepEqual([r.code, r.message.toString()], [400, refused]);
      }
      const atLimit = `{"product":${'['.repeat(MAX_VARIABLES_DEPTH - 1)}${']'.repeat(MAX_VARIABLES_DEPTH - 1)}}`;
      assert.equal((await client.request(encodePush(100, 'oDEEPOK', 'order', atLimit), 100)).code, 200);
      const [m] = await arrived('oDEEPOK');
      assert.equal(m!.data!.product!.value, '['.repeat(MAX_VARIABLES_DEPTH - 1) + ']'.repeat(MAX_VARIABLES_DEPTH - 1));
      assert.equal((await received('oDEEP')).length, 1);
      client.close();
    } finally {
      await stack.stop();
    }
  });

  it('a job that cannot be rendered fails at once with the reason (errcode -3), never retried', async () => {
    await sim.post('/_sim/reset', {});
    await holdDispatch();
    const stack = await startStack({ simulator: sim, templates: { order: ORDER }, ini: { setting: { missing_variable: 'reject' } } });
    try {
      const client = await stack.connect();
      const full = { product: 'tea', price: '1', time: 'now' };
      assert.equal((await client.request(encodePush(1, 'oRENDER1', 'order', full), 1)).code, 200);
      // The template changes under the queued job: it now needs a variable the job lacks.
      await stack.putTemplate('order', { ...ORDER, url: 'https://example.com/${coupon}' });
      assert.equal((await client.request(encodeTset(2, 'order'), 2)).code, 200);
      await releaseDispatch();
      const [dead] = await eventually(async () => {
        const d = await deadLetters(stack);
        return d.length === 1 ? d : undefined;
      }, 15000, 'one dead letter');
      assert.deepEqual([dead!.openid, dead!.errcode, dead!.errmsg, dead!.attempts], ['oRENDER1', -3, 'cannot render template: missing variables: coupon', 1]);
      assert.equal((await received('oRENDER')).length, 0);
      client.close();
    } finally {
      await releaseDispatch();
      await stack.stop();
    }
  });
});
