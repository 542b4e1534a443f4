/**
 * The commands of docs/PROTOCOL.md on top of frames: parsing what clients send, encoding what
 * the server answers, and client-side encoders (tests, bench, client libraries).
 */

import { BadRequestError, MalformedFrameError, UnknownCommandError } from '../errors.js';
import { encodeFrame, type Frame } from './codec.js';

export enum ResultCode {
  OK = 200,
  BAD_REQUEST = 400,
  UNAUTHORIZED = 401,
  /** `query` of a msgid the ledger has no record of. */
  NOT_FOUND = 404,
  TOO_LARGE = 413,
  INTERNAL = 500,
  UNAVAILABLE = 503,
}

/** Template variables: a JSON object, or `null` for none. */
export type Variables = Record<string, unknown> | null;

interface MessageRequestBase {
  opaque: number;
  openid: string;
  key: string;
  /** Client idempotency id (WeChat's `client_msg_id`); undefined when the client sent none. */
  msgid: string | undefined;
  data: Variables;
  /** The JSON bytes exactly as received, for the queue to store untouched. */
  body: Buffer;
}

export interface PushRequest extends MessageRequestBase {
  kind: 'push';
}

export interface SendRequest extends MessageRequestBase {
  kind: 'send';
}

export interface TsetRequest {
  kind: 'tset';
  opaque: number;
  key: string;
}

/** `query <msgid>`: the ledger's record of one message. */
export interface QueryRequest {
  kind: 'query';
  opaque: number;
  msgid: string;
}

export type Request = PushRequest | SendRequest | TsetRequest | QueryRequest;

export interface Result {
  opaque: number;
  code: number;
  /** UTF-8 bytes; empty when the server sent no message. */
  message: Buffer;
}

const OPENID = /^[\x21-\x7e]{1,128}$/;
const KEY = /^[\x21-\x7e]{1,32}$/;
const MSGID = /^[A-Za-z0-9_-]{1,64}$/;
const RESULT_HEADER = /^result (\d{3})$/;

// fatal: invalid UTF-8 must be refused, not turned into U+FFFD and sent to users.
// ignoreBOM keeps a BOM in the text so JSON.parse rejects it, as PHP's json_decode did.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Gives a frame received by the server its meaning.
 * @throws UnknownCommandError when the first word is not push, send, tset or query (a client has no business sending `result`).
 * @throws BadRequestError for a known command with bad parameters or body; the connection can stay open.
 */
export function parseRequest(frame: Frame): Request {
  const words = frame.header.split(' ');
  // The first non-empty word, so that " push o1 k1" is a bad push rather than an unknown command.
  const command = words.find((word) => word !== '') ?? '';
  if (command !== 'push' && command !== 'send' && command !== 'tset' && command !== 'query') throw new UnknownCommandError(command);
  if (words.includes('')) {
    throw new BadRequestError(`${command}: header words must be separated by single spaces, with none leading or trailing`);
  }

  if (command === 'tset') {
    if (words.length !== 2) throw new BadRequestError(`tset expects exactly <key>, got ${words.length - 1} parameters`);
    const key = checkKey(words[1]!);
    if (frame.body !== null) throw new BadRequestError('tset takes no body');
    return { kind: 'tset', opaque: frame.opaque, key };
  }

  if (command === 'query') {
    if (words.length !== 2) throw new BadRequestError(`query expects exactly <msgid>, got ${words.length - 1} parameters`);
    const msgid = checkMsgid(words[1]!);
    if (frame.body !== null) throw new BadRequestError('query takes no body');
    return { kind: 'query', opaque: frame.opaque, msgid };
  }

  if (words.length !== 3 && words.length !== 4) {
    throw new BadRequestError(`${command} expects <openid> <key> [<msgid>], got ${words.length - 1} parameters`);
  }
  const openid = checkOpenid(words[1]!);
  const key = checkKey(words[2]!);
  const msgid = words.length === 4 ? checkMsgid(words[3]!) : undefined;
  if (frame.body === null) throw new BadRequestError(`${command} requires a body (a JSON object or null)`);
  const data = parseVariables(frame.body);
  return { kind: command, opaque: frame.opaque, openid, key, msgid, data, body: frame.body };
}

