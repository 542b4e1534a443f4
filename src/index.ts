/**
 * mega-wechat as a library: the client backend services use to talk to the daemon.
 *
 * ```ts
 * import { MegaClient, ResultCode } from 'mega-wechat';
 * const client = await MegaClient.connect({ port: 9501 });
 * const r = await client.send('oUser123', 'order_paid', { product: 'tea' });
 * ```
 */
export * from './client/index.js';
export { ResultCode } from './protocol/index.js';
// for a backend that receives the webhook (docs/WEBHOOK.md): check what it is sent
export { signWebhook, verifyWebhookSignature, type WebhookBody, type WebhookEvent, type WebhookEventState } from './webhook/index.js';
export {
  MegaError,
  BadRequestError,
  MegaAuthError,
  MegaClientDestroyedError,
  MegaClientTimeoutError,
  MegaConnectError,
  MegaConnectionClosedError,
  MegaInvalidArgumentError,
  MegaProtocolError,
} from './errors.js';
