/**
 * The daemon's side of the HTTP operations server (http/): the port it answers through, built
 * from the running daemon, and the server itself when `[http] listen` is set.
 */

import type { Logger } from 'pino';
import type { MegaConfig } from '../config/config.js';
import { OpsHttpServer, type AccessTokenAnswer, type OpsPort, type Readiness, type TaskOps, type TemplateOps } from '../http/index.js';
import type { MegaMetrics } from '../metrics/index.js';
import { NotRunningError } from '../errors.js';
import { answerControl, parseControlRequest, type ControlHandlers } from './control-protocol.js';

/** What the port reads from the daemon; the daemon exists only once every part is up. */
export interface HttpLinkDaemon {
  readiness(): Readiness;
  accessToken(): Promise<AccessTokenAnswer>;
}

export interface OpsPortParts {
  daemon: () => HttpLinkDaemon | undefined;
  handlers: ControlHandlers;
  metrics: MegaMetrics;
  templates: TemplateOps;
  tasks: TaskOps;
}

export function opsPort({ daemon, handlers, metrics, templates, tasks }: OpsPortParts): OpsPort {
  const running = (): HttpLinkDaemon => {
    const d = daemon();
    if (!d) throw new NotRunningError('the daemon is still starting');
    return d;
  };
  return {
    readiness: () => daemon()?.readiness() ?? { ready: false, reason: 'starting' },
    metrics: () => metrics.render(),
    metricsContentType: metrics.contentType,
    control: async (request) => {
      running();
      return answerControl(handlers, parseControlRequest(request));
    },
    accessToken: () => running().accessToken(),
    templates,
    tasks,
    rateHistory: () => metrics.history.snapshot(),
  };
}

/** The HTTP side, listening; undefined when `[http] listen` is empty. */
export async function openOpsHttp(config: MegaConfig, port: OpsPort, logger: Logger): Promise<OpsHttpServer | undefined> {
  const listen = config.http.listen;
  if (!listen) return undefined;
  const server = new OpsHttpServer(
    {
      host: listen.host,
      port: listen.port,
      authToken: config.http.authToken,
      tls: config.http.tlsCert && config.http.tlsKey ? { certFile: config.http.tlsCert, keyFile: config.http.tlsKey } : undefined,
      logger,
    },
    port,
  );
  await server.listen();
  return server;
}
