/**
 * The WeChat API simulator: answers the endpoints the daemon calls with WeChat's shapes, drops
 * repeated client_msg_ids, records what it received, injects faults on request, and pushes
 * WeChat's delivery receipts to a server URL (docs/SIMULATOR.md). A tool for tests, demos and benchmarks; the daemon never imports it.
 */
export {
  WechatSimulator,
  validateConfigPatch,
  MESSAGE_KIND_PATHS,
  MINIPROGRAM_STATES,
  SUBSCRIBE_LANGS,
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
  MessageKind,
  KindStats,
  PrivateTemplate,
  SubscribeTemplate,
  SimulatorAccount,
} from './simulator.js';
export { ReceiptPusher, receiptXml, subscribeSentXml, subscribePopupXml, subscribeChangeXml } from './receipts.js';
export type {
  DeliveredMessage,
  ReceiptPush,
  ReceiptPushKind,
  ReceiptOutcome,
  ReceiptAttempt,
  ReceiptStats,
  PushReceiptInput,
  BadSignatureInput,
  ReplayInput,
  DuplicateInput,
  UnknownMsgidInput,
  RawPushInput,
  SubscribeStatus,
  SubscribeChoice,
  SubscribePopupInput,
  SubscribeChangeInput,
} from './receipts.js';
export {
  RECEIPT_STATUSES,
  RECEIPTS_DEFAULTS,
  SIMULATOR_DEFAULT_RECEIPT_TOKEN,
  validateReceiptsPatch,
  mergeReceiptsConfig,
  isReceiptStatus,
} from './receipts-config.js';
export type { ReceiptStatus, ReceiptStatusRule, ReceiptsConfig, ReceiptsPatch } from './receipts-config.js';
export { main } from './main.js';
