/**
 * The web console's login: a session cookie (HttpOnly, SameSite=Strict, expiring) given for the
 * HTTP token, a CSRF token per session that every state-changing request must echo in a header,
 * and a limit on login attempts. Sessions live in memory: a restart logs everyone out, which
 * is what a daemon restart should do.
 */

import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const SESSION_COOKIE = 'mega_session';
export const CSRF_HEADER = 'x-csrf-token';

export interface Session {
  id: string;
  csrf: string;
  /** ms since the epoch. */
  expiresAt: number;
}

export interface SessionOptions {
  /** @defaultValue 8 hours */
  ttlMs?: number;
  /** Most sessions held; the oldest goes first. @defaultValue 1000 */
  maxSessions?: number;
  now?: () => number;
}

const token = (): string => randomBytes(32).toString('base64url');

export class SessionStore {
  private readonly sessions = new Map<string, Session>();
  private readonly ttlMs: number;
  private readonly max: number;
  private readonly now: () => number;

  constructor(o: SessionOptions = {}) {
    this.ttlMs = o.ttlMs ?? 8 * 3600_000;
    this.max = o.maxSessions ?? 1000;
    this.now = o.now ?? Date.now;
  }

  get ttlSeconds(): number {
    return Math.floor(this.ttlMs / 1000);
  }

  create(): Session {
    const now = this.now();
    for (const [id, s] of this.sessions) if (s.expiresAt <= now) this.sessions.delete(id);
    while (this.sessions.size >= this.max) this.sessions.delete(this.sessions.keys().next().value!);
    const s: Session = { id: token(), csrf: token(), expiresAt: now + this.ttlMs };
    this.sessions.set(s.id, s);
    return s;
  }

  /** The live session the request's cookie names, if any. */
  fromRequest(req: IncomingMessage): Session | undefined {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (id === undefined) return undefined;
    const s = this.sessions.get(id);
    if (!s) return undefined;
    if (s.expiresAt <= this.now()) {
      this.sessions.delete(id);
      return undefined;
    }
    return s;
  }

  delete(id: string): void {
    this.sessions.delete(id);
  }
}

/** The Set-Cookie value that gives (or, with maxAge 0, takes back) a session. */
export function sessionCookie(id: string, maxAgeSeconds: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure ? '; Secure' : ''}`;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Failed logins allowed per client address in a window; past it the address waits until the
 * window ends. A global cap on top keeps many addresses from guessing together.
 */
export class LoginLimiter {
  private readonly byAddress = new Map<string, { failures: number; windowStart: number }>();
  private global = { failures: 0, windowStart: 0 };

  constructor(
    private readonly perAddress = 5,
    private readonly overall = 50,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds to wait before the next attempt, or 0 when one may be made now. */
  retryAfter(address: string): number {
    const now = this.now();
    let wait = 0;
    const check = (e: { failures: number; windowStart: number } | undefined, limit: number): void => {
      if (e && now - e.windowStart < this.windowMs && e.failures >= limit) wait = Math.max(wait, Math.ceil((e.windowStart + this.windowMs - now) / 1000));
    };
    check(this.byAddress.get(address), this.perAddress);
    check(this.global, this.overall);
    return wait;
  }

  failed(address: string): void {
    const now = this.now();
    const bump = (e: { failures: number; windowStart: number }): void => {
      if (now - e.windowStart >= this.windowMs) {
        e.windowStart = now;
        e.failures = 0;
      }
      e.failures++;
    };
    let e = this.byAddress.get(address);
    if (!e) {
      if (this.byAddress.size >= 10_000) this.byAddress.clear();
      e = { failures: 0, windowStart: now };
      this.byAddress.set(address, e);
    }
    bump(e);
    bump(this.global);
  }

  succeeded(address: string): void {
    this.byAddress.delete(address);
  }
}
