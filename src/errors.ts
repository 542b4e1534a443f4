/**
 * Every error Mega-WeChat raises on purpose is a named class with a stable `code`
 * (as undici does), so callers and tests match on `code`, never on message text.
 * Messages never contain secrets (app_secret, access tokens, passwords).
 */

export class MegaError extends Error {
  readonly code: string;
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

// ---------------------------------------------------------------- config

/** A config file is missing, unreadable, or a key in it is invalid. The message names the key. */
export class ConfigError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_CONFIG');
  }
}

// ---------------------------------------------------------------- protocol

/** Bytes on the wire that do not form a valid frame (maps to result 500 and a close). */
export class MalformedFrameError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_MALFORMED_FRAME');
  }
}

/** A frame whose declared size exceeds `package_max_length` (maps to result 413 and a close). */
export class FrameTooLargeError extends MegaError {
  readonly frameLength: number;
  readonly maxLength: number;
  constructor(frameLength: number, maxLength: number) {
    super(`frame of ${frameLength} bytes exceeds package_max_length ${maxLength}`, 'MEGA_ERR_FRAME_TOO_LARGE');
    this.frameLength = frameLength;
    this.maxLength = maxLength;
  }
}

/** A well-formed frame whose command word is not push, send, tset or result (maps to 500). */
export class UnknownCommandError extends MegaError {
  constructor(command: string) {
    super(`unknown command ${JSON.stringify(command.slice(0, 32))}`, 'MEGA_ERR_UNKNOWN_COMMAND');
  }
}

/** A known command with wrong parameters or an invalid body (maps to 400, connection stays open). */
export class BadRequestError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_BAD_REQUEST');
  }
}

// ---------------------------------------------------------------- templates

/** The template store (SQLite or MySQL) failed: connection refused, query error. */
export class TemplateStoreError extends MegaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_TEMPLATE_STORE', options);
  }
}

/** A template row holds text that is not a JSON object, or is longer than `template_size`. */
export class InvalidTemplateError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_INVALID_TEMPLATE');
  }
}

/**
 * A template key that is not in the database (TSet) or not in the cache (Push, Send).
 * `dropped` is true when a TSet found the row gone and removed the key from the cache.
 */
export class TemplateNotFoundError extends MegaError {
  constructor(
    readonly key: string,
    readonly dropped = false,
  ) {
    super('template key not exists', 'MEGA_ERR_TEMPLATE_NOT_FOUND');
  }
}

/**
 * A message cannot be built from its template: variables the template needs are missing
 * (`[setting] missing_variable = reject`) or a value cannot be turned into text. Permanent:
 * the same job would fail the same way on every attempt.
 */
export class TemplateRenderError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_TEMPLATE_RENDER');
  }
}

/** A TSet of a new key while the cache already holds `table_size` templates. */
export class TableFullError extends MegaError {
  constructor() {
    super('over table size', 'MEGA_ERR_TABLE_FULL');
  }
}

// ---------------------------------------------------------------- queue

/** The queue could not make a record durable (ENOSPC, EIO...): the request gets 503. */
export class QueueWriteError extends MegaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_QUEUE_WRITE', options);
  }
}

/** The queue was used after close(). */
export class QueueClosedError extends MegaError {
  constructor() {
    super('queue is closed', 'MEGA_ERR_QUEUE_CLOSED');
  }
}

// ---------------------------------------------------------------- wechat

/** The access token could not be obtained (bad secret, IP not whitelisted, endpoint down). */
export class TokenError extends MegaError {
  readonly errcode: number | undefined;
  constructor(message: string, errcode?: number, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_TOKEN', options);
    this.errcode = errcode;
  }
}

/**
 * What went wrong below WeChat's JSON answer:
 * - `timeout`: no complete answer within the client's `timeoutMs` (the message MAY have been delivered);
 * - `connection`: refused, reset, DNS failure... (the message may have been delivered if the reset came late);
 * - `http`: an HTTP status other than 2xx (see `status`);
 * - `invalid_response`: a 2xx answer whose body is not WeChat's JSON (no numeric `errcode`);
 * - `closed`: the client was closed while the request was pending.
 */
