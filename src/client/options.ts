/**
 * MegaClient's options: their types and documented defaults, and the one place each option
 * (and each per-request argument) is checked. Every refusal is a MegaInvalidArgumentError whose
 * message names the option, and never echoes a secret.
 */

import type tls from 'node:tls';
import { DEFAULT_PACKAGE_MAX_LENGTH, isAuthToken } from '../protocol/index.js';
import { MegaError, MegaInvalidArgumentError } from '../errors.js';

export interface MegaReconnectOptions {
  /** Delay before the first reconnection attempt; doubles with each failed attempt. @defaultValue 100 */
  initialDelayMs?: number;
  /** Longest delay between two attempts. @defaultValue 5000 */
  maxDelayMs?: number;
}

export interface MegaClientOptions {
  /** Host name or IP address of the daemon. @defaultValue '127.0.0.1' */
  host?: string;
  /** TCP port of the daemon (`[server] listen[]`). Required. */
  port: number;
  /**
   * `true` connects with TLS using Node's defaults (the system's CAs, host name checked); an
   * object is passed to `tls.connect` (`ca`, `servername`, `cert`/`key` for a client
   * certificate...; its `host`, `port` and `socket` are ignored). @defaultValue false
   */
  tls?: boolean | tls.ConnectionOptions;
  /**
   * Sent first on every connection as an `auth <token>` frame; requests are written only once
   * the server answered it with 200. 1-1024 printable ASCII characters without spaces.
   * @defaultValue none (no auth frame)
   */
  authToken?: string;
  /** Most requests in flight (written, not yet answered); further calls wait for a slot. @defaultValue 256 */
  window?: number;
  /**
   * Per request, in ms, from the call to the answer (waiting for a connection or a window slot
   * included). A Send is answered only when WeChat answered, which may be slow.
   * @defaultValue 30000
   */
  timeoutMs?: number;
  /** Time for a connection (TLS handshake and auth answer included). @defaultValue 5000 */
  connectTimeoutMs?: number;
  /**
   * Automatic reconnection with exponential backoff (with jitter) after a connection was lost;
   * the client then keeps trying until close() or destroy(), and requests made meanwhile wait
   * (within their `timeoutMs`). An auth refusal is never retried. `false`: after a disconnect the
   * next request connects again, and requests waiting at that moment fail. @defaultValue { initialDelayMs: 100, maxDelayMs: 5000 }
   */
  reconnect?: false | MegaReconnectOptions;
  /**
   * Largest frame, length field included, in either direction: a larger request is refused
   * before it is sent (MegaRequestTooLargeError, a BadRequestError), a larger result is a
   * protocol error. Keep it at or below the daemon's `[setting] package_max_length`, or the
   * daemon answers 413 and closes the connection. @defaultValue 2465792 (the daemon's default)
   */
  maxFrameLength?: number;
}

export interface MegaRequestOptions {
  /**
   * 1-64 characters of `[A-Za-z0-9_-]`: WeChat's `client_msg_id`, used by WeChat to drop repeats.
   * @defaultValue none (the daemon assigns one per job)
   */
  msgid?: string;
  /** Overrides the client's `timeoutMs` for this request. @defaultValue the client's `timeoutMs` */
  timeoutMs?: number;
}

export interface MegaTsetOptions {
  /** Overrides the client's `timeoutMs` for this request. @defaultValue the client's `timeoutMs` */
  timeoutMs?: number;
}

/** The options of a query. */
export type MegaQueryOptions = MegaTsetOptions;

export interface MegaCloseOptions {
  /** How long to wait for in-flight answers before rejecting them. @defaultValue the client's `timeoutMs` */
  timeoutMs?: number;
}

/** The defaults the doc comments above state; a test holds the two together. */
export const DEFAULTS = {
  host: '127.0.0.1',
  tls: false,
  window: 256,
  timeoutMs: 30_000,
  connectTimeoutMs: 5000,
  reconnect: { initialDelayMs: 100, maxDelayMs: 5000 },
  maxFrameLength: DEFAULT_PACKAGE_MAX_LENGTH,
} as const;

/** setTimeout's largest delay. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
const U32_MAX = 0xffffffff;

/** MegaClientOptions checked, with every default filled in. */
export interface ResolvedOptions {
  readonly host: string;
  readonly port: number;
  /** undefined: plain TCP. A copy, so a caller changing its object later changes nothing. */
  readonly tls: tls.ConnectionOptions | undefined;
  readonly authToken: string | undefined;
  readonly window: number;
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  /** undefined: `reconnect: false`. */
  readonly reconnect: Readonly<Required<MegaReconnectOptions>> | undefined;
  readonly maxFrameLength: number;
}

