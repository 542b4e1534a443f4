/**
 * The simulator's delivery receipts, received by a real node:http server that checks them the
 * way a server URL must: signatures with the verify* functions, safe-mode payloads decrypted and
 * their appid compared. No part of the pusher is replaced.
 */
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WechatSimulator, type ReceiptPush } from '../../src/simulator/index.js';
import {
  appidMatches,
  decryptCallbackMessage,
  verifyCallbackSignature,
  verifyMessageSignature,
} from '../../src/wechat/callback-crypto.js';
import { freePort } from '../helpers/ports.js';
import { getToken, http, msg, send } from '../wechat/helpers.js';

const TOKEN = 'receipt_token_42';
const AES_KEY = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';

interface Received {
  method: string;
  url: string;
  query: URLSearchParams;
  contentType: string | undefined;
  body: string;
  /** signature checks against TOKEN */
  signatureOk: boolean;
  /** safe mode only */
  msgSignatureOk: boolean | null;
  /** the plaintext XML (decrypted in safe mode) */
  xml: string | null;
  appidOk: boolean | null;
}

/** A server URL: records every request, checks it, and answers as `answer` says (or never, while `hang` > 0). */
class Receiver {
  readonly got: Received[] = [];
  hang = 0;
  answer: { status: number; body: string } = { status: 200, body: 'success' };
  private readonly held: ServerResponse[] = [];
  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly appId: string,
  ) {}

  static async start(appId: string, path = '/wechat/callback'): Promise<Receiver> {
    let r: Receiver | undefined;
    const server = createServer((req, res) => r!.handle(req, res));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    r = new Receiver(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`, appId);
    return r;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = req.url ?? '';
      const query = new URL(url, 'http://x').searchParams;
      const ts = query.get('timestamp') ?? '';
      const nonce = query.get('nonce') ?? '';
      const rec: Received = {
        method: req.method ?? '',
        url,
        query,
        contentType: req.headers['content-type'],
        body,
        signatureOk: verifyCallbackSignature(TOKEN, ts, nonce, query.get('signature') ?? ''),
        msgSignatureOk: null,
        xml: body === '' ? null : body,
        appidOk: null,
      };
      if (query.get('encrypt_type') === 'aes') {
        const encrypt = /<Encrypt><!\[CDATA\[([^\]]*)\]\]><\/Encrypt>/.exec(body)?.[1] ?? '';
        rec.msgSignatureOk = verifyMessageSignature(TOKEN, ts, nonce, encrypt, query.get('msg_signature') ?? '');
        const opened = decryptCallbackMessage(AES_KEY, encrypt);
        rec.xml = opened.message;
        rec.appidOk = appidMatches(opened, this.appId);
      }
      this.got.push(rec);
      if (this.hang > 0) {
        this.hang--;
        this.held.push(res); // no answer: the sender's timeout must act
        return;
      }
      res.writeHead(this.answer.status, { 'content-type': 'text/plain' });
      res.end(this.answer.body);
    });
  }

  async close(): Promise<void> {
    for (const r of this.held) r.destroy();
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }
}

function field(xml: string | null, tag: string): string | undefined {
  const m = new RegExp(`<${tag}>(?:<!\\[CDATA\\[(.*?)\\]\\]>|([^<]*))</${tag}>`).exec(xml ?? '');
  return m === null ? undefined : (m[1] ?? m[2]);
}

describe('simulator delivery receipts', () => {
  let sim: WechatSimulator;
  let rx: Receiver;
  let token: string;

  before(async () => {
    sim = await WechatSimulator.start({ receipts: { token: TOKEN } });
    rx = await Receiver.start(sim.appId);
  });
  after(async () => {
    await sim.close();
    await rx.close();
  });
  beforeEach(async () => {
    sim.reset();
    sim.configure({ receipts: { url: rx.url } });
    rx.got.length = 0;
    rx.hang = 0;
    rx.answer = { status: 200, body: 'success' };
    token = await getToken(sim);
  });

  test('plaintext: one signed TEMPLATESENDJOBFINISH per accepted message, recorded exactly', async () => {
    const a = await send(sim, token, msg('oUserA', { client_msg_id: 'cm-1' }));
    const b = await send(sim, token, msg('oUserB'));
    await send(sim, token, msg('oUserA', { client_msg_id: 'cm-1' })); // a duplicate: no second receipt
    await send(sim, null, msg('oUserC')); // refused: no receipt
    assert.equal(await sim.receipts.idle(5000), true);

    assert.equal(rx.got.length, 2);
    const sent = sim.messages();
    for (const [i, ans, openid, cmid] of [
      [0, a, 'oUserA', 'cm-1'],
      [1, b, 'oUserB', null],
    ] as const) {
      const got = rx.got[i]!;
      const rec = sim.receipts.receipts()[i]!;
      assert.equal(got.method, 'POST');
      assert.equal(got.contentType, 'text/xml');
      assert.deepEqual([...got.query.keys()], ['signature', 'timestamp', 'nonce', 'openid']);
      assert.equal(got.query.get('openid'), openid);
      assert.equal(got.signatureOk, true);
      assert.equal(verifyCallbackSignature('another-token', got.query.get('timestamp')!, got.query.get('nonce')!, got.query.get('signature')!), false);
      const createTime = Math.floor(sent[i]!.receivedAt / 1000);
      assert.equal(
        got.body,
        `<xml><ToUserName><![CDATA[gh_simulator]]></ToUserName><FromUserName><![CDATA[${openid}]]></FromUserName>` +
          `<CreateTime>${createTime}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>` +
          `<MsgID>${ans.json.msgid}</MsgID><Status><![CDATA[success]]></Status></xml>`,
      );
      assert.deepEqual(
        { ...rec, attempts: rec.attempts.length },
        {
          index: i,
          kind: 'receipt',
          trigger: 'delivery',
          msgid: ans.json.msgid,
          openid,
          status: 'success',
          client_msg_id: cmid,
          of: null,
          encrypted: false,
          method: 'POST',
          url: `${rx.url.replace(/\/wechat.*/, '')}${got.url}`,
          timestamp: got.query.get('timestamp'),
          nonce: got.query.get('nonce'),
          body: got.body,
          xml: got.body,
          acceptedAt: sent[i]!.receivedAt,
          sentAt: rec.sentAt,
          attempts: 1,
          outcome: 'answered',
          httpStatus: 200,
          answer: 'success',
          error: null,
          finishedAt: rec.finishedAt,
        },
      );
      assert.ok(rec.finishedAt! >= rec.sentAt);
    }
    assert.notEqual(rx.got[0]!.query.get('nonce'), rx.got[1]!.query.get('nonce'));
    const st = sim.receipts.stats();
    assert.deepEqual(st, {
      scheduled: 0,
      inFlight: 0,
      pushed: 2,
      answered: 2,
      rejected: 0,
      failed: 0,
      cancelled: 0,
      attempts: 2,
      byStatus: { success: 2, 'failed:user block': 0, 'failed: system failed': 0 },
    });
    const over = await http(sim.url, 'GET', '/_sim/receipts?since=1');
    assert.equal(over.json.next, 2);
    assert.deepEqual(over.json.stats, st);
    assert.deepEqual(over.json.receipts, JSON.parse(JSON.stringify(sim.receipts.receipts(1))));
  });

  test('safe mode (set over /_sim/config): encrypted for the appid, signature and msg_signature valid', async () => {
    const cfg = await http(sim.url, 'POST', '/_sim/config', { receipts: { encodingAesKey: AES_KEY, toUserName: 'gh_test' } });
    assert.equal(cfg.status, 200);
    assert.equal(cfg.json.receipts.encodingAesKey, '[redacted]');
    assert.equal(cfg.json.receipts.token, '[redacted]');
    assert.ok(!cfg.text.includes(AES_KEY) && !cfg.text.includes(TOKEN));
    const a = await send(sim, token, msg('oSafe'));
    assert.equal(await sim.receipts.idle(5000), true);

    const got = rx.got[0]!;
    assert.deepEqual([...got.query.keys()], ['signature', 'timestamp', 'nonce', 'openid', 'encrypt_type', 'msg_signature']);
    assert.equal(got.query.get('encrypt_type'), 'aes');
    assert.equal(got.signatureOk, true);
    assert.equal(got.msgSignatureOk, true);
    assert.equal(got.appidOk, true);
    assert.match(got.body, /^<xml><ToUserName><!\[CDATA\[gh_test\]\]><\/ToUserName><Encrypt><!\[CDATA\[[A-Za-z0-9+/=]+\]\]><\/Encrypt><\/xml>$/);
    assert.equal(field(got.xml, 'MsgID'), String(a.json.msgid));
    assert.equal(field(got.xml, 'ToUserName'), 'gh_test');
    assert.equal(field(got.xml, 'Status'), 'success');
    const rec = sim.receipts.receipts()[0]!;
    assert.equal(rec.encrypted, true);
    assert.equal(rec.xml, got.xml);
    assert.equal(rec.body, got.body);
    assert.equal(rec.outcome, 'answered');
    // The check can fail: another appid does not match.
    assert.equal(appidMatches(decryptCallbackMessage(AES_KEY, field(got.body, 'Encrypt')!), 'wxSomeoneElse'), false);
  });

  test('shares: all user block, all system failed; rules by openid win; a bad patch changes nothing', async () => {
    sim.configure({ receipts: { userBlockShare: 1 } });
    for (const o of ['o1', 'o2', 'o3']) await send(sim, token, msg(o));
    sim.configure({ receipts: { userBlockShare: 0, systemFailedShare: 1, statusFor: [{ pattern: '^oVip', status: 'success' }] } });
    for (const o of ['o4', 'oVip5', 'o6']) await send(sim, token, msg(o));
    assert.equal(await sim.receipts.idle(5000), true);
    assert.deepEqual(
      rx.got.map((g) => field(g.xml, 'Status')),
      ['failed:user block', 'failed:user block', 'failed:user block', 'failed: system failed', 'success', 'failed: system failed'],
    );
    assert.deepEqual(
      sim.receipts.receipts().map((r) => r.status),
      rx.got.map((g) => field(g.xml, 'Status')),
    );
    assert.deepEqual(sim.receipts.stats().byStatus, { success: 1, 'failed:user block': 3, 'failed: system failed': 2 });

    const bad = await http(sim.url, 'POST', '/_sim/config', { latencyMs: 7, receipts: { userBlockShare: 0.5, systemFailedShare: 0.6 } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error, /must not exceed 1/);
    assert.equal(sim.config().latencyMs, 0);
    assert.equal(sim.config().receipts.systemFailedShare, 1);
    assert.throws(() => sim.configure({ receipts: { attempts: 0 } }), /receipts\.attempts/);
    assert.throws(() => sim.configure({ receipts: { statusFor: [{ pattern: 'x', status: 'failed' as never }] } }), /statusFor\[0\]/);
    assert.throws(() => sim.configure({ receipts: { encodingAesKey: 'short' } }), /43 base64 characters/);
    assert.throws(() => sim.configure({ receipts: { bogus: 1 } as never }), /unknown receipts key "bogus"/);
  });

  test('mixed shares are drawn from the seed: the same seed gives the same statuses', async () => {
    const draw = async (): Promise<string[]> => {
      sim.reset();
      sim.configure({ receipts: { url: rx.url, userBlockShare: 0.3, systemFailedShare: 0.3, seed: 7 } });
      for (let i = 0; i < 30; i++) await send(sim, token, msg(`o${i}`));
      assert.equal(await sim.receipts.idle(5000), true);
      return sim.receipts.receipts().map((r) => r.status!);
    };
    const first = await draw();
    const second = await draw();
    assert.deepEqual(second, first);
    assert.equal(new Set(first).size, 3, `all three statuses in ${first.join(',')}`);
  });

  test('delayMs: the receipt waits, then goes; reset cancels what is still waiting', async () => {
    sim.configure({ receipts: { delayMs: 150 } });
    await send(sim, token, msg('oDelay'));
    assert.equal(await sim.receipts.idle(5000), true);
    const rec = sim.receipts.receipts()[0]!;
    assert.ok(rec.sentAt - rec.acceptedAt! >= 150, `sent ${rec.sentAt - rec.acceptedAt!} ms after acceptance`);
    assert.equal(rec.outcome, 'answered');

    sim.configure({ receipts: { delayMs: 60_000 } });
    await send(sim, token, msg('oNever'));
    assert.equal(sim.receipts.stats().scheduled, 1);
    assert.equal(await sim.receipts.idle(0), false);
    sim.reset();
    assert.equal(sim.receipts.stats().scheduled, 0);
    assert.equal(await sim.receipts.idle(0), true);
    assert.deepEqual(sim.receipts.receipts(), []);
    assert.equal(rx.got.length, 1);
  });

  test('no answer: retried with the same timestamp, nonce and body, up to `attempts` in all', async () => {
    sim.configure({ receipts: { timeoutMs: 200, attempts: 3 } });
    rx.hang = 1;
    await send(sim, token, msg('oRetry'));
    assert.equal(await sim.receipts.idle(5000), true);
    assert.equal(rx.got.length, 2);
    assert.equal(rx.got[1]!.url, rx.got[0]!.url);
    assert.equal(rx.got[1]!.body, rx.got[0]!.body);
    let rec = sim.receipts.receipts()[0]!;
    assert.equal(rec.outcome, 'answered');
    assert.deepEqual(
      rec.attempts.map((x) => [x.httpStatus, x.answer, x.error]),
      [
        [null, null, 'no answer within 200 ms'],
        [200, 'success', null],
      ],
    );

    rx.hang = 3;
    await send(sim, token, msg('oLost'));
    assert.equal(await sim.receipts.idle(5000), true);
    assert.equal(rx.got.length, 5);
    rec = sim.receipts.receipts()[1]!;
    assert.equal(rec.outcome, 'failed');
    assert.equal(rec.attempts.length, 3);
    assert.equal(rec.error, 'no answer within 200 ms');
    assert.equal(new Set(rx.got.slice(2).map((g) => g.url + g.body)).size, 1);

    sim.configure({ receipts: { url: `http://127.0.0.1:${await freePort()}/nobody` } });
    await send(sim, token, msg('oRefused'));
    assert.equal(await sim.receipts.idle(5000), true);
    rec = sim.receipts.receipts()[2]!;
    assert.equal(rec.outcome, 'failed');
    assert.deepEqual(rec.attempts.map((x) => x.error), ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED']);
    assert.deepEqual([sim.receipts.stats().answered, sim.receipts.stats().failed, sim.receipts.stats().attempts], [1, 2, 8]);
  });

  test('an answer other than 200 success/empty is recorded as rejected, not retried', async () => {
    rx.answer = { status: 200, body: '' };
    await send(sim, token, msg('oEmpty'));
    await sim.receipts.idle(5000);
    rx.answer = { status: 401, body: 'bad signature' };
    await send(sim, token, msg('oRefusedByReceiver'));
    await sim.receipts.idle(5000);
    const [a, b] = sim.receipts.receipts();
    assert.equal(a!.outcome, 'answered');
    assert.equal(b!.outcome, 'rejected');
    assert.deepEqual([b!.httpStatus, b!.answer, b!.attempts.length], [401, 'bad signature', 1]);
    assert.deepEqual([sim.receipts.stats().answered, sim.receipts.stats().rejected], [1, 1]);
  });

  test('bad signature: plaintext, and in safe mode either signature', async () => {
    const a = await send(sim, token, msg('oSig'));
    await sim.receipts.idle(5000);
    const r1 = await sim.receipts.pushBadSignature();
    assert.equal(r1.kind, 'bad-signature');
    assert.equal(r1.msgid, a.json.msgid);
    assert.equal(rx.got[1]!.signatureOk, false);
    assert.equal(field(rx.got[1]!.xml, 'MsgID'), String(a.json.msgid));

    sim.configure({ receipts: { encodingAesKey: AES_KEY } });
    const overHttp = await http(sim.url, 'POST', '/_sim/receipts/bad-signature', { which: 'msg_signature', status: 'failed:user block' });
    assert.equal(overHttp.status, 200);
    assert.equal(overHttp.json.receipt.kind, 'bad-signature');
    assert.deepEqual([rx.got[2]!.signatureOk, rx.got[2]!.msgSignatureOk, rx.got[2]!.appidOk], [true, false, true]);
    assert.equal(field(rx.got[2]!.xml, 'Status'), 'failed:user block');
    await sim.receipts.pushBadSignature({ msgid: a.json.msgid, which: 'signature' });
    assert.deepEqual([rx.got[3]!.signatureOk, rx.got[3]!.msgSignatureOk], [false, true]);
    await sim.receipts.pushBadSignature({});
    assert.deepEqual([rx.got[4]!.signatureOk, rx.got[4]!.msgSignatureOk], [false, false]);

    sim.configure({ receipts: { encodingAesKey: null } });
    assert.throws(() => sim.receipts.pushBadSignature({ which: 'msg_signature' }), /safe mode/);
  });

  test('replay: an earlier timestamp and nonce, another body, still correctly signed', async () => {
    const a = await send(sim, token, msg('oReplay'));
    await sim.receipts.idle(5000);
    const r = await sim.receipts.pushReplay();
    assert.deepEqual([r.kind, r.of, r.msgid, r.status], ['replay', 0, a.json.msgid, 'failed: system failed']);
    const [orig, replay] = rx.got;
    assert.equal(replay!.query.get('timestamp'), orig!.query.get('timestamp'));
    assert.equal(replay!.query.get('nonce'), orig!.query.get('nonce'));
    assert.notEqual(replay!.body, orig!.body);
    assert.equal(replay!.signatureOk, true);
    assert.equal(field(replay!.xml, 'Status'), 'failed: system failed');

    sim.configure({ receipts: { encodingAesKey: AES_KEY } });
    const xml = '<xml><MsgType><![CDATA[text]]></MsgType></xml>';
    const overHttp = await http(sim.url, 'POST', '/_sim/receipts/replay', { of: 0, xml });
    assert.equal(overHttp.status, 200);
    assert.equal(rx.got[2]!.query.get('nonce'), orig!.query.get('nonce'));
    assert.deepEqual([rx.got[2]!.signatureOk, rx.got[2]!.msgSignatureOk, rx.got[2]!.xml], [true, true, xml]);
    assert.equal((await http(sim.url, 'POST', '/_sim/receipts/replay', { of: 99 })).status, 400);
  });

  test('duplicate: an earlier push again, byte for byte', async () => {
    await send(sim, token, msg('oDup1'));
    await send(sim, token, msg('oDup2'));
    await sim.receipts.idle(5000);
    const d = await sim.receipts.pushDuplicate({ of: 0 });
    assert.deepEqual([d.kind, d.of, d.msgid, d.openid, d.status], ['duplicate', 0, sim.receipts.receipts()[0]!.msgid, 'oDup1', 'success']);
    assert.equal(rx.got[2]!.url, rx.got[0]!.url);
    assert.equal(rx.got[2]!.body, rx.got[0]!.body);
    const overHttp = await http(sim.url, 'POST', '/_sim/receipts/duplicate', {});
    assert.equal(overHttp.json.receipt.of, 1); // the last receipt by default
    assert.equal(rx.got[3]!.body, rx.got[1]!.body);
  });

  test('unknown MsgID: signed correctly for a msgid never given out', async () => {
    const a = await send(sim, token, msg('oKnown'));
    await sim.receipts.idle(5000);
    const u = await sim.receipts.pushUnknownMsgid();
    assert.equal(u.kind, 'unknown-msgid');
    assert.ok(u.msgid! >= 9_000_000_000);
    assert.equal(rx.got[1]!.signatureOk, true);
    assert.equal(field(rx.got[1]!.xml, 'MsgID'), String(u.msgid));
    const overHttp = await http(sim.url, 'POST', '/_sim/receipts/unknown-msgid', { msgid: 42, openid: 'oWho', status: 'failed:user block' });
    assert.deepEqual([overHttp.json.receipt.msgid, overHttp.json.receipt.openid, overHttp.json.receipt.status], [42, 'oWho', 'failed:user block']);
    const refused = await http(sim.url, 'POST', '/_sim/receipts/unknown-msgid', { msgid: a.json.msgid });
    assert.equal(refused.status, 400);
    assert.match(refused.json.error, /was given out/);
  });

  test('push: a correct receipt for an accepted msgid on request; unknown msgids and missing url refused', async () => {
    sim.configure({ receipts: { url: null } });
    const a = await send(sim, token, msg('oLater', { client_msg_id: 'cm-later' }));
    assert.equal(sim.receipts.stats().pushed, 0);
    assert.equal((await http(sim.url, 'POST', '/_sim/receipts/push', { msgid: a.json.msgid })).status, 400);
    sim.configure({ receipts: { url: rx.url } });
    const r = await http(sim.url, 'POST', '/_sim/receipts/push', { msgid: a.json.msgid, status: 'failed:user block' });
    assert.equal(r.status, 200);
    assert.deepEqual(
      [r.json.receipt.kind, r.json.receipt.trigger, r.json.receipt.client_msg_id, r.json.receipt.outcome],
      ['receipt', 'control', 'cm-later', 'answered'],
    );
    assert.equal(field(rx.got[0]!.xml, 'Status'), 'failed:user block');
    assert.equal((await http(sim.url, 'POST', '/_sim/receipts/push', { msgid: 5 })).status, 400);
    assert.equal((await http(sim.url, 'POST', '/_sim/receipts/push', { msgid: a.json.msgid, status: 'failed' })).status, 400);
    assert.equal((await http(sim.url, 'POST', '/_sim/receipts/push', { msgid: a.json.msgid, typo: 1 })).status, 400);
    assert.equal((await http(sim.url, 'POST', '/_sim/receipts/nope', {})).status, 404);
  });

  test('raw: any request signed correctly, e.g. a subscribe event, a user text, the GET echostr check', async () => {
    const subscribe =
      '<xml><ToUserName><![CDATA[gh_simulator]]></ToUserName><FromUserName><![CDATA[oFan]]></FromUserName>' +
      '<CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>';
    const r = await sim.receipts.pushRaw({ query: { openid: 'oFan' }, body: subscribe });
    assert.deepEqual([r.kind, r.msgid, r.status, r.openid, r.outcome], ['raw', null, null, 'oFan', 'answered']);
    assert.deepEqual([rx.got[0]!.signatureOk, rx.got[0]!.body], [true, subscribe]);

    sim.configure({ receipts: { encodingAesKey: AES_KEY } });
    const text = '<xml><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi ]]]]><![CDATA[> there]]></Content></xml>';
    const overHttp = await http(sim.url, 'POST', '/_sim/receipts/raw', { body: text, query: { openid: 'oFan' } });
    assert.equal(overHttp.status, 200);
    assert.deepEqual([rx.got[1]!.signatureOk, rx.got[1]!.msgSignatureOk, rx.got[1]!.appidOk, rx.got[1]!.xml], [true, true, true, text]);

    await sim.receipts.pushRaw({ method: 'GET', query: { echostr: 'echo-123' } });
    const get = rx.got[2]!;
    assert.deepEqual([get.method, get.body, get.signatureOk, get.query.get('echostr'), get.query.get('encrypt_type')], ['GET', '', true, 'echo-123', null]);

    await sim.receipts.pushRaw({ body: '<xml/>', encrypt: false });
    assert.deepEqual([rx.got[3]!.query.get('encrypt_type'), rx.got[3]!.body], [null, '<xml/>']);
  });

  test('wait:false answers at once with the pending push; /_sim/receipts/idle waits for it', async () => {
    await send(sim, token, msg('oW'));
    await sim.receipts.idle(5000);
    sim.configure({ receipts: { timeoutMs: 200, attempts: 1 } });
    rx.hang = 1;
    const r = await http(sim.url, 'POST', '/_sim/receipts/duplicate', { wait: false });
    assert.equal(r.status, 202);
    assert.equal(r.json.receipt.outcome, 'pending');
    const idle = await http(sim.url, 'POST', '/_sim/receipts/idle', { timeoutMs: 5000 });
    assert.equal(idle.json.idle, true);
    assert.equal(sim.receipts.receipts()[1]!.outcome, 'failed');
  });

  test('reset forgets the record and counters, restores the start settings', async () => {
    sim.configure({ receipts: { userBlockShare: 1 } });
    await send(sim, token, msg('oR'));
    await sim.receipts.idle(5000);
    assert.equal(sim.receipts.receipts().length, 1);
    const reset = await http(sim.url, 'POST', '/_sim/reset', {});
    assert.equal(reset.status, 200);
    assert.deepEqual(sim.receipts.receipts(), []);
    assert.equal(sim.receipts.stats().pushed, 0);
    assert.equal(sim.config().receipts.url, null);
    assert.equal(sim.config().receipts.userBlockShare, 0);
    await send(sim, await getToken(sim), msg('oAfterReset'));
    assert.equal(sim.receipts.stats().pushed, 0); // url is off again
  });
});

