/**
 * The HTTP side of a real daemon process (issue 14): every route's auth, /metrics after real
 * traffic, the JSON API against the control socket's answers, and the access-token service
 * checked against the simulator (the token it hands out is one WeChat accepts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { encodePush } from '../../src/protocol/index.js';
import { METRIC_NAMES } from '../../src/metrics/index.js';
import { APP_ID, APP_SECRET, baseIni, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import { spawnMega, writeIni } from '../helpers/processes.js';

const TOKEN = 'http-test-token-5f1c2a';
const TEMPLATE = { touser: '${OPENID}', template_id: 'tmpl-ops', data: { first: { value: 'hello ${name}' } } };

/** Every route of /api/v1 and /metrics, each with the method it takes. */
const PROTECTED: Array<[string, string]> = [
  ['GET', '/metrics'],
  ['GET', '/api/v1/status'],
  ['GET', '/api/v1/queue'],
  ['POST', '/api/v1/resume'],
  ['GET', '/api/v1/dead-letters'],
  ['POST', '/api/v1/dead-letters/retry'],
  ['GET', '/api/v1/messages'],
  ['GET', '/api/v1/messages/some-msgid'],
  ['GET', '/api/v1/access-token'],
  ['GET', '/api/v1/rate'],
  ['GET', '/api/v1/templates'],
  ['GET', '/api/v1/templates/ops'],
  ['PUT', '/api/v1/templates/ops'],
  ['DELETE', '/api/v1/templates/ops'],
  ['POST', '/api/v1/templates/preview'],
  ['GET', '/api/v1/tasks'],
  ['POST', '/api/v1/tasks'],
  ['GET', '/api/v1/tasks/1'],
  ['POST', '/api/v1/tasks/1/start'],
  ['POST', '/api/v1/tasks/1/pause'],
  ['GET', '/api/v1/tasks/1/report'],
  // unknown paths too: without the token nothing tells what exists
  ['GET', '/api/v1/nothing-here'],
];

function httpBase(stack: Stack): string {
  const m = /HTTP on (http:\/\/[^;\s]+)/.exec(stack.output());
  assert.ok(m, `the start line names the HTTP side: ${stack.output()}`);
  return m[1]!;
}