/** @throws MegaInvalidArgumentError naming the first option that is wrong */
export function resolveOptions(options: MegaClientOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') throw new MegaInvalidArgumentError('options must be an object');
  const { host = DEFAULTS.host, port, tls: tlsOption = DEFAULTS.tls, authToken } = options;
  if (typeof host !== 'string' || host.length === 0) {
    throw new MegaInvalidArgumentError(`options.host must be a non-empty string, got ${show(host)}`);
  }
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new MegaInvalidArgumentError(`options.port must be an integer from 1 to 65535, got ${show(port)}`);
  }
  if (tlsOption !== true && tlsOption !== false && (tlsOption === null || typeof tlsOption !== 'object')) {
    throw new MegaInvalidArgumentError(`options.tls must be a boolean or a tls.connect options object, got ${show(tlsOption)}`);
  }
  if (authToken !== undefined && !isAuthToken(authToken)) {
    // Never echo the value: it is a secret.
    throw new MegaInvalidArgumentError('options.authToken must be 1-1024 printable ASCII characters without spaces');
  }
  return {
    host,
    port,
    tls: tlsOption === false ? undefined : tlsOption === true ? {} : { ...tlsOption },
    authToken,
    window: checkInt('options.window', options.window, DEFAULTS.window, 1, 1_000_000),
    timeoutMs: checkTimeout('options.timeoutMs', options.timeoutMs, DEFAULTS.timeoutMs),
    connectTimeoutMs: checkTimeout('options.connectTimeoutMs', options.connectTimeoutMs, DEFAULTS.connectTimeoutMs),
    maxFrameLength: checkInt('options.maxFrameLength', options.maxFrameLength, DEFAULTS.maxFrameLength, 64, U32_MAX),
    reconnect: resolveReconnect(options.reconnect),
  };
}

function resolveReconnect(reconnect: unknown): ResolvedOptions['reconnect'] {
  if (reconnect === false) return undefined;
  if (reconnect !== undefined && (reconnect === null || typeof reconnect !== 'object')) {
    throw new MegaInvalidArgumentError(`options.reconnect must be false or an object, got ${show(reconnect)}`);
  }
  const given = reconnect as MegaReconnectOptions | undefined;
  const initialDelayMs = checkTimeout('options.reconnect.initialDelayMs', given?.initialDelayMs, DEFAULTS.reconnect.initialDelayMs);
  // A long initial delay alone raises the default ceiling rather than being refused by it.
  const maxDefault = Math.max(DEFAULTS.reconnect.maxDelayMs, initialDelayMs);
  const maxDelayMs = checkTimeout('options.reconnect.maxDelayMs', given?.maxDelayMs, maxDefault);
  if (maxDelayMs < initialDelayMs) {
    throw new MegaInvalidArgumentError(
      `options.reconnect.maxDelayMs (${maxDelayMs}) must not be below options.reconnect.initialDelayMs (${initialDelayMs})`,
    );
  }
  return { initialDelayMs, maxDelayMs };
}

/** The `timeoutMs` of one push, send or tset: its options object checked, the client's as default. */
export function requestTimeout(options: MegaRequestOptions | MegaTsetOptions | undefined, fallback: number, what: string): number {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new MegaInvalidArgumentError(`${what} options must be an object, got ${show(options)}`);
  }
  return checkTimeout('options.timeoutMs', options?.timeoutMs, fallback);
}

/** close()'s wait; 0 is allowed: give up on what is in flight at once. */
export function closeTimeout(options: MegaCloseOptions | undefined, fallback: number): number {
  return checkInt('options.timeoutMs', options?.timeoutMs, fallback, 0, MAX_TIMER_MS);
}

/**
 * The types of a push or send's arguments. Their contents (openid, key, msgid syntax) are the
 * protocol encoder's to check, as the daemon would (BadRequestError).
 */
export function checkMessageArgs(openid: unknown, key: unknown, data: unknown, msgid: unknown): void {
  if (typeof openid !== 'string') throw new MegaInvalidArgumentError(`openid must be a string, got ${show(openid)}`);
  checkKeyType(key);
  if (msgid !== undefined && typeof msgid !== 'string') {
    throw new MegaInvalidArgumentError(`options.msgid must be a string, got ${show(msgid)}`);
  }
  if (data !== undefined && data !== null && (typeof data !== 'object' || Array.isArray(data) || Buffer.isBuffer(data))) {
    throw new MegaInvalidArgumentError(`data must be an object of template variables or null, got ${show(data)}`);
  }
}

/**
 * Runs a push or send encoder: an openid, key or msgid it refuses stays a BadRequestError (the
 * daemon would refuse it too); data that JSON cannot encode (a BigInt, a cycle) is an argument error.
 */
export function dataChecked(encode: () => Buffer): Buffer {
  try {
    return encode();
  } catch (err) {
    if (err instanceof MegaError) throw err;
    throw new MegaInvalidArgumentError(`data cannot be encoded as JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export function checkKeyType(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new MegaInvalidArgumentError(`key must be a string, got ${show(key)}`);
}

export function checkMsgidType(msgid: unknown): asserts msgid is string {
  if (typeof msgid !== 'string') throw new MegaInvalidArgumentError(`msgid must be a string, got ${show(msgid)}`);
}

function checkTimeout(name: string, value: unknown, fallback: number): number {
  return checkInt(name, value, fallback, 1, MAX_TIMER_MS);
}

function checkInt(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new MegaInvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got ${show(value)}`);
  }
  return value;
}

/** A value for an error message: short, and never a whole object or buffer. */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (Buffer.isBuffer(value)) return 'a Buffer';
  if (typeof value === 'object') return 'an object';
  return String(value);
}
