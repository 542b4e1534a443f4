/**
 * Task worker thread: renders jobs with its copy of the template cache and calls WeChat,
 * many calls at once over one keep-alive pool. It keeps no state that matters across a
 * crash: the main thread still holds every job until the outcome comes back.
 */
import { parentPort } from 'node:worker_threads';
import { WechatClient } from '../wechat/client.js';
import { renderTemplate, type CompiledTemplate } from '../templates/render.js';
import { classifyErrcode, OutcomeKind, type JobOutcome } from '../dispatch/outcome.js';
import { decodeJobRecord } from '../dispatch/job.js';
import { FromWorker, ToWorker, type FromWorkerMessage, type JobMessage, type ToWorkerMessage } from './messages.js';
import { scrubSecrets } from '../log/logger.js';
import { WechatTransportError } from '../errors.js';

if (!parentPort) throw new Error('task-worker must run as a worker thread');
const port = parentPort;

const templates = new Map<string, CompiledTemplate>();
let client: WechatClient | undefined;
let pending: JobOutcome[] = [];
let delivered: number[] = [];
let flushScheduled = false;

function post(message: FromWorkerMessage): void {
  port.postMessage(message);
}

/**
 * Outcomes finishing in the same turn go back in one message, not one per job. A delivered
 * Push, by far the most common outcome, travels as its bare id: the main thread needs nothing
 * else to acknowledge it, and a number clones far cheaper than an object of strings.
 */
function report(outcome: JobOutcome | number): void {
  if (typeof outcome === 'number') delivered.push(outcome);
  else pending.push(outcome);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function flush(): void {
  flushScheduled = false;
  const message: FromWorkerMessage = { type: FromWorker.Outcomes, delivered, outcomes: pending };
  delivered = [];
  pending = [];
  post(message);
}

async function run(job: JobMessage, token: string): Promise<void> {
  let openid = '';
  let key = '';
  let replyKey: string | undefined;
  try {
    const record = decodeJobRecord(job.payload);
    openid = record.o;
    key = record.t;
    replyKey = record.r;
    const template = templates.get(record.t);
    if (!template) {
      // The key was valid at enqueue time; it can only be missing here if the daemon restarted
      // with a database that lost it. Nothing later would make it succeed.
      const raw = JSON.stringify({ errcode: -2, errmsg: 'template key not exists', openid });
      report({ id: job.id, kind: OutcomeKind.Failed, errcode: -2, errmsg: 'template key not exists', raw, openid, key, replyKey });
      return;
    }
    const body = renderTemplate(template, record.o, record.d);
    // Always the job's own id: a fixed client_msg_id in a template would make WeChat drop
    // every message after the first as a repeat.
    body.client_msg_id = record.m;
    const result = await client!.sendTemplate(token, body);
    const kind = classifyErrcode(result.errcode);
    if (kind === OutcomeKind.Ok && replyKey === undefined) return report(job.id);
    report({
      id: job.id,
      kind,
      errcode: result.errcode,
      errmsg: result.errmsg,
      raw: result.raw,
      token: kind === OutcomeKind.TokenRejected ? token : undefined,
      openid,
      key,
      replyKey,
    });
  } catch (err) {
    const reason = scrubSecrets(err instanceof Error ? err.message : String(err));
    const unreachable = err instanceof WechatTransportError && err.kind === 'connection';
    report({ id: job.id, kind: unreachable ? OutcomeKind.Unreachable : OutcomeKind.Retry, reason, openid, key, replyKey });
  }
}

port.on('message', (message: ToWorkerMessage) => {
  switch (message.type) {
    case ToWorker.Init:
      client = new WechatClient({
        apiBase: message.init.apiBase,
        timeoutMs: message.init.timeoutMs,
        connections: message.init.concurrency,
      });
      for (const t of message.templates) templates.set(t.key, t);
      post({ type: FromWorker.Ready });
      break;
    case ToWorker.Templates:
      for (const t of message.templates) templates.set(t.key, t);
      break;
    case ToWorker.Jobs:
      for (const job of message.jobs) void run(job, message.token);
      break;
    case ToWorker.Shutdown:
      void (client?.close() ?? Promise.resolve()).finally(() => {
        post({ type: FromWorker.Closed });
        port.close();
      });
      break;
  }
});
