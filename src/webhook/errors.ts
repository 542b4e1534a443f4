/**
 * The webhook's named errors. They live here rather than in src/errors.ts only because that file
 * is shared; they extend MegaError like every other, so callers match on `code`.
 * Messages name the option or argument, never its value when it may be a secret.
 */

import { MegaError } from '../errors.js';

/**
 * An option of {@link WebhookSender}, a record given to `enqueue`, or an argument of
 * `signWebhook` / `verifyWebhookSignature` has the wrong type or an out-of-range value; the
 * message names it.
 */
export class WebhookArgumentError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_WEBHOOK_ARG');
  }
}

/** `enqueue` or `start` on a sender that is not started yet, or is closing or closed. */
export class WebhookStateError extends MegaError {
  constructor(message: string) {
    super(message, 'MEGA_ERR_WEBHOOK_STATE');
  }
}
