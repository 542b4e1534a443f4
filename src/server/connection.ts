import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import {
  FrameDecoder,
  encodeResult,
  parseAuth,
  parseRequest,
  ResultCode,
  type Frame,
  type Request,
} from '../protocol/index.js';
import { BadRequestError, FrameTooLargeError, MegaError, UnknownCommandError } from '../errors.js';
import type { RequestMetrics } from '../metrics/index.js';
import { secretsMatch } from '../secret-compare.js';

/** What a connection needs from the daemon; kept narrow so the server can be tested alone. */
export interface RequestHandler {
  /** Validates and durably enqueues a push; resolves when it may be acknowledged. */
  push(request: Extract<Request, { kind: 'push' }>): Promise<void>;
  /**
   * Enqueues a send; `reply` is called once WeChat answered (or the job failed for good).
   * Returns a function that forgets the reply (the connection went away).
   */
  send(request: Extract<Request, { kind: 'send' }>, reply: (code: number, message: string) => void): Promise<() => void>;
  /** Loads or refreshes a template. */
  tset(key: string): Promise<{ code: number; message: string }>;
  /** The ledger's record of a message: 200 with its JSON, 404, or 503 when there is no ledger to ask. */
  query(msgid: string): Promise<{ code: number; message: string }>;
  /** False while shutting down: requests then get 503. */
  readonly accepting: boolean;
}

/** Maps an error to the result a client gets for it. */
export function resultFor(err: unknown): { code: number; message: string } {
  if (err instanceof MegaError) {
    switch (err.code) {
      case 'MEGA_ERR_BAD_REQUEST':
      case 'MEGA_ERR_TEMPLATE_NOT_FOUND':
      case 'MEGA_ERR_TABLE_FULL':
      case 'MEGA_ERR_INVALID_TEMPLATE':
      case 'MEGA_ERR_TEMPLATE_RENDER':
        return { code: ResultCode.BAD_REQUEST, message: err.message };
      case 'MEGA_ERR_QUEUE_WRITE':
      case 'MEGA_ERR_QUEUE_CLOSED':
        return { code: ResultCode.UNAVAILABLE, message: err.message };
      case 'MEGA_ERR_TEMPLATE_STORE':
        return { code: ResultCode.INTERNAL, message: 'template store unavailable' };
      default:
        break;
    }
  }
  return { code: ResultCode.INTERNAL, message: 'internal error' };
}

interface OrderedSlot {
  frame?: Buffer;
}

/** Per-connection limits and authentication, from `[server]`. */
export interface ConnectionOptions {
  /** `[setting] package_max_length` */
  maxFrameLength: number;
  /** `[server] auth_token`: when set, the first frame must be `auth <token>`. */
  authToken?: string;
  /** ms a connection with nothing pending may stay silent; 0 = no limit. */
  idleTimeoutMs: number;
  /** ms a started frame has to arrive completely. */
  frameTimeoutMs: number;
  /** Told of every answer: command, result code, seconds since the request was read. @defaultValue none */
  metrics?: RequestMetrics;
}


/**
 * One client connection. The decoder is fed whatever the socket delivers; Push, TSet and Query
 * results are written in request order (a slot is reserved when the request arrives and
 * filled when its answer is known), Send results as soon as WeChat answered.
 */
