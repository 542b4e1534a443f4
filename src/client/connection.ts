/**
 * One connection of a MegaClient: the TCP or TLS socket, the frame decoder, the auth handshake
 * and the connect timeout. It reports three things to its client, each at most once except
 * results: it became ready, a result arrived, it ended (with why, in words a request's error
 * can carry). What happens to requests when it ends is the client's business.
 */

import net from 'node:net';
import tls from 'node:tls';
import { FrameDecoder, ResultCode, encodeAuth, parseResult, type Frame, type Result } from '../protocol/index.js';
import { MegaAuthError, MegaConnectError, MegaConnectionClosedError, MegaProtocolError } from '../errors.js';
import type { ResolvedOptions } from './options.js';

/** A connection that lived this long (or got an answer) resets the reconnect backoff. */
const STABLE_CONNECTION_MS = 1000;

/** How a connection ended. */
export type ConnectionEnd =
  /** It never became ready: MegaConnectError, MegaAuthError, or a failure of our own (protocol, connect timeout). */
  | { ready: false; error: Error }
  | {
      ready: true;
      /** Why we dropped it, when we did (MegaProtocolError...). */
      failure: Error | undefined;
      /** `failure`, else the last socket error. */
      reason: Error | undefined;
      /** The reason in words, for the errors of the requests it takes along. */
      why: string;
      /** When the server gave its reason as a result (413, 500) before closing. */
      serverClosed: MegaConnectionClosedError | undefined;
      /** It lived long enough, or answered something: the reconnect backoff starts over. */
      stable: boolean;
    };

export interface ConnectionHandlers {
  /** Connected, TLS done, auth accepted: requests may be written. */
  ready(): void;
  /**
   * A result on a ready connection, for the request table: what it answered (`push oUser key`),
   * `late` for a request that had timed out, undefined when no request written has its opaque.
   */
  result(result: Result): { what: string } | 'late' | undefined;
  /** The socket closed. Called once, whatever the reason. */
  end(end: ConnectionEnd): void;
}

/** Opaques for the auth frame, shared with the requests so that they never collide. */
export interface OpaqueSource {
  reserveOpaque(): number;
  releaseOpaque(opaque: number): void;
}

export type ConnectionSettings = Pick<ResolvedOptions, 'host' | 'port' | 'tls' | 'authToken' | 'connectTimeoutMs' | 'maxFrameLength'>;

