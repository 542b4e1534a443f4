/**
 * `query <msgid>` and `mega <name> msg show|list` against a real daemon process: a daemon
 * without a ledger (`[ledger] enabled = 0`) says so (503 `ledger disabled`, never 404), a
 * malformed query is a 400 that leaves the connection open, and the CLI refuses bad flags
 * before it reaches the daemon.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { MegaClient, MegaQueryError } from '../../src/index.js';
import { encodeFrame, encodeQuery, encodeTset } from '../../src/protocol/index.js';
import { runMega } from '../helpers/processes.js';
import { startStack, type Stack } from '../helpers/stack.js';

describe('query with [ledger] enabled = 0', () => {
  let stack: Stack;
  const cli = (...args: string[]) => runMega(['wechat', ...args, '--config-dir', stack.configDir]);
  before(async () => {
    stack = await startStack({ templates: { k: { template_id: 't', data: {} } }, ini: { ledger: { enabled: 0 } } });
  });
  after(async () => {
    await stack?.stop();
  });

  it('MegaClient.query rejects with MegaQueryError 503 ledger disabled', async () => {
    const client = await MegaClient.connect({ port: stack.port });
    try {
      await assert.rejects(
        client.query('order-1'),
        (e: unknown) => e instanceof MegaQueryError && e.resultCode === 503 && e.message === 'query order-1: result 503 ledger disabled',
      );
      // the connection is still usable for anything else
      assert.equal((await client.push('oUser1', 'k', null, { msgid: 'order-1' })).code, 200);
    } finally {
      await client.close();
    }
  });

  it('a malformed query is answered 400 in order, and the connection stays open', async () => {
    const raw = await stack.connect();
    try {
      raw.write(
        Buffer.concat([
          encodeFrame({ header: 'query', opaque: 1, body: null }),
          encodeFrame({ header: 'query a.b', opaque: 2, body: null }),
          encodeFrame({ header: `query ${'x'.repeat(65)}`, opaque: 3, body: null }),
          encodeFrame({ header: 'query m1', opaque: 4, body: Buffer.alloc(0) }),
          encodeFrame({ header: 'query  m1', opaque: 5, body: null }),
          encodeFrame({ header: 'query m1 m2', opaque: 6, body: null }),
          encodeQuery(7, 'm1'),
          encodeTset(8, 'k'),
        ]),
      );
      const results = await raw.waitFor(8);
      assert.deepEqual(
        results.map((r) => [r.opaque, r.code, r.message.toString()]),
        [
          [1, 400, 'query expects exactly <msgid>, got 0 parameters'],
          [2, 400, 'msgid must be 1-64 characters of [A-Za-z0-9_-]'],
          [3, 400, 'msgid must be 1-64 characters of [A-Za-z0-9_-]'],
          [4, 400, 'query takes no body'],
          [5, 400, 'query: header words must be separated by single spaces, with none leading or trailing'],
          [6, 400, 'query expects exactly <msgid>, got 2 parameters'],
          [7, 503, 'ledger disabled'],
          [8, 200, ''],
        ],
      );
      assert.equal(raw.closed, false);
    } finally {
      raw.close();
    }
  });

  it('msg show and msg list say the ledger is disabled (exit 1), running and stopped', async () => {
    const show = await cli('msg', 'show', 'order-1');
    assert.equal(show.code, 1);
    assert.match(show.stderr, /ledger disabled \(\[ledger\] enabled = 0\)/);
    const list = await cli('msg', 'list', '--json');
    assert.equal(list.code, 1);
    assert.match(list.stderr, /ledger disabled/);
    assert.equal(list.stdout, '');

    await stack.stop();
    const stopped = await cli('msg', 'show', 'order-1');
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /ledger disabled \(\[ledger\] enabled = 0\)/);
  });

  it('msg refuses bad arguments before reaching the daemon or the store', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['msg', 'show', 'a.b'], /msgid must be 1-64 characters of \[A-Za-z0-9_-\], got "a\.b"/],
      [['msg', 'list', '--state', 'lost'], /--state must be one of queued, sent, delivered, failed_user_block, failed_system, rejected, dead/],
      [['msg', 'list', '--limit', '0'], /--limit must be an integer from 1 to 1000/],
      [['msg', 'list', '--limit', 'ten'], /--limit must be an integer from 1 to 1000/],
      [['msg', 'list', '--openid', 'o 1'], /--openid must be 1-128 printable ASCII/],
      [['msg', 'list', '--since', 'yesterday'], /--since.*a time ago \(90s, 30m, 2h, 7d\) or an ISO time/],
    ];
    for (const [args, error] of cases) {
      const r = await cli(...args);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, error, args.join(' '));
    }
  });
});