/**
 * Deepest nesting of objects and arrays accepted in a push/send body; the variables object
 * itself is level 1, so `{"a":{"b":[1]}}` is 3 deep. Template variables are flat text in
 * practice; the bound keeps every later step (JSON.stringify of a variable, the queue record)
 * far from the stack limit, which 20,000 nested arrays in a 40 KB body would reach.
 */
export const MAX_VARIABLES_DEPTH = 32;

/**
 * Parses a push/send body. Exported so that whoever re-reads a stored body (queue replay,
 * workers) applies exactly the rules the request was accepted under.
 *
 * `[]` is accepted as `{}`: PHP's json_encode turns an empty array into `[]`, so that is
 * what the original's clients send for "no variables". Non-empty arrays are refused.
 * @throws BadRequestError `invalid variables JSON`, or nesting deeper than {@link MAX_VARIABLES_DEPTH}
 */
export function parseVariables(body: Buffer): Variables {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(body));
  } catch {
    throw new BadRequestError('invalid variables JSON');
  }
  if (value === null) return null;
  if (Array.isArray(value)) {
    if (value.length === 0) return {};
    throw new BadRequestError('invalid variables JSON');
  }
  if (typeof value !== 'object') throw new BadRequestError('invalid variables JSON');
  if (nestedDeeperThan(value, MAX_VARIABLES_DEPTH)) {
    throw new BadRequestError(`variables nest deeper than ${MAX_VARIABLES_DEPTH} levels`);
  }
  return value as Record<string, unknown>;
}

/** Walks with an explicit stack: recursion is exactly what a deep value would overflow. */
function nestedDeeperThan(root: object, limit: number): boolean {
  const values: object[] = [root];
  const depths: number[] = [1];
  while (values.length > 0) {
    const value = values.pop()!;
    const depth = depths.pop()!;
    if (depth > limit) return true;
    const children: unknown[] = Array.isArray(value) ? value : Object.values(value);
    for (const child of children) {
      if (child !== null && typeof child === 'object') {
        values.push(child);
        depths.push(depth + 1);
      }
    }
  }
  return false;
}

/** `message` is sent as UTF-8; an empty one means "no message". */
export function encodeResult(opaque: number, code: number, message: string | Buffer = ''): Buffer {
  if (!Number.isInteger(code) || code < 100 || code > 999) {
    throw new RangeError(`result code must be a 3-digit integer, got ${String(code)}`);
  }
  const body = typeof message === 'string' ? Buffer.from(message, 'utf8') : message;
  return encodeFrame({ header: `result ${code}`, opaque, body });
}

/** @throws MalformedFrameError when the frame is not a result (header `result <3 digits>` with body fields). */
export function parseResult(frame: Frame): Result {
  const match = RESULT_HEADER.exec(frame.header);
  if (match === null) throw new MalformedFrameError(`not a result frame: ${JSON.stringify(frame.header.slice(0, 32))}`);
  if (frame.body === null) throw new MalformedFrameError('result frame without bodyLen');
  return { opaque: frame.opaque, code: Number(match[1]), message: frame.body };
}

/**
 * Client side. An object or null is JSON-encoded the way PHP's json_encode does it (so
 * bytes match the original's clients); a Buffer or string is sent as is, unchecked.
 * @throws BadRequestError for an openid, key or msgid the server would refuse.
 */
export function encodePush(
  opaque: number,
  openid: string,
  key: string,
  data: Variables | Buffer | string = null,
  msgid?: string,
): Buffer {
  return encodeMessage('push', opaque, openid, key, data, msgid);
}

/** Like {@link encodePush}; the server answers only once WeChat has. */
export function encodeSend(
  opaque: number,
  openid: string,
  key: string,
  data: Variables | Buffer | string = null,
  msgid?: string,
): Buffer {
  return encodeMessage('send', opaque, openid, key, data, msgid);
}

export function encodeTset(opaque: number, key: string): Buffer {
  return encodeFrame({ header: `tset ${checkKey(key)}`, opaque, body: null });
}

