/**
 * The web console in a real browser (issue 14 part 7): Debian's chromium driven by
 * playwright-core, against a real daemon, its simulator and its SQLite store. Each page's
 * screenshot goes to test-output/console/ (MEGA_TEST_OUTPUT to move it).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { encodePush } from '../../src/protocol/index.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';
import { runMega } from '../helpers/processes.js';
import { natsAvailable, startNats, type NatsCluster } from '../helpers/nats.js';

const CHROMIUM = process.env.MEGA_TEST_CHROMIUM ?? '/usr/bin/chromium';
const TOKEN = 'browser-test-token-71ab';
const XSS = '<img src=x onerror=alert(1)>';
const TEMPLATE = { touser: '${OPENID}', template_id: 'tmpl-browser', data: { first: { value: 'old ${name}' } } };
const here = path.dirname(fileURLToPath(import.meta.url));
const OUT = process.env.MEGA_TEST_OUTPUT ? path.join(process.env.MEGA_TEST_OUTPUT, 'console') : path.resolve(here, '..', '..', '..', 'test-output', 'console');

if (!existsSync(CHROMIUM)) {
  describe('web console in a browser', () => {
    it('needs chromium', (t) => {
      // under CI a missing browser is a broken setup, not a reason to pass
      if (process.env.CI) assert.fail(`no chromium at ${CHROMIUM}: .ci/run installs Debian's`);
      t.skip(`no chromium at ${CHROMIUM} (.ci/run installs Debian's)`);
    });
  });
} else {
  describe('web console in a browser', () => {
    let sim: SimulatorHandle;
    let stack: Stack;
    let base: string;
    let browser: Browser;
    let page: Page;
    const dialogs: string[] = [];
    const pageErrors: string[] = [];
    const api = async (method: string, p: string, json?: unknown): Promise<Response> =>
      fetch(base + p, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(json !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: json === undefined ? undefined : JSON.stringify(json),
      });
    const push = async (opaque: number, openid: string, vars: Record<string, unknown>): Promise<void> => {
      const client = await stack.connect();
      assert.equal((await client.request(encodePush(opaque, openid, 'order', vars), opaque)).code, 200);
      client.close();
    };
    const shot = async (name: string): Promise<void> => {
      await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
    };
    /** Until the element's text matches (read through the page, not its DOM typings). */
    const waitText = (selector: string, re: RegExp, timeoutMs = 10000): Promise<true> =>
      eventually(async () => re.test((await page.textContent(selector).catch(() => null)) ?? '') || undefined, timeoutMs, `${selector} to match ${re}`);
    const goto = async (route: string): Promise<void> => {
      await page.goto(`${base}/#/${route}`);
      await page.waitForSelector(`#view[data-route="${route}"]`);
    };

    before(async () => {
      mkdirSync(OUT, { recursive: true });
      sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
      stack = await startStack({
        simulator: sim,
        templates: { order: TEMPLATE, xss: TEMPLATE },
        ini: { http: { listen: '127.0.0.1:0', auth_token: TOKEN }, wechat: { retry_max: 0 } },
      });
      base = /HTTP on (http:\/\/[^;\s]+)/.exec(stack.output())![1]!;
      // a title that would run script if the console wrote it as HTML
      assert.equal((await api('PUT', '/api/v1/templates/xss', { title: XSS, template: JSON.stringify(TEMPLATE) })).status, 200);
      // one dead letter to retry
      await sim.post('/_sim/config', { failOpenids: [{ pattern: '^oDEAD$', errcode: 43004, errmsg: 'require subscribe' }] });
      await push(1, 'oDEAD', { name: 'Dee' });
      await eventually(async () => ((await (await api('GET', '/api/v1/dead-letters')).json()) as unknown[]).length === 1, 10000, 'the dead letter');
      await sim.post('/_sim/config', { failOpenids: [] });

      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
      });
      page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      page.on('dialog', (d) => {
        // the console's own confirm() (retry all, delete) is accepted; anything else is an injected alert
        if (d.type() !== 'confirm') dialogs.push(`${d.type()}: ${d.message()}`);
        void d.accept();
      });
      page.on('pageerror', (e) => pageErrors.push(e.message));
    });

    after(async () => {
      await browser?.close();
      await stack?.stop();
      await sim?.stop();
    });

    it('asks for the token, refuses a wrong one, and logs in', async () => {
      await page.goto(`${base}/`);
      await page.waitForSelector('#login-form', { state: 'visible' });
      await shot('login');
      await page.fill('#login-token', 'not-the-token');
      await page.click('#login-button');
      await waitText('#login-error', /\S/);
      await page.fill('#login-token', TOKEN);
      await page.click('#login-button');
      await page.waitForSelector('#login-form', { state: 'hidden' });
      await page.waitForSelector('#view[data-route="overview"]');
      const cookies = await page.context().cookies();
      const session = cookies.find((c) => c.name === 'mega_session');
      assert.ok(session, 'a session cookie');
      assert.equal(session.httpOnly, true);
      assert.equal(session.sameSite, 'Strict');
      assert.ok(session.expires > Date.now() / 1000, 'it expires');
    });

    it('shows on the overview the numbers `status` prints', async () => {
      for (let i = 0; i < 5; i++) await push(10 + i, `oOVER${i}`, { name: `n${i}` });
      await eventually(async () => (await sim.messages()).filter((m) => m.touser?.startsWith('oOVER')).length === 5, 10000, 'the pushes delivered');
      const status = JSON.parse((await runMega(['wechat', 'status', '--json', '--config-dir', stack.configDir])).stdout) as {
        sent: number;
        failed: number;
        queue: { depth: number };
        running: number;
      };
      await goto('overview');
      const read = (id: string): Promise<string> => page.$eval(id, (e) => (e.textContent ?? '').trim());
      await eventually(async () => (await read('#stat-sent')) === String(status.sent), 10000, `#stat-sent = ${status.sent}`);
      assert.equal(await read('#stat-failed'), String(status.failed));
      assert.equal(await read('#stat-depth'), String(status.queue.depth));
      assert.equal(await read('#stat-inflight'), String(status.running));
      assert.equal(status.sent, 5);
      assert.equal(status.failed, 1);
      await page.waitForSelector('#rate-chart');
      await shot('overview');
    });

    it('shows a template title full of markup as text, and runs none of it', async () => {
      await goto('templates');
      const row = page.locator('#template-list [data-key="xss"]');
      await row.waitFor();
      assert.ok(((await row.textContent()) ?? '').includes(XSS), 'the title is shown literally');
      assert.equal(await page.locator('#template-list img').count(), 0, 'no element was made from it');
      await row.click();
      await page.waitForSelector('#template-title');
      assert.equal(await page.inputValue('#template-title'), XSS);
      assert.equal(await page.locator('img').count(), 0);
      await shot('templates-xss');
      assert.deepEqual(dialogs, []);
    });

    it('edits a template: invalid JSON blocks Save, the preview renders, Save TSets, and the next Push uses the new text', async () => {
      await goto('templates');
      await page.locator('#template-list [data-key="order"]').click();
      await page.waitForSelector('#template-body');
      await page.fill('#template-body', '{"template_id": ');
      await waitText('#template-error', /\S/);
      assert.equal(await page.isDisabled('#save-button'), true, 'Save is off while the JSON is invalid');
      const edited = { touser: '${OPENID}', template_id: 'tmpl-browser', data: { first: { value: 'new ${name} via console' } } };
      await page.fill('#template-body', JSON.stringify(edited, null, 2));
      await page.fill('#preview-vars', '{"name":"Ann"}');
      await page.click('#preview-button');
      await waitText('#preview-output', /new Ann via console/);
      await shot('templates-preview');
      assert.equal(await page.isDisabled('#save-button'), false);
      await page.click('#save-button');
      await waitText('#save-result', /200/);
      await push(30, 'oEDITED', { name: 'Bo' });
      const m = await eventually(async () => (await sim.messages()).find((x) => x.touser === 'oEDITED'), 10000, 'the push');
      assert.equal(m.data!.first!.value, 'new Bo via console');
    });

    it('uploads a CSV task, starts it, and watches it reach done', async () => {
      await goto('tasks');
      await page.waitForSelector('#task-key option[value="order"]', { state: 'attached' });
      await page.selectOption('#task-key', 'order');
      const csv = ['openid,name', ...Array.from({ length: 20 }, (_, i) => `oTASK${i},T${i}`)].join('\n') + '\n';
      await page.setInputFiles('#task-file', { name: 'recipients.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
      await page.selectOption('#task-format', 'csv');
      if (!(await page.isChecked('#task-start'))) await page.check('#task-start');
      await page.click('#task-submit');
      const row = page.locator('#task-list [data-task-id]').first();
      await row.waitFor();
      await waitText('#task-list [data-task-id] .task-status', /done/, 20000);
      await shot('tasks');
      const sent = (await sim.messages()).filter((m) => m.touser?.startsWith('oTASK'));
      assert.equal(sent.length, 20);
      assert.equal(sent.find((m) => m.touser === 'oTASK7')!.data!.first!.value, 'new T7 via console');
    });

    it('retries a dead letter from its row', async () => {
      await goto('dead-letters');
      const row = page.locator('#dlq-table [data-dlq-id]').filter({ hasText: 'oDEAD' });
      await row.waitFor();
      await shot('dead-letters');
      await row.locator('.dlq-retry').click();
      await waitText('#dlq-result', /queued again/);
      await eventually(async () => (await sim.messages()).some((m) => m.touser === 'oDEAD' && m.errcode === 0), 10000, 'the retried job delivered');
    });

    it('finds a message in the ledger by openid', async () => {
      await goto('messages');
      await page.fill('#msg-search', 'oEDITED');
      await page.click('#msg-button');
      await page.waitForSelector('#msg-table [data-msgid]');
      assert.ok(((await page.textContent('#msg-results')) ?? '').includes('oEDITED'));
      await shot('messages');
    });

    it('refuses a change the page makes without the CSRF token, and takes it with the token', async () => {
      const statuses = await page.evaluate(async () => {
        const plain = await fetch('/api/v1/resume', { method: 'POST' });
        const wrong = await fetch('/api/v1/resume', { method: 'POST', headers: { 'X-CSRF-Token': 'forged' } });
        const session = (await (await fetch('/api/v1/session')).json()) as { csrf: string };
        const right = await fetch('/api/v1/resume', { method: 'POST', headers: { 'X-CSRF-Token': session.csrf } });
        return [plain.status, wrong.status, right.status];
      });
      assert.deepEqual(statuses, [403, 403, 200]);
    });

    it('ran without a page error or an alert, under its CSP', async () => {
      assert.deepEqual(pageErrors, []);
      assert.deepEqual(dialogs, []);
      const csp = (await (await fetch(`${base}/`)).headers.get('content-security-policy')) ?? '';
      assert.match(csp, /script-src 'self'/);
    });
  });
}

