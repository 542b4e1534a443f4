/**
 * The daemon's operations side over HTTP (docs/OPERATIONS.md): Prometheus metrics, health checks,
 * the JSON API under /api/v1/, and the access-token service.
 *
 * node:http with a route table rather than a framework: a dozen routes, JSON in and out, one
 * auth rule. A framework would bring its own body parsing, logging and error shapes to keep in
 * line with the daemon's, and nothing the routes need.
 */

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { BadRequestError, MegaError, StartupError } from '../errors.js';
import { secretsMatch } from '../secret-compare.js';
import type { OpsPort } from './ports.js';

export interface OpsHttpOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** `[http] auth_token`: /metrics and /api/v1/ want it as a Bearer token. @defaultValue none: open, no access-token service */
  authToken?: string;
  tls?: { certFile: string; keyFile: string };
  logger: Logger;
  /** The largest request body read. @defaultValue 1 MiB */
  maxBodyBytes?: number;
}

/** An error with the HTTP status it is answered with. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface RouteContext {
  req: IncomingMessage;
  url: URL;
  params: Record<string, string>;
  body(): Promise<unknown>;
}

type Handler = (ctx: RouteContext) => Promise<unknown>;

interface Route {
  method: string;
  /** Segments; `:name` matches one segment into params. */
  path: string[];
  handler: Handler;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.|localhost$)/;
/** Answered without the token: a load balancer's or an orchestrator's probes. */
const OPEN_PATHS = new Set(['/healthz', '/readyz']);

export class OpsHttpServer {
  private server: Server | undefined;
  private readonly routes: Route[] = [];
  private readonly maxBody: number;

  constructor(
    private readonly options: OpsHttpOptions,
    private readonly port: OpsPort,
  ) {
    this.maxBody = options.maxBodyBytes ?? 1024 * 1024;
    this.defineRoutes();
  }

  private defineRoutes(): void {
    const route = (method: string, path: string, handler: Handler): void => {
      this.routes.push({ method, path: path.split('/').filter(Boolean), handler });
    };
    const control = (request: unknown): Promise<unknown> => this.port.control(request);

    route('GET', '/healthz', async () => ({ status: 'ok' }));
    route('GET', '/readyz', async () => {
      const r = this.port.readiness();
      if (!r.ready) throw new HttpError(503, r.reason ?? 'not ready');
      return { ready: true };
    });
    route('GET', '/api/v1/status', () => control({ cmd: 'status' }));
    route('GET', '/api/v1/queue', () => control({ cmd: 'queue' }));
    route('POST', '/api/v1/resume', () => control({ cmd: 'resume' }));
    route('GET', '/api/v1/dead-letters', async ({ url }) => filterDeadLetters((await control({ cmd: 'dlq-list' })) as DeadLetterView[], url));
    route('POST', '/api/v1/dead-letters/retry', async ({ body }) => control({ cmd: 'dlq-retry', selector: await body() }));
    route('GET', '/api/v1/messages', ({ url }) => control({ cmd: 'msg-list', filter: messageFilterOf(url) }));
    route('GET', '/api/v1/messages/:msgid', async ({ params }) => {
      const record = await control({ cmd: 'msg-show', msgid: params.msgid });
      if (record === null) throw new HttpError(404, `no message ${params.msgid} in the ledger`);
      return record;
    });
    route('GET', '/api/v1/access-token', async ({ req }) => {
      const answer = await this.port.accessToken();
      this.options.logger.info({ remote: req.socket.remoteAddress, userAgent: req.headers['user-agent'] }, 'access token handed out over HTTP');
      return { access_token: answer.accessToken, expires_at: answer.expiresAt === null ? null : new Date(answer.expiresAt).toISOString() };
    });
  }

