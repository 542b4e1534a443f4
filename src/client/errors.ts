/**
 * The `code` of every error a MegaClient rejects or throws with, as constants, so callers
 * classify errors by code (never by message text). The classes themselves live in src/errors.ts
 * with the project's other errors; test/client/unit.test.ts holds the two lists together.
 *
 * ```ts
 * import { MegaClientErrorCode } from 'mega-wechat';
 * if (err.code === MegaClientErrorCode.CLOSED && err.sent) resendWithSameMsgid();
 * ```
 */
export const MegaClientErrorCode = {
  /** MegaInvalidArgumentError: an option or argument of the wrong type or range; nothing was sent. */
  INVALID_ARG: 'MEGA_ERR_CLIENT_INVALID_ARG',
  /** BadRequestError: an openid, key or msgid the daemon would refuse; nothing was sent. */
  BAD_REQUEST: 'MEGA_ERR_BAD_REQUEST',
  /** MegaRequestTooLargeError: the request's frame exceeds `maxFrameLength`; nothing was sent. */
  REQUEST_TOO_LARGE: 'MEGA_ERR_CLIENT_REQUEST_TOO_LARGE',
  /** MegaClientTimeoutError: no answer within `timeoutMs`; `sent` says whether its fate is unknown. */
  TIMEOUT: 'MEGA_ERR_CLIENT_TIMEOUT',
  /** MegaConnectionClosedError: the connection closed with the request pending; see `sent`. */
  CLOSED: 'MEGA_ERR_CLIENT_CLOSED',
  /** MegaProtocolError: the server sent something undecodable or unexpected; the connection was dropped. */
  PROTOCOL: 'MEGA_ERR_CLIENT_PROTOCOL',
  /** MegaConnectError: no connection could be made. */
  CONNECT: 'MEGA_ERR_CLIENT_CONNECT',
  /** MegaAuthError: the server refused the auth token; not retried. */
  AUTH: 'MEGA_ERR_CLIENT_AUTH',
  /** MegaQueryError: a query answered with neither a record nor 404 (`resultCode` 503 `ledger disabled`, ...). */
  QUERY: 'MEGA_ERR_CLIENT_QUERY',
  /** MegaClientDestroyedError: the client was closed or destroyed before the request was sent. */
  DESTROYED: 'MEGA_ERR_CLIENT_DESTROYED',
} as const;

export type MegaClientErrorCode = (typeof MegaClientErrorCode)[keyof typeof MegaClientErrorCode];
