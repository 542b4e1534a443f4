/**
 * The WeChat API simulator: answers the endpoints the daemon calls with WeChat's shapes, drops
 * repeated client_msg_ids, records what it received and injects faults on request
 * (docs/SIMULATOR.md). A tool for tests, demos and benchmarks; the daemon never imports it.
 */
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
export { main } from './main.js';
