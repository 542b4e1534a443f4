/**
 * Requests between the daemons of one service, over core NATS (no stream: they matter only while
 * the daemons that exchange them are alive). Two kinds:
 * - `tset`: every daemon reloads a template; the asking daemon collects who did.
 * - `settle`: the answer to a Send, from the daemon that delivered it to the daemon whose client
 *   is waiting (the job went through the shared queue, so any daemon may have delivered it).
 * Subjects: `mega.<name>.svc.tset` (every daemon), `mega.<name>.svc.settle.<member>` (one).
 */

import type { Logger } from 'pino';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';

export interface TsetAnswer {
  member: string;
  ok: boolean;
  /** Why it did not load (ok false), e.g. `template not found: welcome`. */
  error?: string;
}

export interface ServiceBusHandlers {
  /** Reload template `key` here (the daemon's own TSet, without asking the others again). */
  tset(key: string): Promise<TsetAnswer>;
  /** A Send's answer for a client of this daemon: true when a client was waiting for it. */
  settle(replyKey: string, code: number, message: string): boolean;
}

export interface ServiceBusOptions {
  nc: NatsConnection;
  /** NATS-safe service name. */
  name: string;
  /** This daemon's member id (letters, digits, `-`, `_`: one subject token). */
  member: string;
  handlers: ServiceBusHandlers;
  logger?: Logger;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class ServiceBus {
  private readonly subs: Subscription[] = [];
  private readonly prefix: string;

  constructor(private readonly o: ServiceBusOptions) {
    if (!/^[A-Za-z0-9_-]+$/.test(o.member)) throw new TypeError(`ServiceBus option member must be one subject token (got ${JSON.stringify(o.member)})`);
    this.prefix = `mega.${o.name}.svc`;
    this.subs.push(
      o.nc.subscribe(`${this.prefix}.tset`, {
        callback: (err, msg) => {
          if (err) return;
          const key = decoder.decode(msg.data);
          void o.handlers
            .tset(key)
            .catch((e: unknown): TsetAnswer => ({ member: o.member, ok: false, error: e instanceof Error ? e.message : String(e) }))
            .then((answer) => msg.respond(encoder.encode(JSON.stringify(answer))));
        },
      }),
      o.nc.subscribe(`${this.prefix}.settle.${o.member}`, {
        callback: (err, msg) => {
          if (err) return;
          let taken = false;
          try {
            const { replyKey, code, message } = JSON.parse(decoder.decode(msg.data)) as { replyKey: string; code: number; message: string };
            taken = o.handlers.settle(replyKey, code, message);
          } catch (e) {
            o.logger?.warn({ err: e }, 'a malformed Send answer from another daemon was dropped');
          }
          msg.respond(encoder.encode(taken ? '1' : '0'));
        },
      }),
    );
  }

  /**
   * Asks every daemon but this one to reload `key`, and waits for the answers of `others` (the
   * live members) up to `timeoutMs`. A member that did not answer in time is reported with
   * `error: 'no answer'`; an answer from a daemon not in `others` (it joined meanwhile) counts too.
   */
  async tsetOthers(key: string, others: readonly string[], timeoutMs = 3000): Promise<TsetAnswer[]> {
    const answers = new Map<string, TsetAnswer>();
    if (others.length > 0) {
      const waiting = new Set(others);
      const collect = async (): Promise<void> => {
        // a subscription of its own per request (noMux): nothing shared that a lost reply could wedge
        const replies = await this.o.nc.requestMany(`${this.prefix}.tset`, encoder.encode(key), { strategy: 'timer', maxWait: timeoutMs, noMux: true });
        for await (const reply of replies) {
          let answer: TsetAnswer;
          try {
            answer = JSON.parse(decoder.decode(reply.data)) as TsetAnswer;
          } catch {
            continue;
          }
          if (answer.member === this.o.member) continue;
          answers.set(answer.member, answer);
          waiting.delete(answer.member);
          if (waiting.size === 0) break;
        }
      };
      let timer: NodeJS.Timeout | undefined;
      try {
        // never longer than the timeout, whatever the client library does
        await Promise.race([collect(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs + 500)))]);
      } catch (err) {
        // no responders, or NATS down: every other member is reported as not reached
        this.o.logger?.warn({ err }, 'tset could not reach the other daemons');
      } finally {
        clearTimeout(timer);
      }
      for (const member of waiting) answers.set(member, { member, ok: false, error: 'no answer' });
    }
    return [...answers.values()].sort((a, b) => a.member.localeCompare(b.member));
  }

  /**
   * Hands a Send's answer to the daemon `owner` whose client waits for it. Resolves true when
   * that client got it; false when the owner is gone or its client left.
   */
  async settleRemote(owner: string, replyKey: string, code: number, message: string, timeoutMs = 2000): Promise<boolean> {
    try {
      const reply = await this.o.nc.request(`${this.prefix}.settle.${owner}`, encoder.encode(JSON.stringify({ replyKey, code, message })), { timeout: timeoutMs });
      return decoder.decode(reply.data) === '1';
    } catch {
      return false;
    }
  }

  close(): void {
    for (const s of this.subs) s.unsubscribe();
  }
}
