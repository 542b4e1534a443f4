import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { CallbackServer } from '../../src/callback/index.js';
import { Ledger, openLedgerStore, type LedgerStore } from '../../src/ledger/index.js';
import { callbackSignature, encryptCallbackMessage, messageSignature } from '../../src/wechat/index.js';
import { tempDir } from '../helpers/processes.js';

const TOKEN = 'cbtoken123';
const AES_KEY = 'Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWo';
const APP_ID = 'wx0123456789abcdef';
const logger = pino({ level: 'silent' });

let nonceSeq = 0;
function signed(extra: Record<string, string> = {}, at = Math.floor(Date.now() / 1000)): Record<string, string> {
  const timestamp = String(at);
  const nonce = `n${process.pid}x${nonceSeq++}`;
  return { signature: callbackSignature(TOKEN, timestamp, nonce), timestamp, nonce, openid: 'oUSER', ...extra };
}

const receiptXml = (msgid: string, status = 'success', openid = 'oUSER') =>
  `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[${openid}]]></FromUserName><CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>${msgid}</MsgID><Status><![CDATA[${status}]]></Status></xml>`;
const textXml = (content: string) =>
  `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUSER]]></FromUserName><CreateTime>1395658920</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[${content}]]></Content><MsgId>1234567890123456</MsgId></xml>`;

/** The safe-mode form of a message: the query gains encrypt_type and msg_signature. */
function encrypted(xml: string, q = signed()): { query: Record<string, string>; body: string } {
  const enc = encryptCallbackMessage(AES_KEY, xml, APP_ID);
  return {
    query: { ...q, encrypt_type: 'aes', msg_signature: messageSignature(TOKEN, q.timestamp!, q.nonce!, enc) },
    body: `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[${enc}]]></Encrypt></xml>`,
  };
}

interface Upstream {
  server: Server;
  url: string;
  seen: Array<{ method: string; url: string; body: string; type: string | undefined }>;
}

