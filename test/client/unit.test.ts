/**
 * MegaClient against a scriptable fake server (auth, protocol errors, window, close) and its
 * option checks; placeholder checks of `mega <name> template set`.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import {
  BadRequestError,
  MegaAuthError,
  MegaClient,
  MegaClientDestroyedError,
  MegaClientTimeoutError,
  MegaConnectError,
  MegaConnectionClosedError,
  MegaInvalidArgumentError,
  MegaProtocolError,
  ResultCode,
  type MegaClientOptions,
} from '../../src/index.js';
import { placeholderProblems } from '../../src/cli/client-commands.js';
import { MegaClientErrorCode, MegaQueryError, MegaRequestTooLargeError } from '../../src/index.js';
import { MegaError } from '../../src/errors.js';
import { DEFAULTS } from '../../src/client/options.js';
import { reconnectDelay } from '../../src/client/backoff.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../protocol/helpers.js';
import { FakeServer, freePort } from './fake-server.js';

const servers: FakeServer[] = [];
const clients: MegaClient[] = [];
after(async () => {
  for (const c of clients) c.destroy();
  for (const s of servers) await s.close();
});

async function fake(onFrame?: Parameters<typeof FakeServer.start>[0]): Promise<FakeServer> {
  const s = await FakeServer.start(onFrame);
  servers.push(s);
  return s;
}

function client(options: MegaClientOptions): MegaClient {
  const c = new MegaClient(options);
  clients.push(c);
  return c;
}

describe('MegaClient options', () => {
  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['no port', {}, /options\.port must be an integer from 1 to 65535, got undefined/],
    ['port 0', { port: 0 }, /options\.port must be an integer from 1 to 65535, got 0/],
    ['port as text', { port: '9501' }, /options\.port .* got "9501"/],
    ['empty host', { port: 1, host: '' }, /options\.host must be a non-empty string/],
    ['tls not bool/object', { port: 1, tls: 'yes' }, /options\.tls must be a boolean or a tls\.connect options object/],
    ['authToken with a space', { port: 1, authToken: 'a b' }, /options\.authToken must be 1-1024 printable ASCII characters without spaces/],
    ['window 0', { port: 1, window: 0 }, /options\.window must be an integer from 1 to 1000000, got 0/],
    ['window fraction', { port: 1, window: 1.5 }, /options\.window must be an integer/],
    ['timeoutMs negative', { port: 1, timeoutMs: -1 }, /options\.timeoutMs must be an integer from 1/],
    ['connectTimeoutMs NaN', { port: 1, connectTimeoutMs: NaN }, /options\.connectTimeoutMs must be an integer/],
    ['maxFrameLength too small', { port: 1, maxFrameLength: 10 }, /options\.maxFrameLength must be an integer from 64/],
    ['reconnect true', { port: 1, reconnect: true }, /options\.reconnect must be false or an object, got true/],
    ['reconnect delay', { port: 1, reconnect: { initialDelayMs: 0 } }, /options\.reconnect\.initialDelayMs must be an integer from 1/],
    [
      'reconnect max below initial',
      { port: 1, reconnect: { initialDelayMs: 500, maxDelayMs: 100 } },
      /options\.reconnect\.maxDelayMs \(100\) must not be below options\.reconnect\.initialDelayMs \(500\)/,
    ],
  ];
  for (const [what, options, message] of bad) {
    it(`refuses ${what}, naming the option`, () => {
      assert.throws(
        () => new MegaClient(options as unknown as MegaClientOptions),
        (err: unknown) => err instanceof MegaInvalidArgumentError && err.code === 'MEGA_ERR_CLIENT_INVALID_ARG' && message.test(err.message),
      );
    });
  }

  it('never echoes the auth token', () => {
    assert.throws(
      () => new MegaClient({ port: 1, authToken: 'sec ret' }),
      (err: Error) => !err.message.includes('sec ret'),
    );
  });

  it('documents its defaults as the values it uses', () => {
    const c = new MegaClient({ port: 9501 });
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.window, 256);
    assert.equal(c.timeoutMs, 30000);
    assert.equal(c.connectTimeoutMs, 5000);
    assert.equal(c.maxFrameLength, 2465792);
    assert.equal(c.inFlight, 0);
    assert.equal(c.connected, false);
    c.destroy();
  });

  it('the package entry exports ResultCode', () => {
    assert.equal(ResultCode.OK, 200);
    assert.equal(ResultCode.UNAUTHORIZED, 401);
  });
});

describe('MegaClient request checks (rejected, nothing sent)', () => {
  it('bad openid, key, msgid, data and per-request options reject before anything is written', async () => {
    const server = await fake();
    const c = client({ port: server.port });
    await c.connect();
    await assert.rejects(c.push('o 1', 'k'), (e: unknown) => e instanceof BadRequestError && /openid/.test(e.message));
    await assert.rejects(c.push('o1', 'k'.repeat(33)), (e: unknown) => e instanceof BadRequestError && /template key/.test(e.message));
    await assert.rejects(c.send('o1', 'k', null, { msgid: 'bad id!' }), (e: unknown) => e instanceof BadRequestError && /msgid/.test(e.message));
    await assert.rejects(c.tset('a b'), BadRequestError);
    await assert.rejects(c.push(undefined as unknown as string, 'k'), (e: unknown) => e instanceof MegaInvalidArgumentError && /openid must be a string/.test(e.message));
    await assert.rejects(c.push('o1', 'k', [1] as unknown as null), /data must be an object of template variables or null, got an array/);
    await assert.rejects(c.push('o1', 'k', { n: 10n }), (e: unknown) => e instanceof MegaInvalidArgumentError && /data cannot be encoded as JSON/.test(e.message));
    await assert.rejects(c.push('o1', 'k', null, { timeoutMs: 0 }), /options\.timeoutMs must be an integer from 1/);
    await assert.rejects(c.push('o1', 'k', null, { msgid: 5 as unknown as string }), /options\.msgid must be a string/);
    await assert.rejects(c.push('o1', 'k', { big: 'x'.repeat(3_000_000) }), (e: unknown) => e instanceof BadRequestError && /exceeds maxFrameLength 2465792/.test(e.message));
    assert.equal(c.inFlight, 0);
    // the connection is untouched and nothing reached the server
    assert.equal((await c.push('o1', 'k')).code, 200);
    assert.deepEqual(server.frames.map((f) => f.header), ['push o1 k']);
    await c.close();
  });
});

describe('MegaClient against a fake server', () => {
  it('uses sequential opaques from 1 and correlates out-of-order answers', async () => {
    const held: Array<{ opaque: number; answer: (code: number, m: string) => void }> = [];
    const server = await fake((f, conn) => held.push({ opaque: f.opaque, answer: (code, m) => conn.answer(f.opaque, code, m) }));
    const c = client({ port: server.port });
    const promises = ['a', 'b', 'c'].map((id) => c.send(`o${id}`, 'k'));
    await server.until(() => held.length === 3);
    assert.deepEqual(held.map((h) => h.opaque), [1, 2, 3]);
    // answered in reverse order
    held[2]!.answer(400, '{"errcode":43004,"errmsg":"require subscribe","openid":"oc"}');
    held[1]!.answer(200, '{"errcode":0,"errmsg":"ok","msgid":7}');
    held[0]!.answer(503, 'shutting down');
    const [a, b, cc] = await Promise.all(promises);
    assert.deepEqual(a, { code: 503, ok: false, message: 'shutting down' });
    assert.deepEqual(b!.wechat, { errcode: 0, errmsg: 'ok', msgid: 7 });
    assert.equal(b!.ok, true);
    assert.deepEqual(cc!.wechat, { errcode: 43004, errmsg: 'require subscribe', openid: 'oc' });
    await c.close();
  });

  it('keeps at most `window` requests in flight; the rest wait for a slot', async () => {
    const held: Array<() => void> = [];
    const server = await fake((f, conn) => held.push(() => conn.answer(f.opaque, 200)));
    const c = client({ port: server.port, window: 3 });
    const all = Promise.all(Array.from({ length: 10 }, (_, i) => c.push(`o${i}`, 'k')));
    await server.until(() => held.length === 3);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(server.frames.length, 3, 'only window-many requests were written');
    assert.equal(c.inFlight, 3);
    assert.equal(c.queued, 7);
    while (server.frames.length < 10 || held.length > 0) {
      const next = held.shift();
      if (next) next();
      else await server.until(() => held.length > 0);
      assert.ok(c.inFlight <= 3);
    }
    assert.equal((await all).length, 10);
    await c.close();
  });

  it('authenticates first: nothing else is written before the auth answer', async () => {
    let authAnswered = false;
    const server = await fake((f, conn) => {
      if (f.header.startsWith('auth ')) {
        assert.equal(f.body, null, 'auth frames carry no body fields');
        setTimeout(() => {
          authAnswered = true;
          conn.answer(f.opaque, 200);
        }, 150);
      } else {
        assert.ok(authAnswered, `${f.header} written before the auth answer`);
        conn.answer(f.opaque, 200);
      }
    });
    const c = client({ port: server.port, authToken: 's3cret-token' });
    const r = await c.push('o1', 'k', { a: 1 });
    assert.equal(r.code, 200);
    assert.deepEqual(server.frames.map((f) => f.header), ['auth s3cret-token', 'push o1 k']);
    await c.close();
  });

  it('a refused auth token rejects with MegaAuthError and is not retried', async () => {
    const server = await fake((f, conn) => {
      conn.answer(f.opaque, 401, 'bad token');
      conn.socket.end();
    });
    const c = client({ port: server.port, authToken: 'wrong', reconnect: { initialDelayMs: 10 } });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    const pending = c.push('o1', 'k');
    await assert.rejects(c.connect(), (e: unknown) => e instanceof MegaAuthError && e.code === 'MEGA_ERR_CLIENT_AUTH' && e.resultCode === 401 && /bad token/.test(e.message));
    await assert.rejects(pending, MegaAuthError);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server.connections.length, 1, 'no reconnection after an auth refusal');
    assert.equal(errors.length, 1);
    assert.ok(!errors[0]!.message.includes('wrong'), 'the token is not in the message');
    c.destroy();
  });

  it('a result for an opaque never sent is a protocol error; the client reconnects and goes on', async () => {
    let first = true;
    const server = await fake((f, conn) => {
      if (first) {
        first = false;
        conn.answer(f.opaque + 1000, 200);
      } else {
        conn.answer(f.opaque, 200);
      }
    });
    const c = client({ port: server.port, reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    // not events.once: it would reject on the 'error' event
    const disconnected = new Promise((resolve) => c.once('disconnect', resolve));
    await assert.rejects(
      c.push('o1', 'k'),
      (e: unknown) => e instanceof MegaProtocolError && e.code === 'MEGA_ERR_CLIENT_PROTOCOL' && /opaque 1001, which is not pending/.test(e.message),
    );
    await disconnected;
    assert.ok(errors.some((e) => e instanceof MegaProtocolError));
    assert.equal((await c.push('o2', 'k')).code, 200);
    assert.equal(server.connections.length, 2);
    await c.close();
  });

  it("a server that answers 500 and closes: 'disconnect' carries its code, requests in flight their unknown fate", async () => {
    const server = await fake((f, conn) => {
      conn.answer(f.opaque, 500, 'unknown command');
      conn.socket.end();
    });
    const c = client({ port: server.port, reconnect: false });
    const disconnected = new Promise<Error | undefined>((resolve) => c.once('disconnect', resolve));
    const r = await c.push('o1', 'k');
    assert.equal(r.code, 500);
    const reason = await disconnected;
    assert.ok(reason instanceof MegaConnectionClosedError, `got ${String(reason)}`);
    assert.equal(reason.serverCode, 500);
    assert.match(reason.message, /after result 500 unknown command/);
    c.destroy();
  });

  it('undecodable bytes are a protocol error', async () => {
    const server = await fake((_f, conn) => conn.socket.write(Buffer.from([0, 0, 0, 1, 0xff])));
    const c = client({ port: server.port, reconnect: false });
    await assert.rejects(c.send('o1', 'k'), (e: unknown) => e instanceof MegaProtocolError && /undecodable stream/.test(e.message));
    c.destroy();
  });

  it('413 with opaque 0 then a close: pending requests reject with MegaConnectionClosedError naming the reason', async () => {
    const server = await fake((f, conn) => {
      if (f.header.startsWith('send')) return; // held: pending when the connection closes
      conn.answer(0, 413, 'frame of 99999 bytes exceeds package_max_length 4096');
      conn.socket.end();
    });
    const c = client({ port: server.port, reconnect: false });
    const held = c.send('o1', 'k');
    await server.until(() => server.frames.length === 1);
    const trigger = c.push('o2', 'k');
    for (const p of [held, trigger]) {
      await assert.rejects(
        p,
        (e: unknown) => e instanceof MegaConnectionClosedError && e.code === 'MEGA_ERR_CLIENT_CLOSED' && e.sent && /result 413 frame of 99999 bytes/.test(e.message),
      );
    }
    c.destroy();
  });

  it('a timed-out request frees its slot; its late answer is recognised and dropped', async () => {
    const server = await fake((f, conn) => setTimeout(() => conn.answer(f.opaque, 200), f.header.includes('slow') ? 300 : 0));
    const c = client({ port: server.port, window: 1 });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await assert.rejects(
      c.send('oslow', 'k', null, { timeoutMs: 100 }),
      (e: unknown) => e instanceof MegaClientTimeoutError && e.code === 'MEGA_ERR_CLIENT_TIMEOUT' && e.sent && e.timeoutMs === 100,
    );
    assert.equal(c.inFlight, 0);
    assert.equal((await c.push('ofast', 'k')).code, 200, 'the window slot was freed');
    await new Promise((r) => setTimeout(r, 400)); // the late answer arrives meanwhile
    assert.deepEqual(errors, []);
    assert.equal(c.connected, true);
    assert.equal(server.connections.length, 1);
    await c.close();
  });

  it('a refused connection rejects connect() with MegaConnectError; requests without a connection time out unsent', async () => {
    const port = await freePort();
    const c = client({ port, reconnect: false });
    await assert.rejects(c.connect(), (e: unknown) => e instanceof MegaConnectError && e.code === 'MEGA_ERR_CLIENT_CONNECT' && /ECONNREFUSED/.test(e.message));
    await assert.rejects(c.push('o1', 'k'), MegaConnectError);
    c.destroy();
    await assert.rejects(MegaClient.connect({ port }), MegaConnectError);

    const retrying = client({ port, reconnect: { initialDelayMs: 20, maxDelayMs: 40 } });
    await assert.rejects(
      retrying.push('o1', 'k', null, { timeoutMs: 300 }),
      (e: unknown) => e instanceof MegaClientTimeoutError && !e.sent && /no connection to 127\.0\.0\.1:\d+ within 300 ms/.test(e.message) && /ECONNREFUSED/.test(e.message),
    );
    retrying.destroy();
  });

  it('connectTimeoutMs bounds a handshake that never completes', async () => {
    const silent = net.createServer(() => undefined).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const c = client({ port, tls: true, connectTimeoutMs: 200, reconnect: false });
      const t0 = Date.now();
      await assert.rejects(c.connect(), (e: unknown) => e instanceof MegaConnectError && /within 200 ms/.test(e.message));
      assert.ok(Date.now() - t0 < 2000);
      c.destroy();
    } finally {
      silent.close();
    }
  });

  it('requests made while reconnecting wait for the connection', async () => {
    const server = await fake();
    const c = client({ port: server.port, reconnect: { initialDelayMs: 100, maxDelayMs: 100 } });
    await c.connect();
    const disconnected = once(c, 'disconnect');
    server.connections[0]!.socket.destroy();
    await disconnected;
    assert.equal(c.connected, false);
    const r = await c.push('o1', 'k');
    assert.equal(r.code, 200);
    assert.equal(server.connections.length, 2);
    await c.close();
  });

  it('close() waits for in-flight answers; later requests reject with MegaClientDestroyedError', async () => {
    const server = await fake((f, conn) => setTimeout(() => conn.answer(f.opaque, 200), 200));
    const c = client({ port: server.port });
    await c.connect();
    const p = c.push('o1', 'k');
    const q = c.push('o2', 'k'); // queued or in flight: both are answered before the close completes
    await c.close();
    assert.equal((await p).code, 200);
    assert.equal((await q).code, 200);
    await assert.rejects(c.push('o3', 'k'), (e: unknown) => e instanceof MegaClientDestroyedError && e.code === 'MEGA_ERR_CLIENT_DESTROYED');
    await c.close(); // idempotent
  });

  it('close() gives up after its timeout: what is still in flight rejects with MegaConnectionClosedError', async () => {
    const server = await fake(() => undefined); // never answers
    const c = client({ port: server.port });
    await c.connect();
    const p = assert.rejects(c.send('o1', 'k'), (e: unknown) => e instanceof MegaConnectionClosedError && e.sent);
    await server.until(() => server.frames.length === 1);
    const t0 = Date.now();
    await c.close({ timeoutMs: 100 });
    assert.ok(Date.now() - t0 < 2000);
    await p;
  });

  it('destroy() rejects in-flight requests (sent) and queued ones (never sent)', async () => {
    const server = await fake(() => undefined);
    const c = client({ port: server.port, window: 1 });
    await c.connect();
    const inFlight = c.send('o1', 'k');
    const queued = c.send('o2', 'k');
    await server.until(() => server.frames.length === 1);
    c.destroy();
    await assert.rejects(inFlight, (e: unknown) => e instanceof MegaConnectionClosedError && e.sent);
    await assert.rejects(queued, MegaClientDestroyedError);
  });
});

describe('template placeholder checks', () => {
  it('accepts ${NAME} with NAME of [A-Za-z0-9_.-] and text without placeholders', () => {
    assert.deepEqual(placeholderProblems({ a: 'x ${OPENID} ${a.b-c_9} $ {} $x {y}', b: [1, true, null, '${ok}'] }), []);
  });
  it('reports malformed and unclosed placeholders with where they are', () => {
    const problems = placeholderProblems({
      data: { first: { value: 'hi ${a b}' }, list: ['${}', 'ok ${good} then ${bad'] },
      '${key}': 'x',
    });
    assert.equal(problems.length, 4, problems.join('\n'));
    assert.match(problems[0]!, /^data\.first\.value: malformed placeholder "\$\{a b\}"/);
    assert.match(problems[1]!, /^data\.list\[0\]: malformed placeholder "\$\{\}"/);
    assert.match(problems[2]!, /^data\.list\[1\]: placeholder "\$\{bad" is not closed/);
    assert.match(problems[3]!, /^\$\{key\}: placeholders are not filled in object keys/);
  });
});

describe('MegaClient error codes (callers classify by code, never by message)', () => {
  it('MegaClientErrorCode holds the code of every error a client raises, from the package entry', () => {
    const raised: Array<[keyof typeof MegaClientErrorCode, MegaError]> = [
      ['INVALID_ARG', new MegaInvalidArgumentError('x')],
      ['BAD_REQUEST', new BadRequestError('x')],
      ['REQUEST_TOO_LARGE', new MegaRequestTooLargeError('x', 100, 64)],
      ['TIMEOUT', new MegaClientTimeoutError('x', 1, true)],
      ['CLOSED', new MegaConnectionClosedError('x', true)],
      ['PROTOCOL', new MegaProtocolError('x')],
      ['CONNECT', new MegaConnectError('x')],
      ['AUTH', new MegaAuthError('x', 401)],
      ['QUERY', new MegaQueryError('x', 503)],
      ['DESTROYED', new MegaClientDestroyedError()],
    ];
    for (const [name, err] of raised) assert.equal(err.code, MegaClientErrorCode[name], name);
    assert.deepEqual(Object.keys(MegaClientErrorCode).sort(), raised.map(([name]) => name).sort());
  });

  it('a request too large for one frame: MegaRequestTooLargeError with its own code, still a BadRequestError, nothing sent', async () => {
    const server = await fake();
    const c = client({ port: server.port, maxFrameLength: 1024 });
    await c.connect();
    await assert.rejects(
      c.send('o1', 'k', { big: 'x'.repeat(2000) }),
      (e: unknown) =>
        e instanceof MegaRequestTooLargeError &&
        e instanceof BadRequestError &&
        e.code === MegaClientErrorCode.REQUEST_TOO_LARGE &&
        e.maxFrameLength === 1024 &&
        e.frameLength > 2000,
    );
    // other refused arguments keep the general code
    await assert.rejects(c.push('o 1', 'k'), (e: unknown) => e instanceof BadRequestError && (e as MegaError).code === MegaClientErrorCode.BAD_REQUEST);
    assert.equal((await c.push('o1', 'k')).code, 200);
    assert.deepEqual(server.frames.map((f) => f.header), ['push o1 k']);
    await c.close();
  });
});

describe('MegaClient option docs', () => {
  /** interface name -> option -> the text after its @defaultValue */
  function documentedDefaults(): Map<string, Map<string, string>> {
    const source = readFileSync(path.join(repoRoot(), 'src/client/options.ts'), 'utf8');
    const out = new Map<string, Map<string, string>>();
    for (const [, name, body] of source.matchAll(/export interface (\w+) \{([\s\S]*?)\n\}/g)) {
      const fields = new Map<string, string>();
      for (const [, doc, field] of body!.matchAll(/\/\*\*([\s\S]*?)\*\/\s*(\w+)\??:/g)) {
        const text = doc!.replace(/\n\s*\*/g, ' ').replace(/\s+/g, ' ');
        const d = /@defaultValue (.*?)\s*$/.exec(text);
        fields.set(field!, d ? d[1]! : '');
      }
      out.set(name!, fields);
    }
    return out;
  }

  it('every option but port documents its default, and the documented value is the one a client uses', () => {
    const docs = documentedDefaults();
    const options = docs.get('MegaClientOptions')!;
    for (const [name, text] of options) if (name !== 'port') assert.notEqual(text, '', `${name} has no @defaultValue`);
    const c = new MegaClient({ port: 1 });
    const used: Record<string, string | number> = {
      host: c.host,
      window: c.window,
      timeoutMs: c.timeoutMs,
      connectTimeoutMs: c.connectTimeoutMs,
      maxFrameLength: c.maxFrameLength,
    };
    for (const [name, value] of Object.entries(used)) {
      assert.equal(options.get(name)!.split(' ')[0], typeof value === 'string' ? `'${value}'` : String(value), name);
      assert.equal((DEFAULTS as Record<string, unknown>)[name], value, name);
    }
    assert.equal(options.get('tls'), String(DEFAULTS.tls));
    const { initialDelayMs, maxDelayMs } = DEFAULTS.reconnect;
    assert.equal(options.get('reconnect'), `{ initialDelayMs: ${initialDelayMs}, maxDelayMs: ${maxDelayMs} }`);
    assert.equal(docs.get('MegaReconnectOptions')!.get('initialDelayMs'), String(initialDelayMs));
    assert.equal(docs.get('MegaReconnectOptions')!.get('maxDelayMs'), String(maxDelayMs));
    for (const name of ['MegaRequestOptions', 'MegaTsetOptions', 'MegaCloseOptions']) {
      assert.equal(docs.get(name)!.get('timeoutMs'), "the client's `timeoutMs`", name);
    }
    c.destroy();
  });
});

