/** The Node.js client of the Mega-WeChat protocol. */
export { MegaClient, parseWechat } from './client.js';
export type {
  MegaClientEvents,
  MegaClientOptions,
  MegaCloseOptions,
  MegaReconnectOptions,
  MegaRequestOptions,
  MegaResult,
  MegaTsetOptions,
  MegaWechatAnswer,
} from './client.js';
export { MegaClientErrorCode } from './errors.js';
export { MegaRequestTooLargeError } from '../errors.js';
