/**
 * The daemon's operations side over HTTP (docs/OPERATIONS.md): Prometheus metrics, health checks,
 * the JSON API under /api/v1/ (api-routes.ts), the access-token service and the web console.
 *
 * node:http with a route table rather than a framework: a few dozen JSON routes and one auth
 * rule. A framework would bring its own body parsing, logging and error shapes to keep in line
 * with the daemon's, and nothing the routes need.
 *
 * Who may do what:
 * - /healthz, /readyz, the console's files, login and session: anyone (they hold no data).
 * - everything else: a Bearer token (`[http] auth_token`), or a console session (its cookie);
 *   without auth_token configured, anyone.
 * - a request that changes something (POST, PUT, DELETE) without a Bearer token must carry its
 *   session's CSRF token in X-CSRF-Token: a cookie alone never authorizes a change.
 */

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { MegaError, StartupError } from '../errors.js';
import { secretsMatch } from '../secret-compare.js';
import { apiRoutes, HttpError, RawBody, type Route } from './api-routes.js';
import { loadConsoleAssets, type Asset } from './console-assets.js';
import type { OpsPort } from './ports.js';
import { CSRF_HEADER, LoginLimiter, sessionCookie, SessionStore, type Session } from './sessions.js';

export interface OpsHttpOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** `[http] auth_token`. @defaultValue none: open, no access-token service */
  authToken?: string;
  tls?: { certFile: string; keyFile: string };
  logger: Logger;
  /** The largest request body read, where a route says nothing else. @defaultValue 1 MiB */
  maxBodyBytes?: number;
  /** The console's files. @defaultValue src/http/console */
  assets?: Map<string, Asset>;
  sessions?: SessionStore;
  loginLimiter?: LoginLimiter;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.|localhost$)/;