describe('MegaClient teardown: destroy, close, a lost connection and a failed attempt', () => {
  it('a lost connection with reconnect off: in flight rejects as sent, queued as never sent; the next request connects again', async () => {
    const server = await fake(() => undefined); // never answers
    const c = client({ port: server.port, window: 1, reconnect: false });
    await c.connect();
    const inFlight = c.send('o1', 'k');
    const queued = c.send('o2', 'k');
    await server.until(() => server.frames.length === 1);
    const disconnected = new Promise<Error | undefined>((resolve) => c.once('disconnect', resolve));
    server.connections[0]!.socket.destroy();
    await assert.rejects(inFlight, (e: unknown) => e instanceof MegaConnectionClosedError && e.code === MegaClientErrorCode.CLOSED && e.sent && /fate is unknown/.test(e.message));
    await assert.rejects(queued, (e: unknown) => e instanceof MegaConnectionClosedError && !e.sent && /reconnect is off; not sent/.test(e.message));
    await disconnected;
    assert.equal(c.inFlight + c.queued, 0);
    const again = c.push('o3', 'k');
    await server.until(() => server.frames.length === 2);
    server.connections[1]!.socket.destroy();
    await assert.rejects(again, MegaConnectionClosedError);
    assert.equal(server.connections.length, 2);
    c.destroy();
  });

  it("a 'disconnect' listener that destroys the client: what waited for the reconnection rejects as never sent", async () => {
    const server = await fake(() => undefined);
    const c = client({ port: server.port, window: 1, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
    await c.connect();
    const inFlight = c.send('o1', 'k');
    const queued = c.send('o2', 'k');
    await server.until(() => server.frames.length === 1);
    c.once('disconnect', () => c.destroy());
    server.connections[0]!.socket.destroy();
    await assert.rejects(inFlight, (e: unknown) => e instanceof MegaConnectionClosedError && e.sent);
    await assert.rejects(queued, (e: unknown) => e instanceof MegaClientDestroyedError && e.code === MegaClientErrorCode.DESTROYED);
    assert.equal(c.closed, true);
    await new Promise((r) => setTimeout(r, 100)); // a reconnection would be due after 1 ms
    assert.equal(server.connections.length, 1, 'no reconnection after destroy()');
  });

  it("a 'disconnect' listener that closes the client: queued requests reject as never sent and close() resolves", async () => {
    const server = await fake(() => undefined);
    const c = client({ port: server.port, window: 1, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
    await c.connect();
    const inFlight = c.send('o1', 'k');
    const queued = c.send('o2', 'k');
    await server.until(() => server.frames.length === 1);
    let closing: Promise<void> | undefined;
    c.once('disconnect', () => {
      closing = c.close();
    });
    server.connections[0]!.socket.destroy();
    await assert.rejects(inFlight, (e: unknown) => e instanceof MegaConnectionClosedError && e.sent);
    await assert.rejects(queued, (e: unknown) => e instanceof MegaClientDestroyedError && /closed before the request could be sent/.test(e.message));
    await closing;
    assert.equal(server.connections.length, 1);
  });

  it('close() while the only connection attempt fails: requests reject as never sent, naming the failure; no error event', async () => {
    const port = await freePort();
    const c = client({ port, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    const p = c.push('o1', 'k');
    await c.close();
    await assert.rejects(p, (e: unknown) => e instanceof MegaClientDestroyedError && /closed before the request could be sent \(.*ECONNREFUSED/.test(e.message));
    assert.deepEqual(errors, []);
    assert.equal(c.closed, true);
  });

  it('destroy() while connecting: connect() and queued requests reject, and nothing is emitted', async () => {
    const silent = net.createServer(() => undefined).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    try {
      const c = client({ port: (silent.address() as net.AddressInfo).port, tls: true, connectTimeoutMs: 5000 });
      const events: string[] = [];
      c.on('error', () => events.push('error'));
      c.on('disconnect', () => events.push('disconnect'));
      const connecting = c.connect();
      const p = c.push('o1', 'k');
      c.destroy();
      await assert.rejects(connecting, (e: unknown) => e instanceof MegaClientDestroyedError && /destroyed before it connected/.test(e.message));
      await assert.rejects(p, (e: unknown) => e instanceof MegaClientDestroyedError && /destroyed before the request could be sent/.test(e.message));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(events, []);
      await c.close(); // already closed: resolves
    } finally {
      silent.close();
    }
  });

  it('the auth frame has an opaque of its own: a request made during the handshake never shares it', async () => {
    const server = await fake((f, conn) => setTimeout(() => conn.answer(f.opaque, 200), f.header.startsWith('auth') ? 100 : 0));
    const c = client({ port: server.port, authToken: 'tok' });
    const before = c.push('o1', 'k');
    await server.until(() => server.frames.length === 1); // the auth frame is out, its answer held back
    const during = c.push('o2', 'k');
    await Promise.all([before, during]);
    assert.deepEqual(
      server.frames.map((f) => [f.header, f.opaque]),
      [
        ['auth tok', 2],
        ['push o1 k', 1],
        ['push o2 k', 3],
      ],
    );
    await c.close();
  });
});

describe('MegaClient reconnect delays', () => {
  it('double from initialDelayMs up to maxDelayMs, with jitter between half and all of the delay', () => {
    const options = { initialDelayMs: 100, maxDelayMs: 1000 };
    const lowest = [0, 1, 2, 3, 4, 40].map((attempt) => reconnectDelay(attempt, options, () => 0));
    const highest = [0, 1, 2, 3, 4, 40].map((attempt) => reconnectDelay(attempt, options, () => 1));
    assert.deepEqual(lowest, [50, 100, 200, 400, 500, 500]);
    assert.deepEqual(highest, [100, 200, 400, 800, 1000, 1000]);
  });
});
