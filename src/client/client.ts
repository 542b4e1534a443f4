/**
 * MegaClient: the Node.js client of the Mega-WeChat protocol (docs/PROTOCOL.md) for backend services.
 *
 * One TCP (or TLS) connection, many requests pipelined on it and correlated by opaque, at most
 * `window` of them in flight. As undici splits its Client, this file is the state machine and
 * its one teardown; the rest lives beside it:
 * - options.ts: the options, their defaults and their checks;
 * - connection.ts: the socket, TLS, the frame decoder and the auth handshake;
 * - requests.ts: the request table (opaques, the window, timeouts, matching answers);
 * - endings.ts: what destroy, close, a lost connection and a failed attempt reject requests
 *   with; backoff.ts: the reconnection delays;
 * - result.ts: results, events; errors.ts: the error codes.
 */

import { EventEmitter } from 'node:events';
import { MegaAuthError, MegaClientDestroyedError, MegaQueryError } from '../errors.js';
import { encodePush, encodeQuery, encodeSend, encodeTset, ResultCode, type MessageRecord, type Result } from '../protocol/index.js';
import { ReconnectTimer } from './backoff.js';
import { Connection, formatAddress, type ConnectionEnd } from './connection.js';
import { attemptFailed, closed, closedBeforeConnected, connectionLost, destroyed, leftUnsentByClose, type Ending } from './endings.js';
import {
  checkKeyType,
  checkMessageArgs,
  checkMsgidType,
  dataChecked,
  closeTimeout,
  requestTimeout,
  resolveOptions,
  type MegaClientOptions,
  type MegaCloseOptions,
  type MegaQueryOptions,
  type MegaRequestOptions,
  type MegaTsetOptions,
  type ResolvedOptions,
} from './options.js';
import { RequestTable } from './requests.js';
import { parseMessageRecord, type MegaClientEvents, type MegaResult, type RequestKind } from './result.js';

export type {
  MegaClientOptions,
  MegaCloseOptions,
  MegaQueryOptions,
  MegaReconnectOptions,
  MegaRequestOptions,
  MegaTsetOptions,
} from './options.js';
export type { MegaClientEvents, MegaResult, MegaWechatAnswer } from './result.js';
export { parseMessageRecord, parseWechat } from './result.js';

/** close(): how long to wait for the server's FIN after ending the connection. */
const END_GRACE_MS = 1000;

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
 * Results resolve whatever their code; errors reject (their codes are {@link MegaClientErrorCode}):
 * {@link MegaClientTimeoutError}, {@link MegaConnectionClosedError}, {@link MegaProtocolError},
 * {@link MegaConnectError}, {@link MegaAuthError}, {@link MegaClientDestroyedError}, and
 * BadRequestError (MegaRequestTooLargeError among them) / {@link MegaInvalidArgumentError} for
 * arguments refused before sending.
 */
export class MegaClient extends EventEmitter<MegaClientEvents> {
  readonly host: string;
  readonly port: number;
  readonly window: number;
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly maxFrameLength: number;
  readonly #options: ResolvedOptions;
  readonly #address: string;
  readonly #table: RequestTable;

  #state: State = 'idle';
  #conn: Connection | undefined;
  #everReady = false;
  /** undefined: `reconnect: false`. */
  readonly #reconnect: ReconnectTimer | undefined;
  #lastError: Error | undefined;
  #connectWaiters: Array<{ resolve(): void; reject(err: Error): void }> = [];
  #closePromise: Promise<void> | undefined;
  /** close() was called: no new requests, no reconnection. */
  #closing = false;