export type WechatTransportKind = 'timeout' | 'connection' | 'http' | 'invalid_response' | 'closed';

/**
 * The WeChat API could not be reached or answered with something that is not its JSON.
 * `retryable` tells the dispatcher whether sending the same message again (same `client_msg_id`,
 * so WeChat de-duplicates it) may succeed; `status` is the HTTP status when `kind` is `http`.
 */
export class WechatTransportError extends MegaError {
  readonly kind: WechatTransportKind;
  readonly retryable: boolean;
  readonly status: number | undefined;
  constructor(
    message: string,
    options?: { cause?: unknown; kind?: WechatTransportKind; retryable?: boolean; status?: number },
  ) {
    super(message, 'MEGA_ERR_WECHAT_TRANSPORT', options?.cause === undefined ? undefined : { cause: options.cause });
    this.kind = options?.kind ?? 'connection';
    this.retryable = options?.retryable ?? true;
    this.status = options?.status;
  }
}

/**
 * Safe-mode (encrypted) server-URL traffic that cannot be used: an EncodingAESKey that is not
 * 43 base64 characters, an `Encrypt` payload that is not base64 or not whole AES blocks, bad
 * padding, a length field past the end, a message that is not UTF-8. `reason` says which, for
 * tests and logs; the message never contains the key (the key is the account's secret).
 */
export type CallbackCryptoReason = 'key' | 'ciphertext' | 'padding' | 'length' | 'encoding' | 'random';
export class CallbackCryptoError extends MegaError {
  readonly reason: CallbackCryptoReason;
  constructor(message: string, reason: CallbackCryptoReason) {
    super(message, 'MEGA_ERR_CALLBACK_CRYPTO');
    this.reason = reason;
  }
}

/** A server-URL request whose XML is not well-formed, or not WeChat's (`<xml>` root, no DOCTYPE). */
export class CallbackXmlError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_CALLBACK_XML');
    this.name = 'CallbackXmlError';
  }
}

// ---------------------------------------------------------------- webhook

/**
 * An option of WebhookSender, a record given to `enqueue`, or an argument of `signWebhook` /
 * `verifyWebhookSignature` has the wrong type or an out-of-range value; the message names it.
 */
export class WebhookArgumentError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_WEBHOOK_ARG');
  }
}

/** `enqueue` or `start` on a webhook sender that is not started yet, or is closing or closed. */
export class WebhookStateError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_WEBHOOK_STATE');
  }
}

// ---------------------------------------------------------------- daemon / cli

/** The daemon is not running (no pid file, or a stale one). */
export class NotRunningError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_NOT_RUNNING');
  }
}

/** The daemon could not start (port in use, store unreachable...). */
export class StartupError extends MegaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_STARTUP', options);
  }
}

// ---------------------------------------------------------------- client

/**
 * An option or argument of {@link MegaClient} (src/client) has the wrong type or an out-of-range
 * value; the message names it. Thrown by the constructor, and rejected by a request (its
 * promise, never a synchronous throw) before anything is sent.
 */
export class MegaInvalidArgumentError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_CLIENT_INVALID_ARG');
  }
}

/**
 * A request whose frame would be larger than the client's `maxFrameLength`, refused before it is
 * sent. A {@link BadRequestError} with a code of its own, so a caller can tell "too large for one
 * frame" (a permanent failure of this one request) from other refused arguments.
 */
export class MegaRequestTooLargeError extends BadRequestError {
  override readonly code = 'MEGA_ERR_CLIENT_REQUEST_TOO_LARGE';
  readonly frameLength: number;
  readonly maxFrameLength: number;
  constructor(message: string, frameLength: number, maxFrameLength: number) {
    super(message);
    this.frameLength = frameLength;
    this.maxFrameLength = maxFrameLength;
  }
}

/**
 * A request got no answer within its `timeoutMs`. `sent` tells whether it had been written to
 * the connection: when true its fate is unknown (the daemon may have queued it), so resend it
 * with the same `msgid`; when false (it waited for a connection or a window slot) it was never
 * sent.
 */
