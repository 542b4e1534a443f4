/** The Node.js client of the Mega-WeChat protocol. */
export { MegaClient, parseMessageRecord, parseWechat } from './client.js';
export type {
  MegaClientEvents,
  MegaClientOptions,
  MegaCloseOptions,
  MegaQueryOptions,
  MegaReconnectOptions,
  MegaRequestOptions,
  MegaResult,
  MegaTsetOptions,
  MegaWechatAnswer,
} from './client.js';
export { MegaClientErrorCode } from './errors.js';
export { MegaQueryError, MegaRequestTooLargeError } from '../errors.js';
export type { MessageRecord, MessageState } from '../protocol/index.js';
