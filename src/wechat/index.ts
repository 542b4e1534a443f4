/** Public surface of the WeChat API layer: client, token cache, errcodes. The simulator is in src/simulator/. */

export { WechatClient } from './client.js';
export type { WechatClientOptions, SendResult, TokenResult, QuotaResult } from './client.js';
export { TokenManager } from './token-manager.js';
export type { TokenManagerOptions } from './token-manager.js';
export { ERRCODE, errmsgFor, isTokenErrcode } from './errcodes.js';
export { redactSecrets, redactLiterals } from './redact.js';
export { TokenError, WechatTransportError } from '../errors.js';
export type { WechatTransportKind } from '../errors.js';
