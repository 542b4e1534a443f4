import { test, describe, mock } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import {
  appidMatches,
  callbackSignature,
  decryptCallbackMessage,
  encryptCallbackMessage,
  messageSignature,
  parseEncodingAesKey,
  verifyCallbackSignature,
  verifyMessageSignature,
} from '../../src/wechat/callback-crypto.js';
import { CallbackCryptoError, type CallbackCryptoReason } from '../../src/errors.js';

// WeChat's published sample (its SDKs' WXBizMsgCryptTest): key, token, appid, fixed random
// prefix, and the ciphertexts WeChat's own code produced for two messages.
const SAMPLE_KEY = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';
const SAMPLE_TOKEN = 'pamtest';
const SAMPLE_APPID = 'wxb11529c136998cb6';
const SAMPLE_RANDOM = Buffer.from('aaaabbbbccccdddd', 'utf8');
const SAMPLE_MSG = '我是中文abcd123';
const SAMPLE_CIPHER = 'jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==';
const SAMPLE_MSG2 =
  '<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]></Description></Video></xml>';
const SAMPLE_CIPHER2 =
  'jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb';

// A key of our own for the generated cases (not WeChat's, so a bug that only works for the sample shows).
const KEY = 'Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWo';
const OTHER_KEY = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU';

const sha1 = (s: string): string => createHash('sha1').update(s, 'utf8').digest('hex');

/** Asserts `fn` throws our named error with `reason`, and that nothing about the key leaks through it. */
function refused(fn: () => unknown, reason: CallbackCryptoReason, key = KEY): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CallbackCryptoError, `expected CallbackCryptoError, got ${String(err)}`);
    assert.equal(err.code, 'MEGA_ERR_CALLBACK_CRYPTO');
    assert.equal(err.reason, reason, err.message);
    const text = `${err.message}\n${err.stack ?? ''}\n${JSON.stringify(err)}`;
    assert.ok(!text.includes(key) && !text.includes(key.slice(0, 20)), 'the error text carries the key');
    return true;
  });
}

/** AES-256-CBC of an arbitrary plaintext under KEY, no padding added: to build malformed payloads. */
function rawEncrypt(plain: Buffer, encodingAesKey = KEY): string {
  const { key, iv } = parseEncodingAesKey(encodingAesKey);
  const c = createCipheriv('aes-256-cbc', key, iv).setAutoPadding(false);
  return Buffer.concat([c.update(plain), c.final()]).toString('base64');
}

/** WeChat's plaintext layout, with the length field and padding under the test's control. */
function layout(message: Buffer, appid: string, lengthField = message.length): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(lengthField);
  return Buffer.concat([randomBytes(16), len, message, Buffer.from(appid)]);
}

