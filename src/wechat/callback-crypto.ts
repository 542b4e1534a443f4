/**
 * The cryptography of WeChat's server-URL ("message push") protocol, and nothing else: the
 * signatures of plaintext and safe mode, and safe mode's AES-256-CBC envelope. Pure functions
 * over strings and Buffers, so the receipts endpoint, the daemon's encrypted answers and the
 * simulator's pushes (issue 12, items 3 and 7) share one implementation that tests can pin to
 * WeChat's published sample. HTTP, XML and the appid policy belong to the callers.
 * The format is described in docs/CALLBACK.md.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { CallbackCryptoError } from '../errors.js';

/** WeChat pads to 32-byte blocks (its own PKCS#7 variant), not to AES's 16. */
const PAD_BLOCK = 32;
const RANDOM_LENGTH = 16;
/** 16 random bytes, then the message length as a 4-byte big-endian integer. */
const HEADER_LENGTH = RANDOM_LENGTH + 4;
/** 43 characters of base64 = 258 bits, of which the 256 of an AES-256 key are used. */
const AES_KEY_TEXT = /^[A-Za-z0-9+/]{43}$/;
/** Node's base64 decoder skips characters it does not know; refusing them here keeps garbage from decoding to "something". */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The AES key and IV derived from an EncodingAESKey, parsed once and reused for every message. */
export interface CallbackAesKey {
  readonly key: Buffer;
  readonly iv: Buffer;
}

/** What a safe-mode `Encrypt` payload holds: the XML WeChat meant, and the appid it was meant for. */
export interface DecryptedCallback {
  readonly message: string;
  readonly appid: string;
}

/**
 * Parses the EncodingAESKey of the account's settings. WeChat strips base64's trailing '=' so the
 * key is 43 characters; the AES-256 key is its decoding, and the IV is the key's first 16 bytes
 * (WeChat's choice, not ours: a fixed IV is safe enough here only because every plaintext starts
 * with 16 random bytes). The message never echoes the text: it is the account's secret.
 */
export function parseEncodingAesKey(encodingAesKey: string): CallbackAesKey {
  if (!AES_KEY_TEXT.test(encodingAesKey)) {
    throw new CallbackCryptoError(
      `EncodingAESKey must be 43 base64 characters (got ${encodingAesKey.length} characters)`,
      'key',
    );
  }
  const key = Buffer.from(`${encodingAesKey}=`, 'base64');
  // Unreachable with the pattern above, but the cipher would throw a raw error on any other size.
  if (key.length !== 32) throw new CallbackCryptoError('EncodingAESKey does not decode to 32 bytes', 'key');
  return { key, iv: key.subarray(0, 16) };
}

const keyOf = (k: string | CallbackAesKey): CallbackAesKey => (typeof k === 'string' ? parseEncodingAesKey(k) : k);

/**
 * sha1 of the parts sorted and concatenated, as lowercase hex. WeChat's SDKs sort by code unit
 * (Java) or byte (PHP); both agree with JS's default sort for the ASCII WeChat sends.
 */
function sortedSha1(parts: string[]): string {
  return createHash('sha1').update(parts.sort().join(''), 'utf8').digest('hex');
}

/**
 * Constant-time comparison so an attacker timing our 401s cannot find a valid signature byte by
 * byte. A length mismatch may return early: the length of a sha1 hex digest is no secret.
 */
