/**
 * MegaClient's request table: every request from the call to its settlement. It allocates
 * opaques, keeps at most `window` requests in flight and the rest queued in call order, times
 * each one out, and matches answers to requests. It never touches a socket: the client takes
 * the frames it may write ({@link RequestTable.takeSendable}) and feeds it the answers.
 */

import type { Result } from '../protocol/index.js';
import { MegaClientTimeoutError, MegaInvalidArgumentError, MegaProtocolError, MegaRequestTooLargeError } from '../errors.js';
import { toMegaResult, type MegaResult, type RequestKind } from './result.js';

const U32_MAX = 0xffffffff;
/**
 * Requests that timed out keep their opaque reserved until their late answer arrives (so it is
 * recognised and dropped); past this many the connection is reset instead of growing forever.
 */
export const MAX_ABANDONED = 65_536;

interface Pending {
  readonly opaque: number;
  readonly kind: RequestKind;
  /** `push oUser key`, for messages. */
  readonly what: string;
  readonly frame: Buffer;
  readonly timeoutMs: number;
  /** abandoned: timed out after it was written; its answer may still come. */
  state: 'queued' | 'sent' | 'abandoned' | 'done';
  timer: NodeJS.Timeout | undefined;
  resolve(result: MegaResult): void;
  reject(err: Error): void;
}

/** What the table asks of its client. */
export interface RequestTableHooks {
  /** What a queued request is still waiting for when its time is up, and the last connection error if that is a connection. */
  waitingFor(): { what: string; lastError: Error | undefined };
  /** A request that timed out freed its window slot. */
  slotFreed(): void;
  /** Too many timed-out requests still hold their opaques: the connection should be reset with `err`. */
  tooManyAbandoned(err: MegaProtocolError): void;
}

export class RequestTable {
  /** Every reserved opaque: queued, in flight, or abandoned after a timeout. */
  readonly #requests = new Map<number, Pending>();
  /** Opaques held outside requests (the auth frame's). */
  readonly #reserved = new Set<number>();
  /** Requests waiting for a connection or a slot, oldest first; entries no longer queued are skipped. */
  #queue: Pending[] = [];
  #queueHead = 0;
  #queued = 0;
  #inFlight = 0;
  #abandoned = 0;
  #nextOpaque = 1;
  #drainWaiters: Array<() => void> = [];

  constructor(
    readonly window: number,
    private readonly hooks: RequestTableHooks,
  ) {}

  /** Requests written and not yet answered (at most `window`). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests waiting for a connection or a window slot. */
  get queued(): number {
    return this.#queued;
  }

  /** Nothing in flight or queued (timed-out requests whose answer may still come do not count). */
  get idle(): boolean {
    return this.#inFlight === 0 && this.#queued === 0;
  }

