import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { BadRequestError, MalformedFrameError, UnknownCommandError } from '../../src/errors.js';
import {
  ResultCode,
  decodeFrame,
  encodeFrame,
  encodePush,
  encodeResult,
  encodeSend,
  encodeTset,
  parseRequest,
  parseResult,
  parseVariables,
  MAX_VARIABLES_DEPTH,
  type Frame,
  type Request,
} from '../../src/protocol/index.js';
import { bytes, loadGoldenFrames } from './helpers.js';

const golden = loadGoldenFrames();
const wire = (name: string): Buffer => {
  const frame = golden.get(name);
  if (frame === undefined) throw new Error(`no golden frame ${name}`);
  return frame;
};

function message(header: string, body: string | Buffer | null = '{"a":"b"}', opaque = 1): Frame {
  return { header, opaque, body: typeof body === 'string' ? Buffer.from(body) : body };
}

function isBadRequest(text?: string | RegExp) {
  return (err: unknown): boolean =>
    err instanceof BadRequestError &&
    err.code === 'MEGA_ERR_BAD_REQUEST' &&
    (text === undefined || (typeof text === 'string' ? err.message === text : text.test(err.message)));
}

describe('parseRequest: golden frames', () => {
  it('push_simple', () => {
    const frame = decodeFrame(wire('push_simple'));
    const request = parseRequest(frame);
    assert.deepEqual(request, {
      kind: 'push',
      opaque: 1,
      openid: 'o1',
      key: 'k1',
      msgid: undefined,
      data: { a: 'b' },
      body: Buffer.from('{"a":"b"}'),
    } satisfies Request);
    assert.equal((request as { body: Buffer }).body, frame.body, 'the body is passed on, not copied');
  });

  it('push_null: data is null, the raw body is kept', () => {
    assert.deepEqual(parseRequest(decodeFrame(wire('push_null'))), {
      kind: 'push',
      opaque: 7,
      openid: 'oABC_-123',
      key: 'order_paid',
      msgid: undefined,
      data: null,
      body: Buffer.from('null'),
    } satisfies Request);
  });

  it('send_unicode: \\u escapes decode to the Chinese characters, the body stays escaped', () => {
    assert.deepEqual(parseRequest(decodeFrame(wire('send_unicode'))), {
      kind: 'send',
      opaque: 0xffffffff,
      openid: 'oX',
      key: 'tmpl',
      msgid: undefined,
      data: { product: '巧克力', price: '39.8元' },
      body: Buffer.from('{"product":"\\u5de7\\u514b\\u529b","price":"39.8\\u5143"}'),
    } satisfies Request);
  });

  it('tset', () => {
    assert.deepEqual(parseRequest(decodeFrame(wire('tset'))), { kind: 'tset', opaque: 42, key: 'order_paid' } satisfies Request);
  });

  it('result frames are not requests', () => {
    for (const name of ['result_ok', 'result_err']) {
      assert.throws(
        () => parseRequest(decodeFrame(wire(name))),
        (err: unknown) => err instanceof UnknownCommandError && err.code === 'MEGA_ERR_UNKNOWN_COMMAND' && err.message === 'unknown command "result"',
      );
    }
  });
});

