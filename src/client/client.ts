/**
 * MegaClient: the Node.js client of the Mega-WeChat protocol (docs/PROTOCOL.md) for backend services.
 *
 * One TCP (or TLS) connection, many requests pipelined on it and correlated by opaque, at most
 * `window` of them in flight. The framing is the protocol module's (src/protocol); this file only
 * owns the socket, the correlation, timeouts and reconnection.
 */

import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import {
  DEFAULT_PACKAGE_MAX_LENGTH,
  FrameDecoder,
  ResultCode,
  encodeFrame,
  encodePush,
  encodeSend,
  encodeTset,
  parseResult,
  type Frame,
  type Result,
} from '../protocol/index.js';
import {
  BadRequestError,
  MegaAuthError,
  MegaClientDestroyedError,
  MegaClientTimeoutError,
  MegaConnectError,
  MegaConnectionClosedError,
  MegaError,
  MegaInvalidArgumentError,
  MegaProtocolError,
} from '../errors.js';

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
   * before it is sent (BadRequestError), a larger result is a protocol error. Keep it at or
   * below the daemon's `[setting] package_max_length`, or the daemon answers 413 and closes the
   * connection. @defaultValue 2465792 (the daemon's default)
   */
  maxFrameLength?: number;
}

export interface MegaRequestOptions {
  /** 1-64 characters of `[A-Za-z0-9_-]`: WeChat's `client_msg_id`, used by WeChat to drop repeats. */
  msgid?: string;
  /** Overrides the client's `timeoutMs` for this request. */
  timeoutMs?: number;
}

export interface MegaTsetOptions {
  /** Overrides the client's `timeoutMs` for this request. */
  timeoutMs?: number;
}

/** WeChat's answer, carried in the message of a Send result. */
export interface MegaWechatAnswer {
  errcode: number;
  errmsg: string;
  /** WeChat's message id (when accepted). */
  msgid?: number | string;
  /** Added by the daemon when WeChat refused the message. */
  openid?: string;
}

/** The daemon's answer. A non-200 code is an answer too: the promise resolves with it. */
export interface MegaResult {
  /** 200 ok, 400 bad request or WeChat's refusal, 401, 413, 500, 503 (see {@link ResultCode}). */
  code: number;
  /** `code === 200`. */
  ok: boolean;
  /** The result's message as text; empty for a successful Push or TSet. */
  message: string;
  /** The message parsed, when it is WeChat's JSON (Send results). */
  wechat?: MegaWechatAnswer;
}

export interface MegaCloseOptions {
  /** How long to wait for in-flight answers before rejecting them. @defaultValue the client's `timeoutMs` */
  timeoutMs?: number;
}

/** The events a MegaClient emits. */
export interface MegaClientEvents {
  /** A connection is ready (connected, TLS done, auth accepted). Emitted again after each reconnection. */
  connect: [];
  /** A ready connection was lost; `reason` says why when known. */
  disconnect: [reason: Error | undefined];
  /**
   * A connection attempt failed, the connection failed, or the server sent something undecodable.
   * Emitted only when there is a listener (an unhandled 'error' never crashes the process); the
   * requests concerned are rejected anyway.
   */
  error: [err: Error];
}

const U32_MAX = 0xffffffff;
const DEFAULTS = {
  host: '127.0.0.1',
  window: 256,
  timeoutMs: 30_000,
  connectTimeoutMs: 5000,
  initialDelayMs: 100,
  maxDelayMs: 5000,
};
/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const AUTH_TOKEN = /^[\x21-\x7e]{1,1024}$/;
/**
 * Requests that timed out keep their opaque reserved until their late answer arrives (so it is
 * recognised and dropped); past this many the connection is reset instead of growing forever.
 */
const MAX_ABANDONED = 65_536;
/** A connection that lived this long (or got an answer) resets the reconnect backoff. */
const STABLE_CONNECTION_MS = 1000;
/** close(): how long to wait for the server's FIN after ending the connection. */
const END_GRACE_MS = 1000;

type Kind = 'push' | 'send' | 'tset';