export class Connection {
  private readonly decoder: FrameDecoder;
  private readonly ordered: OrderedSlot[] = [];
  private readonly forgetReplies = new Set<() => void>();
  /** After a fatal protocol error: no more frames are read, the socket ends once results are out. */
  private closing = false;
  private closed = false;
  /** Set from the first write of an event-loop turn until the tick that flushes it. */
  private corked = false;
  private authenticated: boolean;
  /** Running while a frame has started but not fully arrived. */
  private frameTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly handler: RequestHandler,
    private readonly logger: Logger,
    private readonly options: ConnectionOptions,
  ) {
    this.decoder = new FrameDecoder({ maxLength: options.maxFrameLength });
    this.authenticated = !options.authToken;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.logger.debug({ err, remote: this.remote }, 'client socket error'));
    socket.on('close', () => this.onClose());
    // A client that sends but never reads: stop reading its requests until it has read our answers.
    socket.on('drain', () => {
      if (!this.closing) socket.resume();
    });
    if (options.idleTimeoutMs > 0) {
      socket.setTimeout(options.idleTimeoutMs);
      socket.on('timeout', () => {
        if (this.ordered.length === 0 && this.forgetReplies.size === 0 && this.decoder.bufferedBytes === 0) {
          this.logger.debug({ remote: this.remote }, 'closing idle client connection');
          socket.destroy();
        }
      });
    }
  }

  get remote(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.streamError(err);
      return;
    }
    for (const frame of frames) {
      if (this.closing) break;
      this.onFrame(frame);
    }
    // Bad bytes after the frames just handled: the stream is now unreadable.
    if (this.decoder.error !== undefined && !this.closing) return this.streamError(this.decoder.error);
    this.watchPartialFrame();
  }

  private streamError(err: unknown): void {
    if (err instanceof FrameTooLargeError) this.fatal(ResultCode.TOO_LARGE, err.message);
    else this.fatal(ResultCode.INTERNAL, err instanceof Error ? err.message : 'undecodable stream');
  }

  /** A frame that never completes would hold its bytes forever: give it `frame_timeout`. */
  private watchPartialFrame(): void {
    if (this.decoder.bufferedBytes === 0 || this.closing) {
      if (this.frameTimer) clearTimeout(this.frameTimer);
      this.frameTimer = undefined;
    } else if (!this.frameTimer) {
      this.frameTimer = setTimeout(() => {
        this.logger.warn({ remote: this.remote, bytes: this.decoder.bufferedBytes }, 'incomplete frame timed out; closing the connection');
        this.socket.destroy();
      }, this.options.frameTimeoutMs);
    }
  }

  /** `auth <token>`: the only frame an unauthenticated connection may send. */
  private onAuth(frame: Frame): void {
    let given = ''; // a malformed auth frame carries no token: refused like a wrong one
    try {
      given = parseAuth(frame).token;
    } catch (err) {
      if (!(err instanceof BadRequestError)) throw err;
    }
    if (!this.options.authToken || secretsMatch(this.options.authToken, given)) {
      this.authenticated = true;
      this.answerInOrder(frame.opaque, Promise.resolve({ code: ResultCode.OK, message: '' }), 'auth');
    } else {
      this.logger.warn({ remote: this.remote }, 'authentication failed');
      this.fatal(ResultCode.UNAUTHORIZED, 'authentication failed', frame.opaque, 'auth');
    }
  }

  private onFrame(frame: Frame): void {
    if (frame.header === 'auth' || frame.header.startsWith('auth ')) return this.onAuth(frame);
    if (!this.authenticated) {
      this.fatal(ResultCode.UNAUTHORIZED, 'authentication required: send auth <token> first', frame.opaque, 'invalid');
      return;
    }
    const started = performance.now();
    let request: Request;
    try {
      request = parseRequest(frame);
    } catch (err) {
      if (err instanceof UnknownCommandError) {
        this.fatal(ResultCode.INTERNAL, err.message, frame.opaque, 'invalid');
      } else if (err instanceof BadRequestError) {
        // the command is known (only its arguments are wrong): counted under it
        const command = frame.header.split(' ', 1)[0]!;
        this.answerInOrder(frame.opaque, Promise.resolve({ code: ResultCode.BAD_REQUEST, message: err.message }), command, started);
      } else {
        this.fatal(ResultCode.INTERNAL, 'undecodable frame', frame.opaque, 'invalid');
      }
      return;
    }
    if (!this.handler.accepting) {
      this.answerInOrder(request.opaque, Promise.resolve({ code: ResultCode.UNAVAILABLE, message: 'shutting down' }), request.kind, started);
      return;
    }
    switch (request.kind) {
      case 'push':
        this.answerInOrder(
          request.opaque,
          this.handler.push(request).then(() => ({ code: ResultCode.OK, message: '' })),
          'push',
          started,
        );
        break;
      case 'tset':
        this.answerInOrder(request.opaque, this.handler.tset(request.key), 'tset', started);
        break;
      case 'query':
        this.answerInOrder(request.opaque, this.handler.query(request.msgid), 'query', started);
        break;
      case 'send': {
        const opaque = request.opaque;
        let forget: (() => void) | undefined;
        this.handler
          .send(request, (code, message) => {
            if (forget) this.forgetReplies.delete(forget);
            this.options.metrics?.answered('send', code, (performance.now() - started) / 1000);
            this.write(encodeResult(opaque, code, message));
          })
          .then(
            (f) => {
              forget = f;
              if (this.closed) f();
              else this.forgetReplies.add(f);
            },
            (err: unknown) => {
              const { code, message } = resultFor(err);
              this.options.metrics?.answered('send', code, (performance.now() - started) / 1000);
              this.write(encodeResult(opaque, code, message));
            },
          );
        break;
      }
    }
  }

  private answerInOrder(opaque: number, answer: Promise<{ code: number; message: string }>, command: string, started = performance.now()): void {
    const slot: OrderedSlot = {};
    this.ordered.push(slot);
    answer
      .catch((err: unknown) => {
        const result = resultFor(err);
        if (err instanceof MegaError && err.code === 'MEGA_ERR_TEMPLATE_STORE') {
          // expected while the database is down: one line, no stack
          this.logger.warn({ remote: this.remote, reason: err.message }, 'template store unavailable');
        } else if (result.code === ResultCode.INTERNAL) {
          this.logger.error({ err, remote: this.remote }, 'request failed');
        }
        return result;
      })
      .then(({ code, message }) => {
        this.options.metrics?.answered(command, code, (performance.now() - started) / 1000);
        slot.frame = encodeResult(opaque, code, message);
        this.flushOrdered();
      });
  }

  private flushOrdered(): void {
    while (this.ordered.length > 0 && this.ordered[0]!.frame) {
      this.write(this.ordered.shift()!.frame!);
    }
    if (this.closing && this.ordered.length === 0) this.socket.end();
  }

  /** A result the client must see, then the connection is closed (413, 500). */
  private fatal(code: number, message: string, opaque = 0, command = 'invalid'): void {
    this.options.metrics?.answered(command, code, 0);
    this.logger.warn({ remote: this.remote, code, reason: message }, 'closing client connection after a protocol error');
    this.closing = true;
    this.ordered.push({ frame: encodeResult(opaque, code, message) });
    this.flushOrdered();
  }

  /**
   * Answers resolved in the same event-loop turn (a group commit settles hundreds of Pushes at
   * once) leave in one writev: the socket is corked on the turn's first write and uncorked on
   * the next tick. One write(2) per answer was the main thread's largest cost under load.
   */
  private write(frame: Buffer): void {
    if (this.closed || this.socket.destroyed || !this.socket.writable) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    if (!this.socket.write(frame)) this.socket.pause();
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  private onClose(): void {
    this.closed = true;
    if (this.frameTimer) clearTimeout(this.frameTimer);
    for (const forget of this.forgetReplies) forget();
    this.forgetReplies.clear();
  }

  /** Ends the connection once every ordered answer is written (shutdown). */
  end(): void {
    this.closing = true;
    this.flushOrdered();
  }

  destroy(): void {
    this.socket.destroy();
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }
}
