/**
 * One pause of dispatch for the whole service: the daemon that meets WeChat's daily quota (45009)
 * announces it under one key of the `state` bucket, every daemon watches that key and holds its
 * dispatch within milliseconds, and `end` on any daemon (a probe that went through, an operator's
 * resume) lifts it everywhere. One daemon sends the probes (`prober`).
 *
 * The watch is the fast path. The @nats-io/kv watcher is an ordered push consumer: it rides out a
 * restart of its server (the consumer is kept with the stream), but if the consumer itself is lost
 * (deleted, or on a cluster node that died) it goes silent without an error for a minute or more.
 * So the key is also read every `checkMs`: a revision the watch has not delivered is applied at
 * once, and if the watch still has not delivered it at the next check, the watch is started again.
 */

import { EventEmitter } from 'node:events';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import type { KV, KvEntry } from '@nats-io/kv';
import type { Logger } from 'pino';
import { backoffDelay } from '../backoff.js';
import type { ServiceMembers } from './members.js';

/** Why dispatch is on hold: the shape of the dispatcher's own pause state (src/dispatch/pause.ts), declared here for the layer rule. */
export interface PauseState {
  reason: 'quota' | 'token' | 'unreachable';
  /** ISO time the hold began */
  since: string;
  detail: string;
}

/** The pause as announced to the service. */
export type AnnouncedPause = PauseState & {
  /** The member id of the daemon that announced it. */
  by: string;
};

export interface SharedPauseOptions {
  /** The service's `state` bucket (openServiceBuckets). */
  kv: KV;
  /** The key of the pause in the bucket. @defaultValue 'pause' */
  key?: string;
  /** This daemon's member id (ServiceMembers `self.id`). */
  member: string;
  /** ms between two reads of the key that back up the watch. @defaultValue 5000 */
  checkMs?: number;
  logger?: Logger;
}

export interface SharedPauseEvents {
  /** The announced pause changed: the new one, or undefined once it ended. */
  change: [pause: AnnouncedPause | undefined];
}

type Watcher = Awaited<ReturnType<KV['watch']>>;

/** How long ready() waits for the watch once the key is read. */
const READY_WATCH_WAIT_MS = 5000;

const REASONS = new Set(['quota', 'token', 'unreachable']);

function parsePause(e: KvEntry): AnnouncedPause | undefined {
  try {
    const v = e.json<Partial<AnnouncedPause>>();
    if (typeof v !== 'object' || v === null || !REASONS.has(v.reason as string) || typeof v.since !== 'string' || typeof v.by !== 'string') return undefined;
    return { reason: v.reason!, since: v.since, detail: typeof v.detail === 'string' ? v.detail : '', by: v.by };
  } catch {
    return undefined;
  }
}

const samePause = (a: AnnouncedPause | undefined, b: AnnouncedPause | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.reason === b.reason && a.since === b.since && a.detail === b.detail && a.by === b.by);

const isWrongLastSequence = (err: unknown): boolean =>
  err instanceof JetStreamApiError &&
  (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);

export class SharedPause extends EventEmitter<SharedPauseEvents> {
  private readonly kv: KV;
  private readonly key: string;
  private readonly member: string;
  private readonly checkMs: number;
  private readonly logger: Logger | undefined;

  private pause: AnnouncedPause | undefined;
  /** Revision of the key's entry `pause` comes from; 0 before any. */
  private revision = 0;
  /** Highest revision the watch delivered. */
  private watchedRevision = 0;
  /** A revision a check found that the watch had not delivered: if it still has not at the next check, the watch is dead. */
  private missed = 0;
  private started = false;
  private closed = false;
  private watcher: Watcher | undefined;
  private watchGeneration = 0;
  private watchFailures = 0;
  private watchRetryTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private checkFailing = false;
  private watchingResolve!: () => void;
  /** Settles when the first watch is set up, or on close. */
  private readonly watching = new Promise<void>((resolve) => (this.watchingResolve = resolve));

  constructor(options: SharedPauseOptions) {
    super();
    this.kv = options.kv;
    this.key = options.key ?? 'pause';
    this.member = options.member;
    this.checkMs = options.checkMs ?? 5000;
    this.logger = options.logger;
    // Every daemon follows the pause from the moment it has one, not only the one that announces.
    this.open();
  }

  /** The pause announced to the service, as the watch last delivered it; undefined when dispatch runs. */
  get current(): AnnouncedPause | undefined {
    return this.pause === undefined ? undefined : { ...this.pause };
  }

