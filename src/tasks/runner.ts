import os from 'node:os';
import { backoffDelay } from '../backoff.js';
import { pidAlive } from '../config/service-files.js';
import { MegaClientErrorCode, type MegaResult } from '../client/index.js';
import { MegaConnectionClosedError, TaskStateError } from '../errors.js';
import { ResultCode } from '../protocol/index.js';
import { ProgressTracker } from './progress.js';
import { RecipientListReader, verifyRecipientList, type TaskRecipient, type Variables } from './recipients.js';
import { ReportWriter } from './report.js';
import type { TaskControl, TaskRow, TaskStatus, TaskStore } from './store.js';

/**
 * Runs a bulk task: sends every recipient not yet finished with Send (a window of requests in
 * flight), counts each answer once, and saves its progress to the task store several times a
 * second.
 *
 * Guarantees, across Ctrl-C, kill -9 and daemon restarts:
 * - **nobody is skipped**: a recipient is finished only once its answer is counted, and a run
 *   sends every recipient the store does not record as finished (see {@link ProgressTracker});
 * - **nobody gets the message twice**: recipient `i` of task `id` is always sent with the msgid
 *   `t<id>-<nonce>-<i>`, which the daemon passes to WeChat as `client_msg_id`; WeChat drops a
 *   repeat, so sending again a recipient whose answer was lost (crash, closed connection,
 *   timeout) is harmless;
 * - **counts are exact**: the counts, the finished set and the failure report's length are
 *   saved in one statement, and a run cuts the report back to the saved length;
 * - **at most `window` recipients are sent again after a kill -9**: a recipient holds its place
 *   in the window from its Send until its outcome is saved, not just until its answer comes
 *   (see `#occupied`).
 *
 * Answers: 200 → success. 400 with WeChat's JSON → failure, reported (openid, errcode, errmsg).
 * 413 (this recipient's variables make a frame too large) → failure, reported with errcode 413.
 * 503 (daemon shutting down, disk full) and a lost connection or a timeout → sent again after a
 * backoff (the client reconnects by itself). 500, 401, any other 400 (`template key not exists`:
 * the same for everyone) → the task is **paused** with the reason, and the recipient stays
 * unfinished. Trouble (no progress, only errors) lasting `offlineLimitMs` pauses it too.
 */

/** What the runner needs of {@link MegaClient} (src/client). */
export interface TaskClient {
  send(
    openid: string,
    key: string,
    data: Record<string, unknown> | null,
    options: { msgid: string; timeoutMs?: number },
  ): Promise<MegaResult>;
  close(options?: { timeoutMs?: number }): Promise<void>;
  destroy(): void;
  on?(event: 'disconnect', listener: (reason: Error | undefined) => void): unknown;
}

export interface ProgressInfo {
  id: number;
  total: number;
  /** Answered and counted (success + fail). */
  finished: number;
  success: number;
  fail: number;
  inFlight: number;
  /** Recipients finished per second over the last few seconds. */
  rate: number;
  /** Seconds left at that rate; undefined while unknown. */
  etaSeconds: number | undefined;
  /** What is wrong right now (daemon unreachable, retrying...), or why it is stopping. */
  note: string | undefined;
}

export interface TaskRunnerOptions {
  store: TaskStore;
  id: number;
  /** Connected (it reconnects by itself after a lost connection). The runner closes it. */
  client: TaskClient;
  /**
   * Recipients sent and not yet saved as finished, at once: Sends in flight, answers waiting
   * for a retry, and outcomes waiting for the next save. So a kill -9 leaves at most this many
   * recipients that the next run sends again. @defaultValue 64
   */
  window?: number;
  /** Allow a paused or failed task (`task resume`). @defaultValue false */
  resume?: boolean;
  /** `host:pid` recorded as the task's owner. @defaultValue this process */
  owner?: string;
  /** How often progress is saved (when something changed). @defaultValue 100 */
  saveIntervalMs?: number;
  /** Longest time between two saves (the heartbeat other processes judge us by). @defaultValue 1000 */
  heartbeatMs?: number;
  /** First delay before sending again after a lost connection, timeout or 503; doubles per wave of failures up to retryMaxMs, with jitter (src/backoff.ts). @defaultValue 100 */
  retryBaseMs?: number;
  /** @defaultValue 5000 */
  retryMaxMs?: number;
  /** Pause the task when nothing but errors happened for this long. @defaultValue 300000 */
  offlineLimitMs?: number;
  /** Give up on the store (and stop) when saving fails for this long. @defaultValue 30000 */
  storeLimitMs?: number;
  /**
   * Per Send, in ms. A Send is answered when WeChat answered, which can take long (daemon
   * retries, a daily-quota pause): by default the runner waits as long as the daemon holds it.
   * @defaultValue 2147483647
   */
  requestTimeoutMs?: number;
  /** Called about 5 times a second while running, and once at the end. */
  onProgress?: (p: ProgressInfo) => void;
  /** Things the operator should know (took over a crashed run, report damaged...). */
  onNotice?: (text: string) => void;
}