describe('callback-crypto: signatures', () => {
  test('plaintext-mode signature is sha1 of the sorted concatenation, lowercase hex', () => {
    // Sorted by hand: '1409304348' < 'pamtest' < 'xxxxxx'.
    const expected = sha1('1409304348' + 'pamtest' + 'xxxxxx');
    assert.equal(callbackSignature('pamtest', '1409304348', 'xxxxxx'), expected);
    assert.match(expected, /^[0-9a-f]{40}$/);
    // The argument order does not matter, sorting does: the unsorted concatenation is another hash.
    assert.notEqual(callbackSignature('pamtest', '1409304348', 'xxxxxx'), sha1('pamtest' + '1409304348' + 'xxxxxx'));
    // Sorting is by character, not number: '9' sorts after '10'.
    assert.equal(callbackSignature('tok', '9', '10'), sha1('10' + '9' + 'tok'));
  });

  test('safe-mode msg_signature includes the Encrypt payload in the sort', () => {
    // Sorted by hand: '1409304348' < 'jn1L...' < 'pamtest' < 'xxxxxx'.
    const expected = sha1('1409304348' + SAMPLE_CIPHER + 'pamtest' + 'xxxxxx');
    assert.equal(messageSignature(SAMPLE_TOKEN, '1409304348', 'xxxxxx', SAMPLE_CIPHER), expected);
    // 'A' < 'a': uppercase sorts first, as in WeChat's SDKs.
    assert.equal(messageSignature('tok', '123', 'nonce', 'ABC'), sha1('123' + 'ABC' + 'nonce' + 'tok'));
  });

  test('verification accepts the right signature and refuses any other', () => {
    const sig = callbackSignature('tok', '1700000000', 'n1');
    assert.equal(verifyCallbackSignature('tok', '1700000000', 'n1', sig), true);
    assert.equal(verifyCallbackSignature('tok2', '1700000000', 'n1', sig), false);
    assert.equal(verifyCallbackSignature('tok', '1700000001', 'n1', sig), false);
    assert.equal(verifyCallbackSignature('tok', '1700000000', 'n1', sig.toUpperCase()), false);
    assert.equal(verifyCallbackSignature('tok', '1700000000', 'n1', sig.slice(0, 39)), false);
    assert.equal(verifyCallbackSignature('tok', '1700000000', 'n1', ''), false);

    const msig = messageSignature('tok', '1700000000', 'n1', SAMPLE_CIPHER);
    assert.equal(verifyMessageSignature('tok', '1700000000', 'n1', SAMPLE_CIPHER, msig), true);
    // A tampered payload no longer matches its signature: the check that must precede decryption.
    const tampered = 'k' + SAMPLE_CIPHER.slice(1);
    assert.equal(verifyMessageSignature('tok', '1700000000', 'n1', tampered, msig), false);
    assert.equal(verifyMessageSignature('tok', '1700000000', 'n1', SAMPLE_CIPHER, sig), false);
  });

  test('signatures and appids are compared with crypto.timingSafeEqual', () => {
    const spy = mock.method(crypto, 'timingSafeEqual');
    syncBuiltinESMExports(); // the module's named import now sees the spy
    try {
      const sig = callbackSignature('tok', '1', 'n');
      assert.equal(verifyCallbackSignature('tok', '1', 'n', sig), true);
      assert.equal(spy.mock.callCount(), 1);
      const wrong = sig.slice(0, 39) + (sig.endsWith('0') ? '1' : '0');
      assert.equal(verifyCallbackSignature('tok', '1', 'n', wrong), false);
      assert.equal(spy.mock.callCount(), 2);
      assert.equal(verifyMessageSignature('tok', '1', 'n', 'E', messageSignature('tok', '1', 'n', 'E')), true);
      assert.equal(spy.mock.callCount(), 3);
      assert.equal(appidMatches({ message: '', appid: 'wx1' }, 'wx1'), true);
      assert.equal(spy.mock.callCount(), 4);
    } finally {
      spy.mock.restore();
      syncBuiltinESMExports();
    }
  });
});

describe('callback-crypto: WeChat sample (known answer)', () => {
  test('encrypting with the sample random prefix gives WeChat\'s ciphertexts', () => {
    assert.equal(encryptCallbackMessage(SAMPLE_KEY, SAMPLE_MSG, SAMPLE_APPID, SAMPLE_RANDOM), SAMPLE_CIPHER);
    assert.equal(encryptCallbackMessage(SAMPLE_KEY, SAMPLE_MSG2, SAMPLE_APPID, SAMPLE_RANDOM), SAMPLE_CIPHER2);
  });

  test('decrypting WeChat\'s ciphertexts gives the message and the appid', () => {
    assert.deepEqual(decryptCallbackMessage(SAMPLE_KEY, SAMPLE_CIPHER), { message: SAMPLE_MSG, appid: SAMPLE_APPID });
    const key = parseEncodingAesKey(SAMPLE_KEY); // the parsed form works the same
    assert.deepEqual(decryptCallbackMessage(key, SAMPLE_CIPHER2), { message: SAMPLE_MSG2, appid: SAMPLE_APPID });
  });
});

