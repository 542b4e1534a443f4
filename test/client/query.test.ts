/**
 * MegaClient.query against a scriptable fake server: the record of a 200, undefined for a 404,
 * MegaQueryError for every other answer (503 ledger disabled among them) and for a 200 that is
 * not a record, and the usual errors for arguments, timeouts and lost connections.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  MegaClient,
  MegaClientErrorCode,
  MegaClientTimeoutError,
  MegaConnectionClosedError,
  MegaInvalidArgumentError,
  MegaQueryError,
  BadRequestError,
  parseMessageRecord,
  type MessageRecord,
} from '../../src/index.js';
import type { Frame } from '../../src/protocol/index.js';
import { FakeServer } from './fake-server.js';

const RECORD: MessageRecord = {
  msgid: 'order-42',
  openid: 'oUser1',
  key: 'order_paid',
  kind: 'send',
  state: 'delivered',
  attempts: 2,
  wechatMsgid: '2001',
  errcode: 0,
  errmsg: 'ok',
  queuedAt: 1_764_680_000_000,
  sentAt: 1_764_680_000_120,
  finalAt: 1_764_680_005_000,
};

const servers: FakeServer[] = [];
const clients: MegaClient[] = [];
after(async () => {
  for (const c of clients) c.destroy();
  for (const s of servers) await s.close();
});

/** A daemon look-alike answering `query <msgid>` from `answers` (msgid -> [code, message]). */
async function ledgerServer(answers: Record<string, [number, string]>): Promise<{ server: FakeServer; client: MegaClient }> {
  const server = await FakeServer.start((frame: Frame, conn) => {
    const [command, msgid] = frame.header.split(' ');
    if (command !== 'query' || frame.body !== null) return conn.answer(frame.opaque, 400, 'not a query');
    const answer = answers[msgid!];
    if (answer === undefined) return; // never answered: the client times out
    conn.answer(frame.opaque, answer[0], answer[1]);
  });
  servers.push(server);
  const client = await MegaClient.connect({ port: server.port, timeoutMs: 5000 });
  clients.push(client);
  return { server, client };
}

describe('MegaClient.query', () => {
  it('resolves with the record of a 200 and with undefined for a 404, sending one bodiless query frame each', async () => {
    const { server, client } = await ledgerServer({
      'order-42': [200, JSON.stringify({ ...RECORD, extra: 'ignored' })],
      unknown: [404, 'message not found'],
    });
    assert.deepEqual(await client.query('order-42'), RECORD);
    assert.equal(await client.query('unknown'), undefined);
    assert.deepEqual(
      server.frames.map((f) => [f.header, f.body]),
      [
        ['query order-42', null],
        ['query unknown', null],
      ],
    );
  });

  it('rejects any other answer with MegaQueryError carrying the code and the message', async () => {
    const { client } = await ledgerServer({
      off: [503, 'ledger disabled'],
      down: [503, 'ledger unavailable'],
      bug: [500, 'internal error'],
      bad: [400, 'msgid must be 1-64 characters of [A-Za-z0-9_-]'],
    });
    for (const [msgid, code, text] of [
      ['off', 503, 'ledger disabled'],
      ['down', 503, 'ledger unavailable'],
      ['bug', 500, 'internal error'],
      ['bad', 400, 'msgid must be'],
    ] as const) {
      await assert.rejects(
        client.query(msgid),
        (e: unknown) =>
          e instanceof MegaQueryError &&
          e.code === MegaClientErrorCode.QUERY &&
          e.resultCode === code &&
          e.message.startsWith(`query ${msgid}: result ${code} ${text}`),
        msgid,
      );
    }
  });

  it('rejects a 200 that is not a message record', async () => {
    const broken: Array<[string, string]> = [
      ['empty', ''],
      ['text', 'ok'],
      ['array', '[]'],
      ['nostate', JSON.stringify({ ...RECORD, state: undefined })],
      ['badstate', JSON.stringify({ ...RECORD, state: 'lost' })],
      ['badkind', JSON.stringify({ ...RECORD, kind: 'tset' })],
      ['badtime', JSON.stringify({ ...RECORD, queuedAt: '2026-12-02' })],
      ['badmsgid', JSON.stringify({ ...RECORD, wechatMsgid: 2001 })],
    ];
    const { client } = await ledgerServer(Object.fromEntries(broken.map(([m, body]) => [m, [200, body] as [number, string]])));
    for (const [msgid] of broken) {
      await assert.rejects(
        client.query(msgid),
        (e: unknown) => e instanceof MegaQueryError && e.resultCode === 200 && /is not a message record/.test(e.message),
        msgid,
      );
    }
  });

  it('refuses a msgid the daemon would refuse before sending anything', async () => {
    const { server, client } = await ledgerServer({});
    for (const msgid of ['', 'a b', 'x'.repeat(65), 'a.b']) {
      await assert.rejects(client.query(msgid), (e: unknown) => e instanceof BadRequestError && e.code === MegaClientErrorCode.BAD_REQUEST, msgid);
    }
    await assert.rejects(client.query(42 as unknown as string), (e: unknown) => e instanceof MegaInvalidArgumentError);
    await assert.rejects(client.query('m1', { timeoutMs: -1 }), (e: unknown) => e instanceof MegaInvalidArgumentError);
    assert.equal(server.frames.length, 0);
  });

  it('times out like any request, and rejects when the connection is lost', async () => {
    const { server, client } = await ledgerServer({});
    await assert.rejects(client.query('silent', { timeoutMs: 100 }), (e: unknown) => e instanceof MegaClientTimeoutError && e.sent);
    const pending = client.query('silent-too');
    await server.until(() => server.frames.some((f) => f.header === 'query silent-too'));
    for (const c of server.connections) c.socket.destroy();
    await assert.rejects(pending, (e: unknown) => e instanceof MegaConnectionClosedError && e.code === MegaClientErrorCode.CLOSED);
  });
});

describe('parseMessageRecord', () => {
  it('keeps only the members of a MessageRecord and accepts nulls where the record allows them', () => {
    const fresh = { ...RECORD, state: 'queued', attempts: 0, wechatMsgid: null, errcode: null, errmsg: null, sentAt: null, finalAt: null };
    assert.deepEqual(parseMessageRecord(JSON.stringify(fresh)), fresh);
    assert.equal(parseMessageRecord(JSON.stringify({ ...RECORD, attempts: 1.5 })), undefined);
    assert.equal(parseMessageRecord('null'), undefined);
  });
});