export class MegaClientTimeoutError extends MegaError {
  readonly timeoutMs: number;
  readonly sent: boolean;
  constructor(message: string, timeoutMs: number, sent: boolean, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_CLIENT_TIMEOUT', options);
    this.timeoutMs = timeoutMs;
    this.sent = sent;
  }
}

/**
 * The connection closed while the request was pending. With `sent` true its fate is unknown
 * (the daemon may have queued or delivered it): resend it with the same `msgid`, which WeChat
 * uses to drop repeats. With `sent` false (reconnect disabled) it was never written.
 */
export class MegaConnectionClosedError extends MegaError {
  readonly sent: boolean;
  /**
   * The result code the server sent as its reason before closing (500 for an unknown command or
   * an undecodable stream, 413 for an oversize frame); undefined when it gave none.
   */
  readonly serverCode: number | undefined;
  constructor(message: string, sent: boolean, options?: { cause?: unknown; serverCode?: number }) {
    super(message, 'MEGA_ERR_CLIENT_CLOSED', options);
    this.sent = sent;
    this.serverCode = options?.serverCode;
  }
}

/**
 * The server sent bytes the client cannot decode, or a result for an opaque it never sent.
 * The connection is dropped; requests that were in flight on it are rejected with this error
 * and their fate is unknown, as with {@link MegaConnectionClosedError}.
 */
export class MegaProtocolError extends MegaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_CLIENT_PROTOCOL', options);
  }
}

/** No connection could be made: refused, unreachable, connect timeout, TLS handshake failure. */
export class MegaConnectError extends MegaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_CLIENT_CONNECT', options);
  }
}

/**
 * The server did not accept the client's `auth <token>` frame (result 401, or another code from
 * a daemon without authentication). The client does not reconnect by itself after this.
 */
export class MegaAuthError extends MegaError {
  /** The result code the server answered the auth frame with. */
  readonly resultCode: number;
  constructor(message: string, resultCode: number) {
    super(message, 'MEGA_ERR_CLIENT_AUTH');
    this.resultCode = resultCode;
  }
}

/** The client was closed or destroyed before this request could be sent: it was never sent. */
export class MegaClientDestroyedError extends MegaError {
  constructor(message = 'the client is closed') {
    super(message, 'MEGA_ERR_CLIENT_DESTROYED');
  }
}

/**
 * `query` got an answer other than a record (200) or "not found" (404): the daemon has no ledger
 * (503 `ledger disabled`), cannot read it, is stopping, or answered 200 with something that is
 * not a message record. `resultCode` is the daemon's code; the message carries its text.
 */
export class MegaQueryError extends MegaError {
  readonly resultCode: number;
  constructor(message: string, resultCode: number) {
    super(message, 'MEGA_ERR_CLIENT_QUERY');
    this.resultCode = resultCode;
  }
}

/** The message ledger's database (`{table_prefix}message`) or journal failed. */
export class LedgerStoreError extends MegaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_LEDGER_STORE', options);
  }
}

/** A question for the message ledger of a daemon that runs without one (`[ledger] enabled = 0`). */
export class LedgerDisabledError extends MegaError {
  constructor(message = 'ledger disabled ([ledger] enabled = 0)') {
    super(message, 'MEGA_ERR_LEDGER_DISABLED');
  }
}

// ---------------------------------------------------------------- tasks

/** One bad line of a recipients file. `line` is 1-based, as an editor shows it. */
export interface RecipientProblem {
  line: number;
  reason: string;
}

/** A recipients file (or `--vars` file) that cannot be used; `problems` names every bad line found. */
export class RecipientFileError extends MegaError {
  readonly file: string;
  readonly problems: readonly RecipientProblem[];
  constructor(file: string, message: string, problems: readonly RecipientProblem[] = []) {
    super(message, 'MEGA_ERR_TASK_RECIPIENTS');
    this.file = file;
    this.problems = problems;
  }
}

/** The task table failed (database unreachable, query error). */
export class TaskStoreError extends MegaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'MEGA_ERR_TASK_STORE', options);
  }
}

/**
 * A task cannot do what was asked in its current state: unknown id, already running elsewhere,
 * already done, its recipients file changed since `create`...
 */
export class TaskStateError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_TASK_STATE');
  }
}
