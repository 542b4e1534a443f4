/**
 * MegaClient against a real daemon process (over real TCP) sending to the simulator (its own
 * process, over real HTTP).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  MegaClient,
  MegaClientTimeoutError,
  MegaConnectionClosedError,
  type MegaResult,
} from '../../src/index.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import { spawnMega, stopChild } from '../helpers/processes.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { freePort } from './fake-server.js';

const HELLO = { touser: '${OPENID}', template_id: 't-hello', data: { first: { value: 'hello ${name}' }, n: { value: '${n}' } } };

describe('MegaClient against a real daemon', () => {
  let sim: SimulatorHandle;
  let stack: Stack;
  const clients: MegaClient[] = [];

  const connect = async (options: Partial<ConstructorParameters<typeof MegaClient>[0]> = {}): Promise<MegaClient> => {
    const c = await MegaClient.connect({ port: stack.port, ...options });
    clients.push(c);
    return c;
  };

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    stack = await startStack({
      simulator: sim,
      templates: { hello: HELLO },
      ini: {
        setting: { package_max_length: 16384, task_worker_num: 2, task_concurrency: 32 },
        // WeChat calls must outlive the simulator's 2 s latency in the timeout test
        wechat: { timeout_ms: 10000 },
      },
    });
  });

  after(async () => {
    for (const c of clients) c.destroy();
    await stack?.stop();
    await sim?.stop();
  });

  it('push, send and tset give typed results', async () => {
    const c = await connect();
    const events: string[] = [];
    c.on('disconnect', () => events.push('disconnect'));

    const pushed = await c.push('oTYPED1', 'hello', { name: 'Ann' }, { msgid: 'typed-1' });
    assert.deepEqual(pushed, { code: 200, ok: true, message: '' });

    const sent = await c.send('oTYPED2', 'hello', { name: 'Bob' });
    assert.equal(sent.code, 200);
    assert.equal(sent.ok, true);
    assert.equal(sent.wechat?.errcode, 0);
    assert.equal(sent.wechat?.errmsg, 'ok');
    assert.equal(typeof sent.wechat?.msgid, 'number');
    assert.deepEqual(JSON.parse(sent.message), sent.wechat);

    const tset = await c.tset('hello');
    assert.deepEqual(tset, { code: 200, ok: true, message: '' });

    const unknown = await c.push('oTYPED3', 'no_such_key');
    assert.deepEqual(unknown, { code: 400, ok: false, message: 'template key not exists' });
    assert.deepEqual(await c.tset('no_such_key'), { code: 400, ok: false, message: 'template key not exists' });

    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oREFUSED', errcode: 43004, errmsg: 'require subscribe' }] });
    try {
      const refused = await c.send('oREFUSED1', 'hello', null);
      assert.equal(refused.code, 400);
      assert.equal(refused.ok, false);
      assert.deepEqual(refused.wechat, { errcode: 43004, errmsg: 'require subscribe', openid: 'oREFUSED1' });
    } finally {
      await sim.post('/_sim/config', { failOpenids: [] });
    }

    const delivered = await eventually(async () => (await sim.messages()).find((m) => m.touser === 'oTYPED1'), 10000, 'the push');
    assert.equal(delivered.client_msg_id, 'typed-1');
    assert.equal(delivered.data!.first!.value, 'hello Ann');
    assert.deepEqual(events, [], 'the connection stayed up through 400 answers');
    await c.close();
  });

  it('pipelines 2,000 sends with window 64, every answer correlated with its request', async () => {
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oPIPEREJ', errcode: 43004, errmsg: 'require subscribe' }] });
    try {
      const c = await connect({ window: 64 });
      let maxInFlight = 0;
      const sample = setInterval(() => (maxInFlight = Math.max(maxInFlight, c.inFlight)), 1);
      const openids = Array.from({ length: 2000 }, (_, i) => (i % 2 === 0 ? `oPIPEOK${i}` : `oPIPEREJ${i}`));
      const results = await Promise.all(
        openids.map((openid, i) => {
          const p = c.send(openid, 'hello', { name: openid, n: i });
          maxInFlight = Math.max(maxInFlight, c.inFlight);
          return p;
        }),
      );
      clearInterval(sample);
      assert.ok(maxInFlight <= 64, `at most 64 in flight, saw ${maxInFlight}`);
      assert.ok(maxInFlight >= 32, `the window was used (${maxInFlight} in flight at most)`);

      // Refusals carry the openid: each answer belongs to its own request.
      const msgids = new Map<string, number | string>();
      results.forEach((r: MegaResult, i) => {
        const openid = openids[i]!;
        if (i % 2 === 1) {
          assert.equal(r.code, 400, `${openid}: ${r.message}`);
          assert.equal(r.wechat?.openid, openid);
        } else {
          assert.equal(r.code, 200, `${openid}: ${r.message}`);
          assert.equal(r.wechat?.errcode, 0);
          msgids.set(openid, r.wechat!.msgid!);
        }
      });
      // Acceptances carry WeChat's msgid: it is the one the simulator gave that very openid.
      const received = (await sim.messages()).filter((m) => m.touser?.startsWith('oPIPEOK') && m.errcode === 0);
      const byOpenid = new Map(received.map((m) => [m.touser!, m]));
      assert.equal(byOpenid.size, 1000);
      for (const [openid, msgid] of msgids) {
        const m = byOpenid.get(openid)!;
        assert.equal((m as unknown as { msgid: number }).msgid, msgid, `msgid of ${openid}`);
        assert.equal(m.data!.first!.value, `hello ${openid}`);
      }
      assert.equal(c.inFlight, 0);
      await c.close();
    } finally {
      await sim.post('/_sim/config', { failOpenids: [] });
    }
  });

  it('times out a slow send with MegaClientTimeoutError and keeps working afterwards', async () => {
    const c = await connect({ window: 4 });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await sim.post('/_sim/config', { latencyMs: 2000 });
    try {
      const t0 = Date.now();
      await assert.rejects(
        c.send('oSLOW1', 'hello', null, { timeoutMs: 300 }),
        (e: unknown) =>
          e instanceof MegaClientTimeoutError && e.code === 'MEGA_ERR_CLIENT_TIMEOUT' && e.sent && /no answer within 300 ms/.test(e.message),
      );
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 290 && elapsed < 1500, `timed out after ${elapsed} ms`);
      assert.equal(c.inFlight, 0);
    } finally {
      await sim.post('/_sim/config', { latencyMs: 0 });
    }
    // A push is answered without waiting for the slow send.
    assert.equal((await c.push('oSLOW2', 'hello')).code, 200);
    // The late answer to the timed-out send arrives and is dropped quietly.
    await new Promise((r) => setTimeout(r, 2200));
    assert.deepEqual(errors, []);
    assert.equal(c.connected, true);
    const after = await c.send('oSLOW3', 'hello', { name: 'later' });
    assert.equal(after.code, 200);
    assert.equal(after.wechat?.errcode, 0);
    await c.close();
  });

  it('a frame over package_max_length: the daemon answers 413 and closes; pending requests reject with MegaConnectionClosedError', async () => {
    const c = await connect({ reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
    await sim.post('/_sim/config', { latencyMs: 1000 });
    try {
      const slow = c.send('oBIG1', 'hello');
      await new Promise((r) => setTimeout(r, 100));
      const big = c.push('oBIG2', 'hello', { name: 'x'.repeat(20000) });
      for (const p of [slow, big]) {
        await assert.rejects(
          p,
          (e: unknown) =>
            e instanceof MegaConnectionClosedError &&
            e.code === 'MEGA_ERR_CLIENT_CLOSED' &&
            e.sent &&
            /413 frame of \d+ bytes exceeds package_max_length 16384/.test(e.message) &&
            /resend with the same msgid/.test(e.message),
        );
      }
    } finally {
      await sim.post('/_sim/config', { latencyMs: 0 });
    }
    // reconnected by itself
    assert.equal((await c.push('oBIG3', 'hello')).code, 200);
    await c.close();
  });
});

describe('MegaClient across daemon restarts', () => {
  let sim: SimulatorHandle;
  let stack: Stack;
  let port: number;
  let restarted: Awaited<ReturnType<typeof spawnMega>> | undefined;

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    // A fixed port, so that the restarted daemon is on the same one. Another process may take
    // the port between freePort() and the daemon's listen: then try another.
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      try {
        stack = await startStack({
          simulator: sim,
          templates: { hello: HELLO },
          ini: { server: { listen: [`127.0.0.1:${port}`] }, wechat: { timeout_ms: 10000 } },
        });
        break;
      } catch (err) {
        if (attempt === 3) throw err;
      }
    }
  });

  after(async () => {
    if (restarted) await stopChild(restarted.child);
    await stack?.stop();
    await sim?.stop();
  });

  const startAgain = async (): Promise<void> => {
    restarted = await spawnMega([stack.name, 'start', '--foreground', '--config-dir', stack.configDir], /listening on [^:\s]+:(\d+)/);
    assert.equal(Number(restarted.match[1]), port, 'the daemon is back on the same port');
  };

  it('reconnects by itself after the daemon restarts; a push after the restart succeeds on the same client', async () => {
    assert.equal(stack.port, port);
    const c = new MegaClient({ port, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    try {
      const log: string[] = [];
      c.on('connect', () => log.push('connect'));
      c.on('disconnect', () => log.push('disconnect'));
      c.on('error', () => undefined);
      await c.connect();
      assert.equal((await c.push('oRESTART1', 'hello')).code, 200);

      await stack.stop(); // SIGTERM: graceful stop
      await eventually(() => !c.connected, 5000, 'the client to notice');
      // made while the daemon is down: waits for the reconnection
      const during = c.push('oRESTART2', 'hello', null, { timeoutMs: 20000 });
      await new Promise((r) => setTimeout(r, 300));
      await startAgain();
      assert.equal((await during).code, 200);
      assert.equal((await c.push('oRESTART3', 'hello')).code, 200);
      assert.deepEqual(log, ['connect', 'disconnect', 'connect']);
      await eventually(async () => (await sim.messages()).some((m) => m.touser === 'oRESTART3'), 10000, 'delivery after the restart');
    } finally {
      c.destroy();
    }
  });

  it('a daemon killed with a send pending: MegaConnectionClosedError (fate unknown), then the client reconnects', async () => {
    const c = new MegaClient({ port, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    try {
      c.on('error', () => undefined);
      await c.connect();
      await sim.post('/_sim/config', { latencyMs: 1500 });
      const pending = assert.rejects(
        c.send('oKILLED1', 'hello', null, { msgid: 'killed-1' }),
        (e: unknown) => e instanceof MegaConnectionClosedError && e.sent && /fate is unknown/.test(e.message),
      );
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(c.inFlight, 1);
      await stopChild(restarted!.child, 'SIGKILL');
      await pending;
      await sim.post('/_sim/config', { latencyMs: 0 });
      await startAgain();
      // resending with the same msgid: WeChat (the simulator) drops a repeat
      const again = await c.send('oKILLED1', 'hello', null, { msgid: 'killed-1', timeoutMs: 20000 });
      assert.equal(again.code, 200);
      assert.equal(again.wechat?.errcode, 0);
    } finally {
      c.destroy();
    }
  });

  it('the dist entry point exposes the client', async () => {
    const entry = (await import(path.join(REPO_ROOT, 'dist/src/index.js'))) as Record<string, unknown>;
    for (const name of ['MegaClient', 'ResultCode', 'MegaClientTimeoutError', 'MegaConnectionClosedError', 'MegaProtocolError']) {
      assert.ok(name in entry, name);
    }
  });
});
