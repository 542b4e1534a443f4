/**
 * WeChat errcodes the project reacts to, with the errmsg texts WeChat sends for them
 * (without the trailing ` rid: ...` WeChat appends in production).
 */

export const ERRCODE = {
  OK: 0,
  SYSTEM_ERROR: -1,
  INVALID_CREDENTIAL: 40001,
  INVALID_GRANT_TYPE: 40002,
  INVALID_OPENID: 40003,
  INVALID_APPID: 40013,
  INVALID_ACCESS_TOKEN: 40014,
  INVALID_TEMPLATE_ID: 40037,
  INVALID_ARGS: 40097,
  INVALID_APPSECRET: 40125,
  IP_NOT_WHITELISTED: 40164,
  ACCESS_TOKEN_EXPIRED: 42001,
  REQUIRE_SUBSCRIBE: 43004,
  /** Subscribe sending: the user refused, unsubscribed, or used up a one-time subscription. Permanent. */
  USER_REFUSED: 43101,
  /** Subscribe sending: `page` is not a page of the mini program. Permanent. */
  INVALID_PAGE: 41030,
  DAILY_QUOTA_REACHED: 45009,
  TOO_FREQUENT_FOR_USER: 43117,
  DATA_FORMAT_ERROR: 47001,
  ARGUMENT_INVALID: 47003,
  CGI_PATH_NOT_FOUND: 76021,
} as const;

const ERRMSG: Record<number, string> = {
  [ERRCODE.OK]: 'ok',
  [ERRCODE.SYSTEM_ERROR]: 'system error',
  [ERRCODE.INVALID_CREDENTIAL]: 'invalid credential, access_token is invalid or not latest',
  [ERRCODE.INVALID_GRANT_TYPE]: 'invalid grant_type',
  [ERRCODE.INVALID_OPENID]: 'invalid openid',
  [ERRCODE.INVALID_APPID]: 'invalid appid',
  [ERRCODE.INVALID_ACCESS_TOKEN]: 'invalid access_token',
  [ERRCODE.INVALID_TEMPLATE_ID]: 'invalid template_id',
  [ERRCODE.INVALID_ARGS]: 'invalid args',
  [ERRCODE.INVALID_APPSECRET]: 'invalid appsecret',
  [ERRCODE.IP_NOT_WHITELISTED]: 'invalid ip, not in whitelist',
  [ERRCODE.ACCESS_TOKEN_EXPIRED]: 'access_token expired',
  [ERRCODE.REQUIRE_SUBSCRIBE]: 'require subscribe',
  [ERRCODE.USER_REFUSED]: 'user refuse to accept the msg',
  [ERRCODE.INVALID_PAGE]: 'invalid page',
  [ERRCODE.DAILY_QUOTA_REACHED]: 'reach max api daily quota limit',
  [ERRCODE.TOO_FREQUENT_FOR_USER]: 'too frequent for this user',
  [ERRCODE.DATA_FORMAT_ERROR]: 'data format error',
  [ERRCODE.ARGUMENT_INVALID]: 'argument invalid!',
  [ERRCODE.CGI_PATH_NOT_FOUND]: 'cgi_path not found',
};

/** WeChat's errmsg for `errcode`, or a generic text for codes this table does not know. */
export function errmsgFor(errcode: number): string {
  return ERRMSG[errcode] ?? `error ${errcode}`;
}

/** errcodes meaning "this access token is no longer accepted": refresh the token and retry once. */
export function isTokenErrcode(errcode: number): boolean {
  return (
    errcode === ERRCODE.INVALID_CREDENTIAL ||
    errcode === ERRCODE.INVALID_ACCESS_TOKEN ||
    errcode === ERRCODE.ACCESS_TOKEN_EXPIRED
  );
}