describe('parseRequest: parameters', () => {
  it('accepts a msgid as the 4th word', () => {
    const request = parseRequest(message('send o1 k1 Order-42_b', '{"x":1}', 3));
    assert.deepEqual(request, {
      kind: 'send',
      opaque: 3,
      openid: 'o1',
      key: 'k1',
      msgid: 'Order-42_b',
      data: { x: 1 },
      body: Buffer.from('{"x":1}'),
    } satisfies Request);
  });

  it('accepts the longest openid, key and msgid', () => {
    const openid = '!'.repeat(64) + '~'.repeat(64);
    const key = 'k'.repeat(32);
    const msgid = 'm'.repeat(64);
    const request = parseRequest(message(`push ${openid} ${key} ${msgid}`));
    assert.equal(request.kind, 'push');
    assert.deepEqual([(request as { openid: string }).openid, request.key, (request as { msgid: string }).msgid], [openid, key, msgid]);
  });

  it('unknown commands', () => {
    for (const [header, command] of [
      ['pull o1 k1', 'pull'],
      ['PUSH o1 k1', 'PUSH'],
      ['pushx o1 k1', 'pushx'],
      ['push\to1 k1', 'push\to1'],
      ['', ''],
      ['   ', ''],
      ['result 200', 'result'],
    ]) {
      assert.throws(
        () => parseRequest(message(header!)),
        (err: unknown) => err instanceof UnknownCommandError && err.message === `unknown command ${JSON.stringify(command)}`,
        JSON.stringify(header),
      );
    }
  });

  it('wrong arity', () => {
    const cases: Array<[string, Buffer | null, RegExp]> = [
      ['push', Buffer.from('null'), /^push expects <openid> <key> \[<msgid>\], got 0 parameters$/],
      ['push o1', Buffer.from('null'), /^push expects .* got 1 parameters$/],
      ['send o1 k1 m1 extra', Buffer.from('null'), /^send expects .* got 4 parameters$/],
      ['tset', null, /^tset expects exactly <key>, got 0 parameters$/],
      ['tset k1 k2', null, /^tset expects exactly <key>, got 2 parameters$/],
    ];
    for (const [header, body, text] of cases) {
      assert.throws(() => parseRequest(message(header, body)), isBadRequest(text), header);
    }
  });

  it('empty words: double, leading or trailing spaces', () => {
    for (const header of ['push  o1 k1', ' push o1 k1', 'push o1 k1 ', 'send o1  k1', 'tset  k1', 'tset k1 ', '  tset k1']) {
      const body = header.includes('tset') ? null : Buffer.from('null');
      assert.throws(() => parseRequest(message(header, body)), isBadRequest(/single spaces/), JSON.stringify(header));
    }
  });

  it('bad openid', () => {
    for (const openid of ['o'.repeat(129), 'o\x01', 'o\x7f', 'caf\u00e9', 'o\t1']) {
      assert.throws(
        () => parseRequest(message(`push ${openid} k1`)),
        isBadRequest('openid must be 1-128 printable ASCII characters without spaces'),
        JSON.stringify(openid),
      );
    }
  });

  it('bad key', () => {
    for (const key of ['k'.repeat(33), 'k\x00', 'k\u00ff']) {
      assert.throws(
        () => parseRequest(message(`push o1 ${key}`)),
        isBadRequest('template key must be 1-32 printable ASCII characters without spaces'),
      );
      assert.throws(() => parseRequest(message(`tset ${key}`, null)), isBadRequest(/^template key must be/));
    }
  });

  it('bad msgid', () => {
    for (const msgid of ['m'.repeat(65), 'a.b', 'a/b', 'a+b', 'ü', 'a:b']) {
      assert.throws(
        () => parseRequest(message(`push o1 k1 ${msgid}`)),
        isBadRequest('msgid must be 1-64 characters of [A-Za-z0-9_-]'),
        JSON.stringify(msgid),
      );
    }
  });

  it('push and send need a body; tset must have none', () => {
    assert.throws(() => parseRequest(message('push o1 k1', null)), isBadRequest('push requires a body (a JSON object or null)'));
    assert.throws(() => parseRequest(message('send o1 k1', null)), isBadRequest('send requires a body (a JSON object or null)'));
    assert.throws(() => parseRequest(message('tset k1', Buffer.alloc(0))), isBadRequest('tset takes no body'));
    assert.throws(() => parseRequest(message('tset k1', 'null')), isBadRequest('tset takes no body'));
  });
});