interface Pending {
  readonly opaque: number;
  readonly kind: Kind;
  /** `push oUser key`, for messages. */
  readonly what: string;
  readonly frame: Buffer;
  readonly timeoutMs: number;
  state: 'queued' | 'sent' | 'abandoned' | 'done';
  timer: NodeJS.Timeout | undefined;
  resolve(result: MegaResult): void;
  reject(err: Error): void;
}

interface Conn {
  readonly socket: net.Socket;
  readonly decoder: FrameDecoder;
  /** Opaque of the auth frame while its answer is awaited. */
  authOpaque: number | undefined;
  ready: boolean;
  readyAt: number;
  answered: boolean;
  /** Why the connection is going away, when we know better than the socket. */
  failure: Error | undefined;
  /** Last socket error. */
  error: Error | undefined;
  /** A 413/500 result: the server's reason for closing, as text and as its code. */
  serverReason: string | undefined;
  serverCode: number | undefined;
  connectTimer: NodeJS.Timeout | undefined;
}

type State = 'idle' | 'connecting' | 'ready' | 'backoff' | 'closed';

/**
 * A client of the Mega-WeChat daemon.
 *
 * ```ts
 * const client = await MegaClient.connect({ port: 9501 });
 * const r = await client.push('oUser123', 'order_paid', { product: 'tea' }, { msgid: 'order-42' });
 * if (!r.ok) console.error(r.code, r.message);
 * await client.close();
 * ```
 *
 * Results resolve whatever their code; errors reject: {@link MegaClientTimeoutError},
 * {@link MegaConnectionClosedError}, {@link MegaProtocolError}, {@link MegaConnectError},
 * {@link MegaAuthError}, {@link MegaClientDestroyedError}, and BadRequestError /
 * {@link MegaInvalidArgumentError} for arguments refused before sending.
 */
export class MegaClient extends EventEmitter<MegaClientEvents> {
  readonly host: string;
  readonly port: number;
  readonly window: number;
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly maxFrameLength: number;
  readonly #tls: tls.ConnectionOptions | undefined;
  readonly #authToken: string | undefined;
  readonly #reconnect: { initialDelayMs: number; maxDelayMs: number } | undefined;

  #state: State = 'idle';
  #conn: Conn | undefined;
  /** Every reserved opaque: queued, in flight, or abandoned after a timeout. */
  readonly #requests = new Map<number, Pending>();
  /** Requests waiting for a connection or a slot, oldest first; entries no longer queued are skipped. */
  #queue: Pending[] = [];
  #queueHead = 0;
  #queued = 0;
  #inFlight = 0;
  #abandoned = 0;
  #nextOpaque = 1;
  #everReady = false;
  #attempts = 0;
  #backoffTimer: NodeJS.Timeout | undefined;
  #lastError: Error | undefined;
  #connectWaiters: Array<{ resolve(): void; reject(err: Error): void }> = [];
  #closePromise: Promise<void> | undefined;
  /** close() was called: no new requests, no reconnection. */
  #closing = false;
  #drained: (() => void) | undefined;

