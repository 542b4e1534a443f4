/**
 * What the HTTP side needs from the daemon, and nothing more: the daemon (server/http-link.ts)
 * implements it, and tests can drive the HTTP side with a port of their own. The JSON API reuses
 * the control socket's requests, so `mega <name> status` and `GET /api/v1/status` are one answer.
 */

export interface Readiness {
  /** True while the daemon takes work: not shutting down, and its queue can be written. */
  ready: boolean;
  /** Why not, when not. */
  reason?: string;
}

export interface AccessTokenAnswer {
  accessToken: string;
  /** ms since the epoch; null when the source does not say. */
  expiresAt: number | null;
}

export interface OpsPort {
  readiness(): Readiness;
  /** The Prometheus text exposition. */
  metrics(): Promise<string>;
  readonly metricsContentType: string;
  /**
   * One control-socket request (`{ cmd: 'status' }`, `{ cmd: 'dlq-retry', selector }`, ...),
   * checked and answered as the socket would; a bad one throws BadRequestError.
   */
  control(request: unknown): Promise<unknown>;
  /** The access token in use (fetched if none is held). */
  accessToken(): Promise<AccessTokenAnswer>;
  templates: TemplateOps;
  tasks: TaskOps;
  /** The last 15 minutes of sends. */
  rateHistory(): RateHistory;
}

/** A template row as the API shows it. */
export interface TemplateView {
  key: string;
  title: string;
  /** The template's JSON text, as stored. */
  template: string;
  /** ISO times; null when the store has none. */
  createdAt: string | null;
  updatedAt: string | null;
  /** Whether this daemon has it compiled (a row saved without TSet, or a broken one, is not). */
  loaded: boolean;
  /** `template`, `subscribe` or `miniprogram`: which WeChat message, which endpoint. */
  kind: string;
}

export interface TemplateOps {
  list(): Promise<TemplateView[]>;
  /** Throws TemplateNotFoundError (404) when there is no such row. */
  get(key: string): Promise<TemplateView>;
  /**
   * Checks the JSON and compiles it first (InvalidTemplateError: 400, nothing written), writes the
   * row, then TSets it: the answer is the TSet's (200, or 503 with the daemons that did not load it).
   */
  set(key: string, row: { title?: string; template: string; kind?: string }): Promise<{ code: number; message: string }>;
  /** Deletes the row and TSets the key (dropped everywhere). Throws TemplateNotFoundError when there was none. */
  remove(key: string): Promise<{ code: number; message: string }>;
  /**
   * The message the daemon's own renderer makes from `template` (the JSON text, or the stored
   * row's with `key`), the variables and an openid, exactly as it would be posted to WeChat.
   * InvalidTemplateError / TemplateRenderError: 400 with the reason.
   */
  preview(input: { key?: string; template?: string; variables: Record<string, unknown>; openid: string }): Promise<{ message: Record<string, unknown>; missing: string[] }>;
}

/** A bulk task as the API shows it (tasks/ runs it; the daemon runs it when started over HTTP). */
export interface TaskView {
  id: number;
  name: string;
  /** The template key. */
  key: string;
  status: 'pending' | 'running' | 'done' | 'failed' | 'paused' | 'stopped';
  /** Why it is paused, stopped or failed ('' otherwise). */
  message: string;
  total: number;
  success: number;
  fail: number;
  /** Recipients finished per second over the last seconds (0 when not running here). */
  rate: number;
  /** Seconds left at that rate; null while unknown. */
  etaSeconds: number | null;
  createdAt: string;
  updatedAt: string;
  /** Whether this daemon runs it now. */
  runningHere: boolean;
}

export interface TaskOps {
  /** Newest first. */
  list(): Promise<TaskView[]>;
  /** Throws TaskStateError with "no task" (404) when there is none. */
  get(id: number): Promise<TaskView>;
  /**
   * A task from an uploaded recipients file, checked like `mega <name> task create` does
   * (RecipientFileError: 400 with the problems). `start`: run it at once in this daemon.
   */
  create(input: {
    key: string;
    name?: string;
    format: 'plain' | 'csv' | 'jsonl';
    /** The file's bytes. */
    content: Buffer;
    /** Variables for every recipient (a recipient's own win). */
    variables?: Record<string, unknown>;
    skipInvalid?: boolean;
    start?: boolean;
  }): Promise<TaskView>;
  /** Runs a pending task, or resumes a paused, stopped or failed one, in this daemon. */
  start(id: number): Promise<TaskView>;
  /** Pauses it (wherever it runs: the runner sees the status). */
  pause(id: number): Promise<TaskView>;
  /** The failure report: CSV `openid,errcode,errmsg`. */
  report(id: number): Promise<string>;
}

/** Sends and failures per interval, oldest first, for the overview's chart. */
export interface RateHistory {
  intervalSeconds: number;
  /** `t`: the interval's start, ms since the epoch. */
  points: Array<{ t: number; sent: number; failed: number }>;
}