describe('parseRequest: variables JSON', () => {
  const invalid: Array<[string, Buffer]> = [
    ['empty body', Buffer.alloc(0)],
    ['truncated', Buffer.from('{"a":')],
    ['trailing garbage', Buffer.from('{"a":"b"}x')],
    ['not JSON', Buffer.from('undefined')],
    ['array', Buffer.from('["a","b"]')],
    ['array of objects', Buffer.from('[{"a":"b"}]')],
    ['number', Buffer.from('1')],
    ['string', Buffer.from('"s"')],
    ['boolean', Buffer.from('true')],
    ['invalid UTF-8 byte', bytes('{"a":"', [0xff], '"}')],
    ['truncated UTF-8 sequence', bytes('{"a":"', [0xe5, 0xb7], '"}')],
    ['overlong UTF-8', bytes('{"a":"', [0xc0, 0xaf], '"}')],
    ['UTF-8 encoded surrogate', bytes('{"a":"', [0xed, 0xa0, 0x80], '"}')],
    ['byte order mark', bytes([0xef, 0xbb, 0xbf], '{"a":"b"}')],
  ];
  for (const [name, body] of invalid) {
    it(`${name} → 400 invalid variables JSON`, () => {
      assert.throws(() => parseRequest(message('push o1 k1', body)), isBadRequest('invalid variables JSON'));
      assert.throws(() => parseVariables(body), isBadRequest('invalid variables JSON'));
    });
  }

  it('raw UTF-8 and escaped characters both decode', () => {
    const raw = parseRequest(message('push o1 k1', '{"p":"巧克力","e":"\\ud83d\\ude00","s":"a\\/b"}'));
    assert.deepEqual((raw as { data: unknown }).data, { p: '巧克力', e: '😀', s: 'a/b' });
  });

  it('nested values are kept as JSON values', () => {
    assert.deepEqual(parseVariables(Buffer.from('{"n":1.5,"b":false,"o":{"x":[1]},"z":null}')), {
      n: 1.5,
      b: false,
      o: { x: [1] },
      z: null,
    });
  });

  it(`variables nested up to MAX_VARIABLES_DEPTH (${MAX_VARIABLES_DEPTH}) are accepted, one level more is 400`, () => {
    const nest = (levels: number, open: string, close: string): string => open.repeat(levels - 1) + '1' + close.repeat(levels - 1);
    // The variables object is level 1; each array or object inside adds one.
    const atLimit = `{"v":${nest(MAX_VARIABLES_DEPTH, '[', ']')}}`;
    assert.doesNotThrow(() => parseVariables(Buffer.from(atLimit)));
    assert.doesNotThrow(() => parseVariables(Buffer.from(`{"v":${nest(MAX_VARIABLES_DEPTH, '{"a":', '}')}}`)));
    const refused = `variables nest deeper than ${MAX_VARIABLES_DEPTH} levels`;
    for (const body of [
      `{"v":${nest(MAX_VARIABLES_DEPTH + 1, '[', ']')}}`,
      `{"v":${nest(MAX_VARIABLES_DEPTH + 1, '{"a":', '}')}}`,
      `{"flat":"x","v":[${nest(MAX_VARIABLES_DEPTH, '{"a":', '}')}]}`,
      // the stall of issue 10: 20,000 nested arrays in a 40 KB body
      `{"v":${nest(20_000, '[', ']')}}`,
    ]) {
      assert.throws(() => parseRequest(message('push o1 k1', body)), isBadRequest(refused));
      assert.throws(() => parseVariables(Buffer.from(body)), isBadRequest(refused));
    }
  });

  it('[] from a PHP client (json_encode(array())) means no variables: {}', () => {
    const request = parseRequest(message('push o1 k1', '[]'));
    assert.deepEqual((request as { data: unknown }).data, {});
    assert.deepEqual((request as { body: Buffer }).body, Buffer.from('[]'));
  });
});

describe('results', () => {
  it('encodeResult reproduces result_ok and result_err', () => {
    assert.deepEqual(encodeResult(1, ResultCode.OK, ''), wire('result_ok'));
    assert.deepEqual(encodeResult(1, 200), wire('result_ok'));
    assert.deepEqual(encodeResult(1, 200, Buffer.alloc(0)), wire('result_ok'));
    assert.deepEqual(encodeResult(9, ResultCode.BAD_REQUEST, 'template key not exists'), wire('result_err'));
    assert.deepEqual(encodeResult(9, 400, Buffer.from('template key not exists')), wire('result_err'));
  });

  it('parseResult reads result_ok and result_err', () => {
    assert.deepEqual(parseResult(decodeFrame(wire('result_ok'))), { opaque: 1, code: 200, message: Buffer.alloc(0) });
    assert.deepEqual(parseResult(decodeFrame(wire('result_err'))), {
      opaque: 9,
      code: 400,
      message: Buffer.from('template key not exists'),
    });
  });

  it('round trip with a UTF-8 message', () => {
    const encoded = encodeResult(0xffffffff, ResultCode.BAD_REQUEST, '{"errcode":40003,"errmsg":"无效"}');
    assert.deepEqual(
      encoded,
      bytes(
        [0, 0, 0, 57], // packLength = 4 + 10 + 4 + 4 + 35
        [0, 0, 0, 10],
        'result 400',
        [0xff, 0xff, 0xff, 0xff],
        [0, 0, 0, 35], // bodyLen counts UTF-8 bytes: 29 ASCII + 2 × 3
        Buffer.from('{"errcode":40003,"errmsg":"无效"}').toString('latin1'),
      ),
    );
    const result = parseResult(decodeFrame(encoded));
    assert.equal(result.code, 400);
    assert.equal(result.message.toString('utf8'), '{"errcode":40003,"errmsg":"无效"}');
  });

  it('encodeResult refuses a code that is not 3 digits', () => {
    for (const code of [0, 99, 1000, 200.5, Number.NaN]) assert.throws(() => encodeResult(1, code), RangeError, String(code));
  });

  it('parseResult refuses frames that are not results', () => {
    const cases: Frame[] = [
      decodeFrame(wire('push_simple')),
      decodeFrame(wire('tset')),
      { header: 'result', opaque: 1, body: Buffer.alloc(0) },
      { header: 'result abc', opaque: 1, body: Buffer.alloc(0) },
      { header: 'result 2000', opaque: 1, body: Buffer.alloc(0) },
      { header: 'result 200 ', opaque: 1, body: Buffer.alloc(0) },
      { header: 'result  200', opaque: 1, body: Buffer.alloc(0) },
      { header: 'result 200', opaque: 1, body: null },
    ];
    for (const frame of cases) {
      assert.throws(
        () => parseResult(frame),
        (err: unknown) => err instanceof MalformedFrameError && err.code === 'MEGA_ERR_MALFORMED_FRAME',
        JSON.stringify(frame.header),
      );
    }
  });

  it('ResultCode has the HTTP values of docs/PROTOCOL.md', () => {
    assert.deepEqual(
      [ResultCode.OK, ResultCode.BAD_REQUEST, ResultCode.UNAUTHORIZED, ResultCode.TOO_LARGE, ResultCode.INTERNAL, ResultCode.UNAVAILABLE],
      [200, 400, 401, 413, 500, 503],
    );
  });
});