export type RunEnd =
  /** Every recipient finished. */
  | 'done'
  /** `task pause` from another process. */
  | 'paused'
  /** Paused by the daemon's answer (500, 401, template missing...) or a long outage. */
  | 'paused-error'
  /** stop() (Ctrl-C, SIGTERM). */
  | 'stopped'
  /** Another process took the task over, or it was deleted; nothing more was written. */
  | 'lost';

export interface RunOutcome {
  end: RunEnd;
  /** Status left in the store. */
  status: TaskStatus;
  message: string;
  task: TaskRow;
}

/** Another process's heartbeat older than this means it is gone. */
export const STALE_OWNER_MS = 120_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
const RATE_WINDOW_MS = 5000;

export function thisOwner(): string {
  return `${os.hostname()}:${process.pid}`;
}


/**
 * Whether the process named by `owner` may still be working on the task: on this host, its pid
 * runs (and it wrote within {@link STALE_OWNER_MS}, against pid reuse); elsewhere, it wrote
 * within {@link STALE_OWNER_MS} (a runner stops when it cannot save for 30 s).
 */
export function ownerAlive(owner: string, heartbeatAt: number, now = Date.now()): boolean {
  if (owner === '') return false;
  const fresh = now - heartbeatAt < STALE_OWNER_MS;
  const colon = owner.lastIndexOf(':');
  const host = owner.slice(0, colon);
  const pid = Number(owner.slice(colon + 1));
  if (host === os.hostname() && Number.isSafeInteger(pid) && pid > 0) return fresh && pidAlive(pid);
  return fresh;
}

