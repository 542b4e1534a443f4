/**
 * Bulk tasks run by the daemon itself (the HTTP side's Tasks page): the same tasks/ code as
 * `mega <name> task run`, with the daemon as the client process. A runner here sends its Sends to
 * the daemon's own TCP port, so every guarantee of tasks/ (each recipient once, exact counts,
 * resumable anywhere) holds unchanged, and a task can be paused here and resumed from the CLI or
 * the other way round.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type tls from 'node:tls';
import { pdoOptions, type ListenAddress, type MegaConfig } from '../config/config.js';
import { taskDir } from '../config/service-files.js';
import { MegaClient, type MegaClientOptions } from '../client/index.js';
import { BadRequestError, MegaError, NotRunningError, RecipientFileError, TaskStateError } from '../errors.js';
import type { TaskOps, TaskView } from '../http/index.js';
import type { Logger } from '../log/logger.js';
import { openTemplateStore, type TemplateStore } from '../templates/index.js';
import {
  createTask,
  openTaskStore,
  ownerAlive,
  pauseTask,
  RECIPIENT_FORMATS,
  REPORT_HEADER,
  TaskRunner,
  thisOwner,
  type ProgressInfo,
  type RecipientFormat,
  type TaskRow,
  type TaskStore,
} from '../tasks/index.js';

export interface TaskServiceOptions {
  config: MegaConfig;
  logger: Logger;
  /** Where the daemon's TCP server listens now (the port it got for `listen[] = ...:0`). */
  daemonAddress: () => ListenAddress;
}

/** Recipients sent and not yet saved, as `task run` does by default. */
const WINDOW = 64;
const MAX_TIMER_MS = 2 ** 31 - 1;
const KEY_PATTERN = /^[\x21-\x7e]{1,32}$/;
const EXTENSIONS: Record<RecipientFormat, string> = { plain: 'txt', csv: 'csv', jsonl: 'jsonl' };
/** How long pause() waits for a runner of ours to let go, so the answer shows the task paused. */
const PAUSE_WAIT_MS = 3000;
/** How long close() lets the answers in flight come back before it cuts the connections. */
const CLOSE_WAIT_MS = 5000;

interface Run {
  /** undefined while it is being claimed. */
  runner: TaskRunner | undefined;
  progress: ProgressInfo | undefined;
  /** Resolves when the run is over (or never started); never rejects. */
  ended: Promise<void>;
}

export class TaskService implements TaskOps {
  readonly #config: MegaConfig;
  readonly #log: Logger;
  readonly #daemonAddress: () => ListenAddress;
  readonly #runs = new Map<number, Run>();
  #store: Promise<TaskStore> | undefined;
  #templates: Promise<TemplateStore> | undefined;
  #tls: MegaClientOptions['tls'] | undefined;
  #closing = false;

  constructor(options: TaskServiceOptions) {
    this.#config = options.config;
    this.#log = options.logger;
    this.#daemonAddress = options.daemonAddress;
  }

