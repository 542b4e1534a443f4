/** ServiceMembers against a real nats-server: daemons on their own connections see each other join, leave and die. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { bucketNames, openServiceBuckets } from '../../src/cluster/buckets.js';
import { ServiceMembers, type Member, type ServiceMembersOptions } from '../../src/cluster/members.js';
import { NATS_SERVER_BIN, natsAvailable, startNats, type NatsCluster } from '../helpers/nats.js';
import { fakeLogger, sleep } from '../queue/helpers.js';

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(20);
  }
  return Date.now() - start;
}

const ids = (m: ServiceMembers): string[] => m.list().map((x) => x.id);

if (!natsAvailable()) {
  describe('ServiceMembers', () => {
    it('needs nats-server', (t) => t.skip(`nats-server not found at ${NATS_SERVER_BIN}`));
  });
} else {
  describe('ServiceMembers', () => {
    let nats: NatsCluster;
    const conns: NatsConnection[] = [];
    const members: ServiceMembers[] = [];
    before(async () => {
      nats = await startNats();
    });
    after(async () => {
      for (const m of members) await m.close();
      for (const nc of conns) if (!nc.isClosed()) await nc.close();
      await nats?.stop();
    });

    const HEARTBEAT = 200;
    const EXPIRE = 1000;

    /** A daemon of service `service` on its own connection. */
    async function daemon(
      service: string,
      id: string,
      extra: Partial<ServiceMembersOptions> = {},
    ): Promise<{ m: ServiceMembers; nc: NatsConnection; kv: KV }> {
      const nc = await connect({ servers: nats.servers });
      conns.push(nc);
      const { members: kv } = await openServiceBuckets(nc, { name: service, memberTtlMs: extra.expireMs ?? EXPIRE });
      const m = new ServiceMembers({
        kv,
        self: { id, host: 'h-' + id, pid: 1000 + members.length, addresses: [`10.0.0.${members.length}:9000`], startedAt: Date.now() },
        heartbeatMs: HEARTBEAT,
        expireMs: EXPIRE,
        info: () => ({ sendRate: id.length }),
        ...extra,
      });
      members.push(m);
      return { m, nc, kv };
    }

    async function three(service: string, extra: Partial<ServiceMembersOptions> = {}) {
      const ds = await Promise.all(['m-a', 'm-b', 'm-c'].map((id) => daemon(service, id, extra)));
      await Promise.all(ds.map((d) => d.m.start()));
      await waitFor('all three see three', () => ds.every((d) => d.m.count === 3), 1500);
      return ds;
    }

    it('three daemons see each other within 1.5 s, with what each says about itself, and agree on the leader', async () => {
      const ds = await Promise.all(['m-c', 'm-a', 'm-b'].map((id) => daemon('see', id)));
      const t0 = Date.now();
      await Promise.all(ds.map((d) => d.m.start()));
      await waitFor('all three see three', () => ds.every((d) => d.m.count === 3), 1500);
      assert.ok(Date.now() - t0 < 1500);
      for (const { m } of ds) {
        assert.deepEqual(ids(m), ['m-a', 'm-b', 'm-c']);
        assert.equal(m.leader(), 'm-a');
        assert.ok(m.has('m-b') && !m.has('m-z'));
      }
      const b = ds[0]!.m.list().find((x) => x.id === 'm-b') as Member;
      assert.equal(b.host, 'h-m-b');
      assert.equal(b.sendRate, 3);
      assert.deepEqual(Object.keys(b).sort(), ['addresses', 'host', 'id', 'pid', 'seenAt', 'sendRate', 'startedAt']);
      assert.ok(Math.abs(Date.now() - b.seenAt) < 1000);
    });

    it('one that closes is gone for the others at once (not after expireMs), with one change event', async () => {
      const ds = await three('close', { expireMs: 4000 });
      const [a, b, c] = ds.map((d) => d.m) as [ServiceMembers, ServiceMembers, ServiceMembers];
      const changes: string[][] = [];
      b.on('change', (list) => changes.push(list.map((x) => x.id)));
      await sleep(600); // heartbeats alone are no change
      assert.deepEqual(changes, []);
      const t0 = Date.now();
      await a.close();
      await waitFor('b and c see two', () => b.count === 2 && c.count === 2, 1000);
      assert.ok(Date.now() - t0 < 1000);
      assert.deepEqual(ids(b), ['m-b', 'm-c']);
      assert.equal(b.leader(), 'm-b');
      assert.equal(c.leader(), 'm-b');
      await sleep(300);
      assert.deepEqual(changes, [['m-b', 'm-c']]);
    });

    it('one that dies (its connection lost, no close) is dropped after expireMs, once; it keeps its last view and logs the outage once', async () => {
      const log = fakeLogger();
      const ds = await Promise.all(['m-a', 'm-b', 'm-c'].map((id) => daemon('die', id, id === 'm-c' ? { logger: log.logger } : {})));
      await Promise.all(ds.map((d) => d.m.start()));
      await waitFor('all three see three', () => ds.every((d) => d.m.count === 3), 1500);
      const [a, b, c] = ds.map((d) => d.m) as [ServiceMembers, ServiceMembers, ServiceMembers];
      const changes: string[][] = [];
      a.on('change', (list) => changes.push(list.map((x) => x.id)));
      const t0 = Date.now();
      await ds[2]!.nc.close();
      await waitFor('a and b drop c', () => a.count === 2 && b.count === 2, EXPIRE + 1000);
      const took = Date.now() - t0;
      assert.ok(took >= EXPIRE - 2 * HEARTBEAT, `dropped after ${took} ms, before expireMs`);
      assert.deepEqual(ids(a), ['m-a', 'm-b']);
      await sleep(EXPIRE + 500); // the server's own expiry later is no second change
      assert.deepEqual(changes, [['m-a', 'm-b']]);
      // The dead one cannot see, so judges no one.
      assert.deepEqual(ids(c), ['m-a', 'm-b', 'm-c']);
      const heartbeatWarns = log.warns().filter((w) => /heartbeat failed/.test(w.msg ?? ''));
      assert.equal(heartbeatWarns.length, 1, JSON.stringify(log.warns().map((w) => w.msg)));
      assert.equal(a.leader(), 'm-a');
      assert.equal(b.leader(), 'm-a');
    });

    it('the leader moves to the next lowest id when it leaves, on every member', async () => {
      const ds = await three('lead');
      const [a, b, c] = ds.map((d) => d.m) as [ServiceMembers, ServiceMembers, ServiceMembers];
      assert.deepEqual([a.leader(), b.leader(), c.leader()], ['m-a', 'm-a', 'm-a']);
      await a.close();
      await waitFor('b and c see b lead', () => b.leader() === 'm-b' && c.leader() === 'm-b', 1000);
      assert.deepEqual(a.list(), [], 'closed: no view');
    });

    it('an entry left by a daemon that died before this one started counts from when it was written, not from when this one saw it', async () => {
      const nc = await connect({ servers: nats.servers });
      conns.push(nc);
      const { members: kv } = await openServiceBuckets(nc, { name: 'stale', memberTtlMs: EXPIRE });
      const ghost = { id: 'm-0', host: 'gone', pid: 1, addresses: [], startedAt: Date.now(), sendRate: 0, at: Date.now() };
      await kv.put('m-0', JSON.stringify(ghost));
      await sleep(600);
      const { m } = await daemon('stale', 'm-x');
      const t0 = Date.now();
      await m.start();
      assert.deepEqual(ids(m), ['m-0', 'm-x'], 'still young enough when it started');
      assert.equal(m.leader(), 'm-0');
      await waitFor('the ghost is dropped', () => !m.has('m-0'), EXPIRE);
      assert.ok(Date.now() - t0 < EXPIRE - 200, `dropped ${Date.now() - t0} ms after start: counted from when it was seen`);
      assert.equal(m.leader(), 'm-x');
    });

    it('a watch whose consumer is lost is started again, without dropping anyone meanwhile', { timeout: 15_000 }, async () => {
      const log = fakeLogger();
      const ds = await Promise.all(['m-a', 'm-b', 'm-c'].map((id) => daemon('lost', id, id === 'm-b' ? { logger: log.logger } : {})));
      await Promise.all(ds.map((d) => d.m.start()));
      await waitFor('all three see three', () => ds.every((d) => d.m.count === 3), 1500);
      const [a, b, c] = ds.map((d) => d.m) as [ServiceMembers, ServiceMembers, ServiceMembers];
      const jsm = await jetstreamManager(ds[0]!.nc);
      const stream = `KV_${bucketNames('lost').members}`;
      const removed: string[] = [];
      for await (const ci of jsm.consumers.list(stream)) removed.push(ci.name);
      for (const name of removed) await jsm.consumers.delete(stream, name);
      assert.equal(removed.length, 3);
      const counts = new Set<number>();
      const watchCounts = setInterval(() => ds.forEach((d) => counts.add(d.m.count)), 20);
      await sleep(2500);
      clearInterval(watchCounts);
      assert.deepEqual([...counts], [3], 'no one dropped while the watches were dead');
      assert.ok(log.warns().some((w) => /watching again/.test(w.msg ?? '')));
      await c.close();
      await waitFor('a and b see c leave', () => a.count === 2 && b.count === 2, 1000);
    });

    it('start rejects when NATS is gone; a bad id is refused', async () => {
      const { m, nc } = await daemon('down', 'm-a');
      await nc.close();
      await assert.rejects(m.start(), /cannot join the service's members as m-a/);
      const { members: kv } = await openServiceBuckets(conns[0]!, { name: 'down', memberTtlMs: EXPIRE });
      assert.throws(() => new ServiceMembers({ kv, self: { id: 'a b', host: 'h', pid: 1, addresses: [], startedAt: 0 } }), /not a valid key/);
      assert.throws(() => new ServiceMembers({ kv, self: { id: 'a', host: 'h', pid: 1, addresses: [], startedAt: 0 }, heartbeatMs: 1000, expireMs: 1000 }), /longer than/);
    });
  });
}
