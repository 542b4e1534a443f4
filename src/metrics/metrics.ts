/**
 * The daemon's Prometheus metrics (docs/OPERATIONS.md lists them). Events are counted where they
 * happen (the TCP connection answers a request, the dispatcher settles an outcome, a worker
 * thread's WeChat call ends: its duration comes back with the outcome); levels (queue depth,
 * pause, token age, quota) are read once per scrape from a {@link GaugeSource}.
 *
 * Hot paths hold label children, not label objects: `counter.inc({ command, code })` would hash
 * the labels on every request.
 */

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type LabelValues } from 'prom-client';
import { SendHistory } from './send-history.js';

/** What the connection reports for every answered request. */
export interface RequestMetrics {
  /** `seconds`: from the request's arrival to its answer (Push: to the ACK, after the durable append). */
  answered(command: string, code: number, seconds: number): void;
}

/** What the dispatcher reports as it settles outcomes. */
export interface DispatchMetrics {
  delivered(): void;
  /** errcode: WeChat's, a daemon's negative one, or `transport`. */
  failed(errcode: string): void;
  retried(): void;
  deadLettered(count: number): void;
  /** One WeChat call, timed in the worker thread that made it. */
  wechatCall(seconds: number): void;
}

/** The levels a scrape reports, read from the daemon at scrape time. */
export interface GaugeSnapshot {
  queueDepth: number;
  /** null: the queue is empty. */
  queueOldestAgeSeconds: number | null;
  callsInFlight: number;
  /** null while dispatching. */
  paused: { reason: string } | null;
  /** null: no token yet. */
  tokenAgeSeconds: number | null;
  /** null: not known (quota/get not answered). */
  quotaRemaining: number | null;
}

export type GaugeSource = () => Promise<GaugeSnapshot> | GaugeSnapshot;

/** Every reason a pause can have: each gets a series, 1 for the current one, so a dashboard sees the switch. */
export const PAUSE_REASONS = ['quota', 'unreachable', 'token'] as const;

export const METRIC_NAMES = [
  'mega_requests_total',
  'mega_messages_delivered_total',
  'mega_messages_failed_total',
  'mega_retries_total',
  'mega_dead_letters_total',
  'mega_queue_depth',
  'mega_queue_oldest_age_seconds',
  'mega_wechat_calls_in_flight',
  'mega_wechat_request_duration_seconds',
  'mega_push_ack_duration_seconds',
  'mega_dispatch_paused',
  'mega_access_token_age_seconds',
  'mega_quota_remaining',
] as const;

export class MegaMetrics implements RequestMetrics, DispatchMetrics {
  readonly registry = new Registry();
  readonly contentType: string = this.registry.contentType;

  private readonly requests = new Counter({
    name: 'mega_requests_total',
    help: 'Protocol requests answered, by command and result code',
    labelNames: ['command', 'code'] as const,
    registers: [this.registry],
  });
  private readonly requestChildren = new Map<string, { inc(): void }>();
  private readonly deliveredTotal = new Counter({ name: 'mega_messages_delivered_total', help: 'Messages WeChat accepted (errcode 0)', registers: [this.registry] });
  private readonly failedTotal = new Counter({
    name: 'mega_messages_failed_total',
    help: 'Messages failed for good, by errcode (negative: the daemon could not build the message; transport: no answer)',
    labelNames: ['errcode'] as const,
    registers: [this.registry],
  });
  private readonly failedChildren = new Map<string, { inc(): void }>();
  private readonly retriesTotal = new Counter({ name: 'mega_retries_total', help: 'WeChat calls to be tried again later (errcode -1, 5xx, timeouts)', registers: [this.registry] });
  private readonly deadLettersTotal = new Counter({ name: 'mega_dead_letters_total', help: 'Jobs written to the dead-letter store', registers: [this.registry] });
  private readonly queueDepth = new Gauge({ name: 'mega_queue_depth', help: 'Jobs in the queue not yet acknowledged (in flight included)', registers: [this.registry] });
  private readonly queueOldest = new Gauge({ name: 'mega_queue_oldest_age_seconds', help: 'Age of the oldest queued job; 0 when the queue is empty', registers: [this.registry] });
  private readonly inFlight = new Gauge({ name: 'mega_wechat_calls_in_flight', help: 'Jobs handed to the task workers and not answered yet', registers: [this.registry] });
  private readonly wechatDuration = new Histogram({
    name: 'mega_wechat_request_duration_seconds',
    help: 'Duration of WeChat message/template/send calls, measured in the task worker threads',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly pushAck = new Histogram({
    name: 'mega_push_ack_duration_seconds',
    help: 'From a Push request read to its ACK written (the durable append included)',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  private readonly paused = new Gauge({ name: 'mega_dispatch_paused', help: '1 while dispatch is paused, for the reason in the label', labelNames: ['reason'] as const, registers: [this.registry] });
  private readonly tokenAge = new Gauge({ name: 'mega_access_token_age_seconds', help: 'Age of the access token in use; absent before the first one', registers: [this.registry] });
  private readonly quotaRemaining = new Gauge({ name: 'mega_quota_remaining', help: "Template messages left in the account's daily quota (quota/get, cached a minute); absent when unknown", registers: [this.registry] });

  private source: GaugeSource | undefined;
  /** The last 15 minutes in 10 s intervals, for the console's chart. */
  readonly history = new SendHistory(10, 90);

  constructor(options: { defaultMetrics?: boolean } = {}) {
    // the process's own: CPU, memory, event-loop lag, handles, GC
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Where the levels come from (the daemon, once it runs). */
  setSource(source: GaugeSource): void {
    this.source = source;
  }

  answered(command: string, code: number, seconds: number): void {
    const key = `${command} ${code}`;
    let child = this.requestChildren.get(key);
    if (!child) {
      child = this.requests.labels({ command, code: String(code) } as LabelValues<'command' | 'code'>);
      this.requestChildren.set(key, child);
    }
    child.inc();
    if (command === 'push' && code === 200) this.pushAck.observe(seconds);
  }

  delivered(): void {
    this.deliveredTotal.inc();
    this.history.record('sent');
  }

  failed(errcode: string): void {
    this.history.record('failed');
    let child = this.failedChildren.get(errcode);
    if (!child) {
      child = this.failedTotal.labels({ errcode });
      this.failedChildren.set(errcode, child);
    }
    child.inc();
  }

  retried(): void {
    this.retriesTotal.inc();
  }

  deadLettered(count: number): void {
    if (count > 0) this.deadLettersTotal.inc(count);
  }

  wechatCall(seconds: number): void {
    this.wechatDuration.observe(seconds);
  }

  /** The text exposition, levels read first. */
  async render(): Promise<string> {
    if (this.source) {
      const s = await this.source();
      this.queueDepth.set(s.queueDepth);
      this.queueOldest.set(s.queueOldestAgeSeconds ?? 0);
      this.inFlight.set(s.callsInFlight);
      for (const reason of PAUSE_REASONS) this.paused.set({ reason }, s.paused?.reason === reason ? 1 : 0);
      if (s.tokenAgeSeconds === null) this.tokenAge.reset();
      else this.tokenAge.set(s.tokenAgeSeconds);
      if (s.quotaRemaining === null) this.quotaRemaining.reset();
      else this.quotaRemaining.set(s.quotaRemaining);
    }
    return this.registry.metrics();
  }
}