describe('client encoders', () => {
  it('reproduce the golden frames byte for byte', () => {
    assert.deepEqual(encodePush(1, 'o1', 'k1', { a: 'b' }), wire('push_simple'));
    assert.deepEqual(encodePush(7, 'oABC_-123', 'order_paid', null), wire('push_null'));
    assert.deepEqual(encodePush(7, 'oABC_-123', 'order_paid'), wire('push_null'));
    // PHP's json_encode escaping is what makes this one match.
    assert.deepEqual(encodeSend(0xffffffff, 'oX', 'tmpl', { product: '巧克力', price: '39.8元' }), wire('send_unicode'));
    assert.deepEqual(encodeTset(42, 'order_paid'), wire('tset'));
  });

  it('escape like PHP json_encode: non-ASCII as \\uXXXX (surrogate pairs for astral), / as \\/', () => {
    const frame = decodeFrame(encodePush(1, 'o1', 'k1', { s: 'a/b', e: 'é😀', q: '"\\\n' }));
    assert.equal(frame.body!.toString('latin1'), '{"s":"a\\/b","e":"\\u00e9\\ud83d\\ude00","q":"\\"\\\\\\n"}');
  });

  it('append the msgid to the header', () => {
    assert.equal(decodeFrame(encodePush(1, 'o1', 'k1', null, 'm-1')).header, 'push o1 k1 m-1');
    assert.equal(decodeFrame(encodeSend(1, 'o1', 'k1', null, 'm_2')).header, 'send o1 k1 m_2');
  });

  it('pass a Buffer or string body through untouched', () => {
    assert.deepEqual(decodeFrame(encodePush(1, 'o1', 'k1', Buffer.from([0xff, 0x00]))).body, Buffer.from([0xff, 0x00]));
    assert.deepEqual(decodeFrame(encodeSend(1, 'o1', 'k1', '{"p":"巧"}')).body, Buffer.from('{"p":"巧"}', 'utf8'));
    assert.deepEqual(encodePush(1, 'o1', 'k1', '{"a":"b"}'), wire('push_simple'));
  });

  it('round trip through parseRequest', () => {
    const data = { name: '张三', amount: '¥12.50', url: 'https://example.com/a?b=c', quote: '"${x}"' };
    const request = parseRequest(decodeFrame(encodeSend(5, 'oUser_1', 'order_paid', data, 'abc')));
    assert.deepEqual({ ...request, body: undefined }, {
      kind: 'send',
      opaque: 5,
      openid: 'oUser_1',
      key: 'order_paid',
      msgid: 'abc',
      data,
      body: undefined,
    });
  });

  it('refuse parameters the server would refuse', () => {
    assert.throws(() => encodePush(1, 'o 1', 'k1', null), isBadRequest(/^openid/));
    assert.throws(() => encodePush(1, '', 'k1', null), isBadRequest(/^openid/));
    assert.throws(() => encodeSend(1, 'o1', 'k'.repeat(33), null), isBadRequest(/^template key/));
    assert.throws(() => encodePush(1, 'o1', 'k1', null, 'a.b'), isBadRequest(/^msgid/));
    assert.throws(() => encodePush(1, 'o1', 'k1', null, ''), isBadRequest(/^msgid/));
    assert.throws(() => encodeTset(1, 'a b'), isBadRequest(/^template key/));
    assert.throws(() => encodeTset(-1, 'k'), RangeError);
  });

  it('a frame built by hand with the same fields equals the encoder output', () => {
    assert.deepEqual(encodeTset(0, 'k'), encodeFrame({ header: 'tset k', opaque: 0, body: null }));
  });
});