  constructor(options: MegaClientOptions) {
    super();
    const o = resolveOptions(options);
    this.#options = o;
    this.host = o.host;
    this.port = o.port;
    this.window = o.window;
    this.timeoutMs = o.timeoutMs;
    this.connectTimeoutMs = o.connectTimeoutMs;
    this.maxFrameLength = o.maxFrameLength;
    this.#address = formatAddress(o.host, o.port);
    this.#reconnect = o.reconnect && new ReconnectTimer(o.reconnect);
    this.#table = new RequestTable(o.window, {
      waitingFor: () =>
        this.#state === 'ready'
          ? { what: 'window slot', lastError: undefined }
          : { what: `connection to ${this.#address}`, lastError: this.#lastError },
      slotFreed: () => this.#pump(),
      tooManyAbandoned: (err) => this.#conn?.fail(err),
    });
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
    return this.#table.inFlight;
  }

  /** Requests waiting for a connection or a window slot. */
  get queued(): number {
    return this.#table.queued;
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
    const timeoutMs = requestTimeout(options, this.timeoutMs, 'tset');
    checkKeyType(key);
    return this.#enqueue('tset', `tset ${key}`, timeoutMs, (opaque) => encodeTset(opaque, key));
  }

  /**
   * Query: the daemon's ledger record of the message with this msgid (the client's `msgid`, or
   * the id the daemon assigned), or undefined when the ledger has none (404). Any other answer
   * rejects with {@link MegaQueryError}: 503 `ledger disabled` (`[ledger] enabled = 0`),
   * `ledger unavailable` or `shutting down`, or a 200 that is not a record; connection errors
   * reject as for every request.
   */
  async query(msgid: string, options?: MegaQueryOptions): Promise<MessageRecord | undefined> {
    const timeoutMs = requestTimeout(options, this.timeoutMs, 'query');
    checkMsgidType(msgid);
    const what = `query ${msgid}`;
    const result = await this.#enqueue('query', what, timeoutMs, (opaque) => encodeQuery(opaque, msgid));
    if (result.code === ResultCode.NOT_FOUND) return undefined;
    if (result.code !== ResultCode.OK) {
      throw new MegaQueryError(`${what}: result ${result.code}${result.message ? ` ${result.message}` : ''}`, result.code);
    }
    const record = parseMessageRecord(result.message);
    if (!record) throw new MegaQueryError(`${what}: result 200 is not a message record`, result.code);
    return record;
  }

  async #message(
    kind: 'push' | 'send',
    openid: string,
    key: string,
    data: Record<string, unknown> | null | undefined,
    options: MegaRequestOptions | undefined,
  ): Promise<MegaResult> {
    const timeoutMs = requestTimeout(options, this.timeoutMs, kind);
    const msgid = options?.msgid;
    checkMessageArgs(openid, key, data, msgid);
    const encode = kind === 'push' ? encodePush : encodeSend;
    return this.#enqueue(kind, `${kind} ${openid} ${key}`, timeoutMs, (opaque) => dataChecked(() => encode(opaque, openid, key, data ?? null, msgid)));
  }

  #enqueue(kind: RequestKind, what: string, timeoutMs: number, encode: (opaque: number) => Buffer): Promise<MegaResult> {
    if (this.closed) return Promise.reject(new MegaClientDestroyedError(`${what}: the client is closed`));
    const answer = this.#table.add(kind, what, timeoutMs, this.maxFrameLength, encode);
    if (this.#state === 'idle') this.#startConnect();
    else this.#pump();
    return answer;
  }

  /** Writes queued requests while a connection is ready and the window has room. */
  #pump(): void {
    const conn = this.#conn;
    if (!conn?.ready || this.#state !== 'ready' || this.#table.queued === 0 || this.#table.inFlight >= this.window) return;
    const frames = this.#table.takeSendable();
    if (frames.length > 0) conn.write(frames);
  }

  // ------------------------------------------------------------------ connection

  #startConnect(): void {
    this.#reconnect?.cancel();
    this.#state = 'connecting';
    const conn: Connection = new Connection(this.#options, this.#table, {
      ready: () => this.#onReady(conn),
      result: (result) => this.#onResult(conn, result),
      end: (end) => this.#onEnd(conn, end),
    });
    this.#conn = conn;
  }

  #onReady(conn: Connection): void {
    if (this.#conn !== conn || this.#state === 'closed') return;
    this.#lastError = undefined;
    this.#everReady = true;
    this.#state = 'ready';
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const w of waiters) w.resolve();
    this.emit('connect');
    this.#pump();
  }

  #onResult(conn: Connection, result: Result): ReturnType<RequestTable['answer']> {
    if (this.#conn !== conn) return 'late'; // a connection let go of: nothing to match, nothing to report
    const answered = this.#table.answer(result);
    if (answered !== undefined && answered !== 'late') this.#pump();
    return answered;
  }

  #onEnd(conn: Connection, end: ConnectionEnd): void {
    if (this.#conn !== conn) return;
    this.#conn = undefined;
    const reconnect = this.#reconnect !== undefined;
    if (!end.ready) {
      if (this.#state === 'closed') return; // destroy() settled everything
      const err = end.error;
      this.#teardown({
        ...attemptFailed(err),
        final: false,
        announce: () => {
          if (!this.#closing) this.#emitError(err);
        },
        // Auth refusals are not retried: the same token would be refused again.
        retry: () => reconnect && !(err instanceof MegaAuthError) && (this.#everReady || this.#table.queued > 0),
      });
      return;
    }
    if (end.stable) this.#reconnect?.reset();
    this.#teardown({
      ...connectionLost(this.#address, end),
      final: false,
      announce: () => {
        if (end.failure) this.#emitError(end.failure);
        this.emit('disconnect', end.failure ?? end.serverClosed ?? end.reason);
      },
      retry: () => reconnect,
    });
  }

  #rejectWaiters(err: Error): void {
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  #emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  // ------------------------------------------------------------------ teardown

  /**
   * The one way requests, connect() callers and the connection are let go of: by destroy(),
   * close(), a lost connection and a failed connection attempt alike. In order: connect()
   * callers and the requests written reject; listeners are told; then the client finishes
   * (when closing), tries again with what is still queued, or goes idle and rejects it.
   * Resolves once the connection closed (close() waits for it).
   */
  #teardown(e: Ending): Promise<void> {
    if (e.final) this.#state = 'closed';
    this.#rejectWaiters(e.waiters);
    this.#table.failSent(e.sent);
    e.announce?.();
    if (!e.final && this.#state === 'closed') return Promise.resolve(); // destroy() came first, or from a listener

    if (e.final || this.#closing) {
      this.#state = 'closed';
      this.#reconnect?.cancel();
      this.#table.failQueued(e.final ? e.unsent : leftUnsentByClose(e.cause));
      const conn = this.#conn;
      if (!conn) return Promise.resolve();
      conn.mute();
      if (e.graceful) return conn.end(END_GRACE_MS);
      conn.destroy();
      return Promise.resolve();
    }
    if (e.cause) this.#lastError = e.cause;
    if (this.#reconnect && e.retry?.()) {
      this.#state = 'backoff';
      this.#reconnect.schedule(() => {
        if (this.#state === 'backoff') this.#startConnect();
      });
    } else {
      this.#state = 'idle';
      this.#table.failQueued(e.unsent);
    }
    return Promise.resolve();
  }

  /**
   * Stops taking requests (new ones reject with MegaClientDestroyedError), lets the pending ones
   * be sent and answered for up to `timeoutMs`, then ends the connection. Requests still in
   * flight after that reject with MegaConnectionClosedError, unsent ones with
   * MegaClientDestroyedError. Idempotent.
   */
  close(options: MegaCloseOptions = {}): Promise<void> {
    if (this.#closePromise) return this.#closePromise;
    const timeoutMs = closeTimeout(options, this.timeoutMs);
    this.#closePromise = this.#close(timeoutMs);
    return this.#closePromise;
  }

  async #close(timeoutMs: number): Promise<void> {
    if (this.#state === 'closed') return;
    this.#closing = true;
    this.#rejectWaiters(closedBeforeConnected());
    if (this.#state === 'backoff') {
      this.#reconnect?.cancel();
      // One more attempt for the requests already made; none after it.
      if (this.#table.queued > 0) this.#startConnect();
    }
    // connecting or ready: let what is pending be sent and answered, for up to timeoutMs.
    if (this.#state === 'connecting' || this.#state === 'ready') await this.#table.whenIdle(timeoutMs);
    // Re-read after the await (TypeScript keeps its narrowing from before it).
    if ((this.#state as State) === 'closed') return; // destroy(), or the connection ended meanwhile
    await this.#teardown({ ...closed(timeoutMs), final: true, graceful: true });
  }

  /**
   * Closes at once: requests in flight reject with MegaConnectionClosedError, unsent ones with
   * MegaClientDestroyedError. Idempotent.
   */
  destroy(): void {
    if (this.#state === 'closed') {
      this.#conn?.destroy(); // close() may still be waiting for the server's FIN: not any longer
      return;
    }
    this.#closePromise ??= Promise.resolve();
    void this.#teardown({ ...destroyed(), final: true });
  }
}
