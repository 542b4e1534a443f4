/**
 * The control channel's vocabulary: every request the daemon's control socket takes, and the
 * answer each one gets. The daemon (server/daemon.ts), the CLI (`status`, `queue`, `dlq`,
 * `resume`, `msg`, and the commands that ask where the daemon listens), the benchmarks and the tests
 * all read these types; none declares a shape of its own.
 *
 * Wire format (server/control.ts): one JSON request line in, one JSON {@link ControlReply} line out.
 */
import type { ListenAddress } from '../config/config.js';
import type { JobQueueStats } from '../queue/index.js';
import type { PauseState } from '../dispatch/dispatcher.js';
import type { DeadLetter, DeadLetterSelector } from '../dispatch/dead-letter.js';
import { BadRequestError } from '../errors.js';
import { MESSAGE_STATES, checkMsgid, type MessageFilter, type MessageRecord, type MessageState } from '../protocol/index.js';
import type { ReceiptsStatus } from './receipts-link.js';

export type { DeadLetter, DeadLetterSelector, PauseState };

/** The answer to `status` (and, with `state: 'running'`, what `mega <name> status --json` prints). */
export interface DaemonStatus {
  name: string;
  pid: number;
  uptimeSeconds: number;
  /** Where it listens, with the port it actually got when `[server] listen[]` says port 0. */
  listen: ListenAddress[];
  connections: number;
  templates: number;
  workers: number;
  queue: QueueSummary;
  sent: number;
  failed: number;
  failedByErrcode: Record<string, number>;
  retriesPending: number;
  running: number;
  /** Messages delivered per second over the last seconds. */
  sendRate: number;
  /** null while dispatching; why not otherwise. */
  paused: PauseState | null;
  token: { ageSeconds: number | null; fetches: number; error: string | null };
  /** The account's daily quota for template/send, where quota/get answers it. */
  quota: { dailyLimit: number; used: number; remain: number } | null;
  /**
   * The message ledger: changes in its journal the database does not hold yet (a few hundred
   * normally; it grows while the database is down), and the database's failure while it lasts.
   * null with `[ledger] enabled = 0`.
   */
  ledger: { backlog: number; error: string | null } | null;
  /** The receipts endpoint's counters and address; null with `[callback] listen` empty. */
  callback: ReceiptsStatus['callback'];
  /** The webhook's outbox and last delivery; null with `[receipt] webhook_url` empty. */
  webhook: ReceiptsStatus['webhook'];
  /** The HTTP side's base URL (`[http] listen`, with the port it got); null when off. */
  http?: string | null;
  /** The daemons of the service, its shared pause and rate (JetStream backend); null with the file queue. */
  service?: ServiceStatus | null;
}

/** What `status` says about the service (JetStream backend). */
export interface ServiceStatus {
  /** This daemon's member id. */
  self: string;
  members: Array<{ id: string; host: string; pid: number; addresses: string[]; uptimeSeconds: number; sendRate: number }>;
  /** The quota pause shared by the service, and which daemon announced it. */
  pause: (PauseState & { by: string }) | null;
  /** `[wechat] rate_limit` for the whole service, and this daemon's share of it (0 = unlimited). */
  rateLimit: number;
  rateShare: number;
}

/** The answer to `queue` (and `status.queue`); the CLI computes the same from the files when the daemon is stopped. */
export interface QueueSummary {
  /** `[queue] backend`; absent in answers of daemons before it existed (file). */
  backend?: 'file' | 'jetstream';
  /** The JetStream stream (backend jetstream). */
  stream?: string;
  depth: number;
  inFlight: number;
  oldestAgeSeconds: number | null;
  /** Segment files and their bytes (backend file; the stream's bytes with jetstream when known). */
  segments?: number;
  bytes?: number;
}

export function queueSummary(q: JobQueueStats & { segments?: number; bytes?: number }, now = Date.now()): QueueSummary {
  return {
    depth: q.depth,
    inFlight: q.inFlight,
    segments: q.segments,
    bytes: q.bytes,
    oldestAgeSeconds: q.oldestEnqueuedAt === undefined ? null : Math.round((now - q.oldestEnqueuedAt) / 1000),
  };
}

/** The answer to `resume`: false when dispatch was not paused. */
export interface ResumeAnswer {
  resumed: boolean;
}

/** The answer to `dlq-retry`: the entries queued again, and the asked-for ids that are not in the log. */
export interface DeadLetterRetry {
  retried: DeadLetter[];
  missing: number[];
}

/** Every request the control socket takes. */
export type ControlRequest =
  | { cmd: 'status' }
  /** Where the daemon listens: cheap, unlike `status` (which may ask WeChat for the quota). */
  | { cmd: 'listen' }
  | { cmd: 'queue' }
  | { cmd: 'resume' }
  | { cmd: 'dlq-list' }
  | { cmd: 'dlq-retry'; selector: DeadLetterSelector }
  /** The ledger's record of one message (null: none), as the protocol's `query` answers it. */
  | { cmd: 'msg-show'; msgid: string }
  | { cmd: 'msg-list'; filter: MessageFilter };