describe('simulator receipts on close', () => {
  test('close cancels waiting and unanswered pushes and leaves no timer behind', async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const baseline = timers();
    const rx = await Receiver.start('any');
    const sim = await WechatSimulator.start({ receipts: { url: rx.url, token: TOKEN, timeoutMs: 60_000 } });
    try {
      rx.hang = 10;
      const token = await getToken(sim);
      await send(sim, token, msg('oHung'));
      sim.configure({ receipts: { delayMs: 60_000 } });
      await send(sim, token, msg('oWaiting'));
      const stats = sim.receipts.stats();
      assert.deepEqual([stats.scheduled, stats.inFlight], [1, 1]);
      const hung = sim.receipts.receipts()[0]!;
      await sim.close();
      assert.equal(await sim.receipts.idle(0), true);
      assert.equal(hung.outcome, 'cancelled');
      assert.equal(sim.receipts.stats().cancelled, 1);
      assert.equal(sim.receipts.stats().scheduled, 0);
      assert.throws(() => sim.receipts.pushUnknownMsgid(), /closed/);
    } finally {
      await sim.close();
      await rx.close();
    }
    assert.equal(timers(), baseline);
  });
});

test('simulator main --receipt-url pushes signed receipts from its own process', async () => {
  const rx = await Receiver.start('wxMainApp');
  const main = fileURLToPath(new URL('../../src/simulator/main.js', import.meta.url));
  const child = spawn(
    process.execPath,
    [main, '--port', '0', '--app-id', 'wxMainApp', '--app-secret', 's3cret', '--receipt-url', rx.url, '--receipt-token', TOKEN, '--receipt-aes-key', AES_KEY],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  try {
    const [line] = (await once(child.stdout!, 'data')) as [Buffer];
    const { url } = JSON.parse(line.toString()) as { url: string };
    const tok = await http(url, 'GET', '/cgi-bin/token?grant_type=client_credential&appid=wxMainApp&secret=s3cret');
    const sent = await http(url, 'POST', `/cgi-bin/message/template/send?access_token=${tok.json.access_token}`, msg('oMain'));
    const idle = await http(url, 'POST', '/_sim/receipts/idle', { timeoutMs: 5000 });
    assert.equal(idle.json.idle, true);
    const rec = (await http(url, 'GET', '/_sim/receipts')).json.receipts as ReceiptPush[];
    assert.equal(rec.length, 1);
    assert.equal(rec[0]!.msgid, sent.json.msgid);
    assert.deepEqual([rx.got[0]!.signatureOk, rx.got[0]!.msgSignatureOk, rx.got[0]!.appidOk], [true, true, true]);
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
    await rx.close();
  }
  const bad = spawn(process.execPath, [main, '--receipt-url', 'ftp://x'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const [code] = (await once(bad, 'exit')) as [number | null];
  assert.equal(code, 2);
});