/** The msgid (WeChat's client_msg_id) of recipient `index`: the same on every run. */
export function taskMsgid(task: Pick<TaskRow, 'id' | 'nonce'>, index: number): string {
  return `t${task.id}-${task.nonce}-${index}`;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function errCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

interface Stop {
  end: 'paused' | 'paused-error' | 'stopped';
  status: TaskStatus;
  message: string;
}

export class TaskRunner {
  readonly #o: TaskRunnerOptions;
  readonly #store: TaskStore;
  readonly #client: TaskClient;
  readonly #owner: string;
  readonly #window: number;
  /** Unsaved outcomes that make a blocked window save before the tick. */
  readonly #earlySave: number;
  readonly #requestTimeoutMs: number;
  #task!: TaskRow;
  #tracker!: ProgressTracker;
  #report!: ReportWriter;
  #reader!: RecipientListReader;

  #retry: Array<{ r: TaskRecipient; notBefore: number }> = [];
  #inFlight = 0;
  #readerDone = false;
  #stop: Stop | undefined;
  #abort = false;
  #lost: string | undefined;
  #fatal: unknown;
  #wake: (() => void) | undefined;

  #gateUntil = 0;
  /** Waves of failures since the last progress: the backoff's attempt number. */
  #gateWaves = 0;
  #troubleSince: number | undefined;
  #lastError: string | undefined;

  #lastStatus: TaskStatus = 'running';
  #savedVersion = -1;
  /** {@link ProgressTracker.finished} as of the last save that succeeded. */
  #savedFinished = 0;
  #savedReportSize = -1;
  #lastSaveAt = 0;
  #saving: Promise<void> | undefined;
  #saveFailingSince: number | undefined;
  #samples: Array<{ at: number; finished: number }> = [];

  private constructor(options: TaskRunnerOptions) {
    this.#o = options;
    this.#store = options.store;
    this.#client = options.client;
    this.#owner = options.owner ?? thisOwner();
    this.#window = options.window ?? 64;
    this.#requestTimeoutMs = Math.min(options.requestTimeoutMs ?? MAX_TIMER_MS, MAX_TIMER_MS);
    if (!Number.isSafeInteger(this.#window) || this.#window < 1) throw new RangeError('window must be a positive integer');
    this.#earlySave = Math.ceil(this.#window / 4);
  }

  /**
   * Checks the task can run here, verifies its recipient list and claims it (status `running`,
   * owner this process). Resolves with `undefined` when the task is already done.
   * @throws TaskStateError when it does not exist, runs elsewhere, is paused/failed (without
   *   `resume`), or its list changed since `create`.
   */
  static async claim(options: TaskRunnerOptions): Promise<TaskRunner | undefined> {
    const runner = new TaskRunner(options);
    return (await runner.#claim()) ? runner : undefined;
  }

  get task(): TaskRow {
    return this.#task;
  }

  async #claim(): Promise<boolean> {
    const { store } = this.#o;
    const id = this.#o.id;
    const row = await store.get(id);
    if (!row) throw new TaskStateError(`there is no task ${id}`);
    if (row.status === 'done') {
      this.#task = row;
      return false;
    }
    if (row.owner !== '' && row.owner !== this.#owner && ownerAlive(row.owner, row.heartbeatAt)) {
      const ago = Math.max(0, Math.round((Date.now() - row.heartbeatAt) / 1000));
      throw new TaskStateError(`task ${id} is being run by ${row.owner} (status ${row.status}, last saved ${ago} s ago)`);
    }
    if ((row.status === 'paused' || row.status === 'failed') && !this.#o.resume) {
      throw new TaskStateError(`task ${id} is ${row.status}${row.message ? ` (${row.message})` : ''}; continue it with: task resume ${id}`);
    }
    await verifyRecipientList(row.file, row.checksum, row.total);
    // Checked before claiming, so a task whose saved state makes no sense is not marked running.
    this.#tracker = new ProgressTracker(row.total, row);
    const claimed = await store.transition(
      id,
      { status: row.status, owner: row.owner },
      { status: 'running', owner: this.#owner, message: '', started: row.startedAt === 0 },
    );
    if (!claimed) throw new TaskStateError(`task ${id} changed while it was being claimed; try again`);
    if (row.owner !== '' && row.owner !== this.#owner) {
      this.#notice(`task ${id}: took over from ${row.owner}, which is gone; its unanswered recipients are sent again (same msgid)`);
    }
    this.#task = (await store.get(id)) ?? row;
    return true;
  }

  /** Ctrl-C / SIGTERM: the first call stops taking recipients and waits for the answers in flight; a second stops waiting. */
  stop(signal = 'SIGINT'): void {
    if (this.#stop) {
      this.#abort = true;
    } else {
      this.#stop = { end: 'stopped', status: 'stopped', message: `interrupted by ${signal}` };
    }
    this.#wakeUp();
  }

  /** Runs to the end (done, paused, stopped, or lost). The client is closed when it resolves. */
  async run(): Promise<RunOutcome> {
    const task = this.#task;
    this.#report = ReportWriter.open(task.report, task.reportSize);
    if (this.#report.damaged) this.#notice(this.#report.damaged);
    this.#reader = new RecipientListReader(task.file, (i) => this.#tracker.isFinished(i));
    this.#client.on?.('disconnect', (reason) => {
      // The daemon closes a connection after answering 500 (or when it cannot read a frame).
      if (reason instanceof MegaConnectionClosedError && reason.serverCode === ResultCode.INTERNAL) {
        this.#pause(`the daemon closed the connection: ${reason.message}`);
      }
    });
    this.#samples.push({ at: Date.now(), finished: this.#tracker.finished });
    this.#savedFinished = this.#tracker.finished;
    const saver = setInterval(() => this.#saveTick(), this.#o.saveIntervalMs ?? 100);
    const reporter = setInterval(() => this.#progress(), 200);
    try {
      await this.#loop();
    } catch (err) {
      this.#fatal ??= err;
    } finally {
      clearInterval(saver);
      clearInterval(reporter);
    }
    await this.#reader.close().catch(() => undefined);
    if (this.#abort || this.#lost !== undefined || this.#fatal !== undefined) this.#client.destroy();
    else await this.#client.close({ timeoutMs: 1000 }).catch(() => undefined);
    await this.#saving;
    this.#progress();
    try {
      return await this.#finish();
    } finally {
      this.#report.close();
    }
  }

  // ------------------------------------------------------------------ sending

  async #loop(): Promise<void> {
    for (;;) {
      if (this.#stop || this.#fatal !== undefined || this.#lost !== undefined) break;
      this.#checkTrouble();
      while (!this.#stop && Date.now() >= this.#gateUntil) {
        // A retry keeps the place it holds in the window; only a recipient never sent needs a free one.
        const r = this.#takeRetry() ?? (this.#occupied() < this.#window ? await this.#readNext() : undefined);
        if (r === undefined || this.#stop) {
          if (r !== undefined) this.#retry.unshift({ r, notBefore: 0 }); // stays unfinished: sent next run
          break;
        }
        this.#launch(r);
      }
      if (!this.#stop && this.#inFlight === 0 && this.#retry.length === 0 && this.#readerDone) break;
      // Outcomes waiting for the 100 ms tick hold the window shut: once they are a quarter of
      // it, save them now, so the rate stays that of the answers, not one window per tick
      // (a quarter, not one: a save per answer would cost more than the send).
      if (this.#occupied() >= this.#window && this.#unsaved() >= this.#earlySave && this.#saveFailingSince === undefined) this.#startSave();
      await this.#sleep(this.#nextWakeMs());
    }
    while (this.#inFlight > 0 && !this.#abort && this.#lost === undefined) {
      // Answers cannot come while the daemon is unreachable: stop waiting (those recipients
      // stay unfinished and are sent again, same msgid, by the next run).
      if (this.#troubleSince !== undefined) this.#abort = true;
      else await this.#sleep(1000);
    }
  }

  /**
   * Recipients a Send went out for (in this run or, for those it sends again, an earlier one)
   * and that the store does not yet record as finished: after a kill -9 exactly these are sent
   * again. They fill the window: in flight, waiting for a retry, or answered but not yet saved.
   * A run sends again what an earlier one left before any recipient that was never sent (they
   * come first in the list), so the whole set stays within the window across runs too.
   */
  #occupied(): number {
    return this.#inFlight + this.#retry.length + this.#unsaved();
  }

  /** Recipients counted since the last save that succeeded. */
  #unsaved(): number {
    return this.#tracker.finished - this.#savedFinished;
  }

  #takeRetry(): TaskRecipient | undefined {
    const now = Date.now();
    const i = this.#retry.findIndex((x) => x.notBefore <= now);
    if (i < 0) return undefined;
    return this.#retry.splice(i, 1)[0]!.r;
  }

  async #readNext(): Promise<TaskRecipient | undefined> {
    if (this.#readerDone) return undefined;
    const r = await this.#reader.next();
    if (r === undefined) this.#readerDone = true;
    return r;
  }

  #nextWakeMs(): number {
    const now = Date.now();
    let at = now + 1000;
    if (this.#gateUntil > now) at = Math.min(at, this.#gateUntil);
    for (const x of this.#retry) at = Math.min(at, Math.max(x.notBefore, this.#gateUntil));
    return Math.max(0, at - now);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #launch(r: TaskRecipient): void {
    this.#inFlight++;
    let sent: Promise<MegaResult>;
    try {
      sent = this.#client.send(r.openid, this.#task.key, r.vars as Variables | null, {
        msgid: taskMsgid(this.#task, r.index),
        timeoutMs: this.#requestTimeoutMs,
      });
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent
      .then(
        (res) => this.#onResult(r, res),
        (err: unknown) => this.#onError(r, err),
      )
      .catch((err: unknown) => {
        this.#fatal ??= err;
      })
      .finally(() => {
        this.#inFlight--;
        this.#wakeUp();
      });
  }

  #onResult(r: TaskRecipient, res: MegaResult): void {
    if (this.#tracker.isFinished(r.index) || this.#lost !== undefined) return;
    if (res.code === ResultCode.OK) {
      this.#progressMade();
      this.#tracker.finish(r.index, true);
    } else if (res.code === ResultCode.BAD_REQUEST && res.wechat) {
      this.#progressMade();
      // The line first: the snapshot that counts this failure always includes it.
      this.#report.append(r.openid, res.wechat.errcode, res.wechat.errmsg);
      this.#tracker.finish(r.index, false);
    } else if (res.code === ResultCode.TOO_LARGE) {
      this.#progressMade();
      this.#report.append(r.openid, ResultCode.TOO_LARGE, res.message || 'request larger than the daemon’s package_max_length');
      this.#tracker.finish(r.index, false);
    } else if (res.code === ResultCode.UNAVAILABLE) {
      this.#again(r, `the daemon is not accepting work (503${res.message ? ` ${res.message}` : ''})`);
    } else {
      this.#pause(`the daemon answered ${res.code}${res.message ? ` ${res.message}` : ''} to the send to ${r.openid} (recipient ${r.index + 1})`);
    }
  }

  #onError(r: TaskRecipient, err: unknown): void {
    if (this.#tracker.isFinished(r.index) || this.#lost !== undefined) return;
    switch (errCode(err)) {
      case MegaClientErrorCode.CLOSED:
      case MegaClientErrorCode.TIMEOUT:
      case MegaClientErrorCode.CONNECT:
        this.#again(r, describe(err));
        return;
      case MegaClientErrorCode.DESTROYED:
        return; // we closed the client: the recipient stays unfinished
      case MegaClientErrorCode.REQUEST_TOO_LARGE:
        this.#progressMade();
        this.#report.append(r.openid, ResultCode.TOO_LARGE, 'variables too large for one frame (package_max_length)');
        this.#tracker.finish(r.index, false);
        return;
      case MegaClientErrorCode.BAD_REQUEST:
        this.#pause(`the send to ${r.openid} (recipient ${r.index + 1}) was refused before sending: ${describe(err)}`);
        return;
      case MegaClientErrorCode.AUTH:
        this.#pause(`the daemon refused the auth token: ${describe(err)}`);
        return;
      default:
        this.#pause(`the send to ${r.openid} (recipient ${r.index + 1}) failed: ${describe(err)}`);
    }
  }

  /** Sends `r` again later (same msgid), backing off while the trouble lasts. */
  #again(r: TaskRecipient, why: string): void {
    const now = Date.now();
    // One step of backoff per wave: a lost connection fails a whole window of sends at once.
    if (now >= this.#gateUntil) {
      const delay = backoffDelay(this.#gateWaves++, { baseMs: this.#o.retryBaseMs ?? 100, maxMs: this.#o.retryMaxMs ?? 5000 });
      this.#gateUntil = now + delay;
    }
    this.#troubleSince ??= now;
    this.#lastError = why;
    this.#retry.push({ r, notBefore: now });
  }

  #progressMade(): void {
    this.#gateWaves = 0;
    this.#gateUntil = 0;
    this.#troubleSince = undefined;
    this.#lastError = undefined;
  }

  #checkTrouble(): void {
    const limit = this.#o.offlineLimitMs ?? 300_000;
    if (this.#troubleSince !== undefined && Date.now() - this.#troubleSince > limit) {
      this.#pause(`no progress for ${limit < 10_000 ? (limit / 1000).toFixed(1) : Math.round(limit / 1000)} s: ${this.#lastError ?? 'unknown error'}`);
    }
  }

  #pause(message: string): void {
    if (this.#stop) return;
    this.#stop = { end: 'paused-error', status: 'paused', message };
    this.#wakeUp();
  }

  // ------------------------------------------------------------------ saving

  #saveTick(): void {
    if (this.#saving) return;
    const due =
      this.#tracker.version !== this.#savedVersion ||
      this.#report.size !== this.#savedReportSize ||
      Date.now() - this.#lastSaveAt >= (this.#o.heartbeatMs ?? 1000);
    if (due) this.#startSave();
  }

  #startSave(): void {
    if (this.#saving) return;
    this.#saving = this.#saveNow().finally(() => {
      this.#saving = undefined;
      this.#wakeUp(); // saved outcomes free their places in the window
    });
  }

  async #saveNow(): Promise<void> {
    if (this.#lost !== undefined) return;
    let control: TaskControl | undefined;
    try {
      // Lines synced before the store counts them; the snapshot is taken in the same tick.
      this.#report.sync();
      const version = this.#tracker.version;
      const finished = this.#tracker.finished;
      const snapshot = this.#tracker.snapshot(this.#report.size);
      control = await this.#store.saveProgress(this.#task.id, this.#owner, snapshot);
      this.#savedVersion = version;
      this.#savedFinished = finished;
      this.#savedReportSize = snapshot.reportSize;
      this.#lastSaveAt = Date.now();
      this.#saveFailingSince = undefined;
    } catch (err) {
      const now = Date.now();
      this.#saveFailingSince ??= now;
      this.#lastError = `cannot save progress: ${describe(err)}`;
      if (now - this.#saveFailingSince > (this.#o.storeLimitMs ?? 30_000)) {
        this.#fatal ??= err;
        this.#abort = true;
        this.#wakeUp();
      }
      return;
    }
    if (control === undefined) return this.#loseTask('the task was deleted');
    if (control.owner !== this.#owner) return this.#loseTask(`the task was taken over by ${control.owner || 'another process'}`);
    this.#lastStatus = control.status;
    if (control.status !== 'running' && !this.#stop) {
      this.#stop = { end: 'paused', status: control.status, message: control.message };
      this.#wakeUp();
    }
  }

  #loseTask(why: string): void {
    this.#lost = why;
    this.#abort = true;
    this.#wakeUp();
  }

  /** Final save: progress and status in one compare-and-set, retried if a `pause` lands meanwhile. */
  async #finish(): Promise<RunOutcome> {
    const id = this.#task.id;
    const read = async (): Promise<TaskRow> => (await this.#store.get(id)) ?? this.#task;
    if (this.#lost !== undefined) return { end: 'lost', status: (await read()).status, message: this.#lost, task: await read() };
    this.#report.sync();
    const snapshot = this.#tracker.snapshot(this.#report.size);
    const complete = this.#tracker.complete;
    let end: RunEnd;
    let status: TaskStatus;
    let message: string;
    if (complete) {
      end = 'done';
      status = 'done';
      message = '';
    } else if (this.#fatal !== undefined) {
      end = 'paused-error';
      status = 'failed';
      message = describe(this.#fatal);
    } else if (this.#stop) {
      ({ end, status, message } = this.#stop);
    } else {
      end = 'paused-error';
      status = 'failed';
      message = `the run ended with ${this.#task.total - this.#tracker.finished} recipients unfinished (a bug)`;
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const from = { status: this.#lastStatus, owner: this.#owner };
      if (await this.#store.transition(id, from, { status, owner: '', message, finished: complete, progress: snapshot })) {
        return { end, status, message, task: await read() };
      }
      const row = await this.#store.get(id);
      if (!row) return { end: 'lost', status, message: 'the task was deleted', task: this.#task };
      if (row.owner !== this.#owner) return { end: 'lost', status: row.status, message: `the task was taken over by ${row.owner}`, task: row };
      this.#lastStatus = row.status;
      // A `task pause` that arrived at the very end wins over Ctrl-C, not over a finished task.
      if (row.status === 'paused' && end === 'stopped') {
        end = 'paused';
        status = 'paused';
        message = row.message;
      }
    }
    throw new TaskStateError(`task ${id} kept changing while its run was ending; its progress is saved, its status may be stale`);
  }

  // ------------------------------------------------------------------ reporting

  #notice(text: string): void {
    this.#o.onNotice?.(text);
  }

  #progress(): void {
    const now = Date.now();
    const finished = this.#tracker.finished;
    this.#samples.push({ at: now, finished });
    while (this.#samples.length > 2 && now - this.#samples[1]!.at >= RATE_WINDOW_MS) this.#samples.shift();
    const first = this.#samples[0]!;
    const dt = (now - first.at) / 1000;
    const rate = dt > 0.2 ? (finished - first.finished) / dt : 0;
    const left = this.#task.total - finished;
    let note: string | undefined;
    if (this.#stop) note = this.#abort ? 'stopping now' : `${this.#stop.message}; waiting for ${this.#inFlight} answer(s)`;
    else if (this.#lastError) note = this.#lastError;
    this.#o.onProgress?.({
      id: this.#task.id,
      total: this.#task.total,
      finished,
      success: this.#tracker.success,
      fail: this.#tracker.fail,
      inFlight: this.#inFlight,
      rate,
      etaSeconds: left === 0 ? 0 : rate > 0 ? left / rate : undefined,
      note,
    });
  }
}
