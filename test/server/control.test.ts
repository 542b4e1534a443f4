/**
 * The control channel over a real Unix socket: each request gets its own answer type, a line
 * that is not one of the requests is answered with an error and reaches no handler.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { pino } from 'pino';
import { ControlServer, controlRequest } from '../../src/server/control.js';
import { parseControlRequest, type ControlHandlers, type DaemonStatus, type DeadLetterSelector } from '../../src/server/control-protocol.js';
import { tempDir } from '../helpers/processes.js';
import type { MessageFilter, MessageRecord } from '../../src/protocol/index.js';

const RECORD: MessageRecord = {
  msgid: 'order-42',
  openid: 'oUser1',
  key: 'k1',
  kind: 'push',
  state: 'sent',
  attempts: 1,
  wechatMsgid: '2001',
  errcode: 0,
  errmsg: 'ok',
  queuedAt: 1_700_000_000_000,
  sentAt: 1_700_000_000_050,
  finalAt: null,
};

const STATUS = { name: 'ctl', pid: 1, listen: [{ host: '127.0.0.1', port: 9 }] } as DaemonStatus;

/** One raw line to the socket, one line back. */
function rawLine(socket: string, line: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket, () => s.write(line + '\n'));
    let data = '';
    s.setEncoding('utf8').on('data', (d: string) => (data += d));
    s.on('error', reject);
    s.on('end', () => resolve(JSON.parse(data)));
  });
}

describe('control channel', () => {
  const socket = path.join(tempDir('mega-control-'), 'ctl.sock');
  const retried: DeadLetterSelector[] = [];
  const filters: MessageFilter[] = [];
  const handlers: ControlHandlers = {
    status: () => STATUS,
    listen: () => [{ host: '127.0.0.1', port: 9 }],
    queue: () => ({ depth: 3, inFlight: 1, oldestAgeSeconds: null, segments: 1, bytes: 100 }),
    resume: async () => ({ resumed: true }),
    'dlq-list': () => [],
    'dlq-retry': ({ selector }) => {
      retried.push(selector);
      return { retried: [], missing: 'ids' in selector ? selector.ids : [] };
    },
    'msg-show': ({ msgid }) => (msgid === RECORD.msgid ? RECORD : null),
    'msg-list': ({ filter }) => {
      filters.push(filter);
      return [RECORD];
    },
  };
  const server = new ControlServer(socket, handlers, pino({ level: 'silent' }));
  after(() => server.close());

  it('answers each request with its own answer type', async () => {
    await server.listen();
    const status = await controlRequest(socket, { cmd: 'status' });
    assert.equal(status.listen[0]!.port, 9);
    assert.deepEqual(await controlRequest(socket, { cmd: 'listen' }), [{ host: '127.0.0.1', port: 9 }]);
    assert.equal((await controlRequest(socket, { cmd: 'queue' })).depth, 3);
    assert.equal((await controlRequest(socket, { cmd: 'resume' })).resumed, true);
    assert.deepEqual(await controlRequest(socket, { cmd: 'dlq-list' }), []);
    assert.deepEqual((await controlRequest(socket, { cmd: 'dlq-retry', selector: { ids: [4, 5] } })).missing, [4, 5]);
    assert.deepEqual(retried, [{ ids: [4, 5] }]);
    assert.deepEqual(await controlRequest(socket, { cmd: 'msg-show', msgid: 'order-42' }), RECORD);
    assert.equal(await controlRequest(socket, { cmd: 'msg-show', msgid: 'other' }), null);
    const filter: MessageFilter = { openid: 'oUser1', state: 'sent', since: 5, limit: 10 };
    assert.deepEqual(await controlRequest(socket, { cmd: 'msg-list', filter }), [RECORD]);
    assert.deepEqual(filters, [filter]);
  });

  it('refuses a malformed msg-show or msg-list before its handler', async () => {
    const refusals: Array<[string, RegExp]> = [
      ['{"cmd":"msg-show"}', /msgid must be 1-64 characters/],
      ['{"cmd":"msg-show","msgid":"a b"}', /msgid must be 1-64 characters/],
      ['{"cmd":"msg-show","msgid":"' + 'm'.repeat(65) + '"}', /msgid must be 1-64 characters/],
      ['{"cmd":"msg-list","filter":{"state":"lost"}}', /state must be one of queued, sent, delivered/],
      ['{"cmd":"msg-list","filter":{"limit":0}}', /limit must be an integer from 1 to 1000/],
      ['{"cmd":"msg-list","filter":{"limit":1001}}', /limit must be an integer from 1 to 1000/],
      ['{"cmd":"msg-list","filter":{"since":-1}}', /since must be a time in ms/],
      ['{"cmd":"msg-list","filter":{"openid":"o 1"}}', /openid must be 1-128/],
      ['{"cmd":"msg-list","filter":[1]}', /filter must be an object/],
    ];
    for (const [line, error] of refusals) {
      const answer = (await rawLine(socket, line)) as { ok: boolean; error: string };
      assert.equal(answer.ok, false, line);
      assert.match(answer.error, error, line);
    }
    assert.equal(filters.length, 1, 'no msg-list handler ran');
    assert.deepEqual(parseControlRequest({ cmd: 'msg-list' }), { cmd: 'msg-list', filter: {} });
    assert.deepEqual(parseControlRequest({ cmd: 'msg-list', filter: { limit: 3, other: 1 } }), { cmd: 'msg-list', filter: { limit: 3 } });
  });

  it('refuses a line that is not a control request, before any handler', async () => {
    assert.deepEqual(await rawLine(socket, '{"cmd":"shutdown"}'), { ok: false, error: 'unknown control command "shutdown"' });
    assert.deepEqual(await rawLine(socket, '{"nocmd":1}'), { ok: false, error: 'missing cmd' });
    const bad = (await rawLine(socket, '{"cmd":"dlq-retry","selector":{"ids":["1; rm"]}}')) as { ok: boolean; error: string };
    assert.equal(bad.ok, false);
    assert.match(bad.error, /dlq-retry needs a selector/);
    assert.equal(retried.length, 1, 'no handler ran');
    await assert.rejects(controlRequest(socket, { cmd: 'dlq-retry', selector: { all: false } as unknown as DeadLetterSelector }), /dlq-retry needs a selector/);
  });

  it('parses only the known requests, keeping nothing else of the line', () => {
    assert.deepEqual(parseControlRequest({ cmd: 'status', extra: 1 }), { cmd: 'status' });
    assert.deepEqual(parseControlRequest({ cmd: 'dlq-retry', selector: { all: true, ids: [1] } }), { cmd: 'dlq-retry', selector: { all: true } });
    assert.throws(() => parseControlRequest(null), (e: unknown) => (e as { code?: string }).code === 'MEGA_ERR_BAD_REQUEST');
  });
});