if (existsSync(CHROMIUM) && natsAvailable()) {
  describe('web console in a browser, JetStream backend', () => {
    let nats: NatsCluster;
    let stack: Stack;
    let browser: Browser;

    before(async () => {
      mkdirSync(OUT, { recursive: true });
      nats = await startNats();
      stack = await startStack({
        templates: { order: TEMPLATE },
        ini: { http: { listen: '127.0.0.1:0', auth_token: TOKEN }, queue: { backend: 'jetstream' }, jetstream: { servers: nats.servers } },
      });
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
      });
    });

    after(async () => {
      await browser?.close();
      await stack?.stop();
      await nats?.stop();
    });

    it('shows the members of the service on the overview', async () => {
      const base = /HTTP on (http:\/\/[^;\s]+)/.exec(stack.output())![1]!;
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      await page.goto(`${base}/`);
      await page.fill('#login-token', TOKEN);
      await page.click('#login-button');
      await page.waitForSelector('#view[data-route="overview"]');
      const row = page.locator('#members-table [data-member-id]');
      await row.first().waitFor();
      assert.equal(await row.count(), 1);
      assert.ok(((await row.first().textContent()) ?? '').includes(String(stack.daemon.pid)), 'the member row names this daemon');
      await page.screenshot({ path: path.join(OUT, 'overview-jetstream.png'), fullPage: true });
    });
  });
}
