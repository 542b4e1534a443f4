/**
 * This daemon's membership in its service: one entry per live daemon in the `members` bucket
 * (buckets.ts), rewritten every heartbeat, and a watch of every entry, so each daemon knows which
 * of its peers are live and which one of them leads a job only one should do (probing).
 *
 * Liveness is judged here, not by the server alone: nats-server 2.9 drops an entry through the
 * bucket's max age without telling any watcher. Each peer's entry is live until `expireMs` after
 * this process last saw it change (its own clock, so skew between the daemons does not matter);
 * an entry this process only sees replayed (at start, after a watch restart) counts from the
 * server's `created` time instead, converted to this process's clock by the offset measured on
 * our own entries.
 */

import { EventEmitter } from 'node:events';
import type { KV, KvEntry, KvWatchEntry } from '@nats-io/kv';
import type { Logger } from 'pino';
import { backoffDelay } from '../backoff.js';

/** What a daemon says about itself: fixed for its run. */
export interface MemberIdentity {
  /** Unique per daemon run (a restarted daemon is a new member); a valid KV key: letters, digits, `-`, `_`, `=`, `/`, `.`. */
  id: string;
  host: string;
  pid: number;
  /** Where its TCP endpoint can be reached (`host:port`). */
  addresses: string[];
  /** ms since the epoch */
  startedAt: number;
}

/** A live member as this daemon sees it. */
export interface Member extends MemberIdentity {
  /** Messages per second it sent, as of its last heartbeat. */
  sendRate: number;
  /** When this process last saw its entry change (ms since the epoch, this process's clock). */
  seenAt: number;
}

export interface ServiceMembersOptions {
  /** The service's `members` bucket (openServiceBuckets). */
  kv: KV;
  self: MemberIdentity;
  /** ms between two heartbeats (rewrites of this daemon's entry). @defaultValue 1000 */
  heartbeatMs?: number;
  /**
   * ms after which a member whose entry did not change is gone. Keep it at the bucket's max age
   * (`memberTtlMs`) and several heartbeats long. @defaultValue 5000
   */
  expireMs?: number;
  /** The changing part of each heartbeat. @defaultValue `() => ({ sendRate: 0 })` */
  info?: () => { sendRate: number };
  logger?: Logger;
}

export interface ServiceMembersEvents {
  /** Members joined or left (not on a mere heartbeat): the live members now, sorted by id. */
  change: [members: Member[]];
}

/** What a heartbeat writes. `at` is the writer's clock: for people reading the bucket, never for liveness. */
interface HeartbeatValue extends MemberIdentity {
  sendRate: number;
  at: number;
}

type Watcher = Awaited<ReturnType<KV['watch']>>;

interface Seen {
  member: Member;
  /** Local time after which it is gone. */
  deadline: number;
}

const KEY = /^[-/_=.a-zA-Z0-9]+$/;

/** How long start() waits for its own entry to come back through the watch (the replay is then complete). */
const START_ECHO_WAIT_MS = 5000;

function parseHeartbeat(e: KvEntry): HeartbeatValue | undefined {
  try {
    const v = e.json<Partial<HeartbeatValue>>();
    if (
      typeof v !== 'object' ||
      v === null ||
      v.id !== e.key ||
      typeof v.host !== 'string' ||
      typeof v.pid !== 'number' ||
      !Array.isArray(v.addresses) ||
      typeof v.startedAt !== 'number'
    ) {
      return undefined;
    }
    return {
      id: v.id,
      host: v.host,
      pid: v.pid,
      addresses: v.addresses.filter((a): a is string => typeof a === 'string'),
      startedAt: v.startedAt,
      sendRate: typeof v.sendRate === 'number' ? v.sendRate : 0,
      at: typeof v.at === 'number' ? v.at : 0,
    };
  } catch {
    return undefined;
  }
}

export class ServiceMembers extends EventEmitter<ServiceMembersEvents> {
  private readonly kv: KV;
  private readonly self: MemberIdentity;
  private readonly heartbeatMs: number;
  private readonly expireMs: number;
  private readonly info: () => { sendRate: number };
  private readonly logger: Logger | undefined;
  /** Our own entry not back through the watch for this long: we cannot see the bucket, so we judge no one. */
  private readonly blindAfterMs: number;
  /** Heartbeats land but our own entry does not come back for this long: the watch is dead, start another. */
  private readonly watchStaleMs: number;

  private readonly seen = new Map<string, Seen>();
  private started = false;
  private closed = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private watcher: Watcher | undefined;
  private watchGeneration = 0;
  private watchStartedAt = 0;
  private watchFailures = 0;
  private watchRetryTimer: NodeJS.Timeout | undefined;
  /** Local time our own entry last came back through the watch. */
  private lastEchoAt = 0;
  private echoWaiter: (() => void) | undefined;
  /** This clock minus the server's (entries' `created`), measured on our own entries. */
  private offsetMs = 0;
  private heartbeatFailing = false;
  private blind = false;
  private lastMembership = '';

