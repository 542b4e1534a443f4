/**
 * SharedTokenSource: several daemons (each its own NATS connection) sharing one access token
 * through the service's `state` bucket on a real nats-server, fetching from the WeChat
 * simulator over real HTTP; the simulator counts the token requests.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { pino } from 'pino';
import { openServiceBuckets } from '../../src/cluster/buckets.js';
import { SharedTokenSource, type SharedTokenSourceOptions, type SharedTokenValue } from '../../src/cluster/shared-token.js';
import { TokenError } from '../../src/errors.js';
import { SIMULATOR_DEFAULT_APP_ID, WechatSimulator } from '../../src/simulator/index.js';
import { WechatClient } from '../../src/wechat/client.js';
import { NATS_SERVER_BIN, natsAvailable, startNats, type NatsCluster } from '../helpers/nats.js';
import { TEST_APP_SECRET } from '../helpers/secrets.js';
import { msg, sleep } from '../wechat/helpers.js';

async function eventually(what: string, check: () => Promise<boolean>, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`not within ${ms} ms: ${what}`);
    await sleep(10);
  }
}

if (!natsAvailable()) {
  describe('SharedTokenSource', () => {
    it('needs nats-server', (t) => t.skip(`nats-server not found at ${NATS_SERVER_BIN}`));
  });
} else {
  describe('SharedTokenSource', () => {
    let nats: NatsCluster;
    let sim: WechatSimulator;
    let client: WechatClient;
    const conns: NatsConnection[] = [];
    const sources: SharedTokenSource[] = [];
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) });
    /** Every token any daemon was handed, to look for in the logs. */
    const handedOut = new Set<string>();

    before(async () => {
      nats = await startNats();
      sim = await WechatSimulator.start({ appSecret: TEST_APP_SECRET });
      client = new WechatClient({ apiBase: sim.url, timeoutMs: 2000 });
    });
    after(async () => {
      for (const s of sources) await s.close();
      for (const nc of conns) await nc.close();
      await client?.close();
      await sim?.close();
      await nats?.stop();
    });

    /** `n` daemons of service `name`, each with its own connection to `servers`. */
    async function daemons(
      name: string,
      n: number,
      extra: Partial<SharedTokenSourceOptions> = {},
      servers = nats.servers,
    ): Promise<{ ds: SharedTokenSource[]; state: KV }> {
      const ds: SharedTokenSource[] = [];
      let state: KV | undefined;
      for (let i = 0; i < n; i++) {
        const nc = await connect({ servers });
        conns.push(nc);
        const buckets = await openServiceBuckets(nc, { name });
        state ??= buckets.state;
        const d = new SharedTokenSource({
          state: buckets.state,
          client,
          appId: SIMULATOR_DEFAULT_APP_ID,
          appSecret: TEST_APP_SECRET,
          endpoint: 'token',
          member: `${name}-d${i + 1}`,
          logger,
          ...extra,
        });
        sources.push(d);
        ds.push(d);
      }
      return { ds, state: state! };
    }

    const get = async (d: SharedTokenSource): Promise<string> => {
      const t = await d.get();
      handedOut.add(t);
      return t;
    };
    const fetches = (ds: SharedTokenSource[]): number => ds.reduce((n, d) => n + d.fetches, 0);
    const value = async (state: KV): Promise<SharedTokenValue | undefined> => (await state.get('token'))?.json<SharedTokenValue>();

    it('three daemons asking at once: one WeChat token request, one token for all', async () => {
      sim.reset();
      const { ds } = await daemons('once', 3);
      const got = await Promise.all(ds.flatMap((d) => [get(d), get(d), get(d)]));
      assert.equal(new Set(got).size, 1);
      assert.equal(sim.stats().tokenRequests, 1);
      assert.equal(fetches(ds), 1);
      assert.equal((await client.sendTemplate(got[0]!, msg('o'))).errcode, 0);
      // Served from what each holds afterwards.
      assert.deepEqual(await Promise.all(ds.map(get)), [got[0], got[0], got[0]]);
      assert.equal(sim.stats().tokenRequests, 1);
      for (const d of ds) assert.ok(d.tokenAgeMs !== undefined && d.tokenAgeMs >= 0 && d.tokenAgeMs < 5000);
    });

    it('two daemons invalidating the token at once: one more request, every daemon gets the new token', async () => {
      sim.reset();
      const { ds, state } = await daemons('inval', 3);
      const [a, b, c] = ds as [SharedTokenSource, SharedTokenSource, SharedTokenSource];
      const t1 = await get(a);
      await eventually('b and c hold the first token', async () => (await get(b)) === t1 && (await get(c)) === t1);
      a.invalidate(t1);
      b.invalidate(t1);
      const [ta, tb] = await Promise.all([get(a), get(b)]);
      assert.equal(ta, tb);
      assert.notEqual(ta, t1);
      await eventually('c gets the new token through the watch', async () => (await get(c)) === ta);
      assert.equal(sim.stats().tokenRequests, 2);
      assert.equal(fetches(ds), 2);
      assert.equal(c.fetches, 0);
      const v = await value(state);
      assert.ok(v?.kind === 'token' && v.token === ta);
      assert.equal((await client.sendTemplate(ta, msg('o'))).errcode, 0);
    });

    it('a late invalidate of an older token changes nothing', async () => {
      sim.reset();
      const { ds, state } = await daemons('late', 3);
      const [a] = ds as [SharedTokenSource];
      const t1 = await get(a);
      a.invalidate(t1);
      const t2 = await get(a);
      assert.notEqual(t2, t1);
      await eventually('every daemon holds the second token', async () => (await Promise.all(ds.map(get))).every((t) => t === t2));
      const revision = (await state.get('token'))!.revision;
      for (const d of ds) d.invalidate(t1);
      await sleep(100);
      assert.deepEqual(await Promise.all(ds.map(get)), [t2, t2, t2]);
      assert.equal((await state.get('token'))!.revision, revision);
      assert.equal(sim.stats().tokenRequests, 2);
      assert.equal(fetches(ds), 2);
    });

    it('a claim left by a dead daemon is taken over once it is claimStaleMs old', async () => {
      sim.reset();
      const { ds, state } = await daemons('dead', 2, { claimStaleMs: 600 });
      // A daemon claimed the refresh and died before writing a token.
      await state.create('token', JSON.stringify({ kind: 'claim', by: 'dead-daemon', at: Date.now() } satisfies SharedTokenValue));
      const started = Date.now();
      const got = await Promise.all(ds.map(get));
      const waited = Date.now() - started;
      assert.equal(new Set(got).size, 1);
      assert.ok(waited >= 500 && waited < 3000, `waited ${waited} ms`);
      assert.equal(sim.stats().tokenRequests, 1);
      assert.equal(fetches(ds), 1);
      const v = await value(state);
      assert.ok(v?.kind === 'token' && v.token === got[0]);
      assert.ok(lines.some((l) => l.includes('took over an abandoned access token refresh') && l.includes('dead-daemon')));

      // A claim already older than that is taken over at once.
      sim.reset();
      const old = await daemons('dead-old', 1, { claimStaleMs: 5000 });
      await old.state.create('token', JSON.stringify({ kind: 'claim', by: 'long-gone', at: Date.now() - 60_000 }));
      const t0 = Date.now();
      await get(old.ds[0]!);
      assert.ok(Date.now() - t0 < 1000);
      assert.equal(sim.stats().tokenRequests, 1);
    });

    it('stable_token handing back the rejected token: one forced refresh, for all', async () => {
      sim.reset();
      const { ds } = await daemons('stable', 2, { endpoint: 'stable' });
      const [a, b] = ds as [SharedTokenSource, SharedTokenSource];
      const t1 = await get(a);
      await eventually('b holds the token', async () => (await get(b)) === t1);
      a.invalidate(t1);
      b.invalidate(t1);
      const [ta, tb] = await Promise.all([get(a), get(b)]);
      assert.equal(ta, tb);
      assert.notEqual(ta, t1);
      assert.equal(sim.stats().tokenRequests, 3); // the first, the stable one (same token back), the forced one
      assert.equal((await client.sendTemplate(ta, msg('o'))).errcode, 0);
    });

    it('a failed fetch backs off the whole service: one request per window, then recovery', async () => {
      sim.reset();
      sim.configure({ tokenErrcode: 40164 });
      const { ds } = await daemons('failing', 3, { minBackoffMs: 400, maxBackoffMs: 400 });
      const first = await Promise.allSettled(ds.map(get));
      for (const r of first) assert.ok(r.status === 'rejected' && r.reason instanceof TokenError && r.reason.errcode === 40164);
      assert.equal(sim.stats().tokenRequests, 1);
      // Inside the window no daemon asks WeChat again.
      const again = await Promise.allSettled(ds.map(get));
      assert.ok(again.every((r) => r.status === 'rejected'));
      assert.equal(sim.stats().tokenRequests, 1);
      for (const d of ds) assert.equal(d.lastError?.errcode, 40164);
      assert.equal(lines.filter((l) => l.includes('"level":50') && l.includes('40164')).length, 1);

      sim.configure({ tokenErrcode: null });
      await sleep(450);
      const got = await Promise.all(ds.map(get));
      assert.equal(new Set(got).size, 1);
      assert.equal(sim.stats().tokenRequests, 2);
      assert.ok(lines.some((l) => l.includes('obtained again after 1 failed attempt(s)')));
      await eventually('every daemon forgets the error', async () => ds.every((d) => d.lastError === undefined));
    });

    it('without NATS: the token held is used while valid, then get() rejects with the reason', async () => {
      sim.reset();
      const own = await startNats();
      try {
        let skew = 0;
        const { ds } = await daemons('offline', 1, { waitMs: 1500, now: () => Date.now() + skew }, own.servers);
        const d = ds[0]!;
        const t1 = await get(d);
        await own.nodes[0]!.kill();
        assert.equal(await get(d), t1);
        // Past the refresh point (300 s before the simulator's 7200 s), before expiry: the
        // refresh cannot reach NATS, the token held is still valid.
        skew = 7000_000;
        assert.equal(await get(d), t1);
        assert.ok(lines.some((l) => l.includes('using the one held until it expires')));
        d.invalidate(t1);
        const started = Date.now();
        await assert.rejects(d.get(), (e: unknown) => {
          assert.ok(e instanceof TokenError);
          assert.match(e.message, /NATS/);
          assert.ok(!e.message.includes(TEST_APP_SECRET) && !e.message.includes(t1));
          return true;
        });
        assert.ok(Date.now() - started < 6000);
        assert.equal(d.fetches, 1);
      } finally {
        await own.stop();
      }
    });

    it('neither the app secret nor any token shows up in the logs', () => {
      assert.ok(lines.length > 0);
      assert.ok(handedOut.size >= 6);
      const all = lines.join('\n');
      assert.ok(!all.includes(TEST_APP_SECRET), 'app secret in the logs');
      for (const t of handedOut) assert.ok(!all.includes(t), 'a token in the logs');
    });
  });
}
