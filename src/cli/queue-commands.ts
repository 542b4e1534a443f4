import type { MegaConfig } from '../config/config.js';
import { deadLetterFile, queueOptions, runningPid } from '../config/service-files.js';
import { FileQueue, JetStreamQueue } from '../queue/index.js';
import { defaultStreamName, natsConnectOptions, natsSafeName, resolveJetStreamOptions } from '../queue/jetstream-options.js';
import { jetStreamQueueOptions } from '../server/queue-link.js';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { JetStreamDeadLetters } from '../cluster/dead-letters.js';
import type { DeadLetter, DeadLetterStore } from '../dispatch/dead-letter.js';
import { DeadLetterLog } from '../dispatch/dead-letter.js';
import { controlRequest } from '../server/control.js';
import { queueSummary, type AnswerOf, type ControlRequest, type DeadLetterSelector, type QueueSummary } from '../server/control-protocol.js';
import { CliFailure } from './failure.js';
import { loadServiceConfig, type ConfigFlags } from './daemon-link.js';
import { say } from './output.js';

/**
 * `mega <name> queue` and `mega <name> dlq ...`. With the daemon running they go through its
 * control socket (it owns the queue and the dead-letter log); with it stopped they open the
 * files themselves, which is safe because no other process has them open.
 */

interface CommonOptions extends ConfigFlags {
  json?: boolean;
}

async function withStoppedQueue<T>(config: MegaConfig, fn: (queue: FileQueue) => Promise<T>): Promise<T> {
  const queue = await FileQueue.open(queueOptions(config));
  try {
    return await fn(queue);
  } finally {
    await queue.close();
  }
}

function daemonCall<R extends ControlRequest>(config: MegaConfig, request: R): Promise<AnswerOf<R['cmd']>> {
  return controlRequest(config.server.controlSocket, request, 30000).catch((err: unknown) => {
    throw new CliFailure(`${config.name} does not answer on ${config.server.controlSocket}: ${err instanceof Error ? err.message : String(err)}`);
  });
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The stream's figures while this daemon is stopped (others of the service may be running: nothing is consumed). */
async function stoppedStreamSummary(config: MegaConfig): Promise<QueueSummary> {
  const options = jetStreamQueueOptions(config);
  let info;
  try {
    info = await JetStreamQueue.inspect(options);
  } catch (err) {
    throw new CliFailure(`cannot reach JetStream at ${config.jetstream.servers.join(', ')}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return {
    backend: 'jetstream',
    stream: options.stream ?? defaultStreamName(config.name),
    depth: info.depth,
    inFlight: 0,
    oldestAgeSeconds: info.oldestEnqueuedAt === undefined ? null : Math.round((Date.now() - info.oldestEnqueuedAt) / 1000),
    bytes: info.bytes,
  };
}

export async function queueInfo(name: string, options: CommonOptions): Promise<void> {
  const config = loadServiceConfig(name, options.configDir);
  const running = runningPid(config.server.pidFile) !== undefined;
  const summary = running
    ? await daemonCall(config, { cmd: 'queue' })
    : config.queue.backend === 'jetstream'
      ? await stoppedStreamSummary(config)
      : await withStoppedQueue(config, async (q) => ({ backend: 'file' as const, ...queueSummary(q.stats()) }));
  if (options.json) return say(JSON.stringify({ running, ...summary }, null, 2));
  say(
    [
      summary.backend === 'jetstream'
        ? `queue of ${name} (JetStream stream ${summary.stream}, shared by the service)${running ? '' : ', this daemon not running'}`
        : `queue of ${name} (${config.server.queueFilePath})${running ? '' : ', daemon not running'}`,
      `  depth:       ${summary.depth}${running ? ` (${summary.inFlight} in flight here)` : ''}`,
      `  oldest job:  ${summary.oldestAgeSeconds === null ? '-' : `${summary.oldestAgeSeconds} s old`}`,
      ...(summary.segments !== undefined ? [`  segments:    ${summary.segments}`] : []),
      ...(summary.bytes !== undefined ? [`  ${summary.backend === 'jetstream' ? 'stream size:' : 'disk use:   '} ${formatBytes(summary.bytes)}`] : []),
    ].join('\n'),
  );
}

/**
 * The dead letters while this daemon is stopped: its file, or with JetStream the service's stream
 * (other daemons may be running); `append` queues a job record again the same way.
 */
async function withStoppedDeadLetters<T>(config: MegaConfig, fn: (store: DeadLetterStore, append: (job: Buffer) => Promise<unknown>) => Promise<T>): Promise<T> {
  if (config.queue.backend !== 'jetstream') {
    const log = new DeadLetterLog(deadLetterFile(config));
    try {
      return await withStoppedQueue(config, (q) => fn(log, (p) => q.append(p)));
    } finally {
      log.close();
    }
  }
  const options = resolveJetStreamOptions(jetStreamQueueOptions(config));
  let nc;
  try {
    nc = await connect({ ...natsConnectOptions(options.servers, `mega-${options.name}-cli`, options.credentials), maxReconnectAttempts: 0 });
  } catch (err) {
    throw new CliFailure(`cannot reach JetStream at ${options.servers.join(', ')}: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    const store = await JetStreamDeadLetters.open<DeadLetter>({ nc, name: natsSafeName(config.name), stream: options.stream, replicas: options.replicas });
    const js = jetstream(nc);
    return await fn(store, (p) => js.publish(options.subject, p, { timeout: options.publishTimeoutMs }));
  } finally {
    await nc.close();
  }
}

export async function dlqList(name: string, options: CommonOptions): Promise<void> {
  const config = loadServiceConfig(name, options.configDir);
  const entries =
    runningPid(config.server.pidFile) !== undefined
      ? await daemonCall(config, { cmd: 'dlq-list' })
      : await withStoppedDeadLetters(config, async (store) => store.list());
  if (options.json) return say(JSON.stringify(entries, null, 2));
  if (entries.length === 0) return say('no dead letters');
  say(['id', 'time', 'openid', 'key', 'errcode', 'attempts', 'errmsg'].join('\t'));
  for (const e of entries) say([e.id, e.time, e.openid, e.key, e.errcode, e.attempts, e.errmsg].join('\t'));
  say(`${entries.length} dead letter(s); retry with: mega ${name} dlq retry --all | <id>`);
}

export async function dlqRetry(name: string, id: string | undefined, options: CommonOptions & { all?: boolean }): Promise<void> {
  if (Boolean(options.all) === (id !== undefined)) throw new CliFailure('dlq retry needs either --all or one job id');
  let selector: DeadLetterSelector;
  if (options.all) {
    selector = { all: true };
  } else {
    const n = Number(id);
    if (!Number.isSafeInteger(n) || n < 1) throw new CliFailure(`job id must be a positive integer, got ${JSON.stringify(id)}`);
    selector = { ids: [n] };
  }
  const config = loadServiceConfig(name, options.configDir);
  const result =
    runningPid(config.server.pidFile) !== undefined
      ? await daemonCall(config, { cmd: 'dlq-retry', selector })
      : await withStoppedDeadLetters(config, (store, append) => store.retry(selector, append));
  say(`${result.retried.length} dead letter(s) queued again`);
  if (result.missing.length > 0) throw new CliFailure(`no dead letter with id ${result.missing.join(', ')}`);
}
