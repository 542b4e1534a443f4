/** ServiceBus between three daemons on a real nats-server: TSet for all, a Send's answer to its owner. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ServiceBus, type TsetAnswer } from '../../src/cluster/service-bus.js';
import { natsAvailable, startNats, type NatsCluster } from '../helpers/nats.js';

describe('ServiceBus', { skip: !natsAvailable() && 'nats-server not installed' }, () => {
  let nats: NatsCluster;
  const conns: NatsConnection[] = [];
  const buses: ServiceBus[] = [];
  const loaded: string[] = [];
  const waiting = new Map<string, string>();

  const bus = async (member: string, tset: (key: string) => Promise<TsetAnswer>): Promise<ServiceBus> => {
    const nc = await connect({ servers: nats.servers });
    conns.push(nc);
    const b = new ServiceBus({
      nc,
      name: 'svc',
      member,
      handlers: {
        tset,
        settle: (replyKey, code, message) => {
          if (!waiting.has(replyKey)) return false;
          waiting.set(replyKey, `${code} ${message}`);
          return true;
        },
      },
    });
    buses.push(b);
    return b;
  };

  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    for (const b of buses) b.close();
    for (const nc of conns) await nc.close();
    await nats?.stop();
  });

  it('tsetOthers: every other member loads, its failures and silences are named', async () => {
    const a = await bus('a', async (key) => (loaded.push(`a:${key}`), { member: 'a', ok: true }));
    await bus('b', async (key) => (loaded.push(`b:${key}`), { member: 'b', ok: true }));
    await bus('c', async () => ({ member: 'c', ok: false, error: 'template not found: k' }));
    const answers = await a.tsetOthers('k', ['b', 'c', 'gone'], 500);
    assert.deepEqual(answers, [
      { member: 'b', ok: true },
      { member: 'c', ok: false, error: 'template not found: k' },
      { member: 'gone', ok: false, error: 'no answer' },
    ]);
    assert.ok(loaded.includes('b:k'));
  });

  it('settleRemote: true when the owner had the client waiting, false when not or when the owner is gone', async () => {
    const [a] = buses;
    waiting.set('b.1', '');
    assert.equal(await a!.settleRemote('b', 'b.1', 200, '{"errcode":0}'), true);
    assert.equal(waiting.get('b.1'), '200 {"errcode":0}');
    assert.equal(await a!.settleRemote('b', 'b.unknown', 200, '{}'), false);
    assert.equal(await a!.settleRemote('nobody', 'nobody.1', 200, '{}', 300), false);
  });

  it('a member must be one subject token', () => {
    assert.throws(() => new ServiceBus({ nc: conns[0]!, name: 'svc', member: 'a.b', handlers: { tset: async () => ({ member: '', ok: true }), settle: () => false } }), /option member/);
  });
});
