/**
 * What the web console stands on, over real HTTP to a real daemon: login and its limit, the
 * session cookie, CSRF on every change, the security headers, templates edited with preview and
 * saved through TSet (the next Push uses the new text at the simulator), and the rate history.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodePush } from '../../src/protocol/index.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';

const TOKEN = 'console-test-token-9d2e';
const TEMPLATE = { touser: '${OPENID}', template_id: 'tmpl-console', data: { first: { value: 'old ${name}' } } };

interface Answer {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  headers: Headers;
}

describe('console API: login, sessions, CSRF, templates', () => {
  let sim: SimulatorHandle;
  let stack: Stack;
  let base: string;

  const call = async (method: string, path: string, o: { cookie?: string; csrf?: string; bearer?: string; json?: unknown } = {}): Promise<Answer> => {
    const headers: Record<string, string> = {};
    if (o.cookie) headers.cookie = o.cookie;
    if (o.csrf) headers['x-csrf-token'] = o.csrf;
    if (o.bearer) headers.authorization = `Bearer ${o.bearer}`;
    if (o.json !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(base + path, { method, headers, body: o.json === undefined ? undefined : JSON.stringify(o.json) });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON (CSV, HTML)
    }
    return { status: res.status, body, headers: res.headers };
  };
  const login = async (): Promise<{ cookie: string; csrf: string }> => {
    const r = await call('POST', '/api/v1/login', { json: { token: TOKEN } });
    assert.equal(r.status, 200);
    const cookie = (r.headers.get('set-cookie') ?? '').split(';')[0]!;
    return { cookie, csrf: r.body.csrf as string };
  };

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    stack = await startStack({ simulator: sim, templates: { console: TEMPLATE }, ini: { http: { listen: '127.0.0.1:0', auth_token: TOKEN } } });
    base = /HTTP on (http:\/\/[^;\s]+)/.exec(stack.output())![1]!;
  });

  after(async () => {
    await stack?.stop();
    await sim?.stop();
  });

  it('logs in with the token for an HttpOnly, SameSite=Strict, expiring session cookie; the session gives the CSRF token', async () => {
    assert.equal((await call('GET', '/api/v1/session')).status, 401);
    const r = await call('POST', '/api/v1/login', { json: { token: TOKEN } });
    assert.equal(r.status, 200);
    const setCookie = r.headers.get('set-cookie') ?? '';
    assert.match(setCookie, /^mega_session=[\w-]{40,}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    assert.equal(r.body.auth, true);
    assert.ok(Date.parse(r.body.expiresAt) > Date.now());
    const cookie = setCookie.split(';')[0]!;
    const s = await call('GET', '/api/v1/session', { cookie });
    assert.equal(s.status, 200);
    assert.equal(s.body.csrf, r.body.csrf);
    assert.equal((await call('GET', '/api/v1/status', { cookie })).status, 200, 'the cookie authenticates reads');
    const out = await call('POST', '/api/v1/logout', { cookie, csrf: r.body.csrf });
    assert.equal(out.status, 200);
    assert.match(out.headers.get('set-cookie') ?? '', /Max-Age=0/);
    assert.equal((await call('GET', '/api/v1/status', { cookie })).status, 401, 'the session is gone');
  });

  it('refuses a change without the CSRF token (cookie alone, wrong token, another session\'s), and takes it with it or with Bearer', async () => {
    const a = await login();
    const b = await login();
    assert.equal((await call('POST', '/api/v1/resume', { cookie: a.cookie })).status, 403);
    assert.equal((await call('POST', '/api/v1/resume', { cookie: a.cookie, csrf: 'nope' })).status, 403);
    assert.equal((await call('POST', '/api/v1/resume', { cookie: a.cookie, csrf: b.csrf })).status, 403);
    const ok = await call('POST', '/api/v1/resume', { cookie: a.cookie, csrf: a.csrf });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { resumed: false });
    assert.equal((await call('POST', '/api/v1/resume', { bearer: TOKEN })).status, 200);
    assert.equal((await call('PUT', '/api/v1/templates/console', { cookie: a.cookie, json: { template: '{}' } })).status, 403);
  });

  it('sends the security headers: a CSP without inline script, nosniff, no framing', async () => {
    for (const path of ['/api/v1/session', '/healthz', '/api/v1/nothing']) {
      const r = await call('GET', path);
      const csp = r.headers.get('content-security-policy') ?? '';
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'self'(;|$)/);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(r.headers.get('x-frame-options'), 'DENY');
    }
  });

  it('edits a template: invalid JSON is refused and nothing is written; preview renders; save TSets and the next Push uses it', async () => {
    const { cookie, csrf } = await login();
    const list = await call('GET', '/api/v1/templates', { cookie });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.map((t: { key: string; loaded: boolean }) => [t.key, t.loaded]), [['console', true]]);

    const bad = await call('PUT', '/api/v1/templates/console', { cookie, csrf, json: { title: 'x', template: '{"template_id": ' } });
    assert.equal(bad.status, 400);
    assert.equal((await call('GET', '/api/v1/templates/console', { cookie })).body.template, JSON.stringify(TEMPLATE), 'unchanged');
    const noId = await call('PUT', '/api/v1/templates/console', { cookie, csrf, json: { template: '{"data":{}}' } });
    assert.equal(noId.status, 400);
    assert.match(noId.body.error.message, /template_id/);

    const edited = { touser: '${OPENID}', template_id: 'tmpl-console', data: { first: { value: 'new ${name} for ${OPENID}' }, second: { value: '${price}' } } };
    const preview = await call('POST', '/api/v1/templates/preview', { cookie, csrf, json: { template: JSON.stringify(edited), variables: { name: 'Ann' }, openid: 'oPREVIEW' } });
    assert.equal(preview.status, 200);
    assert.equal(preview.body.message.data.first.value, 'new Ann for oPREVIEW');
    assert.equal(preview.body.message.touser, 'oPREVIEW');
    assert.deepEqual(preview.body.missing, ['price']);
    const stored = await call('POST', '/api/v1/templates/preview', { cookie, csrf, json: { key: 'console', variables: { name: 'Bo' } } });
    assert.equal(stored.body.message.data.first.value, 'old Bo');

    const saved = await call('PUT', '/api/v1/templates/console', { cookie, csrf, json: { title: '<img src=x onerror=alert(1)>', template: JSON.stringify(edited) } });
    assert.equal(saved.status, 200);
    assert.deepEqual(saved.body, { code: 200, message: '' });
    const row = await call('GET', '/api/v1/templates/console', { cookie });
    assert.equal(row.body.title, '<img src=x onerror=alert(1)>', 'stored and answered as it was given (the console shows it as text)');

    const client = await stack.connect();
    assert.equal((await client.request(encodePush(1, 'oEDITED', 'console', { name: 'Cy', price: '9' }), 1)).code, 200);
    client.close();
    const m = await eventually(async () => (await sim.messages()).find((x) => x.touser === 'oEDITED'), 10000, 'the push');
    assert.equal(m.data!.first!.value, 'new Cy for oEDITED');
    assert.equal(m.data!.second!.value, '9');

    assert.equal((await call('GET', '/api/v1/templates/nope', { cookie })).status, 404);
    assert.equal((await call('PUT', '/api/v1/templates/has%20space', { cookie, csrf, json: { template: '{}' } })).status, 400);
    const created = await call('PUT', '/api/v1/templates/fresh', { cookie, csrf, json: { title: 'Fresh', template: JSON.stringify(TEMPLATE) } });
    assert.deepEqual(created.body, { code: 200, message: '' });
    const removed = await call('DELETE', '/api/v1/templates/fresh', { cookie, csrf });
    assert.equal(removed.status, 200);
    assert.equal(removed.body.code, 200);
    assert.equal((await call('DELETE', '/api/v1/templates/fresh', { cookie, csrf })).status, 404);
    assert.deepEqual((await call('GET', '/api/v1/templates', { cookie })).body.map((t: { key: string }) => t.key), ['console']);
  });

  it('keeps the last 15 minutes of sends in 10 s intervals for the chart', async () => {
    const { cookie } = await login();
    const r = await call('GET', '/api/v1/rate', { cookie });
    assert.equal(r.status, 200);
    assert.equal(r.body.intervalSeconds, 10);
    assert.equal(r.body.points.length, 90);
    const sent = r.body.points.reduce((n: number, p: { sent: number }) => n + p.sent, 0);
    assert.ok(sent >= 1, `the pushes delivered so far are in it (${sent})`);
  });

  it('creates a task from an uploaded CSV, runs it to done in the daemon, and serves its failure report', async () => {
    const { cookie, csrf } = await login();
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oTASKBAD$', errcode: 43004, errmsg: 'require subscribe' }] });
    const csv = 'openid,name,price\noTASK1,Ann,1\noTASK2,Bo,2\noTASKBAD,Cy,3\n';
    const bad = await call('POST', '/api/v1/tasks', { cookie, csrf, json: { key: 'console', format: 'csv', content_base64: Buffer.from('openid,name\nnot an openid,Ann\n').toString('base64') } });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /line 2/);
    const created = await call('POST', '/api/v1/tasks', { cookie, csrf, json: { key: 'console', name: 'spring sale', format: 'csv', content_base64: Buffer.from(csv).toString('base64'), start: true } });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    assert.equal(created.body.total, 3);
    const id = created.body.id as number;
    const done = await eventually(async () => {
      const t = await call('GET', `/api/v1/tasks/${id}`, { cookie });
      return t.body.status === 'done' ? t.body : undefined;
    }, 20000, 'the task done');
    assert.equal(done.success, 2);
    assert.equal(done.fail, 1);
    assert.equal(done.name, 'spring sale');
    const report = await call('GET', `/api/v1/tasks/${id}/report`, { cookie });
    assert.equal(report.status, 200);
    assert.match(report.headers.get('content-type') ?? '', /^text\/csv/);
    assert.equal(report.body, 'openid,errcode,errmsg\noTASKBAD,43004,require subscribe\n');
    const sent = (await sim.messages()).filter((m) => m.touser === 'oTASK1' || m.touser === 'oTASK2');
    assert.equal(sent.length, 2);
    assert.deepEqual((await call('GET', '/api/v1/tasks', { cookie })).body.map((t: { id: number }) => t.id), [id]);
    assert.equal((await call('GET', '/api/v1/tasks/999', { cookie })).status, 404);
    assert.equal((await call('POST', `/api/v1/tasks/${id}/start`, { cookie, csrf })).status, 409, 'a done task does not start again');
    await sim.post('/_sim/config', { failOpenids: [] });
  });

  // last: it holds this address's logins for a minute
  it('refuses a wrong token, and after 5 failures from one address answers 429 with Retry-After, even for the right token', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await call('POST', '/api/v1/login', { json: { token: `wrong-${i}` } })).status, 401);
    const held = await call('POST', '/api/v1/login', { json: { token: TOKEN } });
    assert.equal(held.status, 429);
    assert.ok(Number(held.headers.get('retry-after')) > 0);
    const form = await fetch(`${base}/api/v1/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${TOKEN}` });
    assert.equal(form.status, 429, 'still held');
  });
});
