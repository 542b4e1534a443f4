/** Public surface of the WeChat API layer: client, token cache, errcodes. The simulator is in src/simulator/. */

export { WechatClient } from './client.js';
export type { WechatClientOptions, SendResult, TokenResult, QuotaResult } from './client.js';
export { TokenManager } from './token-manager.js';
export type { TokenManagerOptions } from './token-manager.js';
export { ERRCODE, errmsgFor, isTokenErrcode } from './errcodes.js';
export { MESSAGE_KINDS, SEND_PATHS, isMessageKind, hasTypedData, takesClientMsgId, type MessageKind } from './kinds.js';
export { subscribeValueType, checkSubscribeValue, checkSubscribeData, describeViolation, type SubscribeValueType, type SubscribeRuleViolation } from './subscribe-rules.js';
export { redactSecrets, redactLiterals } from './redact.js';
export {
  parseEncodingAesKey,
  callbackSignature,
  verifyCallbackSignature,
  messageSignature,
  verifyMessageSignature,
  decryptCallbackMessage,
  encryptCallbackMessage,
  appidMatches,
} from './callback-crypto.js';
export type { CallbackAesKey, DecryptedCallback } from './callback-crypto.js';
export { parseCallbackXml, textField, type CallbackFields } from './callback-xml.js';
export { TokenError, WechatTransportError, CallbackCryptoError, CallbackXmlError } from '../errors.js';
export type { CallbackCryptoReason } from '../errors.js';
export type { WechatTransportKind } from '../errors.js';
