import os from 'node:os';
import type { Logger } from 'pino';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { MegaConfig } from '../config/config.js';
import { natsConnectOptions, natsSafeName } from '../queue/jetstream-options.js';
import type { TokenManagerOptions } from '../wechat/token-manager.js';
import { openServiceBuckets, type ServiceBuckets } from '../cluster/buckets.js';
import { SharedTokenSource } from '../cluster/shared-token.js';
import { SharedPause, type AnnouncedPause } from '../cluster/shared-pause.js';
import { ServiceMembers, type Member } from '../cluster/members.js';
import { ServiceBus, type ServiceBusHandlers, type TsetAnswer } from '../cluster/service-bus.js';
import { JetStreamDeadLetters } from '../cluster/dead-letters.js';
import type { DeadLetter } from '../dispatch/dead-letter.js';
import { defaultStreamName } from '../queue/jetstream-options.js';
import type { Dispatcher } from '../dispatch/dispatcher.js';
import type { ServicePause } from '../dispatch/pause.js';
import { natsCredentials, retryWhileJetStreamStarts } from './queue-link.js';
import type { ServiceStatus } from './control-protocol.js';

/**
 * What makes the daemons of one service act as one (docs/SCALING.md), over a NATS connection of
 * its own: one access token (SharedTokenSource), one quota pause (SharedPause), a service-wide
 * rate shared by the live members (ServiceMembers), and the requests between daemons
 * (ServiceBus: TSet for all, a Send's answer to the daemon whose client waits).
 * Opened before the dispatcher (which takes its token source and pause), joined once the daemon
 * listens (a member is announced with its addresses).
 */
export class ServiceLink {
  private members: ServiceMembers | undefined;
  private bus: ServiceBus | undefined;
  private dispatcher: Dispatcher | undefined;
  private rateShare = 0;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly buckets: ServiceBuckets,
    readonly tokens: SharedTokenSource,
    /** The service's dead letters, in JetStream. */
    readonly deadLetters: JetStreamDeadLetters<DeadLetter>,
    private readonly pause: SharedPause,
    readonly member: string,
    private readonly config: MegaConfig,
    private readonly logger: Logger,
  ) {}

  static open(config: MegaConfig, logger: Logger, member: string, tokenOptions: TokenManagerOptions): Promise<ServiceLink> {
    return retryWhileJetStreamStarts('service', () => ServiceLink.connect(config, logger, member, tokenOptions), logger);
  }

  private static async connect(config: MegaConfig, logger: Logger, member: string, tokenOptions: TokenManagerOptions): Promise<ServiceLink> {
    const nc = await connect(natsConnectOptions(config.jetstream.servers, `mega-${natsSafeName(config.name)}-service`, natsCredentials(config)));
    try {
      const buckets = await openServiceBuckets(nc, { name: natsSafeName(config.name), replicas: config.jetstream.replicas });
      const tokens = new SharedTokenSource({ ...tokenOptions, state: buckets.state, member });
      const deadLetters = await JetStreamDeadLetters.open<DeadLetter>({
        nc,
        name: natsSafeName(config.name),
        stream: config.jetstream.stream ?? defaultStreamName(config.name),
        replicas: config.jetstream.replicas,
        timeoutMs: config.jetstream.publishTimeoutMs,
      });
      const pause = new SharedPause({ kv: buckets.state, member, logger });
      // a daemon starting while the service is paused must not spend a call first
      await pause.ready();
      return new ServiceLink(nc, buckets, tokens, deadLetters, pause, member, config, logger);
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
  }

  /** The dispatcher's side of the shared quota pause. */
  readonly servicePause: ServicePause = {
    announce: (state) => {
      this.pause.start(state).catch((err: unknown) => this.logger.warn({ err }, 'could not announce the quota pause to the service'));
    },
    clear: () => {
      this.pause.end().catch((err: unknown) => this.logger.warn({ err }, 'could not end the quota pause of the service'));
    },
    // until it has joined, it probes alone, like a single daemon
    isProber: () => (this.members ? this.pause.prober(this.members) : true),
  };

  /** Becomes a member (with the addresses it listens on) and starts acting on the service's state. */
  async join(addresses: readonly string[], dispatcher: Dispatcher, handlers: ServiceBusHandlers): Promise<void> {
    this.dispatcher = dispatcher;
    const members = new ServiceMembers({
      kv: this.buckets.members,
      self: { id: this.member, host: os.hostname(), pid: process.pid, addresses: [...addresses], startedAt: Date.now() },
      info: () => ({ sendRate: dispatcher.stats().sendRate }),
      logger: this.logger,
    });
    this.members = members;
    await members.start();
    this.bus = new ServiceBus({ nc: this.nc, name: natsSafeName(this.config.name), member: this.member, handlers, logger: this.logger });
    const applyPause = (p: AnnouncedPause | undefined): void => {
      if (p?.reason === 'quota') dispatcher.pauseForService(p);
      else dispatcher.resumeForService();
    };
    this.pause.on('change', applyPause);
    if (this.pause.current) applyPause(this.pause.current);
    members.on('change', () => this.shareRate());
    this.shareRate();
  }

  /** `[wechat] rate_limit` is the service's: each live daemon sends its share. */
  private shareRate(): void {
    const limit = this.config.wechat.rateLimit;
    const share = limit === 0 ? 0 : limit / Math.max(1, this.members?.count ?? 1);
    if (share === this.rateShare) return;
    this.rateShare = share;
    this.dispatcher?.setRateLimit(share);
    this.logger.info({ members: this.members?.count, rateLimit: limit, share: Math.round(share * 10) / 10 }, 'service members changed');
  }

  /** Whether the daemon `id` is a live member of the service. */
  isMember(id: string): boolean {
    return this.members?.has(id) ?? false;
  }

  /** TSet on the other live daemons; the answers of those that did not load it. */
  async tsetOthers(key: string): Promise<TsetAnswer[]> {
    if (!this.bus || !this.members) return [];
    const others = this.members.list().map((m) => m.id).filter((id) => id !== this.member);
    return (await this.bus.tsetOthers(key, others)).filter((a) => !a.ok);
  }

  /** Hands a Send's answer to the daemon whose client waits: true when that client got it. */
  settleRemote(owner: string, replyKey: string, code: number, message: string): Promise<boolean> {
    return this.bus ? this.bus.settleRemote(owner, replyKey, code, message) : Promise.resolve(false);
  }

  status(): ServiceStatus {
    const now = Date.now();
    return {
      self: this.member,
      members: (this.members?.list() ?? []).map((m: Member) => ({
        id: m.id,
        host: m.host,
        pid: m.pid,
        addresses: m.addresses,
        uptimeSeconds: Math.round((now - m.startedAt) / 1000),
        sendRate: m.sendRate,
      })),
      pause: this.pause.current ?? null,
      rateLimit: this.config.wechat.rateLimit,
      rateShare: Math.round(this.rateShare * 10) / 10,
    };
  }

  /** Leaves the service (the others re-share the rate at once) and closes the connection. */
  async close(): Promise<void> {
    this.bus?.close();
    await this.members?.close().catch(() => undefined);
    this.pause.close();
    await this.tokens.close().catch(() => undefined);
    await this.nc.drain().catch(() => undefined);
  }
}