  constructor(options: MegaClientOptions) {
    super();
    if (options === null || typeof options !== 'object') throw new MegaInvalidArgumentError('options must be an object');
    const { host = DEFAULTS.host, port, tls: tlsOption = false, authToken, reconnect } = options;
    if (typeof host !== 'string' || host.length === 0) {
      throw new MegaInvalidArgumentError(`options.host must be a non-empty string, got ${show(host)}`);
    }
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new MegaInvalidArgumentError(`options.port must be an integer from 1 to 65535, got ${show(port)}`);
    }
    if (tlsOption !== true && tlsOption !== false && (tlsOption === null || typeof tlsOption !== 'object')) {
      throw new MegaInvalidArgumentError(`options.tls must be a boolean or a tls.connect options object, got ${show(tlsOption)}`);
    }
    if (authToken !== undefined && (typeof authToken !== 'string' || !AUTH_TOKEN.test(authToken))) {
      // Never echo the value: it is a secret.
      throw new MegaInvalidArgumentError('options.authToken must be 1-1024 printable ASCII characters without spaces');
    }
    this.host = host;
    this.port = port;
    this.window = checkInt('options.window', options.window, DEFAULTS.window, 1, 1_000_000);
    this.timeoutMs = checkInt('options.timeoutMs', options.timeoutMs, DEFAULTS.timeoutMs, 1, MAX_TIMER_MS);
    this.connectTimeoutMs = checkInt('options.connectTimeoutMs', options.connectTimeoutMs, DEFAULTS.connectTimeoutMs, 1, MAX_TIMER_MS);
    this.maxFrameLength = checkInt('options.maxFrameLength', options.maxFrameLength, DEFAULT_PACKAGE_MAX_LENGTH, 64, U32_MAX);
    if (reconnect === false) {
      this.#reconnect = undefined;
    } else if (reconnect === undefined || (reconnect !== null && typeof reconnect === 'object')) {
      const initialDelayMs = checkInt('options.reconnect.initialDelayMs', reconnect?.initialDelayMs, DEFAULTS.initialDelayMs, 1, MAX_TIMER_MS);
      const maxDelayMs = checkInt('options.reconnect.maxDelayMs', reconnect?.maxDelayMs, Math.max(DEFAULTS.maxDelayMs, initialDelayMs), 1, MAX_TIMER_MS);
      if (maxDelayMs < initialDelayMs) {
        throw new MegaInvalidArgumentError(
          `options.reconnect.maxDelayMs (${maxDelayMs}) must not be below options.reconnect.initialDelayMs (${initialDelayMs})`,
        );
      }
      this.#reconnect = { initialDelayMs, maxDelayMs };
    } else {
      throw new MegaInvalidArgumentError(`options.reconnect must be false or an object, got ${show(reconnect)}`);
    }
    this.#tls = tlsOption === false ? undefined : tlsOption === true ? {} : { ...tlsOption };
    this.#authToken = authToken;
  }

  /** Creates a client and waits for its first connection. */
  static async connect(options: MegaClientOptions): Promise<MegaClient> {
    const client = new MegaClient(options);
    try {
      await client.connect();
    } catch (err) {
      client.destroy();
      throw err;
    }
    return client;
  }

  /** Requests written and not yet answered (at most `window`). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests waiting for a connection or a window slot. */
  get queued(): number {
    return this.#queued;
  }

  /** Whether a connection is ready for requests. */
  get connected(): boolean {
    return this.#state === 'ready';
  }

  /** Whether close() or destroy() was called. */
  get closed(): boolean {
    return this.#closing || this.#state === 'closed';
  }

  /**
   * Resolves once a connection is ready; rejects with the error of the next connection attempt
   * if it fails (MegaConnectError, MegaAuthError). Calling it is optional: a request made while
   * no connection exists starts one.
   */
  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new MegaClientDestroyedError());
    if (this.#state === 'ready') return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#connectWaiters.push({ resolve, reject });
      if (this.#state === 'idle') this.#startConnect();
    });
  }

  /** Push: resolves once the daemon has the job durably queued (200), or with its refusal. */
  push(openid: string, key: string, data?: Record<string, unknown> | null, options?: MegaRequestOptions): Promise<MegaResult> {
    return this.#message('push', openid, key, data, options);
  }

  /** Send: resolves once WeChat answered; `wechat` holds its JSON (400 with `openid` when it refused). */
  send(openid: string, key: string, data?: Record<string, unknown> | null, options?: MegaRequestOptions): Promise<MegaResult> {
    return this.#message('send', openid, key, data, options);
  }

  /** TSet: resolves once the daemon (re)loaded template `key` from its database (200), or with why not. */
  async tset(key: string, options?: MegaTsetOptions): Promise<MegaResult> {
    const timeoutMs = this.#requestTimeout(options, 'tset');
    if (typeof key !== 'string') throw new MegaInvalidArgumentError(`key must be a string, got ${show(key)}`);
    return this.#enqueue('tset', `tset ${key}`, timeoutMs, (opaque) => encodeTset(opaque, key));
  }

  async #message(
    kind: 'push' | 'send',
    openid: string,
    key: string,
    data: Record<string, unknown> | null | undefined,
    options: MegaRequestOptions | undefined,
  ): Promise<MegaResult> {
    const timeoutMs = this.#requestTimeout(options, kind);
    const msgid = options?.msgid;
    if (typeof openid !== 'string') throw new MegaInvalidArgumentError(`openid must be a string, got ${show(openid)}`);
    if (typeof key !== 'string') throw new MegaInvalidArgumentError(`key must be a string, got ${show(key)}`);
    if (msgid !== undefined && typeof msgid !== 'string') {
      throw new MegaInvalidArgumentError(`options.msgid must be a string, got ${show(msgid)}`);
    }
    if (data !== undefined && data !== null && (typeof data !== 'object' || Array.isArray(data) || Buffer.isBuffer(data))) {
      throw new MegaInvalidArgumentError(`data must be an object of template variables or null, got ${show(data)}`);
    }
    const encode = kind === 'push' ? encodePush : encodeSend;
    return this.#enqueue(kind, `${kind} ${openid} ${key}`, timeoutMs, (opaque) => {
      try {
        return encode(opaque, openid, key, data ?? null, msgid);
      } catch (err) {
        if (err instanceof MegaError) throw err; // BadRequestError for openid, key, msgid
        throw new MegaInvalidArgumentError(`data cannot be encoded as JSON: ${err instanceof Error ? err.message : String(err)}`);
      }
    });
  }

  #requestTimeout(options: MegaRequestOptions | MegaTsetOptions | undefined, what: string): number {
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw new MegaInvalidArgumentError(`${what} options must be an object, got ${show(options)}`);
    }
    return checkInt('options.timeoutMs', options?.timeoutMs, this.timeoutMs, 1, MAX_TIMER_MS);
  }

  #enqueue(kind: Kind, what: string, timeoutMs: number, encode: (opaque: number) => Buffer): Promise<MegaResult> {
    if (this.closed) return Promise.reject(new MegaClientDestroyedError(`${what}: the client is closed`));
    const opaque = this.#allocateOpaque();
    const frame = encode(opaque); // throws BadRequestError before anything is reserved
    if (frame.length > this.maxFrameLength) {
      throw new BadRequestError(`${what}: request frame of ${frame.length} bytes exceeds maxFrameLength ${this.maxFrameLength}`);
    }
    return new Promise<MegaResult>((resolve, reject) => {
      const req: Pending = { opaque, kind, what, frame, timeoutMs, state: 'queued', timer: undefined, resolve, reject };
      req.timer = setTimeout(() => this.#onTimeout(req), timeoutMs);
      this.#requests.set(opaque, req);
      this.#queue.push(req);
      this.#queued++;
      if (this.#state === 'idle') this.#startConnect();
      else this.#pump();
    });
  }

  /** Sequential, wrapping at 2^32, never 0 (the daemon answers a frame it could not read with opaque 0), skipping reserved ones. */
  #allocateOpaque(): number {
    if (this.#requests.size >= U32_MAX - 2) throw new MegaInvalidArgumentError('too many requests pending');
    for (;;) {
      const opaque = this.#nextOpaque;
      this.#nextOpaque = opaque === U32_MAX ? 1 : opaque + 1;
      if (!this.#requests.has(opaque) && this.#conn?.authOpaque !== opaque) return opaque;
    }
  }

  /** Writes queued requests while a connection is ready and the window has room. */
  #pump(): void {
    const conn = this.#conn;
    if (!conn || !conn.ready || this.#state !== 'ready' || this.#inFlight >= this.window || this.#queued === 0) return;
    conn.socket.cork();
    while (this.#inFlight < this.window && this.#queueHead < this.#queue.length) {
      const req = this.#queue[this.#queueHead++]!;
      if (req.state !== 'queued') continue;
      this.#queued--;
      req.state = 'sent';
      this.#inFlight++;
      conn.socket.write(req.frame);
    }
    conn.socket.uncork();
    this.#compactQueue();
  }

  #compactQueue(): void {
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  #settle(req: Pending): void {
    clearTimeout(req.timer);
    req.timer = undefined;
    if (req.state === 'queued') this.#queued--;
    else if (req.state === 'sent') this.#inFlight--;
    else if (req.state === 'abandoned') this.#abandoned--;
    req.state = 'done';
    this.#requests.delete(req.opaque);
  }

  #onTimeout(req: Pending): void {
    req.timer = undefined;
    if (req.state === 'queued') {
      const waitingFor = this.#state === 'ready' ? 'window slot' : `connection to ${this.#address}`;
      const last = this.#state === 'ready' || !this.#lastError ? '' : ` (last error: ${this.#lastError.message})`;
      this.#settle(req);
      req.reject(
        new MegaClientTimeoutError(`${req.what}: no ${waitingFor} within ${req.timeoutMs} ms${last}; not sent`, req.timeoutMs, false, {
          cause: last ? this.#lastError : undefined,
        }),
      );
      this.#compactQueue();
    } else if (req.state === 'sent') {
      // Its answer may still come: keep the opaque reserved so it is recognised, but free the slot.
      req.state = 'abandoned';
      this.#inFlight--;
      this.#abandoned++;
      req.reject(
        new MegaClientTimeoutError(`${req.what}: no answer within ${req.timeoutMs} ms; its fate is unknown (resend with the same msgid)`, req.timeoutMs, true),
      );
      if (this.#abandoned > MAX_ABANDONED && this.#conn) {
        this.#fail(this.#conn, new MegaProtocolError(`more than ${MAX_ABANDONED} requests timed out without an answer; resetting the connection`));
        return;
      }
      this.#pump();
    }
    this.#checkDrained();
  }

  get #address(): string {
    return net.isIPv6(this.host) ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  // ------------------------------------------------------------------ connection

  #startConnect(): void {
    clearTimeout(this.#backoffTimer);
    this.#backoffTimer = undefined;
    this.#state = 'connecting';
    const socket = this.#tls
      ? tls.connect({ ...this.#tls, host: this.host, port: this.port, socket: undefined })
      : net.connect({ host: this.host, port: this.port });
    const conn: Conn = {
      socket,
      decoder: new FrameDecoder({ maxLength: this.maxFrameLength }),
      authOpaque: undefined,
      ready: false,
      readyAt: 0,
      answered: false,
      failure: undefined,
      error: undefined,
      serverReason: undefined,
      serverCode: undefined,
      connectTimer: undefined,
    };
    this.#conn = conn;
    conn.connectTimer = setTimeout(() => {
      conn.connectTimer = undefined;
      const stage = conn.authOpaque !== undefined ? 'no answer to the auth frame' : 'no connection';
      this.#fail(conn, new MegaConnectError(`${this.#address}: ${stage} within ${this.connectTimeoutMs} ms (connectTimeoutMs)`));
    }, this.connectTimeoutMs);

    socket.on(this.#tls ? 'secureConnect' : 'connect', () => this.#onSocketConnect(conn));
    socket.on('data', (chunk: Buffer) => this.#onData(conn, chunk));
    socket.on('error', (err) => {
      conn.error = err;
    });
    socket.on('close', () => this.#onSocketClose(conn));
  }

  #onSocketConnect(conn: Conn): void {
    if (this.#conn !== conn) return;
    conn.socket.setNoDelay(true);
    conn.socket.setKeepAlive(true, 30_000);
    if (this.#authToken === undefined) {
      this.#onReady(conn);
      return;
    }
    conn.authOpaque = this.#allocateOpaque();
    conn.socket.write(encodeFrame({ header: `auth ${this.#authToken}`, opaque: conn.authOpaque, body: null }));
  }

  #onReady(conn: Conn): void {
    clearTimeout(conn.connectTimer);
    conn.connectTimer = undefined;
    conn.authOpaque = undefined;
    conn.ready = true;
    conn.readyAt = Date.now();
    this.#lastError = undefined;
    this.#everReady = true;
    this.#state = 'ready';
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const w of waiters) w.resolve();
    this.emit('connect');
    this.#pump();
  }

  #onData(conn: Conn, chunk: Buffer): void {
    if (this.#conn !== conn || conn.failure) return;
    let frames: Frame[];
    try {
      frames = conn.decoder.push(chunk);
    } catch (err) {
      this.#fail(conn, new MegaProtocolError(`${this.#address} sent an undecodable stream: ${(err as Error).message}`, { cause: err }));
      return;
    }
    for (const frame of frames) {
      if (this.#conn !== conn || conn.failure) return;
      let result: Result;
      try {
        result = parseResult(frame);
      } catch (err) {
        this.#fail(conn, new MegaProtocolError(`${this.#address} sent a frame that is not a result: ${(err as Error).message}`, { cause: err }));
        return;
      }
      this.#onResult(conn, result);
    }
  }

  #onResult(conn: Conn, result: Result): void {
    if (!conn.ready) {
      if (conn.authOpaque !== undefined && result.opaque === conn.authOpaque) {
        if (result.code === ResultCode.OK) {
          this.#onReady(conn);
        } else {
          const text = result.message.toString('utf8');
          this.#fail(conn, new MegaAuthError(`${this.#address} refused the auth token: result ${result.code}${text ? ` ${text}` : ''}`, result.code));
        }
        return;
      }
      this.#fail(conn, new MegaProtocolError(`${this.#address} sent result ${result.code} for opaque ${result.opaque} before the connection was ready`));
      return;
    }
    conn.answered = true;
    const req = this.#requests.get(result.opaque);
    if (req === undefined || req.state === 'queued') {
      if (result.opaque === 0 && (result.code === ResultCode.TOO_LARGE || result.code === ResultCode.INTERNAL)) {
        // The daemon could not read a frame and is closing the connection.
        const text = result.message.toString('utf8');
        conn.serverReason = `result ${result.code}${text ? ` ${text}` : ''}`;
        conn.serverCode = result.code;
        return;
      }
      this.#fail(conn, new MegaProtocolError(`${this.#address} sent result ${result.code} for opaque ${result.opaque}, which is not pending`));
      return;
    }
    if (req.state === 'abandoned') {
      this.#settle(req); // the late answer of a request that timed out
      this.#checkDrained();
      return;
    }
    this.#settle(req);
    if (result.code === ResultCode.TOO_LARGE || result.code === ResultCode.INTERNAL) {
      const text = result.message.toString('utf8');
      if (conn.serverReason === undefined) {
        conn.serverReason = `result ${result.code}${text ? ` ${text}` : ''} to ${req.what}`;
        conn.serverCode = result.code;
      }
    }
    req.resolve(toMegaResult(req.kind, result));
    this.#pump();
    this.#checkDrained();
  }

  /** Drops a connection for a reason of our own; the 'close' handler does the rest. */
  #fail(conn: Conn, err: Error): void {
    if (conn.failure) return;
    conn.failure = err;
    conn.socket.destroy();
  }

  #onSocketClose(conn: Conn): void {
    clearTimeout(conn.connectTimer);
    conn.connectTimer = undefined;
    if (this.#conn !== conn) return;
    this.#conn = undefined;

    if (!conn.ready) {
      const err =
        conn.failure ??
        new MegaConnectError(
          `cannot connect to ${this.#address}: ${conn.error ? conn.error.message : conn.serverReason ?? 'connection closed during connect'}`,
          { cause: conn.error },
        );
      this.#onConnectFailed(err);
      return;
    }

    const reason = conn.failure ?? conn.error;
    const why = conn.failure
      ? conn.failure.message
      : conn.serverReason
        ? `the server closed it after ${conn.serverReason}`
        : conn.error
          ? conn.error.message
          : 'closed by the server';
    // Answers for these can no longer come.
    for (const req of [...this.#requests.values()]) {
      if (req.state === 'sent') {
        this.#settle(req);
        req.reject(
          conn.failure instanceof MegaProtocolError
            ? conn.failure
            : new MegaConnectionClosedError(
                `${req.what}: connection to ${this.#address} closed before the answer (${why}); its fate is unknown (resend with the same msgid)`,
                true,
                { cause: reason },
              ),
        );
      } else if (req.state === 'abandoned') {
        this.#settle(req);
      }
    }
    if (Date.now() - conn.readyAt >= STABLE_CONNECTION_MS || conn.answered) this.#attempts = 0;
    if (conn.failure) this.#emitError(conn.failure);
    // The server's own reason, when it gave one, says more than the socket error that followed it.
    const serverClosed =
      conn.serverCode !== undefined ? new MegaConnectionClosedError(why, true, { cause: conn.error, serverCode: conn.serverCode }) : undefined;
    this.emit('disconnect', conn.failure ?? serverClosed ?? conn.error);

    if (this.#state === 'closed') {
      // destroy() already settled everything
    } else if (this.#closing) {
      this.#rejectQueued((req) => new MegaClientDestroyedError(`${req.what}: the connection closed while the client was closing; not sent`));
      this.#finishClose();
    } else if (this.#reconnect) {
      this.#lastError = reason ?? serverClosed ?? new MegaConnectionClosedError(why, true);
      this.#scheduleReconnect();
    } else {
      this.#state = 'idle';
      this.#rejectQueued(
        (req) => new MegaConnectionClosedError(`${req.what}: connection to ${this.#address} closed (${why}) and reconnect is off; not sent`, false, { cause: reason }),
      );
    }
    this.#checkDrained();
  }

  #onConnectFailed(err: Error): void {
    if (this.#state === 'closed') return; // destroy() settled everything
    this.#lastError = err;
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const w of waiters) w.reject(err);
    if (!this.#closing) this.#emitError(err);
    if (this.#closing) {
      this.#rejectQueued((req) => new MegaClientDestroyedError(`${req.what}: the client was closed before the request could be sent (${err.message})`));
      this.#finishClose();
      return;
    }
    // Auth refusals are not retried: the same token would be refused again.
    if (this.#reconnect && !(err instanceof MegaAuthError) && (this.#everReady || this.#queued > 0)) {
      this.#scheduleReconnect();
    } else {
      this.#state = 'idle';
      this.#rejectQueued(() => err);
    }
  }

  #scheduleReconnect(): void {
    const { initialDelayMs, maxDelayMs } = this.#reconnect!;
    const base = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(this.#attempts, 30));
    this.#attempts++;
    // "Equal jitter": between half and all of the exponential delay, so clients do not reconnect in lockstep.
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    this.#state = 'backoff';
    this.#backoffTimer = setTimeout(() => {
      this.#backoffTimer = undefined;
      if (this.#state === 'backoff') this.#startConnect();
    }, delay);
  }

  #rejectQueued(errorFor: (req: Pending) => Error): void {
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      const req = this.#queue[i]!;
      if (req.state !== 'queued') continue;
      this.#settle(req);
      req.reject(errorFor(req));
    }
    this.#queue = [];
    this.#queueHead = 0;
  }

  #emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  // ------------------------------------------------------------------ closing

  #checkDrained(): void {
    if (this.#drained && this.#inFlight === 0 && this.#queued === 0) {
      const done = this.#drained;
      this.#drained = undefined;
      done();
    }
  }

  /**
   * Stops taking requests (new ones reject with MegaClientDestroyedError), lets the pending ones
   * be sent and answered for up to `timeoutMs`, then ends the connection. Requests still in
   * flight after that reject with MegaConnectionClosedError, unsent ones with
   * MegaClientDestroyedError. Idempotent.
   */
  close(options: MegaCloseOptions = {}): Promise<void> {
    if (this.#closePromise) return this.#closePromise;
    const timeoutMs = checkInt('options.timeoutMs', options?.timeoutMs, this.timeoutMs, 0, MAX_TIMER_MS);
    this.#closePromise = this.#close(timeoutMs);
    return this.#closePromise;
  }

  async #close(timeoutMs: number): Promise<void> {
    if (this.#state === 'closed') return;
    this.#closing = true;
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const w of waiters) w.reject(new MegaClientDestroyedError('the client was closed before it connected'));
    if (this.#state === 'backoff') {
      clearTimeout(this.#backoffTimer);
      this.#backoffTimer = undefined;
      // One more attempt for the requests already made; none after it.
      if (this.#queued > 0) this.#startConnect();
    }
    if (this.#state === 'idle' || this.#state === 'backoff') {
      this.#finishClose();
      return;
    }

    // connecting or ready: let what is pending be sent and answered, for up to timeoutMs.
    if (this.#inFlight > 0 || this.#queued > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
      this.#drained = undefined;
    }
    if (this.#isClosedNow()) return; // destroy(), or the connection closed meanwhile
    for (const req of [...this.#requests.values()]) {
      if (req.state === 'sent') {
        this.#settle(req);
        req.reject(
          new MegaConnectionClosedError(
            `${req.what}: the client was closed before the answer (waited ${timeoutMs} ms); its fate is unknown (resend with the same msgid)`,
            true,
          ),
        );
      }
    }
    this.#rejectQueued((req) => new MegaClientDestroyedError(`${req.what}: the client was closed before the request could be sent`));
    const conn = this.#conn;
    if (conn) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => conn.socket.destroy(), END_GRACE_MS);
        conn.socket.once('close', () => {
          clearTimeout(t);
          resolve();
        });
        if (conn.ready) conn.socket.end();
        else conn.socket.destroy();
      });
    }
    if (!this.#isClosedNow()) this.#finishClose();
  }

  /** Re-reads the state after an await (TypeScript keeps the narrowing from before it). */
  #isClosedNow(): boolean {
    return this.#state === 'closed';
  }

  #finishClose(): void {
    this.#state = 'closed';
    clearTimeout(this.#backoffTimer);
    this.#backoffTimer = undefined;
    this.#rejectQueued((req) => new MegaClientDestroyedError(`${req.what}: the client was closed before the request could be sent`));
    for (const req of [...this.#requests.values()]) {
      const state = req.state;
      this.#settle(req);
      if (state === 'sent') req.reject(new MegaConnectionClosedError(`${req.what}: the client was closed before the answer`, true));
    }
    const conn = this.#conn;
    this.#conn = undefined;
    conn?.socket.destroy();
    this.#drained?.();
  }

  /**
   * Closes at once: requests in flight reject with MegaConnectionClosedError, unsent ones with
   * MegaClientDestroyedError. Idempotent.
   */
  destroy(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    clearTimeout(this.#backoffTimer);
    this.#backoffTimer = undefined;
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const w of waiters) w.reject(new MegaClientDestroyedError('the client was destroyed before it connected'));
    for (const req of [...this.#requests.values()]) {
      const state = req.state;
      this.#settle(req);
      if (state === 'sent') {
        req.reject(new MegaConnectionClosedError(`${req.what}: the client was destroyed before the answer; its fate is unknown (resend with the same msgid)`, true));
      } else if (state === 'queued') {
        req.reject(new MegaClientDestroyedError(`${req.what}: the client was destroyed before the request could be sent`));
      }
    }
    this.#queue = [];
    this.#queueHead = 0;
    this.#closePromise ??= Promise.resolve();
    this.#drained?.();
    this.#conn?.socket.destroy();
  }
}

function toMegaResult(kind: Kind, result: Result): MegaResult {
  const message = result.message.toString('utf8');
  const out: MegaResult = { code: result.code, ok: result.code === ResultCode.OK, message };
  if (kind === 'send') {
    const wechat = parseWechat(message);
    if (wechat) out.wechat = wechat;
  }
  return out;
}

/** WeChat's JSON answer, when `message` is one (an object with a numeric errcode). */
export function parseWechat(message: string): MegaWechatAnswer | undefined {
  if (!message.startsWith('{')) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.errcode !== 'number') return undefined;
  const out: MegaWechatAnswer = { errcode: v.errcode, errmsg: typeof v.errmsg === 'string' ? v.errmsg : String(v.errmsg ?? '') };
  if (typeof v.msgid === 'number' || typeof v.msgid === 'string') out.msgid = v.msgid;
  if (typeof v.openid === 'string') out.openid = v.openid;
  return out;
}

function checkInt(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new MegaInvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got ${show(value)}`);
  }
  return value;
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (Buffer.isBuffer(value)) return 'a Buffer';
  if (typeof value === 'object') return 'an object';
  return String(value);
}
