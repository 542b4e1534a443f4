export { MegaMetrics, METRIC_NAMES, PAUSE_REASONS, type DispatchMetrics, type GaugeSnapshot, type GaugeSource, type RequestMetrics } from './metrics.js';
export { SendHistory } from './send-history.js';
