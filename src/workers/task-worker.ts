/**
 * Task worker thread: renders jobs with its copy of the template cache and calls WeChat,
 * many calls at once over one keep-alive pool. It keeps no state that matters across a
 * crash: the main thread still holds every job until the outcome comes back.
 */
import { takesClientMsgId } from '../wechat/kinds.js';
import { parentPort } from 'node:worker_threads';
import { WechatClient } from '../wechat/client.js';
import { renderTemplate, type CompiledTemplate, type MissingVariable } from '../templates/render.js';
import { classifyErrcode, DaemonErrcode, OutcomeKind, wechatMsgidOf, type JobOutcome } from '../jobs/outcome.js';
import { decodeJobRecord } from '../jobs/record.js';
import { FromWorker, ToWorker, type FromWorkerMessage, type JobMessage, type ToWorkerMessage } from './messages.js';
import { scrubSecrets } from '../log/logger.js';
import { WechatTransportError } from '../errors.js';

if (!parentPort) throw new Error('task-worker must run as a worker thread');
const port = parentPort;

const templates = new Map<string, CompiledTemplate>();
let client: WechatClient | undefined;
let missingVariable: MissingVariable = 'keep';
let pending: JobOutcome[] = [];
let delivered: number[] = [];
let deliveredMsgids: string[] = [];
let deliveredWechat: string[] = [];
/** How long each delivered job's WeChat call took, ms (parallel to `delivered`). */
let deliveredMs: number[] = [];
let flushScheduled = false;

function post(message: FromWorkerMessage): void {
  port.postMessage(message);
}

/**
 * Outcomes finishing in the same turn go back in one message, not one per job. A delivered
 * Push, by far the most common outcome, travels as its bare id plus two short strings in
 * parallel arrays (its client_msg_id and WeChat's msgid, for the ledger): flat arrays clone far
 * cheaper than an object per job.
 */
function report(outcome: JobOutcome): void {
  pending.push(outcome);
  schedule();
}

function reportDelivered(id: number, msgid: string, wechatMsgid: string, ms: number): void {
  delivered.push(id);
  deliveredMsgids.push(msgid);
  deliveredWechat.push(wechatMsgid);
  deliveredMs.push(ms);
  schedule();
}

function schedule(): void {
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function flush(): void {
  flushScheduled = false;
  const message: FromWorkerMessage = { type: FromWorker.Outcomes, delivered, deliveredMsgids, deliveredWechat, deliveredMs, outcomes: pending };
  delivered = [];
  deliveredMsgids = [];
  deliveredWechat = [];
  deliveredMs = [];
  pending = [];
  post(message);
}

/** A job that can never be sent as it is: reported as a permanent failure with the daemon's own errcode. */
function refuse(job: JobMessage, errcode: number, errmsg: string, openid: string, key: string, replyKey: string | undefined, msgid: string): void {
  const raw = JSON.stringify({ errcode, errmsg, openid });
  report({ id: job.id, kind: OutcomeKind.Failed, errcode, errmsg, raw, openid, key, replyKey, msgid });
}

async function run(job: JobMessage, token: string): Promise<void> {
  let openid = '';
  let key = '';
  let replyKey: string | undefined;
  let msgid: string | undefined;
  let started: number | undefined;
  try {
    const record = decodeJobRecord(job.payload);
    openid = record.o;
    key = record.t;
    replyKey = record.r;
    msgid = record.m;
    const template = templates.get(record.t);
    if (!template) {
      // The key was cached at enqueue time: since then a TSet found its row deleted, or the
      // daemon restarted without it. Nothing later would make it succeed.
      return refuse(job, DaemonErrcode.TEMPLATE_NOT_FOUND, 'template key not exists', openid, key, replyKey, record.m);
    }
    let body: Record<string, unknown>;
    try {
      body = renderTemplate(template, record.o, record.d, { missing: missingVariable });
    } catch (err) {
      // The same job renders the same way on every attempt: a retry would only delay everyone else.
      const reason = err instanceof Error ? err.message : String(err);
      return refuse(job, DaemonErrcode.RENDER_FAILED, `cannot render template: ${reason}`, openid, key, replyKey, record.m);
    }
    // Always the job's own id: a fixed client_msg_id in a template would make WeChat drop
    // every message after the first as a repeat. The subscribe endpoints take no such field.
    if (takesClientMsgId(template.kind)) body.client_msg_id = record.m;
    else delete body.client_msg_id;
    started = performance.now();
    const result = await client!.sendMessage(template.kind, token, body);
    const ms = performance.now() - started;
    const kind = classifyErrcode(result.errcode);
    const wechatMsgid = kind === OutcomeKind.Ok ? wechatMsgidOf(result.raw) : undefined;
    if (kind === OutcomeKind.Ok && replyKey === undefined) return reportDelivered(job.id, record.m, wechatMsgid ?? '', ms);
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
      msgid,
      wechatMsgid,
      ms,
    });
  } catch (err) {
    const reason = scrubSecrets(err instanceof Error ? err.message : String(err));
    const unreachable = err instanceof WechatTransportError && err.kind === 'connection';
    const ms = started === undefined ? undefined : performance.now() - started;
    report({ id: job.id, kind: unreachable ? OutcomeKind.Unreachable : OutcomeKind.Retry, reason, openid, key, replyKey, msgid, ms });
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
      missingVariable = message.init.missingVariable;
      for (const t of message.templates) templates.set(t.key, t);
      post({ type: FromWorker.Ready });
      break;
    case ToWorker.Templates:
      for (const t of message.templates) templates.set(t.key, t);
      break;
    case ToWorker.DropTemplates:
      for (const k of message.keys) templates.delete(k);
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