describe('HTTP side of a daemon with [http] auth_token', () => {
  let sim: SimulatorHandle;
  let stack: Stack;
  let base: string;
  const auth = { authorization: `Bearer ${TOKEN}` };

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    stack = await startStack({
      simulator: sim,
      templates: { ops: TEMPLATE },
      ini: { http: { listen: '127.0.0.1:0', auth_token: TOKEN }, wechat: { retry_max: 0 } },
    });
    base = httpBase(stack);
  });

  after(async () => {
    await stack?.stop();
    await sim?.stop();
  });

  it('answers /healthz and /readyz without a token', async () => {
    const h = await fetch(`${base}/healthz`);
    assert.equal(h.status, 200);
    assert.deepEqual(await h.json(), { status: 'ok' });
    const r = await fetch(`${base}/readyz`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ready: true });
  });

  it('refuses every other route with 401 without the token, or with a wrong one', async () => {
    for (const [method, route] of PROTECTED) {
      const variants: Array<Record<string, string>> = [{}, { authorization: 'Bearer wrong-token' }, { authorization: `Basic ${TOKEN}` }];
      for (const headers of variants) {
        const res = await fetch(base + route, { method, headers });
        assert.equal(res.status, 401, `${method} ${route} with ${JSON.stringify(headers)}`);
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
        const body = (await res.json()) as { error: { message: string } };
        assert.doesNotMatch(JSON.stringify(body), new RegExp(TOKEN));
      }
    }
  });

  it('counts a delivered Push in /metrics, with every metric the issue names', async () => {
    const client = await stack.connect();
    assert.equal((await client.request(encodePush(1, 'oMETRICS', 'ops', { name: 'Ann' }), 1)).code, 200);
    client.close();
    await eventually(async () => (await sim.messages()).some((m) => m.touser === 'oMETRICS'), 10000, 'the push delivered');
    const text = await eventually(async () => {
      const res = await fetch(`${base}/metrics`, { headers: auth });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
      const t = await res.text();
      // the job leaves the queue once the ledger has its state, just after it is counted as delivered
      return /^mega_messages_delivered_total 1$/m.test(t) && /^mega_queue_depth 0$/m.test(t) ? t : undefined;
    }, 10000, 'the delivery counted and acknowledged');
    for (const name of METRIC_NAMES) assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
    assert.match(text, /^mega_requests_total\{command="push",code="200"\} 1$/m);
    assert.match(text, /^mega_push_ack_duration_seconds_count 1$/m);
    assert.match(text, /^mega_wechat_request_duration_seconds_count 1$/m);
    assert.match(text, /^mega_dispatch_paused\{reason="quota"\} 0$/m);
    assert.match(text, /^mega_queue_depth 0$/m);
    assert.match(text, /^mega_access_token_age_seconds \d/m);
    assert.match(text, /^process_cpu_seconds_total /m, 'the process default metrics');
  });

  it('counts a failed message by errcode and its dead letter; the API lists it and retries it', async () => {
    await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oFAILS$', errcode: 43004, errmsg: 'require subscribe' }] });
    const client = await stack.connect();
    assert.equal((await client.request(encodePush(2, 'oFAILS', 'ops', { name: 'Bo' }), 2)).code, 200);
    client.close();
    const letters = await eventually(async () => {
      const res = await fetch(`${base}/api/v1/dead-letters?openid=oFAILS`, { headers: auth });
      assert.equal(res.status, 200);
      const list = (await res.json()) as Array<{ id: number; openid: string; errcode: number }>;
      return list.length > 0 ? list : undefined;
    }, 10000, 'the dead letter');
    assert.equal(letters[0]!.errcode, 43004);
    const none = (await (await fetch(`${base}/api/v1/dead-letters?openid=oNOBODY`, { headers: auth })).json()) as unknown[];
    assert.deepEqual(none, []);
    const text = await (await fetch(`${base}/metrics`, { headers: auth })).text();
    assert.match(text, /^mega_messages_failed_total\{errcode="43004"\} 1$/m);
    assert.match(text, /^mega_dead_letters_total 1$/m);

    const noType = await fetch(`${base}/api/v1/dead-letters/retry`, { method: 'POST', headers: auth, body: '{"all":true}' });
    assert.equal(noType.status, 415);
    const bad = await fetch(`${base}/api/v1/dead-letters/retry`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"all":' });
    assert.equal(bad.status, 400);
    const wrong = await fetch(`${base}/api/v1/dead-letters/retry`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"ids":["x"]}' });
    assert.equal(wrong.status, 400);
    assert.match(((await wrong.json()) as { error: { message: string } }).error.message, /selector/);

    await sim.post('/_sim/config', { failOpenids: [] });
    const retry = await fetch(`${base}/api/v1/dead-letters/retry`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ ids: [letters[0]!.id] }),
    });
    assert.equal(retry.status, 200);
    const answer = (await retry.json()) as { retried: unknown[]; missing: number[] };
    assert.equal(answer.retried.length, 1);
    await eventually(async () => (await sim.messages()).filter((m) => m.touser === 'oFAILS' && m.errcode === 0).length === 1, 10000, 'the retried job delivered');
  });

  it('answers status like the control socket, the ledger through /messages, and 404 for an unknown msgid', async () => {
    const res = await fetch(`${base}/api/v1/status`, { headers: auth });
    assert.equal(res.status, 200);
    const status = (await res.json()) as { name: string; pid: number; http: string; listen: Array<{ port: number }> };
    assert.equal(status.name, 'wechat');
    assert.equal(status.pid, stack.daemon.pid);
    assert.equal(status.http, base);
    assert.equal(status.listen[0]!.port, stack.port);

    const list = await eventually(async () => {
      const r = await fetch(`${base}/api/v1/messages?openid=oMETRICS`, { headers: auth });
      assert.equal(r.status, 200);
      const l = (await r.json()) as Array<{ msgid: string; state: string }>;
      return l.length > 0 && l[0]!.state !== 'queued' ? l : undefined;
    }, 10000, 'the ledger record');
    const one = await fetch(`${base}/api/v1/messages/${encodeURIComponent(list[0]!.msgid)}`, { headers: auth });
    assert.equal(one.status, 200);
    assert.equal(((await one.json()) as { msgid: string }).msgid, list[0]!.msgid);

    assert.equal((await fetch(`${base}/api/v1/messages/no-such-message`, { headers: auth })).status, 404);
    assert.equal((await fetch(`${base}/api/v1/messages?state=bogus`, { headers: auth })).status, 400);
    assert.equal((await fetch(`${base}/api/v1/messages?limit=abc`, { headers: auth })).status, 400);
    assert.equal((await fetch(`${base}/api/v1/status`, { method: 'DELETE', headers: auth })).status, 405);
    assert.equal((await fetch(`${base}/api/v1/nothing-here`, { headers: auth })).status, 404);
    const resume = await fetch(`${base}/api/v1/resume`, { method: 'POST', headers: auth });
    assert.deepEqual(await resume.json(), { resumed: false });
  });

  it('hands out the access token the daemon sends with (WeChat accepts it), and logs its use without it', async () => {
    const res = await fetch(`${base}/api/v1/access-token`, { headers: auth });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { access_token: string; expires_at: string };
    assert.ok(body.access_token.length > 10);
    assert.ok(Date.parse(body.expires_at) > Date.now(), body.expires_at);
    // another service of the account uses it directly with the WeChat API
    const sent = await fetch(`${sim.url}/cgi-bin/message/template/send?access_token=${encodeURIComponent(body.access_token)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ touser: 'oOTHER', template_id: 'tmpl-ops', data: {} }),
    });
    assert.equal(((await sent.json()) as { errcode: number }).errcode, 0);
    const logFile = path.join(stack.dir, 'logs', 'mega.log');
    const log = await eventually(() => {
      const text = readFileSync(logFile, 'utf8');
      return text.includes('access token handed out over HTTP') ? text : undefined;
    }, 5000, 'the log line');
    assert.ok(!log.includes(body.access_token), 'the token itself is never logged');
  });
});

describe('HTTP side without [http] auth_token', () => {
  let stack: Stack;
  let base: string;

  before(async () => {
    stack = await startStack({ templates: { ops: TEMPLATE } });
    base = httpBase(stack);
  });

  after(async () => {
    await stack?.stop();
  });

  it('is open on loopback, but refuses the access-token service with 403', async () => {
    assert.equal((await fetch(`${base}/api/v1/status`)).status, 200);
    assert.equal((await fetch(`${base}/metrics`)).status, 200);
    const res = await fetch(`${base}/api/v1/access-token`);
    assert.equal(res.status, 403);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /auth_token/);
  });

  it('a second daemon on the same [http] listen port does not start, and says which key to change', async () => {
    const port = new URL(base).port;
    const dir = path.join(stack.dir, 'second');
    const configDir = path.join(dir, 'config');
    writeIni(configDir, 'second', { ...baseIni(dir, stack.dbFile, 'http://127.0.0.1:9'), http: { listen: `127.0.0.1:${port}` } });
    const failed = await spawnMega(['second', 'start', '--foreground', '--config-dir', configDir], /cannot start/).then(
      (s) => s.output(),
      (err: unknown) => String(err),
    );
    assert.match(failed, /\[http\] listen 127\.0\.0\.1:\d+: the port is taken/);
    assert.doesNotMatch(failed, /\[server\] listen/);
  });
});

describe('HTTP side over TLS ([http] tls_cert, tls_key)', () => {
  let stack: Stack;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'mega-http-tls-'));
    writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', 'http.key', '-out', 'http.pem');
    stack = await startStack({
      templates: { ops: TEMPLATE },
      ini: { http: { listen: '127.0.0.1:0', auth_token: TOKEN, tls_cert: path.join(dir, 'http.pem'), tls_key: path.join(dir, 'http.key') } },
    });
  });

  after(async () => {
    await stack?.stop();
  });

  it('serves HTTPS, and the console cookie is Secure', async () => {
    const m = /HTTP on (https:\/\/127\.0\.0\.1:\d+)/.exec(stack.output());
    assert.ok(m, stack.output());
    const dispatcher = new Agent({ connect: { ca: readFileSync(path.join(dir, 'http.pem')) } });
    try {
      const h = await undiciFetch(`${m[1]}/healthz`, { dispatcher });
      assert.equal(h.status, 200);
      const login = await undiciFetch(`${m[1]}/api/v1/login`, { dispatcher, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: TOKEN }) });
      assert.equal(login.status, 200);
      assert.match(login.headers.get('set-cookie') ?? '', /; Secure$/);
      // plain HTTP to the TLS port: the handshake fails, nothing is served
      await assert.rejects(fetch(`${m[1].replace('https', 'http')}/healthz`));
    } finally {
      await dispatcher.close();
    }
  });
});
