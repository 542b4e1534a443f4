/**
 * The auth handshake end to end without a daemon process: MegaClient (encodeAuth) against the
 * daemon's own connection handler (src/server/connection.ts, parseAuth) over real TCP, and raw
 * auth frames the client library would never send.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { MegaAuthError, MegaClient, MegaClientErrorCode } from '../../src/index.js';
import { encodeFrame, encodePush } from '../../src/protocol/index.js';
import { Connection, type RequestHandler } from '../../src/server/connection.js';
import { RawClient } from '../helpers/client.js';

const TOKEN = 'auth-Test-Token-1';

const handler: RequestHandler = {
  accepting: true,
  push: async () => undefined,
  send: async (_request, reply) => {
    reply(200, '{"errcode":0,"errmsg":"ok","msgid":1}');
    return () => undefined;
  },
  tset: async () => ({ code: 200, message: '' }),
  query: async () => ({ code: 404, message: 'message not found' }),
};

const servers: net.Server[] = [];
after(async () => {
  for (const s of servers) await new Promise((resolve) => s.close(resolve));
});

/** A TCP server whose connections are the daemon's, with `authToken` as `[server] auth_token`. */
async function daemonConnections(authToken: string | undefined): Promise<number> {
  const logger = pino({ level: 'silent' });
  const server = net.createServer((socket) => {
    new Connection(socket, handler, logger, { maxFrameLength: 65536, authToken, idleTimeoutMs: 0, frameTimeoutMs: 5000 });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return (server.address() as net.AddressInfo).port;
}

describe('auth between MegaClient and the daemon’s connection handler', () => {
  it('the right token: the handshake passes and requests are answered', async () => {
    const port = await daemonConnections(TOKEN);
    const c = await MegaClient.connect({ port, authToken: TOKEN, reconnect: false });
    assert.equal((await c.push('o1', 'k')).code, 200);
    assert.equal((await c.send('o1', 'k')).wechat?.errcode, 0);
    await c.close();
  });

  it('a wrong token: MegaAuthError with the 401, and the token in no message', async () => {
    const port = await daemonConnections(TOKEN);
    const wrong = TOKEN.toLowerCase();
    await assert.rejects(
      MegaClient.connect({ port, authToken: wrong, reconnect: false }),
      (e: unknown) =>
        e instanceof MegaAuthError &&
        e.code === MegaClientErrorCode.AUTH &&
        e.resultCode === 401 &&
        /authentication failed/.test(e.message) &&
        !e.message.includes(wrong),
    );
  });

  it('malformed auth frames carry no token: 401 and a close when a token is configured', async () => {
    const port = await daemonConnections(TOKEN);
    const malformed = [
      encodeFrame({ header: `auth ${TOKEN}`, opaque: 1, body: Buffer.alloc(0) }), // body fields
      encodeFrame({ header: `auth ${TOKEN} x`, opaque: 1, body: null }), // two words
      encodeFrame({ header: 'auth', opaque: 1, body: null }), // no token
    ];
    for (const frame of malformed) {
      const raw = await RawClient.connect(port);
      const r = await raw.request(frame, 1);
      assert.equal(r.code, 401);
      assert.equal(r.message.toString(), 'authentication failed');
      await raw.waitClosed();
    }
  });

  it('without a configured token, auth is accepted whatever it carries', async () => {
    const port = await daemonConnections(undefined);
    const raw = await RawClient.connect(port);
    assert.equal((await raw.request(encodeFrame({ header: 'auth a b', opaque: 1, body: null }), 1)).code, 200);
    assert.equal((await raw.request(encodePush(2, 'o1', 'k'), 2)).code, 200);
    raw.close();
    const c = await MegaClient.connect({ port, authToken: 'any', reconnect: false });
    assert.equal((await c.push('o1', 'k')).code, 200);
    await c.close();
  });
});