export type ControlCommand = ControlRequest['cmd'];

/** What each request is answered with. */
export interface ControlAnswers {
  status: DaemonStatus;
  listen: ListenAddress[];
  queue: QueueSummary;
  resume: ResumeAnswer;
  'dlq-list': DeadLetter[];
  'dlq-retry': DeadLetterRetry;
  'msg-show': MessageRecord | null;
  'msg-list': MessageRecord[];
}

export type RequestOf<C extends ControlCommand> = Extract<ControlRequest, { cmd: C }>;
export type AnswerOf<C extends ControlCommand> = ControlAnswers[C];

/** One line out of the control socket. */
export type ControlReply<C extends ControlCommand = ControlCommand> = { ok: true; result: AnswerOf<C> } | { ok: false; error: string };

/**
 * The daemon's side: one function per request. A request added to {@link ControlRequest}
 * without an entry here (or an entry answering the wrong type) does not compile.
 */
export type ControlHandlers = { [C in ControlCommand]: (request: RequestOf<C>) => Promise<AnswerOf<C>> | AnswerOf<C> };

function selectorOf(value: unknown): DeadLetterSelector {
  const v = value as { all?: unknown; ids?: unknown } | null;
  if (v !== null && typeof v === 'object' && v.all === true) return { all: true };
  if (v !== null && typeof v === 'object' && Array.isArray(v.ids) && v.ids.every((id) => Number.isSafeInteger(id) && (id as number) > 0)) {
    return { ids: v.ids as number[] };
  }
  throw new BadRequestError('dlq-retry needs a selector: {"all":true} or {"ids":[<job id>, ...]}');
}

/** The largest `limit` of a message list: one control line, one answer line. */
export const MESSAGE_LIST_MAX = 1000;
/** The default `limit` of a message list (MessageFilter's). */
export const MESSAGE_LIST_DEFAULT = 50;

/**
 * A message filter, checked (the CLI checks its flags with it too): openid 1-128 printable ASCII,
 * a known state, `since` ms since the epoch, `limit` 1-{@link MESSAGE_LIST_MAX}. Absent members stay absent.
 */
export function checkMessageFilter(value: unknown): MessageFilter {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new BadRequestError('msg-list filter must be an object');
  const v = value as Record<string, unknown>;
  const filter: MessageFilter = {};
  if (v.openid !== undefined) {
    if (typeof v.openid !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(v.openid)) {
      throw new BadRequestError('openid must be 1-128 printable ASCII characters without spaces');
    }
    filter.openid = v.openid;
  }
  if (v.state !== undefined) {
    if (!MESSAGE_STATES.includes(v.state as MessageState)) throw new BadRequestError(`state must be one of ${MESSAGE_STATES.join(', ')}`);
    filter.state = v.state as MessageState;
  }
  if (v.since !== undefined) {
    if (!Number.isSafeInteger(v.since) || (v.since as number) < 0) throw new BadRequestError('since must be a time in ms since the epoch');
    filter.since = v.since as number;
  }
  if (v.limit !== undefined) {
    if (!Number.isSafeInteger(v.limit) || (v.limit as number) < 1 || (v.limit as number) > MESSAGE_LIST_MAX) {
      throw new BadRequestError(`limit must be an integer from 1 to ${MESSAGE_LIST_MAX}`);
    }
    filter.limit = v.limit as number;
  }
  return filter;
}


/** A parsed request line, checked: what the socket received is untrusted JSON. */
export function parseControlRequest(value: unknown): ControlRequest {
  const cmd = (value as { cmd?: unknown } | null)?.cmd;
  if (typeof cmd !== 'string') throw new BadRequestError('missing cmd');
  switch (cmd) {
    case 'status':
    case 'listen':
    case 'queue':
    case 'resume':
    case 'dlq-list':
      return { cmd };
    case 'dlq-retry':
      return { cmd, selector: selectorOf((value as { selector?: unknown }).selector) };
    case 'msg-show':
      return { cmd, msgid: checkMsgid((value as { msgid?: unknown }).msgid) };
    case 'msg-list':
      return { cmd, filter: checkMessageFilter((value as { filter?: unknown }).filter) };
    default:
      throw new BadRequestError(`unknown control command ${JSON.stringify(cmd)}`);
  }
}

/** Runs the handler of a request. The switch is exhaustive: a request without a case does not compile. */
export async function answerControl(handlers: ControlHandlers, request: ControlRequest): Promise<AnswerOf<ControlCommand>> {
  switch (request.cmd) {
    case 'status':
      return handlers.status(request);
    case 'listen':
      return handlers.listen(request);
    case 'queue':
      return handlers.queue(request);
    case 'resume':
      return handlers.resume(request);
    case 'dlq-list':
      return handlers['dlq-list'](request);
    case 'dlq-retry':
      return handlers['dlq-retry'](request);
    case 'msg-show':
      return handlers['msg-show'](request);
    case 'msg-list':
      return handlers['msg-list'](request);
    default: {
      const unhandled: never = request;
      throw new BadRequestError(`unknown control command ${JSON.stringify((unhandled as { cmd: unknown }).cmd)}`);
    }
  }
}
