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
}
