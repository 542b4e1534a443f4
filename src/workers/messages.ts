import type { CompiledTemplate, MissingVariable } from '../templates/render.js';
import type { JobOutcome } from '../jobs/outcome.js';
import type { JobMessage } from '../jobs/worker-pool.js';

/**
 * The only messages that cross between the main thread and a task worker. Enum-typed so
 * both sides switch exhaustively; everything in them is structured-clone-able.
 */
export enum ToWorker {
  Init = 'init',
  Templates = 'templates',
  DropTemplates = 'drop-templates',
  Jobs = 'jobs',
  Shutdown = 'shutdown',
}

export enum FromWorker {
  Ready = 'ready',
  Outcomes = 'outcomes',
  Closed = 'closed',
}

export interface WorkerInit {
  apiBase: string;
  timeoutMs: number;
  /** WeChat calls this worker may have in flight; also its HTTP connection pool size. */
  concurrency: number;
  /** `[setting] missing_variable`. */
  missingVariable: MissingVariable;
}

// Declared in jobs/, beside the WorkerPool interface the dispatcher uses.
export type { JobMessage };

export type ToWorkerMessage =
  | { type: ToWorker.Init; init: WorkerInit; templates: CompiledTemplate[] }
  | { type: ToWorker.Templates; templates: CompiledTemplate[] }
  /** Keys whose templates are gone: their jobs now fail as template key not exists. */
  | { type: ToWorker.DropTemplates; keys: string[] }
  | { type: ToWorker.Jobs; token: string; jobs: JobMessage[] }
  | { type: ToWorker.Shutdown };

export type FromWorkerMessage =
  | { type: FromWorker.Ready }
  /**
   * `delivered`: ids of jobs delivered (errcode 0) with no client waiting, with their
   * client_msg_ids, WeChat's msgids ('' when WeChat sent none) and call durations (ms) at the same index;
   * `outcomes`: the rest.
   */
  | { type: FromWorker.Outcomes; delivered: number[]; deliveredMsgids: string[]; deliveredWechat: string[]; deliveredMs: number[]; outcomes: JobOutcome[] }
  | { type: FromWorker.Closed };
