/**
 * The `auth <token>` frame (docs/PROTOCOL.md, "auth"): built by encodeAuth on the client side,
 * read by parseAuth on the server side. The vectors below are spelled field by field in the
 * golden-frames format, whose loader refuses a vector whose annotations do not spell its bytes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { BadRequestError } from '../../src/errors.js';
import { decodeFrame, encodeAuth, encodeResult, isAuthToken, parseAuth, parseResult, type Frame } from '../../src/protocol/index.js';
import { parseGoldenFrames } from './helpers.js';

const VECTORS = parseGoldenFrames(`
# Auth, opaque 1, token "s3cret". Like tset, it ends after opaque: no bodyLen, no body.
#: 00000013                   packLength 19 = headerLen 4 + header 11 + opaque 4
#: 0000000b                   headerLen 11
#: 6175746820733363726574     header "auth s3cret"
#: 00000001                   opaque 1
auth_simple 000000130000000b617574682073336372657400000001

# Auth with the edges of the token alphabet (0x21 "!" and 0x7e "~"), opaque 0xfffffffe.
#: 00000013                   packLength 19
#: 0000000b                   headerLen 11
#: 617574682021417a7e3039     header "auth !Az~09"
#: fffffffe                   opaque 4294967294
auth_alphabet 000000130000000b617574682021417a7e3039fffffffe

# Not an auth frame a server accepts: the same header with an (empty) body.
#: 00000017                   packLength 23 = 4 + 11 + 4 + bodyLen 4
#: 0000000b                   headerLen 11
#: 6175746820733363726574     header "auth s3cret"
#: 00000001                   opaque 1
#: 00000000                   bodyLen 0
auth_with_body 000000170000000b61757468207333637265740000000100000000

# The server accepts: result 200 to opaque 1, no message.
#: 00000016                   packLength 22 = 4 + 10 + 4 + 4 + 0
#: 0000000a                   headerLen 10
#: 726573756c7420323030       header "result 200"
#: 00000001                   opaque 1
#: 00000000                   bodyLen 0
auth_ok 000000160000000a726573756c74203230300000000100000000

# The server refuses (then closes): result 401 "authentication failed" to opaque 1.
#: 0000002b                   packLength 43 = 4 + 10 + 4 + 4 + 21
#: 0000000a                   headerLen 10
#: 726573756c7420343031       header "result 401"
#: 00000001                   opaque 1
#: 00000015                   bodyLen 21
#: 61757468656e7469636174696f6e206661696c6564
#:                            body "authentication failed"
auth_refused 0000002b0000000a726573756c7420343031000000010000001561757468656e7469636174696f6e206661696c6564
`);

function vector(name: string): Buffer {
  const bytes = VECTORS.get(name);
  if (bytes === undefined) throw new Error(`no vector ${name}`);
  return bytes;
}

function isBadRequest(text: RegExp) {
  return (err: unknown): boolean => err instanceof BadRequestError && err.code === 'MEGA_ERR_BAD_REQUEST' && text.test(err.message);
}

describe('encodeAuth', () => {
  it('spells the vectors byte for byte', () => {
    assert.deepEqual(encodeAuth(1, 's3cret'), vector('auth_simple'));
    assert.deepEqual(encodeAuth(0xfffffffe, '!Az~09'), vector('auth_alphabet'));
  });

  it('takes tokens of 1 to 1024 printable ASCII characters', () => {
    const longest = encodeAuth(7, 'x'.repeat(1024));
    assert.equal(longest.length, 4 + 4 + 5 + 1024 + 4);
    assert.equal(parseAuth(decodeFrame(longest)).token, 'x'.repeat(1024));
  });

  const refused: Array<[string, string]> = [
    ['empty', ''],
    ['with a space', 'a b'],
    ['longer than 1024', 'x'.repeat(1025)],
    ['with a control character', 'a\u0001b'],
    ['with a tab', 'a\tb'],
    ['non-ASCII', 'caf\u00e9'],
  ];
  for (const [what, token] of refused) {
    it(`refuses a token ${what}, without echoing it`, () => {
      assert.throws(
        () => encodeAuth(1, token),
        (err: unknown) => isBadRequest(/^auth token must be 1-1024 printable ASCII characters without spaces$/)(err),
      );
      assert.equal(isAuthToken(token), false);
    });
  }

  it('isAuthToken refuses what is not a string', () => {
    for (const value of [undefined, null, 42, ['a'], Buffer.from('a')]) assert.equal(isAuthToken(value), false);
    assert.equal(isAuthToken('s3cret'), true);
  });
});

describe('parseAuth', () => {
  it('reads the token and the opaque of the vectors', () => {
    assert.deepEqual(parseAuth(decodeFrame(vector('auth_simple'))), { kind: 'auth', opaque: 1, token: 's3cret' });
    assert.deepEqual(parseAuth(decodeFrame(vector('auth_alphabet'))), { kind: 'auth', opaque: 0xfffffffe, token: '!Az~09' });
  });

  it('refuses body fields: auth, like tset, has none', () => {
    const frame = decodeFrame(vector('auth_with_body'));
    assert.deepEqual(frame.body, Buffer.alloc(0));
    assert.throws(() => parseAuth(frame), isBadRequest(/^auth takes no body$/));
  });

  const malformed: Array<[string, string, RegExp]> = [
    ['no token', 'auth', /^auth expects exactly <token>$/],
    ['an empty token', 'auth ', /^auth expects exactly <token>$/],
    ['two words', 'auth s3cret extra', /^auth expects exactly <token>$/],
    ['a doubled space', 'auth  s3cret', /^auth expects exactly <token>$/],
    ['another command', 'push o1 k1', /^not an auth frame$/],
    ['a leading space', ' auth s3cret', /^not an auth frame$/],
  ];
  for (const [what, header, message] of malformed) {
    it(`refuses ${what} without echoing the header`, () => {
      const frame: Frame = { header, opaque: 1, body: null };
      assert.throws(() => parseAuth(frame), (err: unknown) => isBadRequest(message)(err) && !(err as Error).message.includes('s3cret'));
    });
  }

  it('checks only the shape: the server compares the token, so one a client would not send just does not match', () => {
    const long = 'y'.repeat(2000);
    assert.equal(parseAuth({ header: `auth ${long}`, opaque: 2, body: null }).token, long);
  });
});

describe('the answers to auth', () => {
  it('are ordinary results: 200 without a message, or 401 with one', () => {
    assert.deepEqual(encodeResult(1, 200), vector('auth_ok'));
    assert.deepEqual(encodeResult(1, 401, 'authentication failed'), vector('auth_refused'));
    assert.deepEqual(parseResult(decodeFrame(vector('auth_ok'))), { opaque: 1, code: 200, message: Buffer.alloc(0) });
    const refused = parseResult(decodeFrame(vector('auth_refused')));
    assert.equal(refused.code, 401);
    assert.equal(refused.message.toString(), 'authentication failed');
  });
});
