/** SharedPause against a real nats-server: one pause for every daemon of the service, and one prober. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { bucketNames, openServiceBuckets } from '../../src/cluster/buckets.js';
import { ServiceMembers } from '../../src/cluster/members.js';
import { SharedPause, type AnnouncedPause, type PauseState } from '../../src/cluster/shared-pause.js';
import { NATS_SERVER_BIN, natsAvailable, startNats, type NatsCluster } from '../helpers/nats.js';
import { sleep } from '../queue/helpers.js';

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
  return Date.now() - start;
}

const quota = (detail: string): PauseState => ({ reason: 'quota', since: new Date().toISOString(), detail });

interface Daemon {
  id: string;
  nc: NatsConnection;
  members: ServiceMembers;
  pause: SharedPause;
  changes: (AnnouncedPause | undefined)[];
}

if (!natsAvailable()) {
  describe('SharedPause', () => {
    it('needs nats-server', (t) => t.skip(`nats-server not found at ${NATS_SERVER_BIN}`));
  });
} else {
  describe('SharedPause', () => {
    let nats: NatsCluster;
    const all: Daemon[] = [];
    before(async () => {
      nats = await startNats();
    });
    after(async () => {
      for (const d of all) {
        d.pause.close();
        await d.members.close();
        if (!d.nc.isClosed()) await d.nc.close();
      }
      await nats?.stop();
    });

    /** Three daemons of `service` (ids p-a < p-b < p-c), members on, each following the pause. */
    async function three(service: string, checkMs?: number): Promise<[Daemon, Daemon, Daemon]> {
      const ds = await Promise.all(
        ['p-a', 'p-b', 'p-c'].map(async (id): Promise<Daemon> => {
          const nc = await connect({ servers: nats.servers });
          const kv = await openServiceBuckets(nc, { name: service, memberTtlMs: 1000 });
          const members = new ServiceMembers({
            kv: kv.members,
            self: { id, host: 'h', pid: 1, addresses: [], startedAt: Date.now() },
            heartbeatMs: 200,
            expireMs: 1000,
          });
          const pause = new SharedPause({ kv: kv.state, member: id, ...(checkMs ? { checkMs } : {}) });
          const d: Daemon = { id, nc, members, pause, changes: [] };
          pause.on('change', (p) => d.changes.push(p));
          all.push(d);
          return d;
        }),
      );
      await Promise.all(ds.map((d) => d.members.start()));
      await Promise.all(ds.map((d) => d.pause.ready()));
      await waitFor('all see three members', () => ds.every((d) => d.members.count === 3), 1500);
      return ds as [Daemon, Daemon, Daemon];
    }

    it('a pause started on A reaches B and C within 1 s with A state; end on C lifts it everywhere', async () => {
      const [a, b, c] = await three('spread');
      assert.equal(b.pause.current, undefined);
      const state = quota('45009 api freq out of limit');
      const t0 = Date.now();
      await a.pause.start(state);
      assert.deepEqual(a.pause.current, { ...state, by: 'p-a' });
      await waitFor('b and c see it', () => b.pause.current !== undefined && c.pause.current !== undefined, 1000);
      assert.ok(Date.now() - t0 < 1000);
      assert.deepEqual(b.pause.current, { ...state, by: 'p-a' });
      assert.deepEqual(c.pause.current, { ...state, by: 'p-a' });
      await c.pause.end();
      assert.equal(c.pause.current, undefined);
      await waitFor('a and b see it end', () => a.pause.current === undefined && b.pause.current === undefined, 1000);
      for (const d of [a, b, c]) assert.deepEqual(d.changes, [{ ...state, by: 'p-a' }, undefined], d.id);
    });

    it('two daemons starting a pause at once leave one record, which both then show', async () => {
      const [a, b, c] = await three('race');
      for (let round = 0; round < 5; round++) {
        const sb = quota('from b');
        const sc = quota('from c');
        await Promise.all([b.pause.start(sb), c.pause.start(sc)]);
        const winner = b.pause.current!;
        assert.ok(winner.by === 'p-b' || winner.by === 'p-c');
        assert.deepEqual(winner, winner.by === 'p-b' ? { ...sb, by: 'p-b' } : { ...sc, by: 'p-c' });
        assert.deepEqual(c.pause.current, winner);
        await waitFor('a sees it', () => a.pause.current !== undefined, 1000);
        assert.deepEqual(a.pause.current, winner);
        await sleep(50);
        for (const d of [a, b, c]) assert.deepEqual(d.changes, [winner], `${d.id} saw only the one record`);
        // A start while one is announced keeps the one announced.
        await a.pause.start({ reason: 'unreachable', since: new Date().toISOString(), detail: 'later' });
        assert.deepEqual(a.pause.current, winner);
        await a.pause.end();
        await waitFor('all see the end', () => [a, b, c].every((d) => d.pause.current === undefined), 1000);
        for (const d of [a, b, c]) d.changes.length = 0;
      }
    });

    it('the announcer probes while it is a member; once it leaves, the leader of the others does', async () => {
      const [a, b, c] = await three('probe');
      assert.deepEqual([a, b, c].map((d) => d.pause.prober(d.members)), [false, false, false], 'no pause, no probe');
      await b.pause.start(quota('b saw 45009'));
      await waitFor('all see it', () => [a, b, c].every((d) => d.pause.current !== undefined), 1000);
      assert.deepEqual([a, b, c].map((d) => d.pause.prober(d.members)), [false, true, false], 'the announcer b, not the leader a');
      // b dies without a word: the others drop it after expireMs, then the leader a probes.
      b.pause.close();
      await b.nc.close();
      await waitFor('a and c drop b', () => !a.members.has('p-b') && !c.members.has('p-b'), 2000);
      assert.deepEqual([a, c].map((d) => d.pause.prober(d.members)), [true, false]);
      // a leaves (close): c is the leader now, and the pause is still b's.
      a.pause.close();
      await a.members.close();
      await waitFor('c sees a leave', () => !c.members.has('p-a'), 1000);
      assert.equal(c.pause.current?.by, 'p-b');
      assert.equal(c.pause.prober(c.members), true);
    });

    it('start and end reject with a clear error when NATS is gone', async () => {
      const nc = await connect({ servers: nats.servers });
      const { state } = await openServiceBuckets(nc, { name: 'gone' });
      const pause = new SharedPause({ kv: state, member: 'p-x' });
      await pause.ready();
      await nc.close();
      await assert.rejects(pause.start(quota('x')), /cannot announce the service's pause \(key pause\)/);
      await assert.rejects(pause.end(), /cannot end the service's pause \(key pause\)/);
      pause.close();
      await assert.rejects(pause.start(quota('x')), /closed/);
    });

    it('a watch whose consumer is lost is noticed by the next checks and started again', { timeout: 15_000 }, async () => {
      const [a, b] = await three('lost', 300);
      const jsm = await jetstreamManager(a.nc);
      const stream = `KV_${bucketNames('lost').state}`;
      const names: string[] = [];
      for await (const ci of jsm.consumers.list(stream)) names.push(ci.name);
      for (const name of names) await jsm.consumers.delete(stream, name);
      assert.equal(names.length, 3);
      await a.pause.start(quota('after the loss'));
      await waitFor('b learns it from a check', () => b.pause.current !== undefined, 1500);
      // Once started again, the watch alone carries the next change quickly.
      await sleep(1000);
      await a.pause.end();
      await waitFor('b sees the end', () => b.pause.current === undefined, 1000);
      let consumers = 0;
      for await (const _ of jsm.consumers.list(stream)) consumers++;
      assert.equal(consumers, 3, 'each daemon watches again');
    });
  });
}
