/** Public surface of the WeChat API layer: client, token cache, errcodes and the simulator. */

export { WechatClient } from './client.js';
export type { WechatClientOptions, SendResult, TokenResult, QuotaResult } from './client.js';
export { TokenManager } from './token-manager.js';
export type { TokenManagerOptions } from './token-manager.js';
export { ERRCODE, errmsgFor, isTokenErrcode } from './errcodes.js';
export { redactSecrets, redactLiterals } from './redact.js';
export {
  WechatSimulator,
  validateConfigPatch,
  SIMULATOR_DEFAULT_APP_ID,
  SIMULATOR_DEFAULT_APP_SECRET,
} from './simulator.js';
export type {
  SimulatorOptions,
  SimulatorFaults,
  SimulatorConfig,
  SimulatorConfigPatch,
  SimulatorStats,
  ReceivedMessage,
  FailOpenidRule,
} from './simulator.js';
export { TokenError, WechatTransportError } from '../errors.js';
export type { WechatTransportKind } from '../errors.js';
