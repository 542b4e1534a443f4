import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { pdoOptions, type MegaConfig, type ListenAddress } from '../config/config.js';
import { ignoredTemplateFields, missingMessage, missingVariables, openTemplateStore, renderTemplate, TemplateCache, type TemplateStore } from '../templates/index.js';
import { checkSubscribeData, describeViolation, hasTypedData } from '../wechat/index.js';
import { deadLetterFile, runningPid } from '../config/service-files.js';
import type { JobQueue } from '../queue/index.js';
import { openJobQueue, type OpenedQueue } from './queue-link.js';
import { WechatClient, TokenManager } from '../wechat/index.js';
import type { TokenSource } from '../dispatch/ports.js';
import { ServiceLink } from './service-link.js';
import { TaskPool } from '../workers/pool.js';
import { Dispatcher, type Settlement } from '../dispatch/dispatcher.js';
import { DeadLetterLog, type DeadLetterStore } from '../dispatch/dead-letter.js';
import { ClientMsgIdGenerator, encodeJobRecord } from '../jobs/record.js';
import { OutcomeKind } from '../jobs/outcome.js';
import { decodeJobRecord } from '../jobs/record.js';
import { Ledger, ledgerJournalDir, ThreadedLedgerStore } from '../ledger/index.js';
import { LedgerObserver } from './ledger-link.js';
import { openCallback, openWebhook, receiptsStatus } from './receipts-link.js';
import type { CallbackServer } from '../callback/index.js';
import type { WebhookSender } from '../webhook/index.js';
import { MegaServer } from './server.js';
import { ControlServer } from './control.js';
import {
  type ControlHandlers,
  type DaemonStatus,
  type DeadLetter,
  type DeadLetterRetry,
  type DeadLetterSelector,
  type QueueSummary,
} from './control-protocol.js';
import type { RequestHandler } from './connection.js';
import type { LedgerReader, MessageFilter, MessageRecord, Request } from '../protocol/index.js';
import { ResultCode } from '../protocol/index.js';
import { BadRequestError, LedgerDisabledError, NotRunningError, QueueWriteError, StartupError, TemplateNotFoundError, TemplateRenderError } from '../errors.js';
import { MegaMetrics, type GaugeSnapshot } from '../metrics/index.js';
import type { AccessTokenAnswer, OpsHttpServer, Readiness } from '../http/index.js';
import { openOpsHttp, opsPort } from './http-link.js';
import { templateOps } from './template-ops.js';
import { TaskService } from './task-service.js';

type PushRequest = Extract<Request, { kind: 'push' }>;
type SendRequest = Extract<Request, { kind: 'send' }>;
type Reply = (code: number, message: string) => void;

/**
 * The whole daemon: template store and cache, durable queue, task worker pool,
 * dispatcher, TCP server and control socket. It is the RequestHandler of every connection.
 */
export class Daemon implements RequestHandler {
  accepting = true;
  private readonly startedAt = Date.now();
  private readonly ids = new ClientMsgIdGenerator();
  private readonly replies = new Map<string, Reply>();
  /** Send reply keys are `<member>.<n>`: with the JetStream backend, the member whose client waits. */
  private replyPrefix = '';
  private replySeq = 0;
  /** With `[queue] backend = jetstream`: the other daemons of the service. */
  private link: ServiceLink | undefined;
  private addresses: ListenAddress[] = [];
  private stopping: Promise<{ leftQueued: number }> | undefined;
  /** The message ledger, for `query` and `msg show|list`; undefined with `[ledger] enabled = 0`. */
  private ledger: Ledger | undefined;
  /** The receipts endpoint; undefined with `[callback] listen` empty. */
  private callback: CallbackServer | undefined;
  /** The webhook to the backend; undefined with `[receipt] webhook_url` empty. */
  private webhook: WebhookSender | undefined;
  /** The operations side over HTTP; undefined with `[http] listen` empty. */
  private http: OpsHttpServer | undefined;
  /** Bulk tasks started over HTTP, run in this process; undefined without the HTTP side. */
  private tasks: TaskService | undefined;