  constructor(options: ServiceMembersOptions) {
    super();
    if (!KEY.test(options.self.id) || options.self.id.startsWith('.') || options.self.id.endsWith('.')) {
      throw new Error(`member id ${JSON.stringify(options.self.id)} is not a valid key: use letters, digits, '-', '_', '=', '/', '.'`);
    }
    this.kv = options.kv;
    this.self = { ...options.self, addresses: [...options.self.addresses] };
    this.heartbeatMs = options.heartbeatMs ?? 1000;
    this.expireMs = options.expireMs ?? 5000;
    if (!(this.heartbeatMs > 0) || !(this.expireMs > this.heartbeatMs)) {
      throw new Error(`expireMs (${this.expireMs}) must be longer than heartbeatMs (${this.heartbeatMs}), both above 0`);
    }
    this.info = options.info ?? (() => ({ sendRate: 0 }));
    this.logger = options.logger;
    this.blindAfterMs = 2 * this.heartbeatMs + 250;
    this.watchStaleMs = Math.max(3 * this.heartbeatMs, 1500);
  }

  /** This daemon's id. */
  get id(): string {
    return this.self.id;
  }

  /**
   * Writes this daemon's entry, starts the watch and the heartbeats. Resolves once our own entry
   * came back through the watch (every entry there before it is known then), or after 5 s.
   * Rejects if the first write fails (NATS unreachable).
   */
  async start(): Promise<void> {
    if (this.started) throw new Error('ServiceMembers already started');
    this.started = true;
    const before = Date.now();
    try {
      await this.kv.put(this.self.id, this.encode());
      const own = await this.kv.get(this.self.id);
      // The request's round trip bounds the skew; the midpoint errs by half of it at most.
      if (own) this.offsetMs = Math.round((before + Date.now()) / 2) - own.created.getTime();
    } catch (err) {
      this.started = false;
      throw new Error(`cannot join the service's members as ${this.self.id}: ${(err as Error).message}`, { cause: err });
    }
    if (this.closed) {
      // close() came during the write, perhaps before it landed: the entry must not outlive us.
      await this.kv.delete(this.self.id).catch(() => undefined);
      return;
    }
    // Ourselves from the start, whether or not the watch works.
    this.seen.set(this.self.id, { member: { ...this.self, addresses: [...this.self.addresses], sendRate: this.info().sendRate, seenAt: Date.now() }, deadline: Infinity });
    this.lastEchoAt = Date.now();
    const echoed = new Promise<void>((resolve) => {
      this.echoWaiter = resolve;
    });
    void this.runWatch();
    const sweepEvery = Math.max(50, Math.min(this.heartbeatMs, Math.floor(this.expireMs / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepEvery);
    this.sweepTimer.unref();
    this.scheduleHeartbeat();
    let waitTimer: NodeJS.Timeout | undefined;
    await Promise.race([echoed, new Promise<void>((resolve) => (waitTimer = setTimeout(resolve, START_ECHO_WAIT_MS)))]);
    clearTimeout(waitTimer);
    this.echoWaiter = undefined;
    this.emitIfChanged();
  }

  /** The live members, this daemon included, sorted by id. Empty before start() and after close(). */
  list(): Member[] {
    return [...this.seen.values()]
      .map((s) => ({ ...s.member, addresses: [...s.member.addresses] }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** How many members are live, this daemon included. */
  get count(): number {
    return this.seen.size;
  }

  has(id: string): boolean {
    return this.seen.has(id);
  }

  /** The lowest live id: the one daemon of the service for a job only one should do. This daemon's id if it sees no one. */
  leader(): string {
    let lowest: string | undefined;
    for (const id of this.seen.keys()) if (lowest === undefined || id < lowest) lowest = id;
    return lowest ?? this.self.id;
  }

  /** Deletes this daemon's entry (the others see it leave at once) and stops. Never rejects: a failed delete is logged, the entry then expires. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.heartbeatTimer);
    clearInterval(this.sweepTimer);
    clearTimeout(this.watchRetryTimer);
    this.watchGeneration++;
    this.watcher?.stop();
    this.watcher = undefined;
    this.echoWaiter?.();
    this.seen.clear();
    if (!this.started) return;
    try {
      await this.kv.delete(this.self.id);
    } catch (err) {
      this.logger?.warn({ err, member: this.self.id }, 'could not remove this daemon from the service members: the others drop it when its entry expires');
    }
  }

  private encode(): string {
    const value: HeartbeatValue = { ...this.self, sendRate: this.info().sendRate, at: Date.now() };
    return JSON.stringify(value);
  }

  private scheduleHeartbeat(): void {
    if (this.closed) return;
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), this.heartbeatMs);
    this.heartbeatTimer.unref();
  }

  // One heartbeat at a time: a put that hangs while NATS is away delays the next instead of piling up.
  private async heartbeat(): Promise<void> {
    try {
      await this.kv.put(this.self.id, this.encode());
      if (this.heartbeatFailing) {
        this.heartbeatFailing = false;
        this.logger?.info({ member: this.self.id }, 'service membership heartbeats work again');
      }
      const now = Date.now();
      if (!this.closed && now - this.lastEchoAt > this.watchStaleMs && now - this.watchStartedAt > this.watchStaleMs) {
        this.logger?.warn({ member: this.self.id, silentMs: now - this.lastEchoAt }, 'the members watch delivers nothing though heartbeats land: watching again');
        this.restartWatch();
      }
    } catch (err) {
      if (!this.heartbeatFailing && !this.closed) {
        this.heartbeatFailing = true;
        this.logger?.warn({ err, member: this.self.id }, 'service membership heartbeat failed: keeping the last view of the members until it works again');
      }
    }
    this.scheduleHeartbeat();
  }

  private restartWatch(): void {
    this.watchGeneration++;
    this.watcher?.stop();
    this.watcher = undefined;
    clearTimeout(this.watchRetryTimer);
    void this.runWatch();
  }

  private async runWatch(): Promise<void> {
    const generation = ++this.watchGeneration;
    let iter: Watcher;
    try {
      iter = await this.kv.watch();
    } catch (err) {
      if (this.closed || generation !== this.watchGeneration) return;
      const delay = backoffDelay(this.watchFailures++, { baseMs: 250, maxMs: 5000 });
      if (this.watchFailures === 1) this.logger?.warn({ err, retryInMs: delay }, 'cannot watch the service members: retrying');
      this.watchRetryTimer = setTimeout(() => void this.runWatch(), delay);
      this.watchRetryTimer.unref();
      return;
    }
    if (this.closed || generation !== this.watchGeneration) {
      iter.stop();
      return;
    }
    this.watcher = iter;
    this.watchStartedAt = Date.now();
    this.watchFailures = 0;
    try {
      for await (const e of iter) {
        if (generation !== this.watchGeneration) break;
        this.onEntry(e);
      }
    } catch (err) {
      if (generation === this.watchGeneration && !this.closed) this.logger?.warn({ err }, 'the service members watch failed');
    }
    if (this.closed || generation !== this.watchGeneration) return;
    this.logger?.warn('the service members watch ended: watching again');
    this.watcher = undefined;
    const delay = backoffDelay(this.watchFailures++, { baseMs: 250, maxMs: 5000 });
    this.watchRetryTimer = setTimeout(() => void this.runWatch(), delay);
    this.watchRetryTimer.unref();
  }

  private onEntry(e: KvWatchEntry): void {
    if (this.closed) return;
    const now = Date.now();
    if (e.key === this.self.id) {
      if (e.operation !== 'PUT') return;
      this.offsetMs = now - e.created.getTime();
      if (now - this.lastEchoAt > this.blindAfterMs) {
        // Back from a time we could not see the bucket: that time does not count against the others.
        // Only those last seen before it: an entry seen since (a replay) has its true deadline.
        const credit = now - this.lastEchoAt - this.heartbeatMs;
        for (const [id, s] of this.seen) {
          if (id !== this.self.id && s.member.seenAt <= this.lastEchoAt) s.deadline = Math.min(s.deadline + credit, now + this.expireMs);
        }
      }
      this.lastEchoAt = now;
      const v = parseHeartbeat(e);
      const me = this.seen.get(this.self.id);
      if (me) {
        me.member.seenAt = now;
        if (v) me.member.sendRate = v.sendRate;
      }
      if (this.blind) {
        this.blind = false;
        this.logger?.info({ member: this.self.id }, 'the members bucket is visible again');
      }
      this.echoWaiter?.();
      return;
    }
    if (e.operation !== 'PUT') {
      if (this.seen.delete(e.key)) this.emitIfChanged();
      return;
    }
    const v = parseHeartbeat(e);
    if (!v) {
      this.logger?.warn({ key: e.key, revision: e.revision }, 'ignoring a malformed entry in the service members bucket');
      return;
    }
    // A replayed entry may be old already: count its age on the server, in our clock.
    const deadline = e.isUpdate ? now + this.expireMs : Math.min(now + this.expireMs, e.created.getTime() + this.offsetMs + this.expireMs);
    if (deadline <= now) return;
    const { at: _at, ...rest } = v;
    this.seen.set(e.key, { member: { ...rest, seenAt: now }, deadline });
    this.emitIfChanged();
  }

  private sweep(): void {
    if (this.closed) return;
    const now = Date.now();
    if (now - this.lastEchoAt > this.blindAfterMs) {
      if (!this.blind) {
        this.blind = true;
        this.logger?.warn({ member: this.self.id }, 'cannot see the members bucket (our own heartbeat does not come back): keeping the last view of the members');
      }
      return;
    }
    let dropped = false;
    for (const [id, s] of this.seen) {
      if (s.deadline <= now) {
        this.seen.delete(id);
        dropped = true;
      }
    }
    if (dropped) this.emitIfChanged();
  }

  private emitIfChanged(): void {
    if (this.closed || this.echoWaiter !== undefined) return;
    const ids = [...this.seen.keys()].sort().join('\n');
    if (ids === this.lastMembership) return;
    this.lastMembership = ids;
    this.emit('change', this.list());
  }
}
