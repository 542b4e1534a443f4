/**
 * `mega <name> template check`: checkTemplates on its own, then the real CLI against a real
 * simulator process and a SQLite store with rows of each kind.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { checkTemplates, contentKeys, describeCheck, type TemplateLists } from '../../src/cli/template-check.js';
import { openTemplateStore } from '../../src/templates/index.js';
import type { MessageKind } from '../../src/wechat/kinds.js';
import { WechatClient } from '../../src/wechat/client.js';
import { WechatTransportError } from '../../src/errors.js';
import { runMega, tempDir, writeIni } from '../helpers/processes.js';
import { APP_ID, APP_SECRET, baseIni, startSimulator, type SimulatorHandle } from '../helpers/stack.js';

const PRIVATE_CONTENT = '{{first.DATA}}\n商品：{{keyword1.DATA}}\n金额：{{keyword2.DATA}}\n{{remark.DATA}}';
const SUBSCRIBE_CONTENT = '商品名称:{{thing1.DATA}}\n金额:{{amount2.DATA}}';

function row(key: string, kind: MessageKind, template: unknown) {
  return { key, kind, template: typeof template === 'string' ? template : JSON.stringify(template) };
}

function data(...keys: string[]): Record<string, { value: string }> {
  return Object.fromEntries(keys.map((k) => [k, { value: `\${${k}}` }]));
}

const LISTS: TemplateLists = {
  private: [{ id: 'tpl-order', content: PRIVATE_CONTENT }],
  subscribe: [{ id: 'sub-pay', content: SUBSCRIBE_CONTENT }],
};

describe('checkTemplates', () => {
  it('reads the {{name.DATA}} keys of a content, each once', () => {
    assert.deepEqual(contentKeys(PRIVATE_CONTENT), ['first', 'keyword1', 'keyword2', 'remark']);
    assert.deepEqual(contentKeys('a {{x.DATA}} b {{x.DATA}} {{ y.DATA }} {{z}}'), ['x', 'y']);
  });

  it('all good: every kind against its own list', () => {
    const checks = checkTemplates(
      [
        row('order', 'template', { template_id: 'tpl-order', data: data('first', 'keyword1', 'keyword2', 'remark') }),
        row('pay', 'subscribe', { template_id: 'sub-pay', data: data('thing1', 'amount2') }),
        row('mini', 'miniprogram', { template_id: 'sub-pay', page: 'p', data: data('amount2', 'thing1') }),
      ],
      LISTS,
    );
    assert.deepEqual(
      checks.map((c) => [c.key, c.status]),
      [
        ['order', 'ok'],
        ['pay', 'ok'],
        ['mini', 'ok'],
      ],
    );
    assert.deepEqual(checks.flatMap(describeCheck), []);
  });

  it('missing id: not in the list of its kind (a subscribe id does not count for a template row)', () => {
    const [a, b] = checkTemplates(
      [row('a', 'template', { template_id: 'nope', data: {} }), row('b', 'template', { template_id: 'sub-pay', data: data('thing1', 'amount2') })],
      LISTS,
    );
    assert.equal(a!.status, 'unknown_template');
    assert.equal(b!.status, 'unknown_template');
    assert.match(describeCheck(a!)[0]!, /^a \(template, template_id nope\): no such template at WeChat .*40037/);
  });

  it('extra key: in data, not in WeChat content', () => {
    const [c] = checkTemplates([row('pay', 'subscribe', { template_id: 'sub-pay', data: data('thing1', 'amount2', 'thing9') })], LISTS);
    assert.equal(c!.status, 'keys_differ');
    assert.deepEqual(c!.extraKeys, ['thing9']);
    assert.deepEqual(c!.missingKeys, []);
    assert.deepEqual(describeCheck(c!), ["pay (subscribe, template_id sub-pay): data has thing9, which WeChat's template lacks"]);
  });

  it('missing key: in WeChat content, not in data; both directions give a line each', () => {
    const [c, d] = checkTemplates(
      [
        row('order', 'template', { template_id: 'tpl-order', data: data('keyword1', 'keyword2') }),
        row('mini', 'miniprogram', { template_id: 'sub-pay', data: data('thing1', 'time3') }),
      ],
      LISTS,
    );
    assert.deepEqual([c!.status, c!.extraKeys, c!.missingKeys], ['keys_differ', [], ['first', 'remark']]);
    assert.deepEqual(describeCheck(c!), ["order (template, template_id tpl-order): WeChat's template has first, remark, which data lacks"]);
    assert.deepEqual([d!.extraKeys, d!.missingKeys], [['time3'], ['amount2']]);
    assert.equal(describeCheck(d!).length, 2);
  });

  it('placeholder id: not checked, and not a problem', () => {
    const [c] = checkTemplates([row('dyn', 'template', { template_id: '${tid}', data: {} })], LISTS);
    assert.equal(c!.status, 'not_checked');
    assert.deepEqual(describeCheck(c!), ['dyn (template, template_id ${tid}): not checked: template_id holds a placeholder']);
  });

  it('a list not fetched leaves its rows not checked; a broken row is a problem', () => {
    const checks = checkTemplates(
      [row('pay', 'subscribe', { template_id: 'sub-pay', data: {} }), row('bad', 'template', '{'), row('noid', 'template', { data: {} })],
      { private: [] },
    );
    assert.deepEqual(
      checks.map((c) => c.status),
      ['not_checked', 'invalid', 'invalid'],
    );
  });
});

describe('mega <name> template check', () => {
  let sim: SimulatorHandle;

  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]);
    await sim.post('/_sim/config', {
      privateTemplates: [
        { template_id: 'tpl-order', title: '订单', primary_industry: 'IT', deputy_industry: '互联网', content: PRIVATE_CONTENT, example: '' },
      ],
      subscribeTemplates: [{ priTmplId: 'sub-pay', title: '支付', content: SUBSCRIBE_CONTENT, example: '', type: 2 }],
    });
  });
  after(async () => {
    await sim?.stop();
  });

  async function setup(rows: Array<{ key: string; kind: MessageKind; template: unknown }>, apiBase = sim.url) {
    const dir = tempDir();
    const configDir = path.join(dir, 'config');
    const dbFile = path.join(dir, 'mega.db');
    const store = openTemplateStore({ dsn: `sqlite:${dbFile}`, tablePrefix: 'mega_' });
    await store.init();
    for (const r of rows) await store.put({ key: r.key, template: JSON.stringify(r.template), kind: r.kind });
    await store.close();
    writeIni(configDir, 'wechat', baseIni(dir, dbFile, apiBase));
    return configDir;
  }

  it('WechatClient.privateTemplates/subscribeTemplates parse the lists and answer errcodes as quota does', async () => {
    const client = new WechatClient({ apiBase: sim.url, connections: 1 });
    try {
      const { accessToken } = await client.fetchToken('stable', APP_ID, APP_SECRET);
      const p = await client.privateTemplates(accessToken);
      assert.equal(p.errcode, 0);
      assert.deepEqual(p.templates, [
        { templateId: 'tpl-order', title: '订单', primaryIndustry: 'IT', deputyIndustry: '互联网', content: PRIVATE_CONTENT, example: '' },
      ]);
      const s = await client.subscribeTemplates(accessToken);
      assert.deepEqual([s.errcode, s.errmsg], [0, 'ok']);
      assert.deepEqual(s.templates, [{ priTmplId: 'sub-pay', title: '支付', content: SUBSCRIBE_CONTENT, example: '', type: 2 }]);
      for (const r of [await client.privateTemplates('not-a-token'), await client.subscribeTemplates('not-a-token')]) {
        assert.equal(r.errcode, 40001);
        assert.equal(r.templates, undefined);
      }
    } finally {
      await client.close();
    }
    // An answer that is not WeChat's JSON rejects with a message that does not show the token.
    const wrong = new WechatClient({ apiBase: `${sim.url}/_sim/nowhere`, connections: 1 });
    try {
      await assert.rejects(wrong.privateTemplates('secret-token-value'), (err: unknown) => {
        assert.ok(err instanceof WechatTransportError);
        assert.doesNotMatch(err.message, /secret-token-value/);
        return true;
      });
    } finally {
      await wrong.close();
    }
  });

  const good = [
    { key: 'order', kind: 'template' as const, template: { template_id: 'tpl-order', data: data('first', 'keyword1', 'keyword2', 'remark') } },
    { key: 'pay', kind: 'subscribe' as const, template: { template_id: 'sub-pay', data: data('thing1', 'amount2') } },
    { key: 'mini', kind: 'miniprogram' as const, template: { template_id: 'sub-pay', data: data('thing1', 'amount2') } },
    { key: 'dyn', kind: 'template' as const, template: { template_id: '${tid}', data: {} } },
  ];

  it('exit 0 when every row matches; placeholder ids are listed as not checked', async () => {
    const configDir = await setup(good);
    const r = await runMega(['wechat', 'template', 'check', '--config-dir', configDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^dyn \(template, template_id \$\{tid\}\): not checked: template_id holds a placeholder$/m);
    assert.match(r.stdout, /4 templates: 3 match WeChat, 0 do not, 1 not checked/);
    assert.equal(r.stderr, '');
  });

  it('exit 1 with a line per problem; --json gives the same', async () => {
    const configDir = await setup([
      ...good,
      { key: 'gone', kind: 'template', template: { template_id: 'tpl-deleted', data: data('keyword1') } },
      { key: 'typo', kind: 'miniprogram', template: { template_id: 'sub-pay', data: data('thing1', 'amount3') } },
    ]);
    const r = await runMega(['wechat', 'template', 'check', '--config-dir', configDir]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^gone \(template, template_id tpl-deleted\): no such template at WeChat/m);
    assert.match(r.stdout, /^typo \(miniprogram, template_id sub-pay\): data has amount3, which WeChat's template lacks$/m);
    assert.match(r.stdout, /^typo \(miniprogram, template_id sub-pay\): WeChat's template has amount2, which data lacks$/m);
    assert.match(r.stderr, /mega: 2 of 6 templates do not match WeChat's/);

    const j = await runMega(['wechat', 'template', 'check', '--json', '--config-dir', configDir]);
    assert.equal(j.code, 1);
    const out = JSON.parse(j.stdout) as { ok: boolean; rows: Array<{ key: string; status: string; extraKeys: string[]; missingKeys: string[] }> };
    assert.equal(out.ok, false);
    const byKey = Object.fromEntries(out.rows.map((x) => [x.key, x]));
    assert.equal(byKey['order']!.status, 'ok');
    assert.equal(byKey['gone']!.status, 'unknown_template');
    assert.deepEqual([byKey['typo']!.extraKeys, byKey['typo']!.missingKeys], [['amount3'], ['amount2']]);
    assert.equal(byKey['dyn']!.status, 'not_checked');
  });

  it('a wrong secret: exit 1 naming the token error, the secret never printed', async () => {
    const configDir = await setup(good);
    const r = await runMega(['wechat', 'template', 'check', '--config-dir', configDir], { env: { MEGA_APP_SECRET: 'wrong-secret-value' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot fetch the templates from WeChat/);
    assert.doesNotMatch(r.stderr + r.stdout, /wrong-secret-value/);
  });

  it('a usage error exits as other commands do', async () => {
    const r = await runMega(['wechat', 'template', 'check', '--bogus']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /unknown option/);
    const missing = await runMega(['nosuch', 'template', 'check', '--config-dir', tempDir()]);
    assert.equal(missing.code, 2);
  });
});