  private constructor(
    readonly config: MegaConfig,
    private readonly logger: Logger,
    private readonly store: TemplateStore,
    private readonly cache: TemplateCache,
    private readonly queue: JobQueue,
    private readonly queueLink: OpenedQueue,
    private readonly deadLetters: DeadLetterStore,
    private readonly deadLetterLog: DeadLetterLog,
    private readonly tokenClient: WechatClient,
    private readonly tokens: TokenSource & { readonly tokenAgeMs: number | undefined; readonly tokenExpiresAt: number | undefined; readonly fetches: number },
    private readonly pool: TaskPool,
    private readonly dispatcher: Dispatcher,
    private readonly server: MegaServer,
    private readonly control: ControlServer,
  ) {}

  /**
   * Brings every part up in dependency order; on any failure the parts already started are
   * closed again and a StartupError says what failed.
   */
  static async start(config: MegaConfig, logger: Logger): Promise<Daemon> {
    const existing = runningPid(config.server.pidFile);
    if (existing !== undefined && existing !== process.pid) {
      throw new StartupError(`${config.name} is already running (pid ${existing}, pid file ${config.server.pidFile})`);
    }
    const cleanups: Array<() => unknown> = [];
    const step = async <T>(what: string, fn: () => Promise<T> | T): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        for (const c of cleanups.reverse()) {
          try {
            await c();
          } catch {
            // best effort while failing start-up
          }
        }
        if (err instanceof StartupError) throw err;
        const reason = err instanceof Error ? err.message : String(err);
        throw new StartupError(`${what}: ${reason}`, { cause: err });
      }
    };

    const store = await step('template store', async () => {
      const s = openTemplateStore(pdoOptions(config));
      cleanups.push(() => s.close());
      await s.init();
      return s;
    });
    const cache = new TemplateCache({ store, tableSize: config.server.tableSize, templateSize: config.server.templateSize });
    const loaded = await step('loading templates', () => cache.loadAll());
    for (const skipped of loaded.skipped) logger.warn({ key: skipped.key, reason: skipped.reason }, 'template not loaded');

    const queueLink = await step(config.queue.backend === 'jetstream' ? 'queue (JetStream)' : 'queue', async () => {
      const q = await openJobQueue(config, logger);
      cleanups.push(() => q.queue.close());
      return q;
    });
    const { queue, firstId } = queueLink;
    const deadLetters = new DeadLetterLog(deadLetterFile(config));
    cleanups.push(() => deadLetters.close());
    const webhook = await step('webhook', async () => {
      const w = await openWebhook(config, logger);
      if (w) cleanups.push(() => w.close());
      return w;
    });
    const ledger = config.ledger.enabled
      ? await step('ledger', async () => {
          const l = Ledger.open({
            store: new ThreadedLedgerStore(pdoOptions(config)),
            journalDir: ledgerJournalDir(config),
            fsync: config.queue.fsync === 'always',
            logger,
            retentionDays: config.ledger.retentionDays,
            onFinal: webhook && ((records) => webhook.enqueue(records)),
          });
          cleanups.push(() => l.close());
          await l.ready();
          return l;
        })
      : undefined;

    const tokenClient = new WechatClient({ apiBase: config.wechat.apiBase, timeoutMs: config.wechat.timeoutMs, connections: 2 });
    cleanups.push(() => tokenClient.close());
    const tokenOptions = {
      client: tokenClient,
      appId: config.wechat.appId,
      appSecret: config.wechat.appSecret,
      endpoint: config.wechat.tokenEndpoint,
      logger,
    };
    // unique per run: a restarted daemon is a new member of its service
    const member = `${process.pid.toString(36)}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    const link =
      config.queue.backend === 'jetstream'
        ? await step('service (JetStream)', async () => {
            const l = await ServiceLink.open(config, logger, member, tokenOptions);
            cleanups.push(() => l.close());
            return l;
          })
        : undefined;
    const tokens = link ? link.tokens : new TokenManager(tokenOptions);
    // with JetStream, the service's dead-letter stream: `dlq` on any daemon sees them all
    const deadLetterStore: DeadLetterStore = link ? link.deadLetters : deadLetters;

    const pool = new TaskPool({
      size: config.setting.taskWorkerNum,
      init: {
        apiBase: config.wechat.apiBase,
        timeoutMs: config.wechat.timeoutMs,
        concurrency: config.setting.taskConcurrency,
        missingVariable: config.setting.missingVariable,
      },
      templates: () => cache.all(),
      logger,
    });
    await step('task workers', () => pool.start());
    cleanups.push(() => pool.close());

    let daemon: Daemon | undefined;
    // counted only where someone can scrape them
    const metrics = config.http.listen ? new MegaMetrics() : undefined;
    const dispatcher = new Dispatcher({
      metrics,
      queue,
      pool,
      tokens,
      deadLetters: deadLetterStore,
      logger,
      retryBaseMs: config.wechat.retryBaseMs,
      retryMax: config.wechat.retryMax,
      rateLimit: config.wechat.rateLimit,
      quotaRetryIntervalMs: config.wechat.quotaRetryInterval * 1000,
      isAwaited: (replyKey) => daemon?.isAwaited(replyKey) ?? false,
      observer: ledger ? new LedgerObserver(ledger, firstId) : undefined,
      servicePause: link?.servicePause,
    });

    const handler: RequestHandler = {
      get accepting() {
        return daemon?.accepting ?? false;
      },
      push: (r) => daemon!.push(r),
      send: (r, reply) => daemon!.send(r, reply),
      tset: (key) => daemon!.tset(key),
      query: (msgid) => daemon!.query(msgid),
    };
    const server = new MegaServer({
      listen: config.server.listen,
      handler,
      logger,
      maxConnections: config.server.maxConnections,
      tls: config.server.tls,
      connection: {
        maxFrameLength: config.setting.packageMaxLength,
        authToken: config.server.authToken,
        idleTimeoutMs: config.server.idleTimeout * 1000,
        frameTimeoutMs: config.server.frameTimeout * 1000,
        metrics,
      },
    });
    const addresses = await step('listen', () => server.listen());
    cleanups.push(() => server.close());
    const callback = await step('callback endpoint', async () => {
      const c = await openCallback(config, ledger, logger);
      if (c) cleanups.push(() => c.close());
      return c;
    });

    const handlers = controlHandlers(() => daemon!);
    const control = new ControlServer(config.server.controlSocket, handlers, logger);
    await step('control socket', () => {
      mkdirSync(path.dirname(config.server.controlSocket), { recursive: true });
      return control.listen();
    });
    cleanups.push(() => control.close());

    const http = await step('HTTP side', async () => {
      if (!metrics) return undefined;
      const templates = templateOps({ store, cache, tset: async (key) => {
          if (!daemon) throw new NotRunningError('the daemon is still starting');
          return daemon.tset(key);
        },
        missingVariable: config.setting.missingVariable });
      // bulk tasks started from the console run here, as a client of this daemon's own TCP port
      const tasks = new TaskService({ config, logger, daemonAddress: () => addresses[0]! });
      cleanups.push(() => tasks.close());
      const h = await openOpsHttp(config, opsPort({ daemon: () => daemon, handlers, metrics, templates, tasks }), logger);
      if (h) cleanups.push(() => h.close());
      return h ? { server: h, tasks } : undefined;
    });

    await step('pid file', () => {
      mkdirSync(path.dirname(config.server.pidFile), { recursive: true });
      writeFileSync(config.server.pidFile, `${process.pid}\n`);
    });

    daemon = new Daemon(config, logger, store, cache, queue, queueLink, deadLetterStore, deadLetters, tokenClient, tokens, pool, dispatcher, server, control);
    daemon.addresses = addresses;
    daemon.ledger = ledger;
    daemon.callback = callback;
    daemon.webhook = webhook;
    daemon.link = link;
    daemon.http = http?.server;
    daemon.tasks = http?.tasks;
    metrics?.setSource(() => daemon!.gauges());
    daemon.replyPrefix = `${member}.`;
    dispatcher.on('settled', (s: Settlement) => daemon!.settle(s));
    if (link) {
      const d = daemon;
      await step('joining the service', () =>
        link.join(
          addresses.map((a) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)),
          dispatcher,
          {
            tset: async (key) => {
              try {
                await d.tsetHere(key);
                return { member, ok: true };
              } catch (err) {
                return { member, ok: false, error: err instanceof Error ? err.message : String(err) };
              }
            },
            settle: (replyKey, code, message) => d.answer(replyKey, code, message),
          },
        ),
      );
    }
    dispatcher.start();
    logger.info(
      {
        listen: addresses,
        callback: callback?.address(),
        http: http?.server.address(),
        templates: cache.size,
        queued: queue.stats().depth,
        workers: config.setting.taskWorkerNum,
        concurrency: config.setting.taskConcurrency,
        store: store.kind,
      },
      'mega-wechat started',
    );
    return daemon;
  }

  get listening(): ListenAddress[] {
    return this.addresses;
  }

  /** The HTTP side's base URL with the port it got; undefined when `[http] listen` is empty. */
  get httpUrl(): string | undefined {
    const a = this.http?.address();
    if (!a) return undefined;
    const host = a.address.includes(':') ? `[${a.address}]` : a.address;
    return `${this.config.http.tlsCert ? 'https' : 'http'}://${host}:${a.port}`;
  }

  /**
   * What Push and Send check before anything is queued: the template exists and, with
   * `missing_variable = reject`, the variables fill every placeholder.
   */
  private admit(request: PushRequest | SendRequest): void {
    const template = this.cache.get(request.key);
    if (!template) throw new TemplateNotFoundError(request.key);
    if (this.config.setting.missingVariable === 'reject') {
      const absent = missingVariables(template, request.data);
      if (absent.length > 0) throw new TemplateRenderError(missingMessage(absent));
    }
    if (hasTypedData(template.kind)) {
      // WeChat refuses a value its key's type does not allow (47003) after the call is spent:
      // said here instead, before anything is queued, naming the field and the rule
      const body = renderTemplate(template, request.openid, request.data, { missing: this.config.setting.missingVariable });
      const broken = checkSubscribeData(body.data);
      if (broken.length > 0) throw new BadRequestError(broken.map(describeViolation).join('; '));
    }
  }

  async push(request: PushRequest): Promise<void> {
    this.admit(request);
    const msgid = request.msgid ?? this.ids.generate();
    const at = Date.now();
    // msgId: a client's resent Push (same msgid) is stored once by a backend that deduplicates
    await this.appendJob(encodeJobRecord({ kind: 'push', openid: request.openid, key: request.key, clientMsgId: msgid, body: request.body, at }), msgid);
    this.ledger?.queued(msgid, request.openid, request.key, 'push', at);
  }

  /** The last append that failed, until one succeeds again: /readyz says 503 meanwhile. */
  private queueWriteError: string | undefined;

  private async appendJob(record: Uint8Array, msgId: string): Promise<void> {
    try {
      await this.queue.append(record, { msgId });
    } catch (err) {
      if (err instanceof QueueWriteError) this.queueWriteError = err.message;
      throw err;
    }
    this.queueWriteError = undefined;
  }

  /** For /readyz: 200 while it takes work. */
  readiness(): Readiness {
    if (!this.accepting) return { ready: false, reason: 'shutting down' };
    if (this.queueWriteError !== undefined) return { ready: false, reason: `cannot write the queue: ${this.queueWriteError}` };
    return { ready: true };
  }

  /** The token service (GET /api/v1/access-token): the token this daemon sends with, fetched if none is held. */
  async accessToken(): Promise<AccessTokenAnswer> {
    const accessToken = await this.tokens.get();
    return { accessToken, expiresAt: this.tokens.tokenExpiresAt ?? null };
  }

  /** The levels /metrics reports, read at scrape time. */
  async gauges(): Promise<GaugeSnapshot> {
    const q = this.queue.stats();
    const d = this.dispatcher.stats();
    const tokenAge = this.tokens.tokenAgeMs;
    const quota = await this.quota();
    return {
      queueDepth: q.depth,
      queueOldestAgeSeconds: q.oldestEnqueuedAt === undefined ? null : Math.max(0, (Date.now() - q.oldestEnqueuedAt) / 1000),
      callsInFlight: d.running,
      paused: d.paused,
      tokenAgeSeconds: tokenAge === undefined ? null : tokenAge / 1000,
      quotaRemaining: quota?.remain ?? null,
    };
  }

  async send(request: SendRequest, reply: Reply): Promise<() => void> {
    this.admit(request);
    const replyKey = this.replyPrefix + (this.replySeq++).toString(36);
    this.replies.set(replyKey, reply);
    const msgid = request.msgid ?? this.ids.generate();
    const at = Date.now();
    try {
      await this.appendJob(
        encodeJobRecord({ kind: 'send', openid: request.openid, key: request.key, clientMsgId: msgid, replyKey, body: request.body, at }),
        // not the msgid alone: a resent Send waits for its own answer, so it is a job of its own;
        // this id only makes the queue's own retries of this append safe
        `${msgid}/${replyKey}`,
      );
      this.ledger?.queued(msgid, request.openid, request.key, 'send', at);
    } catch (err) {
      this.replies.delete(replyKey);
      throw err;
    }
    return () => this.replies.delete(replyKey);
  }

  /** The daemon whose client sent the Send with this reply key. */
  private ownerOf(replyKey: string): string {
    return replyKey.slice(0, replyKey.lastIndexOf('.'));
  }

  /**
   * Whether a client still waits for this Send: here, or (JetStream backend) at the live daemon
   * that received it. A failed Send nobody waits for is dead-lettered like a Push.
   */
  private isAwaited(replyKey: string): boolean {
    if (this.replies.has(replyKey)) return true;
    const owner = this.ownerOf(replyKey);
    return this.link !== undefined && owner !== this.link.member && this.link.isMember(owner);
  }

  /** Answers this daemon's client waiting for `replyKey`; false when none waits. */
  private answer(replyKey: string, code: number, message: string): boolean {
    const reply = this.replies.get(replyKey);
    if (!reply) return false;
    this.replies.delete(replyKey);
    reply(code, message);
    return true;
  }

  private settle({ outcome, message }: Settlement): void {
    if (!outcome.replyKey) return;
    const code = outcome.kind === OutcomeKind.Ok ? ResultCode.OK : ResultCode.BAD_REQUEST;
    if (this.answer(outcome.replyKey, code, message)) return;
    const owner = this.ownerOf(outcome.replyKey);
    if (!this.link || owner === this.link.member) return;
    // delivered here from the shared queue: the answer goes to the daemon whose client waits
    void this.link.settleRemote(owner, outcome.replyKey, code, message).then((taken) => {
      if (!taken) {
        this.logger.warn(
          { owner, msgid: outcome.msgid, errcode: outcome.errcode },
          "a Send's answer found no waiting client at the daemon that received it (gone, or its client left); its fate is in the ledger",
        );
      }
    });
  }

  /**
   * TSet: loaded here, then (JetStream backend) on every other live daemon of the service. 200
   * once all of them have it; 503 naming those that did not (loaded here all the same).
   */
  async tset(key: string): Promise<{ code: number; message: string }> {
    try {
      await this.tsetHere(key);
    } catch (err) {
      // a row deleted from the table: the other daemons drop the template too
      if (err instanceof TemplateNotFoundError && err.dropped) await this.link?.tsetOthers(key);
      throw err;
    }
    const missed = (await this.link?.tsetOthers(key)) ?? [];
    if (missed.length === 0) return { code: ResultCode.OK, message: '' };
    const list = missed.map((m) => `${m.member} (${m.error ?? 'failed'})`).join(', ');
    this.logger.warn({ key, missed: list }, 'tset: not every daemon of the service loaded the template');
    return { code: ResultCode.UNAVAILABLE, message: `loaded here but not on: ${list}` };
  }

  /** TSet on this daemon alone. @throws TemplateNotFoundError and the store's errors */
  async tsetHere(key: string): Promise<void> {
    let loaded: Awaited<ReturnType<TemplateCache['tset']>>;
    try {
      loaded = await this.cache.tset(key);
    } catch (err) {
      if (err instanceof TemplateNotFoundError && err.dropped) {
        // Posted before the answer, like an update: no job dispatched after it uses the template.
        this.pool.dropTemplates([key]);
        this.logger.info({ key }, 'template dropped by tset: its row is gone');
      }
      throw err;
    }
    const { template, created } = loaded;
    // Posted before the answer, so every job dispatched after the client sees 200 uses it.
    this.pool.updateTemplates([template]);
    this.logger.info({ key, created, kind: template.kind }, 'template loaded by tset');
    const ignored = ignoredTemplateFields(template);
    if (ignored.length > 0) this.logger.warn({ key, ignored }, 'the template uses fields WeChat no longer shows in template messages (since 4 May 2023)');
  }

  /**
   * `query <msgid>`: 200 with the record's JSON, 404 when the ledger has none. Without a ledger
   * the answer is 503 `ledger disabled`, never 404: "not found" would claim the message was never
   * accepted. A ledger that cannot be read answers 503 too: the question may be asked again.
   */
  async query(msgid: string): Promise<{ code: number; message: string }> {
    if (!this.ledger) return { code: ResultCode.UNAVAILABLE, message: 'ledger disabled' };
    let record: MessageRecord | undefined;
    try {
      record = await this.ledger.get(msgid);
    } catch (err) {
      this.logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'ledger read failed');
      return { code: ResultCode.UNAVAILABLE, message: 'ledger unavailable' };
    }
    if (!record) return { code: ResultCode.NOT_FOUND, message: 'message not found' };
    return { code: ResultCode.OK, message: JSON.stringify(record) };
  }

  /** `msg-show` and `msg-list` on the control socket. @throws LedgerDisabledError without a ledger */
  private ledgerReader(): LedgerReader {
    if (!this.ledger) throw new LedgerDisabledError();
    return this.ledger;
  }

  async messageShow(msgid: string): Promise<MessageRecord | null> {
    return (await this.ledgerReader().get(msgid)) ?? null;
  }

  messageList(filter: MessageFilter): Promise<MessageRecord[]> {
    return this.ledgerReader().list(filter);
  }

  /** quota/get is itself rate-limited by WeChat, so its answer is kept for a minute. */
  private quotaCache: { at: number; value: DaemonStatus['quota'] } | undefined;

  private async quota(): Promise<DaemonStatus['quota']> {
    if (this.quotaCache && Date.now() - this.quotaCache.at < 60000) return this.quotaCache.value;
    let value: DaemonStatus['quota'] = null;
    try {
      const ask = this.tokens.get().then((token) => this.tokenClient.quota(token));
      const answer = await Promise.race([ask, new Promise<never>((_, reject) => setTimeout(reject, 2000).unref())]);
      value = answer.errcode === 0 && answer.quota ? answer.quota : null;
    } catch {
      value = null; // not available to this account, or WeChat unreachable: status says so
    }
    this.quotaCache = { at: Date.now(), value };
    return value;
  }

  async status(): Promise<DaemonStatus> {
    const d = this.dispatcher.stats();
    const tokenAge = this.tokens.tokenAgeMs;
    return {
      name: this.config.name,
      pid: process.pid,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      listen: this.addresses,
      connections: this.server.connectionCount,
      templates: this.cache.size,
      workers: this.pool.threads,
      queue: await this.queueLink.summary(),
      sent: d.sent,
      failed: d.failed,
      failedByErrcode: d.failedByErrcode,
      retriesPending: d.retriesPending,
      running: d.running,
      sendRate: d.sendRate,
      paused: d.paused,
      quota: await this.quota(),
      token: {
        ageSeconds: tokenAge === undefined ? null : Math.round(tokenAge / 1000),
        fetches: this.tokens.fetches,
        error: d.tokenError ?? null,
      },
      ledger: this.ledger?.status() ?? null,
      ...receiptsStatus(this.callback, this.webhook),
      http: this.httpUrl ?? null,
      service: this.link?.status() ?? null,
    };
  }

  resume(): boolean {
    return this.dispatcher.resume();
  }

  /** The dead letters queued again, and the asked-for ids that are not in the log. */
  async retryDeadLetters(selector: DeadLetterSelector): Promise<DeadLetterRetry> {
    const result = await this.deadLetters.retry(
      selector,
      async (p) => {
        const id = await this.queue.append(p);
        if (this.ledger) {
          const r = decodeJobRecord(p);
          this.ledger.queued(r.m, r.o, r.t, r.k, Date.now());
        }
        return id;
      },
    );
    this.logger.info({ retried: result.retried.length }, 'dead letters queued again');
    return result;
  }

  queueSummary(): Promise<QueueSummary> {
    return this.queueLink.summary();
  }

  async deadLetterList(): Promise<DeadLetter[]> {
    return this.deadLetters.list();
  }

  /**
   * Graceful stop: refuse new requests, let running WeChat calls finish (up to
   * `shutdown_timeout`), then close the queue cleanly. Unfinished jobs stay queued: resolves
   * with how many, for whoever stopped it to say so.
   */
  stop(): Promise<{ leftQueued: number }> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<{ leftQueued: number }> {
    this.logger.info('mega-wechat stopping');
    // first, while Sends are still answered: its runs end 'stopped', resumable after the restart
    await this.tasks?.close();
    this.accepting = false;
    this.server.stopListening();
    // receipts still arriving get no answer and WeChat sends them again after the restart
    await this.callback?.close();
    await this.dispatcher.stop(this.config.server.shutdownTimeout * 1000);
    await this.server.close();
    // leaves the service: the others re-share the rate, TSet stops waiting for this daemon
    await this.link?.close();
    await this.pool.close();
    // Every job not acknowledged by now is handed out again at the next start.
    const leftQueued = this.queue.stats().depth;
    await this.queue.close();
    // after the dispatcher's last acks: what the database does not take now stays in the journal
    await this.ledger?.close();
    // after the ledger's last write: what it handed over is in the outbox, sent at the next start
    await this.webhook?.close();
    this.deadLetterLog.close();
    await this.tokenClient.close();
    await this.store.close();
    this.control.close();
    await this.http?.close();
    if (runningPid(this.config.server.pidFile) === process.pid) rmSync(this.config.server.pidFile, { force: true });
    this.logger.info({ leftQueued }, 'mega-wechat stopped');
    return { leftQueued };
  }
}

/** The control socket's requests, answered by the daemon once it runs. */
function controlHandlers(daemon: () => Daemon): ControlHandlers {
  return {
    status: () => daemon().status(),
    listen: () => daemon().listening,
    queue: () => daemon().queueSummary(),
    resume: () => ({ resumed: daemon().resume() }),
    'dlq-list': () => daemon().deadLetterList(),
    'dlq-retry': ({ selector }) => daemon().retryDeadLetters(selector),
    'msg-show': ({ msgid }) => daemon().messageShow(msgid),
    'msg-list': ({ filter }) => daemon().messageList(filter),
  };
}
