/**
 * The key table of src/config/keys.ts is the one source of the loader, the validation and the
 * reference in docs/CONFIGURATION.md: these tests fail when the docs and the code disagree.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CONFIG_KEYS, parseConfig } from '../../src/config/config.js';
import { configReferenceMarkdown, withConfigReference } from '../../src/config/doc.js';
import { repoRoot } from '../protocol/helpers.js';

const MINIMAL = '[wechat]\napp_id = wx1\napp_secret = file-secret\n';

describe('config key table', () => {
  it('docs/CONFIGURATION.md holds exactly the tables made from the key table (npm run docs:config)', () => {
    const doc = readFileSync(path.join(repoRoot(), 'docs', 'CONFIGURATION.md'), 'utf8');
    assert.equal(withConfigReference(doc), doc, 'docs/CONFIGURATION.md is stale: run `npm run docs:config`');
    for (const k of CONFIG_KEYS) assert.ok(doc.includes(`[${k.section}] ${k.key}`), `${k.section}.${k.key} is documented`);
  });

  it('a change to a key in the table changes the docs', () => {
    const changed = CONFIG_KEYS.map((k) => (k.key === 'table_size' ? { ...k, defaultText: '`7`' } : k));
    assert.notEqual(configReferenceMarkdown(changed), configReferenceMarkdown());
    assert.match(configReferenceMarkdown(changed), /\| `\[server\] table_size` \| `7` \|/);
  });

  it('every key with an effect becomes a config field, and keys are unique', () => {
    const c = parseConfig('wechat', '/etc/mega/wechat.ini', MINIMAL) as unknown as Record<string, Record<string, unknown>>;
    const seen = new Set<string>();
    for (const k of CONFIG_KEYS) {
      assert.ok(!seen.has(`${k.section}.${k.key}`), `${k.section}.${k.key} is listed once`);
      seen.add(`${k.section}.${k.key}`);
      if (k.prop === undefined || k.prop.startsWith('tls')) continue; // tls_* become server.tls together
      assert.ok(Object.hasOwn(c[k.section]!, k.prop), `[${k.section}] ${k.key} → ${k.section}.${k.prop}`);
    }
    assert.equal(c.server!.tls, undefined);
    for (const k of CONFIG_KEYS.filter((k) => k.prop === undefined)) {
      assert.doesNotThrow(() => parseConfig('wechat', '/x/wechat.ini', `[${k.section}]\n${k.key} = 1\n` + MINIMAL), `${k.key} is accepted`);
    }
  });

  it('a secret from the environment wins over the file; an empty one does not', () => {
    const text = '[server]\nauth_token = file-token\n[pdo]\npassword = file-pw\n' + MINIMAL;
    const env = { MEGA_APP_SECRET: 'env-secret', MEGA_PDO_PASSWORD: 'env-pw', MEGA_AUTH_TOKEN: 'env-token' };
    const fromEnv = parseConfig('wechat', '/x/wechat.ini', text, env);
    assert.deepEqual([fromEnv.wechat.appSecret, fromEnv.pdo.password, fromEnv.server.authToken], ['env-secret', 'env-pw', 'env-token']);
    const empty = parseConfig('wechat', '/x/wechat.ini', text, { MEGA_APP_SECRET: '', MEGA_PDO_PASSWORD: '', MEGA_AUTH_TOKEN: '' });
    assert.deepEqual([empty.wechat.appSecret, empty.pdo.password, empty.server.authToken], ['file-secret', 'file-pw', 'file-token']);
    const noFileSecret = parseConfig('wechat', '/x/wechat.ini', '[wechat]\napp_id = wx1\n', { MEGA_APP_SECRET: 'env-only' });
    assert.equal(noFileSecret.wechat.appSecret, 'env-only');
  });

  it('tls_cert and tls_key go together; tls_ca needs them; paths resolve against the config folder', () => {
    assert.throws(() => parseConfig('w', '/x/w.ini', '[server]\ntls_cert = c.pem\n' + MINIMAL), /\[server\] tls_key is required when \[server\] tls_cert is set/);
    assert.throws(() => parseConfig('w', '/x/w.ini', '[server]\ntls_ca = ca.pem\n' + MINIMAL), /\[server\] tls_ca needs \[server\] tls_cert and tls_key/);
    const c = parseConfig('w', '/x/w.ini', '[server]\ntls_cert = c.pem\ntls_key = /k.pem\n' + MINIMAL);
    assert.deepEqual(c.server.tls, { cert: '/x/c.pem', key: '/k.pem', ca: undefined });
  });
});