/**
 * `query <msgid>`: like tset, the frame ends after opaque.
 * @throws BadRequestError for a msgid the server would refuse.
 */
export function encodeQuery(opaque: number, msgid: string): Buffer {
  return encodeFrame({ header: `query ${checkMsgid(msgid)}`, opaque, body: null });
}

/** Whether `value` is a msgid the protocol carries: 1-64 characters of [A-Za-z0-9_-]. */
export function isMsgid(value: unknown): value is string {
  return typeof value === 'string' && MSGID.test(value);
}

/** `auth <token>`: the first frame of a connection to a daemon with `[server] auth_token`. */
export interface AuthRequest {
  kind: 'auth';
  opaque: number;
  token: string;
}

const AUTH_TOKEN = /^[\x21-\x7e]{1,1024}$/;

/** Whether `value` is a token a client may send: 1-1024 printable ASCII characters without spaces. */
export function isAuthToken(value: unknown): value is string {
  return typeof value === 'string' && AUTH_TOKEN.test(value);
}

/**
 * Client side: the auth frame, which like tset has no bodyLen or body.
 * @throws BadRequestError for a token that is not {@link isAuthToken}; the message never holds the token.
 */
export function encodeAuth(opaque: number, token: string): Buffer {
  if (!isAuthToken(token)) throw new BadRequestError('auth token must be 1-1024 printable ASCII characters without spaces');
  return encodeFrame({ header: `auth ${token}`, opaque, body: null });
}

/**
 * Server side: the token of an `auth <token>` frame. Only the shape is checked: the token is
 * compared with the configured one, so one the client library would not send simply does not
 * match, and the daemon answers 401 rather than 400.
 * @throws BadRequestError when the frame is not exactly `auth <token>` without body fields; the message never holds the token.
 */
export function parseAuth(frame: Frame): AuthRequest {
  const words = frame.header.split(' ');
  if (words[0] !== 'auth') throw new BadRequestError('not an auth frame');
  if (words.length !== 2 || words[1] === '') throw new BadRequestError('auth expects exactly <token>');
  if (frame.body !== null) throw new BadRequestError('auth takes no body');
  return { kind: 'auth', opaque: frame.opaque, token: words[1]! };
}

function encodeMessage(
  command: 'push' | 'send',
  opaque: number,
  openid: string,
  key: string,
  data: Variables | Buffer | string,
  msgid: string | undefined,
): Buffer {
  let header = `${command} ${checkOpenid(openid)} ${checkKey(key)}`;
  if (msgid !== undefined) header += ` ${checkMsgid(msgid)}`;
  let body: Buffer;
  if (Buffer.isBuffer(data)) body = data;
  else if (typeof data === 'string') body = Buffer.from(data, 'utf8');
  else body = Buffer.from(phpJsonEncode(data), 'latin1');
  return encodeFrame({ header, opaque, body });
}

/**
 * JSON.stringify, then PHP json_encode's default escaping: every non-ASCII UTF-16 unit
 * as \uXXXX (lowercase hex, astral characters as surrogate pairs) and "/" as "\/". Both
 * can only occur inside strings, so replacing them over the whole text is safe, and the
 * result is pure ASCII.
 */
function phpJsonEncode(data: Variables): string {
  const json = JSON.stringify(data) as string | undefined;
  if (json === undefined) throw new TypeError('variables cannot be encoded as JSON');
  return json.replace(/[/\u0080-\uffff]/g, (ch) =>
    ch === '/' ? '\\/' : `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function checkOpenid(openid: string): string {
  if (!OPENID.test(openid)) throw new BadRequestError('openid must be 1-128 printable ASCII characters without spaces');
  return openid;
}

function checkKey(key: string): string {
  if (!KEY.test(key)) throw new BadRequestError('template key must be 1-32 printable ASCII characters without spaces');
  return key;
}

/** @throws BadRequestError unless `msgid` is a msgid the protocol carries (see {@link isMsgid}). */
export function checkMsgid(msgid: unknown): string {
  if (!isMsgid(msgid)) throw new BadRequestError('msgid must be 1-64 characters of [A-Za-z0-9_-]');
  return msgid;
}
