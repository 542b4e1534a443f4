/** The receipt webhook (docs/WEBHOOK.md): final message states POSTed to the backend, at least once, in order. */

export { WebhookSender, WEBHOOK_USER_AGENT } from './sender.js';
export type { WebhookStatus } from './sender.js';
export type { WebhookOptions } from './options.js';
export { toWebhookEvent, webhookEventId } from './event.js';
export type { WebhookBody, WebhookEvent, WebhookEventState } from './event.js';
export {
  DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
  WEBHOOK_SIGNATURE_HEADER,
  WEBHOOK_TIMESTAMP_HEADER,
  signWebhook,
  verifyWebhookSignature,
} from './signature.js';
export { WebhookArgumentError, WebhookStateError } from '../errors.js';
