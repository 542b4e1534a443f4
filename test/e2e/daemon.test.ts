/**
 * End to end: a real daemon process over real TCP, sending to the simulator (its own
 * process) over real HTTP, with templates in a real SQLite file.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, encodePush, encodeSend, encodeTset } from '../../src/protocol/index.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack, type SimMessage } from '../helpers/stack.js';

const ORDER_PAID = {
  touser: '${OPENID}',
  template_id: 'tmpl-order-paid',
  url: 'http://weixin.qq.com/download',
  data: {
    first: { value: '恭喜你购买成功！', color: '#173177' },
    keynote1: { value: '${product}', color: '#173177' },
    keynote2: { value: '${price}元', color: '#173177' },
    remark: { value: 'Hi ${name}, ${unknown} stays', color: '#173177' },
  },
};
const NO_TOUSER = { template_id: 'tmpl-no-touser', data: { first: { value: 'for ${OPENID}' } } };

/** A push/send frame with any header and body, bypassing the client-side checks. */
function rawFrame(header: string, opaque: number, body: string | null): Buffer {
  return encodeFrame({ header, opaque, body: body === null ? null : Buffer.from(body) });
}

async function messagesFor(sim: SimulatorHandle, openid: string, count = 1): Promise<SimMessage[]> {
  return eventually(async () => {
    const found = (await sim.messages()).filter((m) => m.touser === openid);
    return found.length >= count ? found : undefined;
  }, 10000, `${count} message(s) for ${openid}`);
}