  /**
   * Queues a request; the promise settles with its answer or its error. `encode` gets the
   * request's opaque.
   * @throws BadRequestError from `encode`, or MegaRequestTooLargeError, before anything is reserved
   */
  add(kind: RequestKind, what: string, timeoutMs: number, maxFrameLength: number, encode: (opaque: number) => Buffer): Promise<MegaResult> {
    const opaque = this.#allocateOpaque();
    const frame = encode(opaque);
    if (frame.length > maxFrameLength) {
      throw new MegaRequestTooLargeError(
        `${what}: request frame of ${frame.length} bytes exceeds maxFrameLength ${maxFrameLength}`,
        frame.length,
        maxFrameLength,
      );
    }
    return new Promise<MegaResult>((resolve, reject) => {
      const req: Pending = { opaque, kind, what, frame, timeoutMs, state: 'queued', timer: undefined, resolve, reject };
      req.timer = setTimeout(() => this.#onTimeout(req), timeoutMs);
      this.#requests.set(opaque, req);
      this.#queue.push(req);
      this.#queued++;
    });
  }

  /** Moves queued requests into the window, oldest first, and returns their frames to write. */
  takeSendable(): Buffer[] {
    const frames: Buffer[] = [];
    while (this.#inFlight < this.window && this.#queueHead < this.#queue.length) {
      const req = this.#queue[this.#queueHead++]!;
      if (req.state !== 'queued') continue;
      this.#queued--;
      req.state = 'sent';
      this.#inFlight++;
      frames.push(req.frame);
    }
    this.#compactQueue();
    return frames;
  }

  /**
   * Settles the request `result` answers.
   * @returns what it was (`push oUser key`), `late` for one that had timed out, undefined when no request written on the connection has that opaque
   */
  answer(result: Result): { what: string } | 'late' | undefined {
    const req = this.#requests.get(result.opaque);
    if (req === undefined || req.state === 'queued') return undefined;
    const late = req.state === 'abandoned';
    this.#settle(req);
    if (!late) req.resolve(toMegaResult(req.kind, result));
    this.#checkDrained();
    return late ? 'late' : { what: req.what };
  }

  /** The connection is gone: requests written on it reject with `errorFor`, and late answers can no longer come. */
  failSent(errorFor: (what: string) => Error): void {
    for (const req of [...this.#requests.values()]) {
      if (req.state === 'sent') {
        this.#settle(req);
        req.reject(errorFor(req.what));
      } else if (req.state === 'abandoned') {
        this.#settle(req);
      }
    }
    this.#checkDrained();
  }

  /** Requests never written reject with `errorFor`. */
  failQueued(errorFor: (what: string) => Error): void {
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      const req = this.#queue[i]!;
      if (req.state !== 'queued') continue;
      this.#settle(req);
      req.reject(errorFor(req.what));
    }
    this.#queue = [];
    this.#queueHead = 0;
    this.#checkDrained();
  }

  /** Resolves once nothing is in flight or queued, or after `timeoutMs`. */
  async whenIdle(timeoutMs: number): Promise<void> {
    if (this.idle) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.#drainWaiters.push(resolve);
      timer = setTimeout(resolve, timeoutMs);
    });
    clearTimeout(timer);
  }

  /** An opaque for a frame that is not a request (auth), kept from requests until released. */
  reserveOpaque(): number {
    const opaque = this.#allocateOpaque();
    this.#reserved.add(opaque);
    return opaque;
  }

  releaseOpaque(opaque: number): void {
    this.#reserved.delete(opaque);
  }

  /** Sequential, wrapping at 2^32, never 0 (the daemon answers a frame it could not read with opaque 0), skipping reserved ones. */
  #allocateOpaque(): number {
    if (this.#requests.size + this.#reserved.size >= U32_MAX - 2) throw new MegaInvalidArgumentError('too many requests pending');
    for (;;) {
      const opaque = this.#nextOpaque;
      this.#nextOpaque = opaque === U32_MAX ? 1 : opaque + 1;
      if (!this.#requests.has(opaque) && !this.#reserved.has(opaque)) return opaque;
    }
  }

  #onTimeout(req: Pending): void {
    req.timer = undefined;
    if (req.state === 'queued') {
      const waiting = this.hooks.waitingFor();
      const last = waiting.lastError ? ` (last error: ${waiting.lastError.message})` : '';
      this.#settle(req);
      req.reject(
        new MegaClientTimeoutError(`${req.what}: no ${waiting.what} within ${req.timeoutMs} ms${last}; not sent`, req.timeoutMs, false, {
          cause: waiting.lastError,
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
      if (this.#abandoned > MAX_ABANDONED) {
        this.hooks.tooManyAbandoned(new MegaProtocolError(`more than ${MAX_ABANDONED} requests timed out without an answer; resetting the connection`));
        return;
      }
      this.hooks.slotFreed();
    }
    this.#checkDrained();
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

  #compactQueue(): void {
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  #checkDrained(): void {
    if (!this.idle || this.#drainWaiters.length === 0) return;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
