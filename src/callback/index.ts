/**
 * The receipts endpoint (docs/CALLBACK.md): WeChat's server-URL protocol over HTTP, delivery
 * receipts into the ledger, every other verified request forwarded to the team's own app.
 */
export { CallbackServer, type CallbackServerOptions, type CallbackStats, type ReceiptSink } from './callback-server.js';
export { Forwarder, type ForwarderOptions, type ForwardedRequest } from './forwarder.js';
export { ReplayGuard, type CallbackAnswer, type ReplayVerdict, type ReplayGuardOptions } from './replay-guard.js';