describe('callback-crypto: round trips', () => {
  const APPID = 'wx0123456789abcdef';
  const alphabet = ['a', 'Z', '0', '<', '>', '&', ' ', '\n', '中', '文', '消', '息', 'é', '😀'];
  const randomText = (n: number): string => {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[randomBytes(1)[0]! % alphabet.length];
    return s;
  };

  test('random messages, ASCII and Chinese, survive encrypt then decrypt', () => {
    for (let i = 0; i < 300; i++) {
      const message = randomText(i % 150);
      const encrypt = encryptCallbackMessage(KEY, message, APPID);
      assert.equal(Buffer.from(encrypt, 'base64').length % 32, 0, 'padded to WeChat\'s 32-byte blocks');
      assert.deepEqual(decryptCallbackMessage(KEY, encrypt), { message, appid: APPID });
    }
  });

  test('every length around the 32-byte block boundaries', () => {
    // Header 20 + appid 18 = 38 bytes; messages of 0..100 bytes cross the 64, 96 and 128 boundaries,
    // including the aligned case, where a whole block of 32 pad bytes is added.
    const sizes = new Set<number>();
    for (let n = 0; n <= 100; n++) {
      const message = 'x'.repeat(n);
      const encrypt = encryptCallbackMessage(KEY, message, APPID);
      sizes.add((38 + n) % 32);
      assert.equal(Buffer.from(encrypt, 'base64').length, Math.floor((38 + n) / 32 + 1) * 32);
      assert.deepEqual(decryptCallbackMessage(KEY, encrypt), { message, appid: APPID });
    }
    assert.equal(sizes.size, 32, 'every remainder mod 32 was tried');
  });

  test('the random prefix makes each payload different', () => {
    const a = encryptCallbackMessage(KEY, '<xml/>', APPID);
    const b = encryptCallbackMessage(KEY, '<xml/>', APPID);
    assert.notEqual(a, b);
  });

  test('the appid inside is returned; checking it is the caller\'s, with appidMatches', () => {
    const opened = decryptCallbackMessage(KEY, encryptCallbackMessage(KEY, '<xml/>', 'wxSOMEONEELSE'));
    assert.equal(opened.appid, 'wxSOMEONEELSE');
    assert.equal(appidMatches(opened, APPID), false);
    assert.equal(appidMatches(opened, 'wxSOMEONEELS'), false);
    assert.equal(appidMatches(opened, 'wxSOMEONEELSE'), true);
  });
});