  /** Listens; resolves with the bound address. A port taken stops the start naming `[http] listen`. */
  async listen(): Promise<AddressInfo> {
    const { host, port, tls, authToken, logger } = this.options;
    let server: Server;
    if (tls) {
      let secure: { cert: Buffer; key: Buffer };
      try {
        secure = { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) };
      } catch (err) {
        throw new StartupError(`cannot read [http] tls_cert / tls_key: ${(err as Error).message}`, { cause: err });
      }
      server = createHttpsServer(secure, (req, res) => void this.serve(req, res));
    } else {
      server = createHttpServer((req, res) => void this.serve(req, res));
    }
    server.keepAliveTimeout = 65_000;
    if (!LOOPBACK.test(host) && !authToken) {
      logger.warn({ host, port }, 'HTTP side on a non-loopback address without [http] auth_token: anyone who can reach it may read the API and resume dispatch');
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'the port is taken (another daemon on this host? give each its own [http] listen, or leave it empty)' : err.message;
      throw new StartupError(`cannot listen on [http] listen ${host}:${port}: ${why}`, { cause: err });
    });
    server.on('error', (err) => logger.error({ err: err.message }, 'HTTP side error'));
    this.server = server;
    return server.address() as AddressInfo;
  }

  address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      // before routing: without the token, a caller learns nothing of what exists (404 or 405)
      if (!OPEN_PATHS.has(url.pathname)) this.authenticate(req);
      if (url.pathname === '/metrics') {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'GET /metrics');
        const text = await this.port.metrics();
        res.writeHead(200, { 'Content-Type': this.port.metricsContentType, 'Cache-Control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : text);
        return;
      }
      const found = this.match(req.method ?? 'GET', url.pathname);
      if (found.route.path[found.route.path.length - 1] === 'access-token' && !this.options.authToken) {
        throw new HttpError(403, 'the access-token service needs [http] auth_token (MEGA_HTTP_TOKEN): without it anyone could take the token');
      }
      const result = await found.route.handler({ req, url, params: found.params, body: () => this.readJson(req) });
      sendJson(res, 200, result);
    } catch (err) {
      const { status, message } = httpErrorOf(err);
      if (status >= 500) this.options.logger.error({ err, method: req.method, path: req.url?.split('?')[0] }, 'HTTP request failed');
      if (status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="mega-wechat"');
      sendJson(res, status, { error: { status, message } });
    }
  }

  private match(method: string, pathname: string): { route: Route; params: Record<string, string> } {
    const segments = pathname.split('/').filter(Boolean);
    let pathMatched = false;
    for (const route of this.routes) {
      if (route.path.length !== segments.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < segments.length && ok; i++) {
        const want = route.path[i]!;
        if (want.startsWith(':')) params[want.slice(1)] = safeDecode(segments[i]!);
        else ok = want === segments[i];
      }
      if (!ok) continue;
      pathMatched = true;
      if (route.method === method || (method === 'HEAD' && route.method === 'GET')) return { route, params };
    }
    if (pathMatched) throw new HttpError(405, `${method} is not allowed on ${pathname}`);
    throw new HttpError(404, `no route ${pathname}`);
  }

  private authenticate(req: IncomingMessage): void {
    const expected = this.options.authToken;
    if (!expected) return;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m || !secretsMatch(expected, m[1]!)) throw new HttpError(401, 'a Bearer token is required ([http] auth_token)');
  }

  private async readJson(req: IncomingMessage): Promise<unknown> {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) throw new HttpError(415, 'send the body as application/json');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > this.maxBody) throw new HttpError(413, `the body is larger than ${this.maxBody} bytes`);
      chunks.push(chunk);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    try {
      return text === '' ? undefined : (JSON.parse(text) as unknown);
    } catch {
      throw new HttpError(400, 'the body is not valid JSON');
    }
  }
}

interface DeadLetterView {
  openid?: string;
  key?: string;
  errcode?: number | null;
}

/** `?openid=&key=&errcode=` narrow the dead-letter list (the control request has no filter). */
function filterDeadLetters(list: DeadLetterView[], url: URL): DeadLetterView[] {
  const openid = url.searchParams.get('openid');
  const key = url.searchParams.get('key');
  const errcode = url.searchParams.get('errcode');
  return list.filter(
    (d) => (openid === null || d.openid === openid) && (key === null || d.key === key) && (errcode === null || String(d.errcode) === errcode),
  );
}

/** The message list's query string as the control request's filter (checked there). */
function messageFilterOf(url: URL): Record<string, unknown> {
  const filter: Record<string, unknown> = {};
  const q = url.searchParams;
  if (q.has('openid')) filter.openid = q.get('openid');
  if (q.has('state')) filter.state = q.get('state');
  for (const name of ['since', 'limit']) {
    if (!q.has(name)) continue;
    const n = Number(q.get(name));
    if (!Number.isSafeInteger(n)) throw new HttpError(400, `${name} must be an integer`);
    filter[name] = n;
  }
  return filter;
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path');
  }
}

function httpErrorOf(err: unknown): { status: number; message: string } {
  if (err instanceof HttpError) return { status: err.status, message: err.message };
  if (err instanceof BadRequestError) return { status: 400, message: err.message };
  if (err instanceof MegaError) {
    switch (err.code) {
      case 'MEGA_ERR_TEMPLATE_NOT_FOUND':
        return { status: 404, message: err.message };
      case 'MEGA_ERR_BAD_REQUEST':
        return { status: 400, message: err.message };
      default:
        return { status: 503, message: err.message };
    }
  }
  return { status: 500, message: 'internal error (see the daemon log)' };
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value ?? null);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(body);
}
