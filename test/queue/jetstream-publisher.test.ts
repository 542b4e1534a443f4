/** JetStreamPublisher against a real nats-server: PubAck, Nats-Msg-Id dedup, and each way a publish fails. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { JetStreamApiError, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { JetStreamPublisher, PublishNoRespondersError, PublishTimeoutError } from '../../src/queue/jetstream-publisher.js';
import { NATS_SERVER_BIN, natsAvailable, startNats, type NatsCluster } from '../helpers/nats.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

if (!natsAvailable()) {
  describe('JetStreamPublisher', () => {
    it('needs nats-server', (t) => t.skip(`nats-server not found at ${NATS_SERVER_BIN}`));
  });
} else {
  describe('JetStreamPublisher', () => {
    let nats: NatsCluster;
    let nc: NatsConnection;
    before(async () => {
      nats = await startNats();
      nc = await connect({ servers: nats.servers });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: 'P', subjects: ['p.jobs'], retention: RetentionPolicy.Workqueue, storage: StorageType.File });
      await jsm.streams.add({ name: 'SMALL', subjects: ['p.small'], storage: StorageType.Memory, max_msg_size: 8 });
    });
    after(async () => {
      await nc?.close();
      await nats?.stop();
    });

    it('resolves with the PubAck, in order, for many publishes outstanding at once', async () => {
      const p = new JetStreamPublisher(nc);
      const acks = await Promise.all(Array.from({ length: 500 }, (_, i) => p.publish('p.jobs', bytes(`job ${i}`), 5000)));
      const seqs = acks.map((a) => a.seq);
      assert.deepEqual(seqs, Array.from({ length: 500 }, (_, i) => seqs[0]! + i));
      assert.ok(acks.every((a) => a.stream === 'P' && a.duplicate === false));
      const jsm = await jetstreamManager(nc);
      assert.equal((await jsm.streams.info('P')).state.messages, 500 + (seqs[0]! - 1));
      p.close();
    });

    it('sends Nats-Msg-Id: a second publish with the same id is a duplicate of the first, other ids are not', async () => {
      const p = new JetStreamPublisher(nc);
      const first = await p.publish('p.jobs', bytes('a'), 5000, 'id-1');
      const other = await p.publish('p.jobs', bytes('b'), 5000, 'id-2');
      const again = await p.publish('p.jobs', bytes('a'), 5000, 'id-1');
      const plain = await p.publish('p.jobs', bytes('c'), 5000);
      assert.equal(first.duplicate, false);
      assert.equal(other.duplicate, false);
      assert.equal(other.seq, first.seq + 1);
      assert.deepEqual(again, { stream: 'P', seq: first.seq, duplicate: true });
      // the reused headers object must not carry the last id into a publish without one
      assert.equal(plain.duplicate, false);
      assert.equal(plain.seq, other.seq + 1);
      p.close();
    });

    it('rejects with the stream API error when the stream refuses the message', async () => {
      const p = new JetStreamPublisher(nc);
      await assert.rejects(p.publish('p.small', bytes('far more than eight bytes'), 5000), (err: unknown) => {
        assert.ok(err instanceof JetStreamApiError, String(err));
        assert.match(err.message, /maximum|size/i);
        return true;
      });
      p.close();
    });

    it('rejects with PublishNoRespondersError when no stream takes the subject', async () => {
      const p = new JetStreamPublisher(nc);
      await assert.rejects(p.publish('p.nowhere', bytes('x'), 5000), PublishNoRespondersError);
      p.close();
    });

    it('rejects with PublishTimeoutError when nothing answers within the timeout, and ignores a late answer', async () => {
      // a core subscriber that answers late: the publish has no stream, and its answer comes after the timeout
      const late = nc.subscribe('p.late', {
        callback: (_err, msg) => {
          setTimeout(() => msg.respond(bytes('{"stream":"P","seq":1}')), 400);
        },
      });
      await nc.flush();
      const p = new JetStreamPublisher(nc, 20);
      const started = Date.now();
      await assert.rejects(p.publish('p.late', bytes('x'), 100), PublishTimeoutError);
      const took = Date.now() - started;
      assert.ok(took >= 100 && took < 380, `timed out after ${took} ms`);
      await new Promise((r) => setTimeout(r, 450));
      late.unsubscribe();
      p.close();
    });

    it('close() rejects what still waits', async () => {
      const silent = nc.subscribe('p.silent', { callback: () => {} });
      await nc.flush();
      const p = new JetStreamPublisher(nc);
      const waiting = p.publish('p.silent', bytes('x'), 60_000);
      p.close();
      await assert.rejects(waiting, /publisher closed/);
      silent.unsubscribe();
    });
  });
}
