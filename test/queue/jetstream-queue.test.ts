/** JetStreamQueue against the shared JobQueue contract, and what is its own (Nats-Msg-Id, ack_wait). */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { JetStreamQueue, type JetStreamQueueOptions, type JobQueue, type QueueJob } from '../../src/queue/index.js';
import { NATS_SERVER_BIN, natsAvailable, startNats, startNatsCluster, type NatsCluster } from '../helpers/nats.js';
import { jobQueueContract } from './contract.js';

const b = (s: string): Buffer => Buffer.from(s);
const ids = (jobs: QueueJob[]): number[] => jobs.map((j) => j.id);

async function readN(q: JobQueue, n: number): Promise<QueueJob[]> {
  const out: QueueJob[] = [];
  for (;;) {
    out.push(...q.read(n - out.length));
    if (out.length === n) return out;
    await once(q as unknown as NodeJS.EventEmitter, 'readable');
  }
}

const available = natsAvailable();
if (!available) {
  describe('JetStreamQueue', () => {
    it('needs nats-server', (t) => t.skip(`nats-server not found at ${NATS_SERVER_BIN}`));
  });
} else {
  let nats: NatsCluster;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await nats?.stop();
  });

  let n = 0;
  const names = new WeakMap<JobQueue, string>();
  const openNamed = async (name: string, extra: Partial<JetStreamQueueOptions> = {}): Promise<JetStreamQueue> => {
    const q = await JetStreamQueue.open({ servers: nats.servers, name, ...extra });
    names.set(q, name);
    return q;
  };

  // Each queue on its own stream and consumer: a new, empty queue per call, as the contract asks.
  jobQueueContract('JetStreamQueue', () => openNamed(`c${++n}`), {
    reopen: (closed) => openNamed(names.get(closed)!),
  });

  describe('JetStreamQueue', () => {
    const queues: JetStreamQueue[] = [];
    const open = async (name: string, extra: Partial<JetStreamQueueOptions> = {}): Promise<JetStreamQueue> => {
      const q = await openNamed(name, extra);
      queues.push(q);
      return q;
    };
    after(async () => {
      for (const q of queues) await q.close();
    });

    const streamMessages = async (stream: string): Promise<number> => {
      const nc = await connect({ servers: nats.servers });
      try {
        const jsm = await jetstreamManager(nc);
        return (await jsm.streams.info(stream)).state.messages;
      } finally {
        await nc.close();
      }
    };

    it('an append with a msgId already stored is not stored again and resolves with the first id', async () => {
      const q = await open('dedup');
      const first = await q.append(b('a'), { msgId: 'm-1' });
      const again = await q.append(b('a'), { msgId: 'm-1' });
      const other = await q.append(b('b'), { msgId: 'm-2' });
      assert.equal(again, first);
      assert.ok(other > first);
      assert.equal(q.stats().depth, 2);
      assert.equal(await streamMessages('MEGA_DEDUP'), 2);
      assert.deepEqual(ids(await readN(q, 2)), [first, other]);
      assert.deepEqual(q.read(10), []);
    });

    it('an acknowledged job leaves the stream', async () => {
      const q = await open('acked');
      const [j1, j2] = await q.appendMany([b('1'), b('2')]);
      await readN(q, 2);
      q.ack(j1!);
      await q.close();
      assert.equal(await streamMessages('MEGA_ACKED'), 1);
      const q2 = await open('acked');
      assert.equal(q2.stats().depth, 1);
      assert.deepEqual(ids(await readN(q2, 1)), [j2]);
    });

    it('a job not acknowledged is handed to the next queue after close', async () => {
      const q = await open('handover');
      const id = await q.append(b('x'));
      await readN(q, 1);
      const other = await open('handover');
      assert.deepEqual(other.read(10), [], 'the job is out to the first queue');
      await q.close();
      const jobs = await readN(other, 1);
      assert.deepEqual(ids(jobs), [id]);
      assert.equal(jobs[0]!.payload.toString(), 'x');
    });

    it('a held job is not redelivered to another queue past ack_wait (heartbeats)', { timeout: 20_000 }, async () => {
      const q = await open('heldjob', { ackWaitMs: 1000 });
      const id = await q.append(b('x'));
      await readN(q, 1);
      q.hold(id);
      const other = await open('heldjob', { ackWaitMs: 1000 });
      let stolen = false;
      other.on('readable', () => {
        if (other.read(10).length > 0) stolen = true;
      });
      await new Promise((r) => setTimeout(r, 3500));
      assert.equal(stolen, false, 'another queue got the held job');
      assert.deepEqual(other.read(10), []);
      assert.equal(q.stats().held, 1);
      q.ack(id);
    });

    it('stats count what was appended, handed out, held and acknowledged', async () => {
      const q = await open('stats');
      const before = Date.now();
      const [j1, j2, j3] = await q.appendMany([b('1'), b('2'), b('3')]);
      await readN(q, 3);
      q.hold(j2!);
      q.ack(j3!);
      const s = q.stats();
      assert.equal(s.depth, 2);
      assert.equal(s.inFlight, 2);
      assert.equal(s.held, 1);
      assert.ok(s.oldestEnqueuedAt !== undefined && s.oldestEnqueuedAt >= before - 1000 && s.oldestEnqueuedAt <= Date.now());
      q.ack(j1!);
      q.ack(j2!);
      assert.deepEqual(q.stats(), { depth: 0, inFlight: 0, held: 0, deferred: 0 });
    });

    it('on a 3-node cluster with replicas 3: appends survive a killed node (retried with the same msgId)', { timeout: 60_000 }, async () => {
      const cluster = await startNatsCluster(3);
      const retry = async <T>(what: () => Promise<T>): Promise<T> => {
        // A new cluster, or one that lost its leader, answers nothing useful for a few seconds.
        const until = Date.now() + 30_000;
        for (;;) {
          try {
            return await what();
          } catch (err) {
            if (Date.now() > until) throw err;
            await new Promise((r) => setTimeout(r, 250));
          }
        }
      };
      let q: JetStreamQueue | undefined;
      try {
        q = await retry(() => JetStreamQueue.open({ servers: cluster.servers, name: 'rep', replicas: 3, publishTimeoutMs: 2000 }));
        const [j1, j2] = await q.appendMany([b('1'), b('2')]);
        assert.deepEqual(ids(await readN(q, 2)), [j1, j2]);
        q.ack(j1!);
        await cluster.nodes[0]!.kill();
        const j3 = await retry(() => q!.append(b('3'), { msgId: 'after-kill' }));
        assert.ok(j3 > j2!);
        assert.deepEqual(ids(await readN(q, 1)), [j3]);
        q.ack(j2!);
        q.ack(j3);
        assert.equal(q.stats().depth, 0);
      } finally {
        await q?.close();
        await cluster.stop();
      }
    });

    it('validates options, naming the option', async () => {
      await assert.rejects(JetStreamQueue.open({ servers: nats.servers, name: 'a.b' }), /option name/);
      await assert.rejects(JetStreamQueue.open({ servers: [], name: 'x' }), /option servers/);
      await assert.rejects(JetStreamQueue.open({ servers: nats.servers, name: 'x', prefetch: 0 }), /option prefetch/);
      await assert.rejects(JetStreamQueue.open({ servers: nats.servers, name: 'x', ackWaitMs: 10 }), /option ackWaitMs/);
    });
  });

  describe('JetStreamQueue against a server that wants credentials', () => {
    let secured: NatsCluster;
    before(async () => {
      secured = await startNats(['--user', 'mega', '--pass', 's3cret-pass']);
    });
    after(async () => {
      await secured?.stop();
    });

    it('connects with user and password; without them (or with a wrong one) it is refused, the password never in the error', async () => {
      const q = await JetStreamQueue.open({ servers: secured.servers, name: 'auth', credentials: { user: 'mega', pass: 's3cret-pass' } });
      const id = await q.append(Buffer.from('x'));
      assert.ok(id > 0);
      await q.close();
      await assert.rejects(JetStreamQueue.open({ servers: secured.servers, name: 'auth' }), /author/i);
      await assert.rejects(JetStreamQueue.open({ servers: secured.servers, name: 'auth', credentials: { user: 'mega', pass: 'wrong-pass' } }), (err: Error) => {
        assert.match(err.message, /author/i);
        assert.doesNotMatch(err.message, /wrong-pass|s3cret-pass/);
        return true;
      });
    });
  });
}