async function startUpstream(): Promise<Upstream> {
  const seen: Upstream['seen'] = [];
  const server = createServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    seen.push({ method: req.method!, url: req.url!, body: Buffer.concat(chunks).toString(), type: req.headers['content-type'] });
    // a passive reply, as a WeChat app answers a text message: bytes the daemon must not touch
    res.writeHead(200, { 'content-type': 'application/xml; charset=utf-8' });
    res.end(Buffer.from('<xml><Content><![CDATA[回复 ✓]]></Content></xml>\r\n', 'utf8'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/app/wechat?from=mega`, seen };
}

describe('CallbackServer', () => {
  let dir: string;
  let ledger: Ledger;
  let reader: LedgerStore;
  let upstream: Upstream;
  let cb: CallbackServer;
  let base: string;
  const noted: string[] = [];

  async function call(method: 'GET' | 'POST', query: Record<string, string>, body?: string | Buffer, p = '/wechat/callback') {
    const res = await request(`${base}${p}?${new URLSearchParams(query)}`, { method, body, headers: body === undefined ? {} : { 'content-type': 'text/xml' } });
    return { status: res.statusCode, type: res.headers['content-type'], body: Buffer.from(await res.body.arrayBuffer()) };
  }

  before(async () => {
    dir = tempDir();
    const dsn = `sqlite:${path.join(dir, 'ledger.db')}`;
    reader = openLedgerStore({ dsn });
    ledger = Ledger.open({ store: openLedgerStore({ dsn }), journalDir: path.join(dir, 'journal'), fsync: true, logger, retentionDays: 7, flushIntervalMs: 20 });
    await reader.init();
    upstream = await startUpstream();
    // the ledger, counting what reaches it
    const sink = {
      receipt: (r: Parameters<Ledger['receipt']>[0]) => {
        noted.push(r.receipt);
        ledger.receipt(r);
      },
      sync: () => ledger.sync(),
    };
    cb = new CallbackServer({ host: '127.0.0.1', port: 0, token: TOKEN, encodingAesKey: AES_KEY, appId: APP_ID, sink, forwardUrl: upstream.url, logger });
    base = `http://127.0.0.1:${(await cb.listen()).port}`;
  });
  after(async () => {
    await cb.close();
    await ledger.close();
    await reader.close();
    upstream.server.close();
  });

  it('GET verification: echostr when the signature matches, 401 otherwise; never forwarded', async () => {
    const ok = await call('GET', signed({ echostr: '8219473625' }));
    assert.deepEqual([ok.status, ok.body.toString()], [200, '8219473625']);
    const bad = await call('GET', { ...signed({ echostr: 'x' }), signature: 'f'.repeat(40) });
    assert.equal(bad.status, 401);
    assert.equal(upstream.seen.length, 0);
  });

  it('a plaintext receipt is recorded before `success`, and applied to the message sent with that MsgID', async () => {
    ledger.queued('m-plain', 'oUSER', 'order', 'push', Date.now());
    await ledger.record([{ msgid: 'm-plain', state: 'sent', attempts: 1, wechatMsgid: '3001', sentAt: Date.now(), at: Date.now() }]);
    const res = await call('POST', signed(), receiptXml('3001', 'failed:user block'));
    assert.deepEqual([res.status, res.body.toString()], [200, 'success']);
    // answered only once durable: the journal has it, so get() shows it right away
    const r = await ledger.get('m-plain');
    assert.deepEqual([r?.state, r?.errmsg], ['failed_user_block', 'failed:user block']);
    assert.ok(await ledger.flush());
    assert.equal((await reader.get('m-plain'))?.state, 'failed_user_block');
  });

  it('a safe-mode receipt: msg_signature checked, decrypted, appid checked', async () => {
    ledger.queued('m-safe', 'oUSER', 'order', 'send', Date.now());
    await ledger.record([{ msgid: 'm-safe', state: 'sent', attempts: 1, wechatMsgid: '3002', sentAt: Date.now(), at: Date.now() }]);
    const e = encrypted(receiptXml('3002'));
    const res = await call('POST', e.query, e.body);
    assert.deepEqual([res.status, res.body.toString()], [200, 'success']);
    assert.equal((await ledger.get('m-safe'))?.state, 'delivered');
    // tampered ciphertext: the msg_signature no longer matches
    const t = encrypted(receiptXml('3002', 'failed: system failed'));
    assert.equal((await call('POST', t.query, t.body.replace(/Encrypt><!\[CDATA\[(.)/, (_m, c: string) => `Encrypt><![CDATA[${c === 'A' ? 'B' : 'A'}`))).status, 401);
    // a message for another app, under a valid signature
    const q = signed();
    const enc = encryptCallbackMessage(AES_KEY, receiptXml('3002', 'failed: system failed'), 'wxSOMEONEELSE');
    const foreign = await call('POST', { ...q, encrypt_type: 'aes', msg_signature: messageSignature(TOKEN, q.timestamp!, q.nonce!, enc) }, `<xml><Encrypt><![CDATA[${enc}]]></Encrypt></xml>`);
    assert.equal(foreign.status, 401);
    assert.equal((await ledger.get('m-safe'))?.state, 'delivered', 'nothing refused was recorded');
  });

  it('refuses bad input and records nothing: bad signature 401, stale timestamp 401, malformed XML 400, body over 64 KiB 413, other path 404, PUT 405', async () => {
    ledger.queued('m-bad', 'oUSER', 'order', 'push', Date.now());
    await ledger.record([{ msgid: 'm-bad', state: 'sent', attempts: 1, wechatMsgid: '3003', sentAt: Date.now(), at: Date.now() }]);
    assert.equal((await call('POST', { ...signed(), signature: '0'.repeat(40) }, receiptXml('3003'))).status, 401);
    assert.equal((await call('POST', { timestamp: '1', nonce: 'x' }, receiptXml('3003'))).status, 401);
    assert.equal((await call('POST', signed({}, Math.floor(Date.now() / 1000) - 301), receiptXml('3003'))).status, 401);
    assert.equal((await call('POST', signed({}, Math.floor(Date.now() / 1000) + 301), receiptXml('3003'))).status, 401);
    assert.equal((await call('POST', signed(), '<xml><MsgType>event</MsgType>')).status, 400);
    assert.equal((await call('POST', signed(), receiptXml('not-a-number'))).status, 400);
    assert.equal((await call('POST', signed(), '<xml><A>' + 'x'.repeat(64 * 1024) + '</A></xml>')).status, 413);
    assert.equal((await call('POST', signed(), receiptXml('3003'), '/other')).status, 404);
    const put = await request(`${base}/wechat/callback?${new URLSearchParams(signed())}`, { method: 'PUT', body: 'x' });
    await put.body.dump();
    assert.equal(put.statusCode, 405);
    assert.equal((await ledger.get('m-bad'))?.state, 'sent');
    assert.ok(cb.stats.refused.signature >= 2 && cb.stats.refused.stale === 2 && cb.stats.refused.malformed >= 2 && cb.stats.refused.tooLarge === 1);
  });

  it("WeChat's retry (same timestamp, nonce and body) gets `success` and is applied once; the same pair with another body is a replay: 401", async () => {
    const q = signed();
    const body = receiptXml('3999', 'success');
    const first = await call('POST', q, body);
    const again = await call('POST', q, body);
    assert.deepEqual([first.status, again.status, again.body.toString()], [200, 200, 'success']);
    assert.equal(noted.filter((id) => id === '3999').length, 1, 'one receipt journaled, not two');
    const replay = await call('POST', q, receiptXml('3999', 'failed:user block'));
    assert.equal(replay.status, 401);
    assert.equal(cb.stats.refused.replay, 1);
  });

  it('a receipt for a message whose send is noted later is kept and applied then', async () => {
    assert.equal((await call('POST', signed(), receiptXml('3100', 'failed: system failed'))).status, 200);
    ledger.queued('m-late', 'oUSER', 'order', 'push', Date.now());
    await ledger.record([{ msgid: 'm-late', state: 'sent', attempts: 1, wechatMsgid: '3100', sentAt: Date.now(), at: Date.now() }]);
    assert.equal((await ledger.get('m-late'))?.state, 'failed_system');
    assert.ok(await ledger.flush());
    assert.equal((await reader.get('m-late'))?.state, 'failed_system');
  });

  it('forwards every other verified request unchanged (method, query, body) and returns the app\'s answer byte for byte', async () => {
    upstream.seen.length = 0;
    const q = signed();
    const text = textXml('你好 <&>');
    const res = await call('POST', q, text);
    assert.equal(res.status, 200);
    assert.equal(res.type, 'application/xml; charset=utf-8');
    assert.deepEqual(res.body, Buffer.from('<xml><Content><![CDATA[回复 ✓]]></Content></xml>\r\n', 'utf8'));
    assert.equal(upstream.seen.length, 1);
    const seen = upstream.seen[0]!;
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, `/app/wechat?from=mega&${new URLSearchParams(q)}`);
    assert.equal(seen.body, text);
    assert.equal(seen.type, 'text/xml');
    // safe mode: the encrypted body goes on as received, for the app to open with its own key
    const e = encrypted(textXml('hi'));
    assert.equal((await call('POST', e.query, e.body)).status, 200);
    assert.equal(upstream.seen[1]!.body, e.body);
    // receipts are not forwarded unless forward_receipts = 1; refused requests never are
    assert.equal((await call('POST', signed(), receiptXml('3200'))).status, 200);
    assert.equal((await call('POST', { ...signed(), signature: '1'.repeat(40) }, textXml('forged'))).status, 401);
    assert.equal(upstream.seen.length, 2);
  });

  it('an app that is down is a 502 to WeChat (which retries), and with forward_receipts receipts reach the app too', async () => {
    const down = new CallbackServer({ host: '127.0.0.1', port: 0, token: TOKEN, appId: APP_ID, sink: ledger, forwardUrl: 'http://127.0.0.1:1/nothing', forwardTimeoutMs: 1000, logger });
    const both = new CallbackServer({ host: '127.0.0.1', port: 0, token: TOKEN, appId: APP_ID, sink: ledger, forwardUrl: upstream.url, forwardReceipts: true, logger });
    try {
      const d = await down.listen();
      const res = await request(`http://127.0.0.1:${d.port}/wechat/callback?${new URLSearchParams(signed())}`, { method: 'POST', body: textXml('x') });
      await res.body.dump();
      assert.equal(res.statusCode, 502);
      assert.equal(down.stats.forwardFailures, 1);
      // a safe-mode request to an endpoint without the key: 400, not forwarded
      const e = encrypted(textXml('x'));
      const r2 = await request(`http://127.0.0.1:${d.port}/wechat/callback?${new URLSearchParams(e.query)}`, { method: 'POST', body: e.body });
      await r2.body.dump();
      assert.equal(r2.statusCode, 400);
      const b = await both.listen();
      upstream.seen.length = 0;
      const r3 = await request(`http://127.0.0.1:${b.port}/wechat/callback?${new URLSearchParams(signed())}`, { method: 'POST', body: receiptXml('3300') });
      assert.equal(await r3.body.text(), 'success');
      assert.equal(upstream.seen.length, 1);
      assert.match(upstream.seen[0]!.body, /<MsgID>3300<\/MsgID>/);
    } finally {
      await down.close();
      await both.close();
    }
  });
});
