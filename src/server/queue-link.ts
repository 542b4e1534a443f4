import type { Logger } from 'pino';
import type { MegaConfig } from '../config/config.js';
import { queueOptions } from '../config/service-files.js';
import { FileQueue, JetStreamQueue, type JetStreamQueueOptions, type JobQueue } from '../queue/index.js';
import { natsSafeName, type NatsCredentials } from '../queue/jetstream-options.js';
import { queueSummary, type QueueSummary } from './control-protocol.js';

/**
 * `[queue] backend` made into a JobQueue: the one place that knows there are two. Everything
 * after it (dispatcher, ledger link, control socket) sees only the JobQueue seam.
 */
export interface OpenedQueue {
  queue: JobQueue;
  /**
   * Jobs with an id below this were queued before this process started (the ledger then takes
   * the job's details from its record). With JetStream any job may come from another daemon, so
   * none is assumed to be this process's own.
   */
  firstId: number;
  /** `queue` and `status.queue`: with JetStream, the stream's depth and oldest job (the whole service's). */
  summary(): Promise<QueueSummary>;
}

/** The NATS servers, credentials and TLS of `[jetstream]`. */
export function natsCredentials(config: MegaConfig): NatsCredentials {
  const js = config.jetstream;
  return {
    ...(js.user !== undefined ? { user: js.user, pass: js.password } : {}),
    ...(js.token !== undefined ? { token: js.token } : {}),
    ...(js.tlsCa || js.tlsCert ? { tls: { caFile: js.tlsCa, certFile: js.tlsCert, keyFile: js.tlsKey } } : {}),
  };
}

export function jetStreamQueueOptions(config: MegaConfig, logger?: Logger): JetStreamQueueOptions {
  const js = config.jetstream;
  return {
    servers: js.servers,
    // a service name may hold `.`, which NATS names may not
    name: natsSafeName(config.name),
    ...(js.stream !== undefined ? { stream: js.stream } : {}),
    replicas: js.replicas,
    ackWaitMs: js.ackWaitMs,
    publishTimeoutMs: js.publishTimeoutMs,
    credentials: natsCredentials(config),
    ...(logger ? { logger } : {}),
  };
}

/**
 * Opening what lives in JetStream (the stream, the consumer, the buckets) asks the cluster's
 * JetStream leader, which a cluster that just lost a node may be electing (5–7 s measured); a
 * daemon started then waits and tries again, up to `waitMs`, rather than failing to start. A bad
 * option or refused credentials fail at once.
 */
export async function retryWhileJetStreamStarts<T>(what: string, open: () => Promise<T>, logger: Logger, waitMs = 30_000): Promise<T> {
  const deadline = Date.now() + waitMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await open();
    } catch (err) {
      const e = err as Error;
      const permanent = e instanceof TypeError || e instanceof RangeError || /authoriz|authenticat|permission/i.test(`${e.name} ${e.message}`);
      if (permanent || Date.now() + 1000 > deadline) throw err;
      if (attempt === 0) logger.warn({ reason: e.message, waitSeconds: waitMs / 1000 }, `${what}: JetStream not ready, trying again`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

export async function openJobQueue(config: MegaConfig, logger: Logger): Promise<OpenedQueue> {
  if (config.queue.backend === 'jetstream') {
    const queue = await retryWhileJetStreamStarts('queue', () => JetStreamQueue.open(jetStreamQueueOptions(config, logger)), logger);
    return {
      queue,
      firstId: Number.MAX_SAFE_INTEGER,
      summary: async () => {
        const local = queue.stats();
        const here = { backend: 'jetstream' as const, stream: queue.streamName, ...queueSummary(local) };
        try {
          const s = await Promise.race([queue.streamState(), new Promise<never>((_, reject) => setTimeout(reject, 2000, new Error('timeout')).unref())]);
          return { ...here, ...queueSummary({ ...local, depth: s.depth, oldestEnqueuedAt: s.oldestEnqueuedAt, bytes: s.bytes }) };
        } catch {
          return here; // the server did not answer: this process's own count
        }
      },
    };
  }
  const queue = await FileQueue.open({ ...queueOptions(config), logger });
  return { queue, firstId: queue.stats().nextId, summary: async () => ({ backend: 'file', ...queueSummary(queue.stats()) }) };
}
