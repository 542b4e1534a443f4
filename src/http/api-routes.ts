/**
 * The JSON API under /api/v1/ (docs/OPERATIONS.md): what each route asks of the daemon's port.
 * Authentication, CSRF and error answers are the server's (ops-server.ts); a route only reads its
 * input, checks it, and returns what is sent back.
 */

import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { OpsPort } from './ports.js';

/** An error with the HTTP status it is answered with. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** A route's answer that is not JSON (the failure report's CSV). */
export class RawBody {
  constructor(
    readonly contentType: string,
    readonly body: string | Buffer,
    readonly headers: Record<string, string> = {},
  ) {}
}

export interface RouteContext {
  req: IncomingMessage;
  url: URL;
  params: Record<string, string>;
  /** The request's JSON body (415 unless `application/json`, 400 when not JSON, 413 when too large). */
  body(): Promise<unknown>;
}

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Segments; `:name` matches one segment into params. */
  path: string[];
  handler: (ctx: RouteContext) => Promise<unknown>;
  /** @defaultValue 1 MiB */
  maxBodyBytes?: number;
}

/** Recipient files up to 32 MiB, base64 in JSON. */
const TASK_UPLOAD_MAX = 48 * 1024 * 1024;
const TEMPLATE_KEY = /^[\x21-\x7e]{1,32}$/;
const OPENID = /^[\x21-\x7e]{1,128}$/;
const FORMATS = ['plain', 'csv', 'jsonl'] as const;

export function apiRoutes(port: OpsPort, logger: Logger): Route[] {
  const routes: Route[] = [];
  const route = (method: Route['method'], path: string, handler: Route['handler'], maxBodyBytes?: number): void => {
    routes.push({ method, path: path.split('/').filter(Boolean), handler, ...(maxBodyBytes ? { maxBodyBytes } : {}) });
  };
  const control = (request: unknown): Promise<unknown> => port.control(request);

  route('GET', '/api/v1/status', () => control({ cmd: 'status' }));
  route('GET', '/api/v1/queue', () => control({ cmd: 'queue' }));
  route('GET', '/api/v1/rate', async () => port.rateHistory());
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
    const answer = await port.accessToken();
    logger.info({ remote: req.socket.remoteAddress, userAgent: req.headers['user-agent'] }, 'access token handed out over HTTP');
    return { access_token: answer.accessToken, expires_at: answer.expiresAt === null ? null : new Date(answer.expiresAt).toISOString() };
  });

  route('GET', '/api/v1/templates', () => port.templates.list());
  route('POST', '/api/v1/templates/preview', async ({ body }) => {
    const b = object(await body());
    const variables = b.variables === undefined ? {} : b.variables;
    if (variables === null || typeof variables !== 'object' || Array.isArray(variables)) throw new HttpError(400, 'variables must be a JSON object');
    const openid = b.openid === undefined ? 'oPREVIEW' : b.openid;
    if (typeof openid !== 'string' || !OPENID.test(openid)) throw new HttpError(400, 'openid must be 1-128 printable ASCII characters without spaces');
    if (b.template !== undefined && typeof b.template !== 'string') throw new HttpError(400, 'template must be the template JSON as a string');
    if (b.template === undefined && b.key === undefined) throw new HttpError(400, 'give template (the JSON text) or key (a stored template)');
    return port.templates.preview({
      ...(b.key !== undefined ? { key: templateKey(b.key) } : {}),
      ...(b.template !== undefined ? { template: b.template as string } : {}),
      variables: variables as Record<string, unknown>,
      openid,
    });
  });
  route('GET', '/api/v1/templates/:key', ({ params }) => port.templates.get(templateKey(params.key)));
  route('PUT', '/api/v1/templates/:key', async ({ params, body }) => {
    const b = object(await body());
    if (typeof b.template !== 'string' || b.template === '') throw new HttpError(400, 'template must be the template JSON as a non-empty string');
    if (b.title !== undefined && (typeof b.title !== 'string' || b.title.length > 100)) throw new HttpError(400, 'title must be a string of at most 100 characters');
    if (b.kind !== undefined && typeof b.kind !== 'string') throw new HttpError(400, 'kind must be a string');
    return port.templates.set(templateKey(params.key), {
      template: b.template,
      ...(b.title !== undefined ? { title: b.title as string } : {}),
      ...(b.kind !== undefined ? { kind: b.kind as string } : {}),
    });
  });
  route('DELETE', '/api/v1/templates/:key', ({ params }) => port.templates.remove(templateKey(params.key)));

  route('GET', '/api/v1/tasks', () => port.tasks.list());
  route(
    'POST',
    '/api/v1/tasks',
    async ({ body }) => {
      const b = object(await body());
      const format = b.format;
      if (!(FORMATS as readonly unknown[]).includes(format)) throw new HttpError(400, `format must be one of ${FORMATS.join(', ')}`);
      if (typeof b.content_base64 !== 'string' || b.content_base64 === '') throw new HttpError(400, 'content_base64 must hold the recipients file, base64-encoded');
      if (b.name !== undefined && (typeof b.name !== 'string' || b.name.length > 100)) throw new HttpError(400, 'name must be a string of at most 100 characters');
      const variables = b.variables;
      if (variables !== undefined && (variables === null || typeof variables !== 'object' || Array.isArray(variables))) throw new HttpError(400, 'variables must be a JSON object');
      return port.tasks.create({
        key: templateKey(b.key),
        format: format as (typeof FORMATS)[number],
        content: Buffer.from(b.content_base64, 'base64'),
        ...(b.name ? { name: b.name as string } : {}),
        ...(variables !== undefined ? { variables: variables as Record<string, unknown> } : {}),
        skipInvalid: b.skipInvalid === true,
        start: b.start !== false,
      });
    },
    TASK_UPLOAD_MAX,
  );
  route('GET', '/api/v1/tasks/:id', ({ params }) => port.tasks.get(taskId(params.id)));
  route('POST', '/api/v1/tasks/:id/start', ({ params }) => port.tasks.start(taskId(params.id)));
  route('POST', '/api/v1/tasks/:id/pause', ({ params }) => port.tasks.pause(taskId(params.id)));
  route('GET', '/api/v1/tasks/:id/report', async ({ params }) => {
    const id = taskId(params.id);
    return new RawBody('text/csv; charset=utf-8', await port.tasks.report(id), { 'Content-Disposition': `attachment; filename="task-${id}-failures.csv"` });
  });
  return routes;
}

