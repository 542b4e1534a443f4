/**
 * The `query <msgid>` frame (docs/PROTOCOL.md, "query"): built by encodeQuery on the client side,
 * read by parseRequest on the server side, answered 200 with the ledger's record, 404 or 503.
 * The vectors are spelled field by field in the golden-frames format, whose loader refuses a
 * vector whose annotations do not spell its bytes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { BadRequestError, UnknownCommandError } from '../../src/errors.js';
import {
  ResultCode,
  decodeFrame,
  encodeFrame,
  encodeQuery,
  encodeResult,
  encodeTset,
  isMsgid,
  parseRequest,
  parseResult,
  type Frame,
  type MessageRecord,
} from '../../src/protocol/index.js';
import { parseGoldenFrames } from './helpers.js';

const VECTORS = parseGoldenFrames(`
# Query, opaque 3, msgid "order-42". Like tset and auth, it ends after opaque: no bodyLen, no body.
#: 00000016                   packLength 22 = headerLen 4 + header 14 + opaque 4
#: 0000000e                   headerLen 14
#: 7175657279206f726465722d3432
#:                            header "query order-42"
#: 00000003                   opaque 3
query_simple 000000160000000e7175657279206f726465722d343200000003

# Query with every character class of a msgid (letters, digits, "_" and "-"), opaque 0xfffffffe.
#: 00000014                   packLength 20 = 4 + 12 + 4
#: 0000000c                   headerLen 12
#: 717565727920415f7a2d3039   header "query A_z-09"
#: fffffffe                   opaque 4294967294
query_alphabet 000000140000000c717565727920415f7a2d3039fffffffe

# Not a query a server accepts: the same header with an (empty) body.
#: 0000001a                   packLength 26 = 4 + 14 + 4 + bodyLen 4
#: 0000000e                   headerLen 14
#: 7175657279206f726465722d3432
#:                            header "query order-42"
#: 00000003                   opaque 3
#: 00000000                   bodyLen 0
query_with_body 0000001a0000000e7175657279206f726465722d34320000000300000000

# The ledger has no record of it: result 404 "message not found" to opaque 3.
#: 00000027                   packLength 39 = 4 + 10 + 4 + 4 + 17
#: 0000000a                   headerLen 10
#: 726573756c7420343034       header "result 404"
#: 00000003                   opaque 3
#: 00000011                   bodyLen 17
#: 6d657373616765206e6f7420666f756e64
#:                            body "message not found"
query_not_found 000000270000000a726573756c742034303400000003000000116d657373616765206e6f7420666f756e64

# A daemon without a ledger ([ledger] enabled = 0): result 503 "ledger disabled" to opaque 3.
#: 00000025                   packLength 37 = 4 + 10 + 4 + 4 + 15
#: 0000000a                   headerLen 10
#: 726573756c7420353033       header "result 503"
#: 00000003                   opaque 3
#: 0000000f                   bodyLen 15
#: 6c65646765722064697361626c6564
#:                            body "ledger disabled"
query_disabled 000000250000000a726573756c7420353033000000030000000f6c65646765722064697361626c6564
`);

function vector(name: string): Buffer {
  const bytes = VECTORS.get(name);
  if (bytes === undefined) throw new Error(`no vector ${name}`);
  return bytes;
}

function isBadRequest(text: RegExp) {
  return (err: unknown): boolean => err instanceof BadRequestError && err.code === 'MEGA_ERR_BAD_REQUEST' && text.test(err.message);
}

const BAD_MSGID = /^msgid must be 1-64 characters of \[A-Za-z0-9_-\]$/;

describe('encodeQuery (generate)', () => {
  it('spells the vectors byte for byte', () => {
    assert.deepEqual(encodeQuery(3, 'order-42'), vector('query_simple'));
    assert.deepEqual(encodeQuery(0xfffffffe, 'A_z-09'), vector('query_alphabet'));
  });

  it('equals a frame built by hand with the same fields, like a tset of the same word', () => {
    assert.deepEqual(encodeQuery(9, 'm1'), encodeFrame({ header: 'query m1', opaque: 9, body: null }));
    assert.equal(encodeQuery(9, 'm1').length, encodeTset(9, 'm1').length + 1);
  });

  it('takes msgids of 1 to 64 characters of [A-Za-z0-9_-]', () => {
    const longest = encodeQuery(7, 'x'.repeat(64));
    assert.equal(longest.length, 4 + 4 + 'query '.length + 64 + 4);
    assert.equal(encodeQuery(1, 'a').length, 4 + 4 + 7 + 4);
  });

  const refused: Array<[string, string]> = [
    ['empty', ''],
    ['longer than 64', 'x'.repeat(65)],
    ['with a space', 'a b'],
    ['with a dot', 'a.b'],
    ['with a colon', 'a:b'],
    ['non-ASCII', 'caf\u00e9'],
    ['with a newline', 'a\nb'],
  ];
  for (const [what, msgid] of refused) {
    it(`refuses a msgid ${what}, before anything is sent`, () => {
      assert.throws(() => encodeQuery(1, msgid), isBadRequest(BAD_MSGID));
      assert.equal(isMsgid(msgid), false);
    });
  }

  it('isMsgid refuses what is not a string', () => {
    for (const value of [undefined, null, 42, ['a'], Buffer.from('a')]) assert.equal(isMsgid(value), false);
    assert.equal(isMsgid('order-42'), true);
  });
});

describe('parseRequest of query (parse)', () => {
  it('reads the msgid and the opaque of the vectors', () => {
    assert.deepEqual(parseRequest(decodeFrame(vector('query_simple'))), { kind: 'query', opaque: 3, msgid: 'order-42' });
    assert.deepEqual(parseRequest(decodeFrame(vector('query_alphabet'))), { kind: 'query', opaque: 0xfffffffe, msgid: 'A_z-09' });
  });

  it('mirror: whatever encodeQuery builds parses back to the same msgid and opaque', () => {
    for (const [opaque, msgid] of [
      [0, 'a'],
      [1, 'Z'],
      [65535, '_-_-'],
      [0xffffffff, 'm'.repeat(64)],
      [123456, 'client_msg_id-2026-12-02'],
    ] as const) {
      assert.deepEqual(parseRequest(decodeFrame(encodeQuery(opaque, msgid))), { kind: 'query', opaque, msgid });
    }
  });

  it('refuses body fields: query, like tset, has none', () => {
    const frame = decodeFrame(vector('query_with_body'));
    assert.deepEqual(frame.body, Buffer.alloc(0));
    assert.throws(() => parseRequest(frame), isBadRequest(/^query takes no body$/));
  });

  const malformed: Array<[string, string, RegExp]> = [
    ['no msgid', 'query', /^query expects exactly <msgid>, got 0 parameters$/],
    ['two words', 'query m1 m2', /^query expects exactly <msgid>, got 2 parameters$/],
    ['a doubled space', 'query  m1', /^query: header words must be separated by single spaces, with none leading or trailing$/],
    ['a trailing space', 'query m1 ', /^query: header words must be separated by single spaces/],
    ['a leading space', ' query m1', /^query: header words must be separated by single spaces/],
    ['a msgid longer than 64', `query ${'x'.repeat(65)}`, BAD_MSGID],
    ['a msgid with a dot', 'query a.b', BAD_MSGID],
    ['a msgid with a latin-1 byte', 'query caf\u00e9', BAD_MSGID],
  ];
  for (const [what, header, message] of malformed) {
    it(`refuses ${what} with a 400`, () => {
      const frame: Frame = { header, opaque: 1, body: null };
      assert.throws(() => parseRequest(frame), isBadRequest(message));
    });
  }

  it('is case-sensitive like every command: QUERY is unknown (500, closes)', () => {
    assert.throws(
      () => parseRequest({ header: 'QUERY m1', opaque: 1, body: null }),
      (err: unknown) => err instanceof UnknownCommandError && err.message === 'unknown command "QUERY"',
    );
  });
});

describe('the answers to query', () => {
  it('404 and 503 are ordinary results with a message', () => {
    assert.equal(ResultCode.NOT_FOUND, 404);
    assert.deepEqual(encodeResult(3, ResultCode.NOT_FOUND, 'message not found'), vector('query_not_found'));
    assert.deepEqual(encodeResult(3, ResultCode.UNAVAILABLE, 'ledger disabled'), vector('query_disabled'));
    const notFound = parseResult(decodeFrame(vector('query_not_found')));
    assert.deepEqual([notFound.opaque, notFound.code, notFound.message.toString()], [3, 404, 'message not found']);
  });

  it('200 carries the record as JSON, which reads back field for field', () => {
    const record: MessageRecord = {
      msgid: 'order-42',
      openid: 'oUser1',
      key: 'order_paid',
      kind: 'send',
      state: 'sent',
      attempts: 1,
      wechatMsgid: '2001',
      errcode: 0,
      errmsg: 'ok',
      queuedAt: 1_764_680_000_000,
      sentAt: 1_764_680_000_120,
      finalAt: null,
    };
    const answer = parseResult(decodeFrame(encodeResult(3, ResultCode.OK, JSON.stringify(record))));
    assert.equal(answer.code, 200);
    assert.deepEqual(JSON.parse(answer.message.toString('utf8')), record);
  });
});