  /**
   * Announces a pause of the whole service, by this member. If one is announced already, that
   * one stays (two daemons meeting 45009 at once leave one record) and `current` shows it.
   * Rejects if NATS cannot be reached.
   */
  async start(state: PauseState): Promise<void> {
    this.open();
    const announced: AnnouncedPause = { reason: state.reason, since: state.since, detail: state.detail, by: this.member };
    const value = JSON.stringify(announced);
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        // create() writes only if the key is absent or deleted (a write conditioned on the revision).
        const revision = await this.kv.create(this.key, value);
        this.apply(revision, announced);
        return;
      } catch (err) {
        if (!isWrongLastSequence(err)) throw this.failure('announce', err);
      }
      let existing: KvEntry | null;
      try {
        existing = await this.kv.get(this.key);
      } catch (err) {
        throw this.failure('announce', err);
      }
      if (existing?.operation === 'PUT') {
        this.applyEntry(existing);
        return;
      }
      // Ended between our write and our read: announce again.
    }
    throw new Error(`cannot announce the service's pause (key ${this.key}): it kept changing under us`);
  }

  /** Lifts the pause for the whole service (any daemon may). Rejects if NATS cannot be reached. */
  async end(): Promise<void> {
    this.open();
    try {
      await this.kv.delete(this.key);
    } catch (err) {
      throw this.failure('end', err);
    }
    // The delete does not tell its revision: read it, so `current` is right when end() resolves.
    try {
      const e = await this.kv.get(this.key);
      if (e) this.applyEntry(e);
    } catch (err) {
      this.logger?.warn({ err }, 'the service pause was ended; reading it back failed, the watch will tell');
    }
  }

  /**
   * Whether this daemon should send the probe of the pause: it announced it and is still a
   * member, or its announcer is no longer a member and this daemon leads the service.
   */
  prober(members: ServiceMembers): boolean {
    const p = this.pause;
    if (p === undefined) return false;
    if (p.by === this.member) return members.has(this.member);
    return !members.has(p.by) && members.leader() === this.member;
  }

  /**
   * Resolves once the key's current value is known and the watch is set up (or after 5 s if it
   * cannot be): a daemon starting up learns whether the service is paused before it dispatches.
   * Rejects if NATS cannot be reached.
   */
  async ready(): Promise<void> {
    if (this.closed) throw new Error('SharedPause is closed');
    let e: KvEntry | null;
    try {
      e = await this.kv.get(this.key);
    } catch (err) {
      throw this.failure('read', err);
    }
    if (e) this.applyEntry(e);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.watching, new Promise<void>((resolve) => (timer = setTimeout(resolve, READY_WATCH_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /** Stops watching (it began with the constructor). `current` keeps its last value. */
  close(): void {
    this.closed = true;
    this.watchGeneration++;
    this.watcher?.stop();
    this.watcher = undefined;
    clearTimeout(this.watchRetryTimer);
    clearInterval(this.checkTimer);
    this.watchingResolve();
  }

  private open(): void {
    if (this.closed) throw new Error('SharedPause is closed');
    if (this.started) return;
    this.started = true;
    void this.runWatch();
    this.checkTimer = setInterval(() => void this.check(), this.checkMs);
    this.checkTimer.unref();
  }

  private failure(what: 'announce' | 'end' | 'read', err: unknown): Error {
    return new Error(`cannot ${what} the service's pause (key ${this.key}): ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }

  private applyEntry(e: KvEntry): void {
    if (e.operation !== 'PUT') {
      this.apply(e.revision, undefined);
      return;
    }
    const p = parsePause(e);
    if (!p) {
      this.logger?.warn({ key: this.key, revision: e.revision }, 'ignoring a malformed service pause record');
      return;
    }
    this.apply(e.revision, p);
  }

  // Revisions only go forward: a late answer (a get, a replay) never undoes what is newer.
  private apply(revision: number, pause: AnnouncedPause | undefined): void {
    if (this.closed || revision <= this.revision) return;
    this.revision = revision;
    if (samePause(this.pause, pause)) return;
    this.pause = pause;
    if (pause) this.logger?.warn({ reason: pause.reason, since: pause.since, by: pause.by }, 'dispatch paused for the whole service');
    else this.logger?.info('the service pause ended');
    this.emit('change', this.current);
  }

  private async check(): Promise<void> {
    if (this.closed) return;
    let e: KvEntry | null;
    try {
      e = await this.kv.get(this.key);
    } catch (err) {
      if (!this.checkFailing) {
        this.checkFailing = true;
        this.logger?.warn({ err }, 'cannot read the service pause: keeping the last known one');
      }
      return;
    }
    if (this.checkFailing) {
      this.checkFailing = false;
      this.logger?.info('the service pause can be read again');
    }
    if (!e || this.closed) return;
    if (e.revision > this.watchedRevision) {
      if (this.missed !== 0 && this.missed <= e.revision && this.watchedRevision < this.missed) {
        this.logger?.warn({ revision: e.revision, watched: this.watchedRevision }, 'the service pause watch missed a change: watching again');
        this.missed = 0;
        this.restartWatch();
      } else {
        this.missed = e.revision;
      }
    } else {
      this.missed = 0;
    }
    this.applyEntry(e);
  }

  private restartWatch(): void {
    this.watchGeneration++;
    this.watcher?.stop();
    this.watcher = undefined;
    clearTimeout(this.watchRetryTimer);
    void this.runWatch();
  }

  private retryWatch(generation: number): void {
    if (this.closed || generation !== this.watchGeneration) return;
    const delay = backoffDelay(this.watchFailures++, { baseMs: 250, maxMs: 5000 });
    this.watchRetryTimer = setTimeout(() => void this.runWatch(), delay);
    this.watchRetryTimer.unref();
  }

  private async runWatch(): Promise<void> {
    const generation = ++this.watchGeneration;
    let iter: Watcher;
    try {
      iter = await this.kv.watch({ key: this.key });
    } catch (err) {
      if (this.watchFailures === 0 && !this.closed) this.logger?.warn({ err }, 'cannot watch the service pause: retrying');
      this.retryWatch(generation);
      return;
    }
    if (this.closed || generation !== this.watchGeneration) {
      iter.stop();
      return;
    }
    this.watcher = iter;
    this.watchFailures = 0;
    this.watchingResolve();
    try {
      for await (const e of iter) {
        if (generation !== this.watchGeneration) break;
        if (e.revision > this.watchedRevision) this.watchedRevision = e.revision;
        this.applyEntry(e);
      }
    } catch (err) {
      if (generation === this.watchGeneration && !this.closed) this.logger?.warn({ err }, 'the service pause watch failed');
    }
    if (this.closed || generation !== this.watchGeneration) return;
    this.logger?.warn('the service pause watch ended: watching again');
    this.watcher = undefined;
    this.retryWatch(generation);
  }
}