function object(value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new HttpError(400, 'the body must be a JSON object');
  return value as Record<string, unknown>;
}

function templateKey(value: unknown): string {
  if (typeof value !== 'string' || !TEMPLATE_KEY.test(value)) throw new HttpError(400, 'a template key is 1-32 printable ASCII characters without spaces');
  return value;
}

function taskId(value: string | undefined): number {
  if (value === undefined || !/^\d{1,10}$/.test(value) || Number(value) < 1) throw new HttpError(400, 'a task id is a positive integer');
  return Number(value);
}

interface DeadLetterView {
  openid?: string;
  key?: string;
  errcode?: number | null;
}

/** `?openid=&key=&errcode=` narrow the dead-letter list (the control request has no filter). */
function filterDeadLetters(list: DeadLetterView[], url: URL): DeadLetterView[] {
  const openid = url.searchParams.get('openid') || null;
  const key = url.searchParams.get('key') || null;
  const errcode = url.searchParams.get('errcode') || null;
  return list.filter(
    (d) => (openid === null || d.openid === openid) && (key === null || d.key === key) && (errcode === null || String(d.errcode) === errcode),
  );
}

/** The message list's query string as the control request's filter (checked there). */
function messageFilterOf(url: URL): Record<string, unknown> {
  const filter: Record<string, unknown> = {};
  const q = url.searchParams;
  if (q.get('openid')) filter.openid = q.get('openid');
  if (q.get('state')) filter.state = q.get('state');
  for (const name of ['since', 'limit']) {
    if (!q.get(name)) continue;
    const n = Number(q.get(name));
    if (!Number.isSafeInteger(n)) throw new HttpError(400, `${name} must be an integer`);
    filter[name] = n;
  }
  return filter;
}
