/**
 * A service of three daemons under load loses one daemon (kill -9) and one NATS node (kill -9)
 * mid-run: every acknowledged Push is delivered, and a message reaches WeChat more than once only
 * with the same client_msg_id. And `rate_limit` holds for the service as a whole.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePush } from '../../src/protocol/index.js';
import { eventually } from '../helpers/stack.js';
import { natsAvailable } from '../helpers/nats.js';
import { mysqlAvailable } from '../helpers/mysql.js';
import { startService, type Service } from '../helpers/service.js';
import type { RawClient } from '../helpers/client.js';

const HELLO = { touser: '${OPENID}', template_id: 'tmpl-hello', data: { first: { value: 'hello ${name}' } } };
const skip = !natsAvailable() || !(await mysqlAvailable());
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('a service of three daemons under faults', { skip: skip && 'nats-server or MariaDB missing' }, () => {
  let svc: Service | undefined;
  after(async () => {
    await svc?.stop();
  });

  it('kill -9 of a daemon and of a NATS node mid-run: every acknowledged Push delivered, repeats only with the same client_msg_id', async (t) => {
    svc = await startService({ daemons: 3, templates: { hello: HELLO }, ini: { jetstream: { ack_wait_ms: 3000 } } });
    await svc.sim.post('/_sim/config', { latencyMs: 20 });
    const clients: RawClient[] = await Promise.all(svc.daemons.map((d) => d.connect()));
    const sent = new Map<string, { client: number; opaque: number }>();
    const acked = new Set<string>();
    let opaque = 0;
    const started = Date.now();
    let killedDaemon = false;
    let killedNode = false;
    while (Date.now() - started < 5000) {
      const elapsed = Date.now() - started;
      if (!killedDaemon && elapsed > 1000) {
        killedDaemon = true;
        svc.daemons[2]!.daemon.kill('SIGKILL');
      }
      if (!killedNode && elapsed > 2000) {
        killedNode = true;
        await svc.nats.nodes[0]!.kill();
      }
      for (const [i, c] of clients.entries()) {
        if (i === 2 && killedDaemon) continue;
        for (let k = 0; k < 10; k++) {
          const msgid = `f${i}-${++opaque}`;
          sent.set(msgid, { client: i, opaque });
          c.write(encodePush(opaque, `oF${i}`, 'hello', { name: msgid }, msgid));
        }
      }
      await sleep(50);
    }
    // every answer the clients got; a 200 is a promise that the message will be delivered
    await sleep(12000); // > publish_timeout_ms: every Push is answered by now
    const byOpaque = new Map([...sent].map(([msgid, s]) => [s.opaque, msgid]));
    for (const c of clients) {
      for (const r of c.results) if (r.code === 200) acked.add(byOpaque.get(r.opaque)!);
    }
    assert.ok(acked.size > 500, `${acked.size} acknowledged`);
    const delivered = await eventually(async () => {
      const ids = new Set((await svc!.sim.messages()).filter((m) => m.errcode === 0).map((m) => m.client_msg_id!));
      for (const id of acked) if (!ids.has(id)) return undefined;
      return ids;
    }, 60000, 'every acknowledged Push delivered');
    for (const id of delivered) assert.ok(sent.has(id), `delivered ${id} was sent`);
    const messages = (await svc.sim.messages()).filter((m) => m.touser?.startsWith('oF'));
    for (const m of messages) assert.equal(m.data?.first?.value, `hello ${m.client_msg_id}`, 'a repeat carries its own client_msg_id');
    t.diagnostic(`${sent.size} sent, ${acked.size} acknowledged, ${messages.length} calls to WeChat for them (${messages.length - delivered.size} repeats)`);
    for (const c of clients) c.close();
  });

  it('rate_limit = 300 holds within ±10 % for the service as a whole', async (t) => {
    await svc?.stop();
    svc = await startService({ daemons: 3, templates: { hello: HELLO }, ini: { wechat: { rate_limit: 300 } } });
    const clients = await Promise.all(svc.daemons.map((d) => d.connect()));
    clients.forEach((c, i) => {
      for (let n = 0; n < 500; n++) c.write(encodePush(n + 1, `oRATE${i}`, 'hello', { name: String(n) }));
    });
    for (const c of clients) assert.ok((await c.waitFor(500, 30000)).every((r) => r.code === 200));
    // count deliveries over time; the rate is taken between 300 and 1200 delivered (away from start and tail)
    const samples: Array<{ t: number; n: number }> = [];
    for (;;) {
      const n = (await svc.sim.messages()).filter((m) => m.touser?.startsWith('oRATE')).length;
      samples.push({ t: Date.now(), n });
      if (n >= 1200) break;
      await sleep(100);
    }
    const from = samples.find((s) => s.n >= 300)!;
    const to = samples[samples.length - 1]!;
    const rate = ((to.n - from.n) * 1000) / (to.t - from.t);
    t.diagnostic(`service rate ${rate.toFixed(1)}/s`);
    assert.ok(rate >= 270 && rate <= 330, `service rate ${rate.toFixed(1)}/s (limit 300/s)`);
    for (const c of clients) c.close();
  });
});