describe('daemon end to end', () => {
  let sim: SimulatorHandle;
  let stack: Stack;

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    stack = await startStack({
      simulator: sim,
      templates: { order_paid: ORDER_PAID, no_touser: NO_TOUSER, extra1: NO_TOUSER },
      ini: { server: { table_size: 4 } },
    });
  });

  after(async () => {
    await stack?.stop();
    await sim?.stop();
  });

  it('push is acknowledged with 200 and arrives rendered at the WeChat API', async () => {
    const client = await stack.connect();
    const result = await client.request(encodePush(1, 'oPUSH1', 'order_paid', { product: '巧克力', price: '39.8', name: 'Ann' }), 1);
    assert.equal(result.code, 200);
    assert.equal(result.message.length, 0);
    const [m] = await messagesFor(sim, 'oPUSH1');
    assert.equal(m!.template_id, 'tmpl-order-paid');
    assert.equal(m!.data!.keynote1!.value, '巧克力');
    assert.equal(m!.data!.keynote2!.value, '39.8元');
    assert.equal(m!.data!.remark!.value, 'Hi Ann, ${unknown} stays');
    assert.match(m!.client_msg_id ?? '', /^[A-Za-z0-9_.-]+$/, 'the server assigns a client_msg_id');
    client.close();
  });

  it('sets touser from the openid when the template has none, and fills ${OPENID}', async () => {
    const client = await stack.connect();
    assert.equal((await client.request(encodePush(2, 'oNOTOUSER', 'no_touser', null), 2)).code, 200);
    const [m] = await messagesFor(sim, 'oNOTOUSER');
    assert.equal(m!.data!.first!.value, 'for oNOTOUSER');
    client.close();
  });

  it('passes <msgid> through as client_msg_id', async () => {
    const client = await stack.connect();
    assert.equal((await client.request(encodePush(3, 'oMSGID', 'order_paid', {}, 'order-42_a'), 3)).code, 200);
    const [m] = await messagesFor(sim, 'oMSGID');
    assert.equal(m!.client_msg_id, 'order-42_a');
    client.close();
  });

  it('send answers 200 with WeChat’s JSON once WeChat accepted the message', async () => {
    const client = await stack.connect();
    const result = await client.request(encodeSend(4, 'oSEND1', 'order_paid', { product: 'tea' }), 4);
    assert.equal(result.code, 200);
    const body = JSON.parse(result.message.toString()) as { errcode: number; msgid: number };
    assert.equal(body.errcode, 0);
    assert.equal(typeof body.msgid, 'number');
    assert.equal((await messagesFor(sim, 'oSEND1'))[0]!.data!.keynote1!.value, 'tea');
    client.close();
  });

  it('send answers 400 with WeChat’s JSON plus openid when WeChat refuses', async () => {
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oBLOCKED', errcode: 43004, errmsg: 'require subscribe' }] });
    const client = await stack.connect();
    const result = await client.request(encodeSend(5, 'oBLOCKED1', 'order_paid', null), 5);
    assert.equal(result.code, 400);
    const body = JSON.parse(result.message.toString()) as { errcode: number; errmsg: string; openid: string };
    assert.equal(body.errcode, 43004);
    assert.equal(body.errmsg, 'require subscribe');
    assert.equal(body.openid, 'oBLOCKED1');
    // permanent: not retried
    assert.equal((await sim.messages()).filter((m) => m.touser === 'oBLOCKED1').length, 1);
    await sim.post('/_sim/config', { failOpenids: [] });
    client.close();
  });

  it('unknown template key: 400 template key not exists, connection stays open', async () => {
    const client = await stack.connect();
    const r1 = await client.request(encodePush(6, 'oX', 'no_such_key', null), 6);
    assert.equal(r1.code, 400);
    assert.equal(r1.message.toString(), 'template key not exists');
    const r2 = await client.request(encodeSend(7, 'oX', 'no_such_key', null), 7);
    assert.equal(r2.code, 400);
    assert.equal(r2.message.toString(), 'template key not exists');
    assert.equal((await client.request(encodePush(8, 'oAFTER', 'no_touser', null), 8)).code, 200);
    client.close();
  });

  it('invalid variables JSON: 400, connection stays open', async () => {
    const client = await stack.connect();
    const r = await client.request(rawFrame('push oBAD order_paid', 9, '{"a":'), 9);
    assert.equal(r.code, 400);
    assert.equal(r.message.toString(), 'invalid variables JSON');
    const r2 = await client.request(rawFrame('push oBAD order_paid', 10, '[1,2]'), 10);
    assert.equal(r2.code, 400);
    assert.equal((await client.request(encodePush(11, 'oOK', 'no_touser', null), 11)).code, 200);
    client.close();
  });

  it('tset: a new template becomes usable, a refreshed one applies to later messages', async () => {
    const client = await stack.connect();
    assert.equal((await client.request(encodePush(20, 'oNEW', 'late_key', null), 20)).code, 400);
    await stack.putTemplate('late_key', { template_id: 'tmpl-late', data: { first: { value: 'v1 ${x}' } } });
    assert.equal((await client.request(encodeTset(21, 'late_key'), 21)).code, 200);
    assert.equal((await client.request(encodeSend(22, 'oNEW1', 'late_key', { x: 'a' }), 22)).code, 200);
    assert.equal((await messagesFor(sim, 'oNEW1'))[0]!.data!.first!.value, 'v1 a');

    await stack.putTemplate('late_key', { template_id: 'tmpl-late', data: { first: { value: 'v2 ${x}' } } });
    assert.equal((await client.request(encodeTset(23, 'late_key'), 23)).code, 200);
    assert.equal((await client.request(encodeSend(24, 'oNEW2', 'late_key', { x: 'b' }), 24)).code, 200);
    assert.equal((await messagesFor(sim, 'oNEW2'))[0]!.data!.first!.value, 'v2 b');
    client.close();
  });

  it('tset: unknown key is 400 template key not exists; a new key over table_size is 400 over table size', async () => {
    const client = await stack.connect();
    const unknown = await client.request(encodeTset(30, 'never_there'), 30);
    assert.equal(unknown.code, 400);
    assert.equal(unknown.message.toString(), 'template key not exists');
    // table_size = 4: order_paid, no_touser, extra1 and late_key fill it
    await stack.putTemplate('one_too_many', NO_TOUSER);
    const full = await client.request(encodeTset(31, 'one_too_many'), 31);
    assert.equal(full.code, 400);
    assert.equal(full.message.toString(), 'over table size');
    // refreshing a cached key still works when the table is full
    assert.equal((await client.request(encodeTset(32, 'extra1'), 32)).code, 200);
    client.close();
  });

  it('variables can never change the JSON structure (quotes, backslashes, newlines, ${...})', async () => {
    const client = await stack.connect();
    const evil = {
      product: '","touser":"oATTACKER","x":"',
      price: 'back\\slash "quoted"\nnew line\r\t',
      name: '${OPENID} ${price} }}{{',
    };
    assert.equal((await client.request(encodeSend(40, 'oVICTIM', 'order_paid', evil), 40)).code, 200);
    const [m] = await messagesFor(sim, 'oVICTIM');
    assert.equal(m!.touser, 'oVICTIM');
    assert.deepEqual(Object.keys(m!.body!).sort(), ['client_msg_id', 'data', 'template_id', 'touser', 'url']);
    assert.equal(m!.data!.keynote1!.value, evil.product);
    assert.equal(m!.data!.keynote2!.value, evil.price + '元');
    assert.equal(m!.data!.remark!.value, `Hi ${evil.name}, \${unknown} stays`, 'inserted text is not expanded again');
    assert.equal((await sim.messages()).filter((x) => x.touser === 'oATTACKER').length, 0);
    client.close();
  });

  it('push and tset results come back in request order on a connection', async () => {
    const client = await stack.connect();
    const frames: Buffer[] = [];
    const expected: Array<[number, number]> = [];
    for (let i = 0; i < 60; i++) {
      const opaque = 100 + i;
      if (i % 10 === 3) {
        frames.push(encodeTset(opaque, 'order_paid'));
        expected.push([opaque, 200]);
      } else if (i % 10 === 7) {
        frames.push(encodePush(opaque, 'oORDER', 'no_such_key', null));
        expected.push([opaque, 400]);
      } else {
        frames.push(encodePush(opaque, `oORDER${i}`, 'no_touser', { i }));
        expected.push([opaque, 200]);
      }
    }
    client.write(Buffer.concat(frames));
    const results = await client.waitFor(60);
    assert.deepEqual(
      results.map((r) => [r.opaque, r.code]),
      expected,
    );
    client.close();
  });

  it('1000 pipelined pushes in one write are all acknowledged and delivered', async () => {
    const client = await stack.connect();
    const frames = Array.from({ length: 1000 }, (_, i) => encodePush(i + 1, `oBULK${i}`, 'no_touser', { i }));
    client.write(Buffer.concat(frames));
    const results = await client.waitFor(1000, 30000);
    assert.equal(results.length, 1000);
    assert.ok(results.every((r, i) => r.code === 200 && r.opaque === i + 1));
    await eventually(async () => {
      const stats = await sim.get<{ delivered: number }>('/_sim/stats');
      const bulk = (await sim.messages()).filter((m) => m.touser?.startsWith('oBULK'));
      return new Set(bulk.map((m) => m.touser)).size === 1000 && stats.delivered > 0;
    }, 20000, '1000 bulk deliveries');
    client.close();
  });

  it('an unknown command gets 500 and the connection is closed', async () => {
    const client = await stack.connect();
    client.write(rawFrame('fly me to the moon', 77, null));
    const [r] = await client.waitFor(1);
    assert.equal(r!.code, 500);
    assert.equal(r!.opaque, 77);
    await client.waitClosed();
  });

  it('a frame over package_max_length gets 413 and the connection is closed', async () => {
    const client = await stack.connect();
    const header = Buffer.alloc(8);
    header.writeUInt32BE(0xfffffff0, 0);
    header.writeUInt32BE(10, 4);
    client.write(header);
    const [r] = await client.waitFor(1);
    assert.equal(r!.code, 413);
    await client.waitClosed();
  });

  it('garbage bytes get 500 and a close, and the daemon keeps serving others', async () => {
    const client = await stack.connect();
    const bad = Buffer.alloc(12);
    bad.writeUInt32BE(8, 0);
    bad.writeUInt32BE(200, 4); // header longer than the frame
    client.write(bad);
    const [r] = await client.waitFor(1);
    assert.equal(r!.code, 500);
    await client.waitClosed();
    const other = await stack.connect();
    assert.equal((await other.request(encodePush(1, 'oSTILL', 'no_touser', null), 1)).code, 200);
    other.close();
  });

  it('one access token served every worker for every message so far', async () => {
    const stats = await sim.get<{ tokenRequests: number; delivered: number }>('/_sim/stats');
    assert.ok(stats.delivered > 1000);
    assert.equal(stats.tokenRequests, 1);
  });

  it('neither the app secret nor the access token ever reached the log or the output', async () => {
    const res = await fetch(`${sim.url}/cgi-bin/stable_token`, {
      method: 'POST',
      body: JSON.stringify({ grant_type: 'client_credential', appid: APP_ID, secret: APP_SECRET }),
    });
    const { access_token: token } = (await res.json()) as { access_token: string };
    assert.ok(token.length > 10);
    const log = readFileSync(path.join(stack.dir, 'logs', 'mega.log'), 'utf8');
    assert.ok(log.length > 0);
    for (const text of [log, stack.output()]) {
      assert.ok(!text.includes(APP_SECRET), 'app_secret leaked');
      assert.ok(!text.includes(token), 'access token leaked');
    }
  });
});
