import type { Logger } from 'pino';
import type { AddressInfo } from 'node:net';
import { CallbackServer, type CallbackStats } from '../callback/index.js';
import type { MegaConfig } from '../config/config.js';
import { webhookOutboxDir } from '../config/service-files.js';
import type { Ledger } from '../ledger/index.js';
import { WebhookSender, type WebhookStatus } from '../webhook/index.js';

/** `status` of the receipts side: null where a part is off. */
export interface ReceiptsStatus {
  callback: (CallbackStats & { listen: { host: string; port: number } }) | null;
  webhook: WebhookStatus | null;
}

/**
 * The webhook to the backend, started (its outbox read back, anything left from the last run
 * sent first), or undefined when `[receipt] webhook_url` is empty. The ledger hands it every
 * final state (its onFinal), so it opens before the ledger.
 */
export async function openWebhook(config: MegaConfig, logger: Logger): Promise<WebhookSender | undefined> {
  if (!config.receipt.webhookUrl) return undefined;
  const webhook = new WebhookSender({
    url: config.receipt.webhookUrl,
    secret: config.receipt.webhookSecret,
    batch: config.receipt.webhookBatch,
    dir: webhookOutboxDir(config),
    fsync: config.queue.fsync,
    logger: logger.child({ part: 'webhook' }),
  });
  await webhook.start();
  return webhook;
}

/**
 * The receipts endpoint, listening, or undefined when `[callback] listen` is empty. Without a
 * ledger, receipts are answered and not kept (forwarding still works).
 */
export async function openCallback(config: MegaConfig, ledger: Ledger | undefined, logger: Logger): Promise<CallbackServer | undefined> {
  const listen = config.callback.listen;
  if (!listen) return undefined;
  if (!ledger) logger.warn('[callback] listen is set but [ledger] enabled = 0: delivery receipts are answered and not recorded');
  const callback = new CallbackServer({
    host: listen.host,
    port: listen.port,
    path: config.callback.path,
    token: config.wechat.token!,
    encodingAesKey: config.wechat.encodingAesKey,
    appId: config.wechat.appId,
    sink: ledger,
    forwardUrl: config.callback.forwardUrl,
    forwardReceipts: config.callback.forwardReceipts,
    forwardTimeoutMs: config.callback.forwardTimeoutMs,
    logger: logger.child({ part: 'callback' }),
  });
  await callback.listen();
  return callback;
}

export function receiptsStatus(callback: CallbackServer | undefined, webhook: WebhookSender | undefined): ReceiptsStatus {
  const address = callback?.address() as AddressInfo | undefined;
  return {
    callback: callback && address ? { ...callback.stats, listen: { host: address.address, port: address.port } } : null,
    webhook: webhook?.status() ?? null,
  };
}