/** No inline script or style anywhere: text from the database can never become code. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CSP,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
};

type Principal = 'bearer' | 'session' | 'open';

export class OpsHttpServer {
  private server: Server | undefined;
  private readonly routes: Route[];
  private readonly maxBody: number;
  private readonly assets: Map<string, Asset>;
  private readonly sessions: SessionStore;
  private readonly limiter: LoginLimiter;

  constructor(
    private readonly options: OpsHttpOptions,
    private readonly port: OpsPort,
  ) {
    this.maxBody = options.maxBodyBytes ?? 1024 * 1024;
    this.routes = apiRoutes(port, options.logger);
    this.assets = options.assets ?? loadConsoleAssets();
    this.sessions = options.sessions ?? new SessionStore();
    this.limiter = options.loginLimiter ?? new LoginLimiter();
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
      logger.warn({ host, port }, 'HTTP side on a non-loopback address without [http] auth_token: anyone who can reach it may read the API and change the daemon');
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
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const method = req.method ?? 'GET';
      if (this.serveOpen(res, url, method)) return;
      if (url.pathname === '/api/v1/login' || url.pathname === '/api/v1/session' || url.pathname === '/api/v1/logout') {
        await this.serveSession(req, res, url.pathname, method);
        return;
      }
      // before routing: without credentials a caller learns nothing of what exists (404 or 405)
      const principal = this.authenticate(req);
      if (method !== 'GET' && method !== 'HEAD' && principal !== 'bearer') this.checkCsrf(req);
      if (url.pathname === '/metrics') {
        if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, 'GET /metrics');
        const text = await this.port.metrics();
        res.writeHead(200, { 'Content-Type': this.port.metricsContentType, 'Cache-Control': 'no-store' });
        res.end(method === 'HEAD' ? undefined : text);
        return;
      }
      const { route, params } = this.match(method, url.pathname);
      if (route.path[route.path.length - 1] === 'access-token' && !this.options.authToken) {
        throw new HttpError(403, 'the access-token service needs [http] auth_token (MEGA_HTTP_TOKEN): without it anyone could take the token');
      }
      const result = await route.handler({ req, url, params, body: () => this.readJson(req, route.maxBodyBytes ?? this.maxBody) });
      if (result instanceof RawBody) {
        res.writeHead(200, { 'Content-Type': result.contentType, 'Cache-Control': 'no-store', ...result.headers });
        res.end(result.body);
      } else {
        sendJson(res, 200, result);
      }
    } catch (err) {
      const { status, message, headers } = httpErrorOf(err);
      if (status >= 500 && status !== 503) this.options.logger.error({ err, method: req.method, path: req.url?.split('?')[0] }, 'HTTP request failed');
      if (status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="mega-wechat"');
      for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
      // a body still arriving (refused before it was read) would otherwise hold the socket
      if (!req.complete) res.setHeader('Connection', 'close');
      sendJson(res, status, { error: { status, message } });
    }
  }

  /** Health checks and the console's files: no credentials. Returns whether it answered. */
  private serveOpen(res: ServerResponse, url: URL, method: string): boolean {
    const p = url.pathname;
    if (p === '/healthz' || p === '/readyz') {
      if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, `GET ${p}`);
      const r = this.port.readiness();
      if (p === '/readyz' && !r.ready) throw new HttpError(503, r.reason ?? 'not ready');
      sendJson(res, 200, p === '/healthz' ? { status: 'ok' } : { ready: true });
      return true;
    }
    const name = p === '/' ? 'index.html' : p.startsWith('/console/') ? p.slice('/console/'.length) : undefined;
    if (name === undefined) return false;
    const asset = this.assets.get(name);
    if (!asset) throw new HttpError(404, `no console file ${name}`);
    if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, `GET ${p}`);
    res.writeHead(200, { 'Content-Type': asset.type, 'Content-Length': asset.body.length, 'Cache-Control': 'no-cache' });
    res.end(method === 'HEAD' ? undefined : asset.body);
    return true;
  }

  /** Login (the HTTP token for a session cookie), the session's CSRF token, logout. */
  private async serveSession(req: IncomingMessage, res: ServerResponse, path: string, method: string): Promise<void> {
    const secure = this.options.tls !== undefined;
    const auth = this.options.authToken !== undefined;
    const answer = (s: Session): void => sendJson(res, 200, { csrf: s.csrf, expiresAt: new Date(s.expiresAt).toISOString(), auth });
    if (path === '/api/v1/session') {
      if (method !== 'GET') throw new HttpError(405, 'GET /api/v1/session');
      let s = this.sessions.fromRequest(req);
      if (!s && !auth) {
        // nothing to log in with: a session only to carry the CSRF token
        s = this.sessions.create();
        res.setHeader('Set-Cookie', sessionCookie(s.id, this.sessions.ttlSeconds, secure));
      }
      if (!s) throw new HttpError(401, 'log in with the HTTP token');
      return answer(s);
    }
    if (method !== 'POST') throw new HttpError(405, `POST ${path}`);
    if (path === '/api/v1/logout') {
      const s = this.sessions.fromRequest(req);
      if (s) {
        this.checkCsrf(req);
        this.sessions.delete(s.id);
      }
      res.setHeader('Set-Cookie', sessionCookie('', 0, secure));
      sendJson(res, 200, { loggedOut: true });
      return;
    }
    const address = req.socket.remoteAddress ?? '?';
    const wait = this.limiter.retryAfter(address);
    if (wait > 0) throw new HttpError(429, `too many failed logins: try again in ${wait} s`, { 'Retry-After': String(wait) });
    // application/json: a cross-site form cannot send it, so a login cannot be forged either
    const body = (await this.readJson(req, 4096)) as { token?: unknown } | undefined;
    const given = typeof body?.token === 'string' ? body.token : '';
    if (auth && !secretsMatch(this.options.authToken!, given)) {
      this.limiter.failed(address);
      this.options.logger.warn({ remote: address }, 'console login failed');
      throw new HttpError(401, 'wrong token');
    }
    this.limiter.succeeded(address);
    const s = this.sessions.create();
    res.setHeader('Set-Cookie', sessionCookie(s.id, this.sessions.ttlSeconds, secure));
    this.options.logger.info({ remote: address }, 'console login');
    answer(s);
  }

  private authenticate(req: IncomingMessage): Principal {
    const expected = this.options.authToken;
    const header = req.headers.authorization;
    if (expected && header !== undefined) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
      if (m && secretsMatch(expected, m[1]!)) return 'bearer';
      throw new HttpError(401, 'a valid Bearer token is required ([http] auth_token)');
    }
    if (this.sessions.fromRequest(req)) return 'session';
    if (!expected) return 'open';
    throw new HttpError(401, 'a Bearer token ([http] auth_token) or a console login is required');
  }

  private checkCsrf(req: IncomingMessage): void {
    const s = this.sessions.fromRequest(req);
    const given = req.headers[CSRF_HEADER];
    if (!s || typeof given !== 'string' || !secretsMatch(s.csrf, given)) {
      throw new HttpError(403, 'a change needs the session\'s CSRF token in X-CSRF-Token (GET /api/v1/session), or a Bearer token');
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

  private async readJson(req: IncomingMessage, max: number): Promise<unknown> {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) throw new HttpError(415, 'send the body as application/json');
    const declared = Number(req.headers['content-length']);
    if (declared > max) throw new HttpError(413, `the body is larger than ${max} bytes`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > max) throw new HttpError(413, `the body is larger than ${max} bytes`);
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

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path');
  }
}

function httpErrorOf(err: unknown): { status: number; message: string; headers: Record<string, string> } {
  if (err instanceof HttpError) return { status: err.status, message: err.message, headers: err.headers };
  if (err instanceof MegaError) {
    switch (err.code) {
      case 'MEGA_ERR_TEMPLATE_NOT_FOUND':
        return { status: 404, message: err.message, headers: {} };
      case 'MEGA_ERR_BAD_REQUEST':
      case 'MEGA_ERR_INVALID_TEMPLATE':
      case 'MEGA_ERR_TEMPLATE_RENDER':
      case 'MEGA_ERR_TABLE_FULL':
      case 'MEGA_ERR_TASK_RECIPIENTS':
        return { status: 400, message: err.message, headers: {} };
      case 'MEGA_ERR_TASK_STATE':
        return { status: /^no task/.test(err.message) ? 404 : 409, message: err.message, headers: {} };
      default:
        // a database or queue that is down, a daemon still starting: worth asking again
        return { status: 503, message: err.message, headers: {} };
    }
  }
  return { status: 500, message: 'internal error (see the daemon log)', headers: {} };
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value ?? null);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}