describe('callback-crypto: malformed input is refused with CallbackCryptoError', () => {
  test('EncodingAESKey of the wrong length or alphabet', () => {
    refused(() => parseEncodingAesKey(KEY.slice(0, 42)), 'key');
    refused(() => parseEncodingAesKey(KEY + 'A'), 'key');
    refused(() => parseEncodingAesKey(KEY.slice(0, 42) + '='), 'key');
    refused(() => parseEncodingAesKey(KEY.slice(0, 42) + '-'), 'key');
    refused(() => parseEncodingAesKey(''), 'key');
    refused(() => decryptCallbackMessage(KEY.slice(0, 40), SAMPLE_CIPHER), 'key');
    refused(() => encryptCallbackMessage(KEY + 'xy', 'm', 'wx'), 'key');
  });

  test('a random prefix that is not 16 bytes', () => {
    refused(() => encryptCallbackMessage(KEY, 'm', 'wx', Buffer.alloc(15)), 'random');
  });

  test('Encrypt that is not base64, empty, or not whole AES blocks', () => {
    refused(() => decryptCallbackMessage(KEY, ''), 'ciphertext');
    refused(() => decryptCallbackMessage(KEY, 'not base64!'), 'ciphertext');
    refused(() => decryptCallbackMessage(KEY, SAMPLE_CIPHER.replace('+', '-')), 'ciphertext');
    refused(() => decryptCallbackMessage(KEY, Buffer.alloc(15).toString('base64')), 'ciphertext');
    refused(() => decryptCallbackMessage(KEY, Buffer.alloc(33).toString('base64')), 'ciphertext');
  });

  test('truncated payloads', () => {
    const bytes = Buffer.from(SAMPLE_CIPHER, 'base64');
    // Cut mid-block: not whole AES blocks.
    refused(() => decryptCallbackMessage(SAMPLE_KEY, bytes.subarray(0, bytes.length - 3).toString('base64')), 'ciphertext', SAMPLE_KEY);
    // Cut a whole block: the new last byte is message text, not padding.
    refused(() => decryptCallbackMessage(SAMPLE_KEY, bytes.subarray(0, bytes.length - 16).toString('base64')), 'padding', SAMPLE_KEY);
  });

  test('tampered ciphertext: last block breaks the padding, first block breaks the length field', () => {
    const bytes = Buffer.from(SAMPLE_CIPHER, 'base64');
    const last = Buffer.from(bytes);
    last[last.length - 1]! ^= 0x01;
    refused(() => decryptCallbackMessage(SAMPLE_KEY, last.toString('base64')), 'padding', SAMPLE_KEY);
    // In CBC, flipping byte 0 of block 1 flips byte 16 of the plaintext: the length field's top byte.
    const first = Buffer.from(bytes);
    first[0]! ^= 0x80;
    refused(() => decryptCallbackMessage(SAMPLE_KEY, first.toString('base64')), 'length', SAMPLE_KEY);
  });

  test('the wrong key', () => {
    refused(() => decryptCallbackMessage(OTHER_KEY, SAMPLE_CIPHER), 'padding', OTHER_KEY);
    refused(() => decryptCallbackMessage(OTHER_KEY, encryptCallbackMessage(KEY, '<xml>receipt</xml>', 'wx1')), 'padding', OTHER_KEY);
  });

  test('padding values outside 1..32 or not all equal', () => {
    const body = layout(Buffer.from('<xml/>'), 'wx1'); // 20 + 6 + 3 = 29 bytes
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(Buffer.concat([body, Buffer.alloc(3, 0)]))), 'padding');
    // 33 is a valid pad for nothing WeChat sends (its blocks are 32), even where the bytes agree.
    const short = layout(Buffer.from('x'.repeat(8)), 'wx1'); // 31 bytes + 33 = 64
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(Buffer.concat([short, Buffer.alloc(33, 33)]))), 'padding');
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(Buffer.concat([body, Buffer.from([3, 2, 3])]))), 'padding');
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(Buffer.concat([body, Buffer.from([4, 3, 3])]))), 'padding');
    // The same bytes with a correct pad decrypt: the refusals above are about the padding alone.
    assert.equal(decryptCallbackMessage(KEY, rawEncrypt(Buffer.concat([body, Buffer.alloc(3, 3)]))).message, '<xml/>');
  });

  test('a length field that points past the end, or a plaintext shorter than its header', () => {
    const msg = Buffer.from('<xml/>');
    const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc(32 - (b.length % 32), 32 - (b.length % 32))]);
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(pad(layout(msg, 'wx1', 1000)))), 'length');
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(pad(layout(msg, 'wx1', 0xffffffff)))), 'length');
    // One past the end (message + appid is 9 bytes): refused; exactly the end: accepted, empty appid.
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(pad(layout(msg, 'wx1', 10)))), 'length');
    assert.deepEqual(decryptCallbackMessage(KEY, rawEncrypt(pad(layout(msg, 'wx1', 9)))), { message: '<xml/>wx1', appid: '' });
    // 16 bytes of plaintext then 16 bytes of padding: no room for the length field.
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(Buffer.concat([randomBytes(16), Buffer.alloc(16, 16)]))), 'length');
  });

  test('a message that is not UTF-8', () => {
    const bad = layout(Buffer.from([0x3c, 0xff, 0xfe, 0x3e]), 'wx1');
    const padded = Buffer.concat([bad, Buffer.alloc(32 - (bad.length % 32), 32 - (bad.length % 32))]);
    refused(() => decryptCallbackMessage(KEY, rawEncrypt(padded)), 'encoding');
  });
});