  async list(): Promise<TaskView[]> {
    const store = await this.#openStore();
    return (await store.list()).map((row) => this.#view(row));
  }

  async get(id: number): Promise<TaskView> {
    return this.#view(await this.#row(id));
  }

  async create(input: Parameters<TaskOps['create']>[0]): Promise<TaskView> {
    if (!(RECIPIENT_FORMATS as readonly string[]).includes(input.format)) {
      throw new BadRequestError(`format must be one of ${RECIPIENT_FORMATS.join(', ')}`);
    }
    if (!Buffer.isBuffer(input.content)) throw new BadRequestError('content must be the bytes of the recipients file');
    const vars = input.variables;
    if (vars !== undefined && (vars === null || typeof vars !== 'object' || Array.isArray(vars))) {
      throw new BadRequestError('variables must be a JSON object, e.g. {"product": "tea"}');
    }
    const store = await this.#openStore();
    // A key missing from the template table would only pause the task at its first send.
    const templates = await this.#openTemplates();
    // A malformed key is left to createTask, which says what a key must look like.
    if (typeof input.key === 'string' && KEY_PATTERN.test(input.key) && !(await templates.get(input.key))) {
      throw new BadRequestError(`there is no template ${JSON.stringify(input.key)} in ${templates.table}`);
    }

    const dir = taskDir(this.#config);
    await mkdir(dir, { recursive: true });
    const base = path.join(dir, `upload-${Date.now()}-${randomBytes(6).toString('hex')}`);
    const upload = `${base}.${EXTENSIONS[input.format]}`;
    const varsFile = vars === undefined ? undefined : `${base}.vars.json`;
    const label = input.name || `the uploaded ${input.format} file`;
    let task: TaskRow;
    const written: string[] = [];
    try {
      // 0600: recipient lists are personal data; 'wx': never write through someone else's file.
      await writeFile(upload, input.content, { flag: 'wx', mode: 0o600 });
      written.push(upload);
      if (varsFile !== undefined) {
        await writeFile(varsFile, JSON.stringify(vars), { flag: 'wx', mode: 0o600 });
        written.push(varsFile);
      }
      const created = await createTask({
        store,
        key: input.key,
        source: upload,
        varsFile,
        name: input.name || `${input.format} upload ${new Date().toISOString()}`,
        format: input.format,
        skipInvalid: input.skipInvalid,
        dir,
      });
      task = created.task;
      const r = created.recipients;
      this.#log.info(
        { task: task.id, key: task.key, total: task.total, skippedInvalid: r.invalidCount, skippedDuplicates: r.duplicateCount },
        'task created over HTTP',
      );
    } catch (err) {
      if (err instanceof RecipientFileError) {
        // The message names the temporary upload; the person who sent it knows it by its label.
        let message = err.message.split(upload).join(label).replace('--skip-invalid', 'skipInvalid');
        if (varsFile !== undefined) message = message.split(varsFile).join('variables');
        throw new RecipientFileError(label, message, err.problems);
      }
      if (err instanceof RangeError) throw new BadRequestError(err.message);
      throw err;
    } finally {
      // The task runs from the normalised list createTask wrote; the upload has served.
      for (const f of written) await rm(f, { force: true });
    }
    if (!input.start) return this.#view(task);
    try {
      return await this.start(task.id);
    } catch (err) {
      // Still say which task was made, so the caller can start it later instead of uploading again.
      if (err instanceof MegaError) throw new MegaError(`task ${task.id} was created but did not start: ${err.message}`, err.code, { cause: err });
      throw err;
    }
  }

  async start(id: number): Promise<TaskView> {
    if (this.#closing) throw new NotRunningError('the daemon is stopping; tasks cannot start now');
    if (this.#runs.has(id)) throw new TaskStateError(`task ${id} is already running in this daemon`);
    // Taken before the first await, so two starts at once cannot both get past the check above.
    let ended!: () => void;
    const run: Run = { runner: undefined, progress: undefined, ended: new Promise<void>((resolve) => (ended = resolve)) };
    this.#runs.set(id, run);
    let client: MegaClient | undefined;
    try {
      const store = await this.#openStore();
      const row = await this.#row(id);
      if (row.status === 'done') throw new TaskStateError(`task ${id} is done; there is nothing to start`);
      if (row.owner !== '' && row.owner !== thisOwner() && ownerAlive(row.owner, row.heartbeatAt)) {
        throw new TaskStateError(`task ${id} is being run by ${row.owner} (status ${row.status}); pause it first, then start it here`);
      }
      client = await MegaClient.connect(this.#clientOptions());
      client.on('error', () => undefined); // reconnection attempts report through the requests
      // close() came while we connected: leave the task as it was rather than claim it only to stop it.
      if (this.#closing) throw new NotRunningError('the daemon is stopping; tasks cannot start now');
      const runner = await TaskRunner.claim({
        store,
        id,
        client,
        window: WINDOW,
        resume: true,
        onProgress: (p) => (run.progress = p),
        onNotice: (text) => this.#log.warn({ task: id }, text),
      });
      if (!runner) throw new TaskStateError(`task ${id} is done; there is nothing to start`);
      run.runner = runner;
      if (this.#closing) runner.stop('the daemon stopping');
      const task = runner.task;
      this.#log.info({ task: id, key: task.key, left: task.total - task.success - task.fail, total: task.total }, 'task started');
      runner
        .run()
        .then(
          (o) => {
            const t = o.task;
            this.#log.info({ task: id, end: o.end, status: o.status, message: o.message || undefined, success: t.success, fail: t.fail, total: t.total }, 'task run ended');
          },
          (err: unknown) => this.#log.error({ task: id, err }, 'task run failed'),
        )
        .finally(() => {
          this.#runs.delete(id);
          ended();
        });
    } catch (err) {
      client?.destroy();
      this.#runs.delete(id);
      ended();
      throw err;
    }
    return this.#view(await this.#row(id));
  }

  async pause(id: number): Promise<TaskView> {
    const store = await this.#openStore();
    await this.#row(id);
    await pauseTask(store, id, `paused over HTTP at ${new Date().toISOString()}`);
    const run = this.#runs.get(id);
    if (run) {
      // Our runner lets go within a second or so (the answers in flight come back first).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([run.ended, new Promise<void>((resolve) => (timer = setTimeout(resolve, PAUSE_WAIT_MS)))]);
      clearTimeout(timer);
    }
    return this.#view(await this.#row(id));
  }

  async report(id: number): Promise<string> {
    const row = await this.#row(id);
    // Bytes past report_size belong to answers the store never counted: a run cuts them off.
    const want = Math.max(0, row.reportSize);
    let file;
    try {
      file = await open(row.report, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return REPORT_HEADER;
      throw err;
    }
    try {
      const buf = Buffer.alloc(Math.min(want, (await file.stat()).size));
      let off = 0;
      while (off < buf.length) {
        const { bytesRead } = await file.read(buf, off, buf.length - off, off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      const text = buf.subarray(0, off).toString('utf8');
      return text.startsWith(REPORT_HEADER) ? text : REPORT_HEADER;
    } finally {
      await file.close();
    }
  }

  /**
   * Stops every run started here (each ends `stopped`, resumable with start() or `task run`) and
   * closes the stores. Answers in flight get `waitMs` to come back; recipients still unanswered
   * then are sent again by the next run, with the same msgid.
   */
  async close(options: { waitMs?: number } = {}): Promise<void> {
    this.#closing = true;
    const runs = [...this.#runs.values()];
    for (const run of runs) run.runner?.stop('the daemon stopping');
    if (runs.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      const all = Promise.all(runs.map((r) => r.ended));
      await Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, options.waitMs ?? CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
      // A second stop() stops waiting for answers; the run still saves its progress and status.
      for (const run of this.#runs.values()) run.runner?.stop('the daemon stopping');
      await all;
    }
    const stores = [this.#store, this.#templates];
    this.#store = undefined;
    this.#templates = undefined;
    for (const s of stores) {
      const store = await s?.catch(() => undefined);
      await store?.close().catch((err: unknown) => this.#log.warn({ err }, 'closing a store failed'));
    }
  }

  // ------------------------------------------------------------------ helpers

  #openStore(): Promise<TaskStore> {
    if (this.#closing) return Promise.reject(new NotRunningError('the daemon is stopping'));
    this.#store ??= opened(openTaskStore(pdoOptions(this.#config)), () => (this.#store = undefined));
    return this.#store;
  }

  #openTemplates(): Promise<TemplateStore> {
    if (this.#closing) return Promise.reject(new NotRunningError('the daemon is stopping'));
    this.#templates ??= opened(openTemplateStore(pdoOptions(this.#config)), () => (this.#templates = undefined));
    return this.#templates;
  }

  async #row(id: number): Promise<TaskRow> {
    const row = Number.isSafeInteger(id) && id > 0 ? await (await this.#openStore()).get(id) : undefined;
    if (!row) throw new TaskStateError(`no task ${id}`);
    return row;
  }

  #view(row: TaskRow): TaskView {
    const run = this.#runs.get(row.id);
    const live = run?.runner ? run.progress : undefined;
    let { status, message } = row;
    // A runner that died (kill -9, a crash) leaves `running` behind; start() takes such a task over.
    if (status === 'running' && run === undefined && !ownerAlive(row.owner, row.heartbeatAt)) {
      status = 'stopped';
      message = `interrupted: its runner ${row.owner || '(unknown)'} is gone`;
    }
    return {
      id: row.id,
      name: row.name,
      key: row.key,
      status,
      message,
      total: row.total,
      // The runner's counts are ahead of the store's by at most one save.
      success: live?.success ?? row.success,
      fail: live?.fail ?? row.fail,
      rate: live ? Math.round(live.rate * 10) / 10 : 0,
      etaSeconds: live?.etaSeconds === undefined ? null : Math.ceil(live.etaSeconds),
      createdAt: new Date(row.createdAt * 1000).toISOString(),
      updatedAt: new Date(row.updatedAt * 1000).toISOString(),
      runningHere: run !== undefined,
    };
  }

  #clientOptions(): MegaClientOptions {
    const { host, port } = this.#daemonAddress();
    const o: MegaClientOptions = {
      host: connectHost(host),
      port,
      window: WINDOW,
      timeoutMs: MAX_TIMER_MS,
      reconnect: { initialDelayMs: 100, maxDelayMs: 2000 },
      maxFrameLength: this.#config.setting.packageMaxLength,
      tls: (this.#tls ??= selfTls(this.#config.server.tls)),
    };
    const token = this.#config.server.authToken;
    if (token) o.authToken = token;
    return o;
  }
}

/** The store once init() succeeded; a failed init is forgotten, so the next call tries again. */
function opened<S extends { init(): Promise<void>; close(): Promise<void> }>(store: S, forget: () => void): Promise<S> {
  return store.init().then(
    () => store,
    async (err: unknown) => {
      forget();
      await store.close().catch(() => undefined);
      throw err;
    },
  );
}

/** A wildcard listen address is reached through the loopback interface. */
function connectHost(host: string): string {
  if (host === '' || host === '0.0.0.0') return '127.0.0.1';
  if (host === '::' || host === '::0' || host === '[::]') return '::1';
  return host;
}

/**
 * TLS for the daemon dialling its own port. Its certificate rarely names the loopback address
 * dialled, so instead of the host name the certificate itself is checked: only the daemon's own
 * `tls_cert` is accepted, which is stricter than any CA. When the daemon asks for client
 * certificates (`tls_ca`) it presents its own, as `task run` does on the daemon's host.
 */
function selfTls(server: MegaConfig['server']['tls']): false | tls.ConnectionOptions {
  if (!server) return false;
  const cert = readFileSync(server.cert, 'utf8');
  const own = new X509Certificate(cert).fingerprint256;
  const options: tls.ConnectionOptions = {
    ca: [cert],
    // The own certificate is the trust anchor even when a CA not listed here signed it.
    allowPartialTrustChain: true,
    checkServerIdentity: (host, peer) =>
      peer.fingerprint256 === own ? undefined : new Error(`the certificate on ${host} is not this daemon's [server] tls_cert`),
  };
  if (server.ca) {
    options.cert = cert;
    options.key = readFileSync(server.key, 'utf8');
  }
  return options;
}