function sameSignature(expected: string, received: string): boolean {
  const a = Buffer.from(expected, 'utf8');
  const b = Buffer.from(received, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * The `signature` query parameter of every server-URL request (GET verification and plaintext-mode
 * POSTs): sha1(sort([token, timestamp, nonce]).join('')). It proves the sender knows the token.
 */
export function callbackSignature(token: string, timestamp: string, nonce: string): string {
  return sortedSha1([token, timestamp, nonce]);
}

/** Whether a received `signature` is the one {@link callbackSignature} computes, compared in constant time. */
export function verifyCallbackSignature(token: string, timestamp: string, nonce: string, received: string): boolean {
  return sameSignature(callbackSignature(token, timestamp, nonce), received);
}

/**
 * Safe mode's `msg_signature`: sha1(sort([token, timestamp, nonce, encrypt]).join('')), where
 * `encrypt` is the base64 `Encrypt` payload exactly as received. It covers the ciphertext, so it
 * must be checked before decrypting (AES-CBC alone does not detect tampering).
 */
export function messageSignature(token: string, timestamp: string, nonce: string, encrypt: string): string {
  return sortedSha1([token, timestamp, nonce, encrypt]);
}

/** Whether a received `msg_signature` is the one {@link messageSignature} computes, compared in constant time. */
export function verifyMessageSignature(
  token: string,
  timestamp: string,
  nonce: string,
  encrypt: string,
  received: string,
): boolean {
  return sameSignature(messageSignature(token, timestamp, nonce, encrypt), received);
}

/**
 * Opens a safe-mode `Encrypt` payload (base64). The plaintext is 16 random bytes, the message
 * length (4 bytes, big-endian), the message (UTF-8 XML), the appid, then padding to 32 bytes.
 * Anything malformed is a {@link CallbackCryptoError}, never a raw crypto error, so the endpoint
 * answers 400/401 instead of crashing. The appid is returned, not checked: see {@link appidMatches}.
 */
export function decryptCallbackMessage(encodingAesKey: string | CallbackAesKey, encrypt: string): DecryptedCallback {
  const { key, iv } = keyOf(encodingAesKey);
  if (!BASE64.test(encrypt)) throw new CallbackCryptoError('Encrypt is not base64', 'ciphertext');
  const cipherText = Buffer.from(encrypt, 'base64');
  if (cipherText.length === 0 || cipherText.length % 16 !== 0) {
    throw new CallbackCryptoError(`Encrypt is ${cipherText.length} bytes, not whole AES blocks`, 'ciphertext');
  }
  let padded: Buffer;
  try {
    // Auto padding off: Node's PKCS#7 check assumes 16-byte blocks and WeChat pads to 32.
    const decipher = createDecipheriv('aes-256-cbc', key, iv).setAutoPadding(false);
    padded = Buffer.concat([decipher.update(cipherText), decipher.final()]);
  } catch {
    throw new CallbackCryptoError('Encrypt could not be decrypted', 'ciphertext');
  }

  // A wrong key or tampered bytes almost always show here first: the pad must be 1..32 equal bytes.
  const pad = padded[padded.length - 1]!;
  if (pad < 1 || pad > PAD_BLOCK || pad > padded.length) throw new CallbackCryptoError('bad padding', 'padding');
  for (let i = padded.length - pad; i < padded.length; i++) {
    if (padded[i] !== pad) throw new CallbackCryptoError('bad padding', 'padding');
  }
  const plain = padded.subarray(0, padded.length - pad);

  if (plain.length < HEADER_LENGTH) throw new CallbackCryptoError('plaintext shorter than its header', 'length');
  const messageLength = plain.readUInt32BE(RANDOM_LENGTH);
  if (messageLength > plain.length - HEADER_LENGTH) {
    throw new CallbackCryptoError('message length field points past the end', 'length');
  }
  try {
    // Fatal decoding: a wrong key that happens to leave valid padding yields bytes, not text.
    const message = utf8.decode(plain.subarray(HEADER_LENGTH, HEADER_LENGTH + messageLength));
    const appid = utf8.decode(plain.subarray(HEADER_LENGTH + messageLength));
    return { message, appid };
  } catch {
    throw new CallbackCryptoError('message or appid is not UTF-8', 'encoding');
  }
}

/**
 * Builds a safe-mode `Encrypt` payload (base64) for `message` addressed to `appid`: the daemon's
 * encrypted answers and the simulator's pushed receipts. `random` is the 16-byte prefix; tests
 * pass a fixed one to reproduce WeChat's sample, everyone else leaves it to randomBytes.
 */
export function encryptCallbackMessage(
  encodingAesKey: string | CallbackAesKey,
  message: string,
  appid: string,
  random: Buffer = randomBytes(RANDOM_LENGTH),
): string {
  const { key, iv } = keyOf(encodingAesKey);
  if (random.length !== RANDOM_LENGTH) {
    throw new CallbackCryptoError(`random prefix must be ${RANDOM_LENGTH} bytes (got ${random.length})`, 'random');
  }
  const body = Buffer.from(message, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  const plain = Buffer.concat([random, length, body, Buffer.from(appid, 'utf8')]);
  // Always 1..32 bytes of padding, a full block when already aligned, so the receiver can strip it unambiguously.
  const pad = PAD_BLOCK - (plain.length % PAD_BLOCK);
  const padded = Buffer.concat([plain, Buffer.alloc(pad, pad)]);
  const cipher = createCipheriv('aes-256-cbc', key, iv).setAutoPadding(false);
  return Buffer.concat([cipher.update(padded), cipher.final()]).toString('base64');
}

/**
 * Whether a decrypted payload was meant for this account. A key shared across accounts (or a
 * payload replayed from another one) decrypts fine, so the receiver must refuse a foreign appid;
 * it is left to the caller so the endpoint can answer it with its own status and log line.
 */
export function appidMatches(decrypted: DecryptedCallback, expectedAppid: string): boolean {
  return sameSignature(expectedAppid, decrypted.appid);
}
