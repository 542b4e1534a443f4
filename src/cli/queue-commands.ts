import type { MegaConfig } from '../config/config.js';
import { deadLetterFile, queueOptions, runningPid } from '../config/service-files.js';
import { FileQueue, JetStreamQueue } from '../queue/index.js';
import { defaultStreamName } from '../queue/jetstream-options.js';
import { jetStreamQueueOptions } from '../server/queue-link.js';
import { DeadLetterLog, retryDeadLetters } from '../dispatch/dead-letter.js';
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

export async function dlqList(name: string, options: CommonOptions): Promise<void> {
  const config = loadServiceConfig(name, options.configDir);
  const entries =
    runningPid(config.server.pidFile) !== undefined
      ? await daemonCall(config, { cmd: 'dlq-list' })
      : new DeadLetterLog(deadLetterFile(config)).list();
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
      : await withStoppedQueue(config, (q) => retryDeadLetters(new DeadLetterLog(deadLetterFile(config)), (p) => q.append(p), selector));
  say(`${result.retried.length} dead letter(s) queued again`);
  if (result.missing.length > 0) throw new CliFailure(`no dead letter with id ${result.missing.join(', ')}`);
}
