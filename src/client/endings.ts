/**
 * The four ways a MegaClient lets go of its requests, and what each one rejects them with. The
 * client's one teardown applies them; keeping them side by side here shows, for each way, which
 * requests may have reached the daemon (`sent: true`, resend with the same msgid) and which
 * never did.
 */

import { MegaClientDestroyedError, MegaConnectionClosedError, MegaProtocolError } from '../errors.js';
import type { ConnectionEnd } from './connection.js';

/** The errors of one ending, for each kind of waiting party. */
export interface EndingErrors {
  /** Why, when it is an error: kept as the client's last error, quoted to requests a closing client leaves unsent. */
  cause?: Error;
  /** For requests written and not answered: their fate is unknown. */
  sent(what: string): Error;
  /** For requests never written, when they are not kept for the next connection. */
  unsent(what: string): Error;
  /** For connect() callers still waiting. */
  waiters: Error;
}

/** How the client's teardown lets go of what depended on a connection, or on the client. */
export interface Ending extends EndingErrors {
  /** destroy() or close(): the client is finished. */
  final: boolean;
  /** Tells listeners, once the requests written are settled (a listener may close or destroy the client). */
  announce?(): void;
  /** Whether to try another connection for the requests still queued (asked after the announcement). @defaultValue never */
  retry?(): boolean;
  /** close(): FIN and wait for the server's; otherwise the connection is destroyed. */
  graceful?: boolean;
}

/** destroy(): everything at once. */
export function destroyed(): EndingErrors {
  return {
    sent: (what) =>
      new MegaConnectionClosedError(`${what}: the client was destroyed before the answer; its fate is unknown (resend with the same msgid)`, true),
    unsent: (what) => new MegaClientDestroyedError(`${what}: the client was destroyed before the request could be sent`),
    waiters: new MegaClientDestroyedError('the client was destroyed before it connected'),
  };
}

/** close(), after waiting `waitedMs` for what was pending. */
export function closed(waitedMs: number): EndingErrors {
  return {
    sent: (what) =>
      new MegaConnectionClosedError(
        `${what}: the client was closed before the answer (waited ${waitedMs} ms); its fate is unknown (resend with the same msgid)`,
        true,
      ),
    unsent: (what) => new MegaClientDestroyedError(`${what}: the client was closed before the request could be sent`),
    waiters: closedBeforeConnected(),
  };
}

export function closedBeforeConnected(): MegaClientDestroyedError {
  return new MegaClientDestroyedError('the client was closed before it connected');
}

/** What close() had let wait while a connection ended under it: never sent now. */
export function leftUnsentByClose(cause: Error | undefined): (what: string) => Error {
  const detail = cause ? ` (${cause.message})` : '';
  return (what) => new MegaClientDestroyedError(`${what}: the client was closed before the request could be sent${detail}`);
}

/** A connection attempt failed (refused, TLS, connect timeout, auth refused): its error is everyone's. */
export function attemptFailed(err: Error): EndingErrors {
  return { cause: err, sent: () => err, unsent: () => err, waiters: err };
}

/** A ready connection was lost: what was written on it has an unknown fate. */
export function connectionLost(address: string, end: Extract<ConnectionEnd, { ready: true }>): EndingErrors {
  const { failure, reason, why, serverClosed } = end;
  const cause = reason ?? serverClosed ?? new MegaConnectionClosedError(why, true);
  return {
    cause,
    sent: (what) =>
      failure instanceof MegaProtocolError
        ? failure
        : new MegaConnectionClosedError(
            `${what}: connection to ${address} closed before the answer (${why}); its fate is unknown (resend with the same msgid)`,
            true,
            { cause: reason },
          ),
    unsent: (what) =>
      new MegaConnectionClosedError(`${what}: connection to ${address} closed (${why}) and reconnect is off; not sent`, false, { cause: reason }),
    waiters: cause, // none wait: the connection was ready
  };
}