/** `host:port`, with brackets around an IPv6 address. */
export function formatAddress(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

export class Connection {
  readonly address: string;
  readonly #socket: net.Socket;
  readonly #decoder: FrameDecoder;
  readonly #opaques: OpaqueSource;
  readonly #handlers: ConnectionHandlers;
  /** Opaque of the auth frame while its answer is awaited. */
  #authOpaque: number | undefined;
  #ready = false;
  #readyAt = 0;
  #answered = false;
  #closed = false;
  /** The client let go of it: what still arrives is not read. */
  #muted = false;
  /** Why the connection is going away, when we know better than the socket. */
  #failure: Error | undefined;
  /** Last socket error. */
  #error: Error | undefined;
  /** A 413/500 result: the server's reason for closing, as text and as its code. */
  #serverReason: string | undefined;
  #serverCode: number | undefined;
  #connectTimer: NodeJS.Timeout | undefined;

  constructor(settings: ConnectionSettings, opaques: OpaqueSource, handlers: ConnectionHandlers) {
    const { host, port, connectTimeoutMs } = settings;
    this.address = formatAddress(host, port);
    this.#opaques = opaques;
    this.#handlers = handlers;
    this.#decoder = new FrameDecoder({ maxLength: settings.maxFrameLength });
    const socket = settings.tls
      ? tls.connect({ ...settings.tls, host, port, socket: undefined })
      : net.connect({ host, port });
    this.#socket = socket;
    this.#connectTimer = setTimeout(() => {
      this.#connectTimer = undefined;
      const stage = this.#authOpaque !== undefined ? 'no answer to the auth frame' : 'no connection';
      this.fail(new MegaConnectError(`${this.address}: ${stage} within ${connectTimeoutMs} ms (connectTimeoutMs)`));
    }, connectTimeoutMs);

    socket.on(settings.tls ? 'secureConnect' : 'connect', () => this.#onConnect(settings.authToken));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => {
      this.#error = err;
    });
    socket.on('close', () => this.#onClose());
  }

  get ready(): boolean {
    return this.#ready;
  }

  /** Writes frames in one go (one TCP segment when they fit). */
  write(frames: readonly Buffer[]): void {
    this.#socket.cork();
    for (const frame of frames) this.#socket.write(frame);
    this.#socket.uncork();
  }

  /** Drops the connection for a reason of our own; the first reason given is the one reported. */
  fail(err: Error): void {
    if (this.#failure) return;
    this.#failure = err;
    this.#socket.destroy();
  }

  /** Nothing more is read from it: the client no longer has anything pending on it. */
  mute(): void {
    this.#muted = true;
  }

  destroy(): void {
    this.#socket.destroy();
  }

  /** Ends a ready connection politely (FIN, then the server's) and resolves once it closed; destroys it after `graceMs`. */
  end(graceMs: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#socket.destroy(), graceMs);
      this.#socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (this.#ready) this.#socket.end();
      else this.#socket.destroy();
    });
  }

  #onConnect(authToken: string | undefined): void {
    if (this.#muted) return;
    this.#socket.setNoDelay(true);
    this.#socket.setKeepAlive(true, 30_000);
    if (authToken === undefined) {
      this.#becomeReady();
      return;
    }
    this.#authOpaque = this.#opaques.reserveOpaque();
    this.#socket.write(encodeAuth(this.#authOpaque, authToken));
  }

  #becomeReady(): void {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#releaseAuthOpaque();
    this.#ready = true;
    this.#readyAt = Date.now();
    this.#handlers.ready();
  }

  #onData(chunk: Buffer): void {
    if (this.#muted || this.#failure) return;
    let frames: Frame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.fail(new MegaProtocolError(`${this.address} sent an undecodable stream: ${(err as Error).message}`, { cause: err }));
      return;
    }
    for (const frame of frames) {
      if (this.#muted || this.#failure) return;
      let result: Result;
      try {
        result = parseResult(frame);
      } catch (err) {
        this.fail(new MegaProtocolError(`${this.address} sent a frame that is not a result: ${(err as Error).message}`, { cause: err }));
        return;
      }
      this.#onResult(result);
    }
  }

  #onResult(result: Result): void {
    if (this.#ready) {
      this.#answered = true;
      this.#onAnswer(result);
      return;
    }
    if (this.#authOpaque === undefined || result.opaque !== this.#authOpaque) {
      this.fail(new MegaProtocolError(`${this.address} sent result ${result.code} for opaque ${result.opaque} before the connection was ready`));
    } else if (result.code === ResultCode.OK) {
      this.#becomeReady();
    } else {
      const text = result.message.toString('utf8');
      this.fail(new MegaAuthError(`${this.address} refused the auth token: result ${result.code}${text ? ` ${text}` : ''}`, result.code));
    }
  }

  #onAnswer(result: Result): void {
    const answered = this.#handlers.result(result);
    if (answered === 'late') return;
    // After a 413 or 500 the daemon closes the connection: that is the reason to report then.
    const closes = result.code === ResultCode.TOO_LARGE || result.code === ResultCode.INTERNAL;
    if (answered === undefined && !(closes && result.opaque === 0)) {
      this.fail(new MegaProtocolError(`${this.address} sent result ${result.code} for opaque ${result.opaque}, which is not pending`));
      return;
    }
    if (!closes) return;
    const text = result.message.toString('utf8');
    const reason = `result ${result.code}${text ? ` ${text}` : ''}`;
    if (answered === undefined) {
      this.#serverReason = reason; // opaque 0: a frame it could not read
    } else if (this.#serverReason === undefined) {
      this.#serverReason = `${reason} to ${answered.what}`;
    } else {
      return; // the first reason stands
    }
    this.#serverCode = result.code;
  }

  #releaseAuthOpaque(): void {
    if (this.#authOpaque === undefined) return;
    this.#opaques.releaseOpaque(this.#authOpaque);
    this.#authOpaque = undefined;
  }

  #onClose(): void {
    this.#closed = true;
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#releaseAuthOpaque();
    this.#handlers.end(this.#summary());
  }

  #summary(): ConnectionEnd {
    const failure = this.#failure;
    const error = this.#error;
    if (!this.#ready) {
      const why = error ? error.message : (this.#serverReason ?? 'connection closed during connect');
      return { ready: false, error: failure ?? new MegaConnectError(`cannot connect to ${this.address}: ${why}`, { cause: error }) };
    }
    const why = failure
      ? failure.message
      : this.#serverReason
        ? `the server closed it after ${this.#serverReason}`
        : error
          ? error.message
          : 'closed by the server';
    // The server's own reason, when it gave one, says more than the socket error that followed it.
    const serverClosed =
      this.#serverCode !== undefined ? new MegaConnectionClosedError(why, true, { cause: error, serverCode: this.#serverCode }) : undefined;
    const stable = this.#answered || Date.now() - this.#readyAt >= STABLE_CONNECTION_MS;
    return { ready: true, failure, reason: failure ?? error, why, serverClosed, stable };
  }
}
