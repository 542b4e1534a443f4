import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { TemplateCache } from '../../src/templates/cache.js';
import { openTemplateStore, type TemplateStore } from '../../src/templates/store.js';
import { renderTemplate } from '../../src/templates/render.js';
import { InvalidTemplateError, TableFullError, TemplateNotFoundError, TemplateStoreError } from '../../src/errors.js';

let store: TemplateStore;

beforeEach(async () => {
  store = openTemplateStore({ dsn: 'sqlite::memory:' });
  await store.init();
});

afterEach(async () => {
  await store.close();
});

const tpl = (v: string): string => JSON.stringify({ touser: '${OPENID}', template_id: 't', data: { first: { value: v } } });
const firstValue = (cache: TemplateCache, key: string): unknown =>
  (renderTemplate(cache.get(key)!, 'o1', null).data as { first: { value: unknown } }).first.value;

describe('TemplateCache', () => {
  it('validates its options', () => {
    assert.throws(() => new TemplateCache({ store, tableSize: 0 }), /options.tableSize \(\[server\] table_size\) must be a positive integer, got 0/);
    assert.throws(() => new TemplateCache({ store, tableSize: 1.5 }), RangeError);
    assert.throws(() => new TemplateCache({ store, templateSize: -1 }), /options.templateSize \(\[server\] template_size\)/);
    assert.throws(() => new TemplateCache({ store: {} as TemplateStore }), /options.store must be a TemplateStore/);
    const cache = new TemplateCache({ store });
    assert.equal(cache.tableSize, 100);
    assert.equal(cache.templateSize, 4048);
    assert.equal(cache.size, 0);
  });

  it('loadAll loads valid rows in key order up to tableSize and reports the rest', async () => {
    await store.put({ key: 'a', template: tpl('A') });
    await store.put({ key: 'b', template: '{"broken":' });
    await store.put({ key: 'c', template: `{"x":"${'y'.repeat(100)}"}` });
    await store.put({ key: 'd', template: '[1]' });
    await store.put({ key: 'e', template: tpl('E') });
    await store.put({ key: 'f', template: tpl('F') });
    await store.put({ key: 'g', template: tpl('G') });
    const cache = new TemplateCache({ store, tableSize: 2, templateSize: 100 });
    const report = await cache.loadAll();
    assert.equal(report.loaded, 2);
    assert.deepEqual(
      report.skipped.map((s) => s.key),
      ['b', 'c', 'd', 'f', 'g'],
    );
    assert.match(report.skipped[0]!.reason, /^template "b" is not valid JSON/);
    assert.equal(report.skipped[1]!.reason, 'template "c" is 108 bytes, longer than template_size 100 bytes');
    assert.equal(report.skipped[2]!.reason, 'template "d" must be a JSON object, got an array');
    assert.equal(report.skipped[3]!.reason, 'over table size (table_size 2)');
    assert.equal(cache.size, 2);
    assert.deepEqual(cache.all().map((t) => t.key), ['a', 'e']);
    assert.equal(firstValue(cache, 'e'), 'E');
    assert.equal(cache.has('b'), false);
  });

  it('loadAll replaces the contents, and leaves them as they were when the store fails', async () => {
    await store.put({ key: 'a', template: tpl('A') });
    await store.put({ key: 'b', template: tpl('B') });
    const cache = new TemplateCache({ store });
    assert.deepEqual(await cache.loadAll(), { loaded: 2, skipped: [] });
    await store.remove('a');
    await store.put({ key: 'b', template: tpl('B2') });
    assert.deepEqual(await cache.loadAll(), { loaded: 1, skipped: [] });
    assert.equal(cache.has('a'), false);
    assert.equal(firstValue(cache, 'b'), 'B2');

    const before = cache.get('b');
    await store.close();
    await assert.rejects(cache.loadAll(), TemplateStoreError);
    assert.equal(cache.size, 1);
    assert.equal(cache.get('b'), before);
  });

  it('tset loads a new key, then refreshes it', async () => {
    const cache = new TemplateCache({ store });
    await store.put({ key: 'k', template: tpl('v1') });
    const first = await cache.tset('k');
    assert.equal(first.created, true);
    assert.equal(first.template.key, 'k');
    assert.equal(cache.get('k'), first.template);
    assert.equal(firstValue(cache, 'k'), 'v1');

    await store.put({ key: 'k', template: tpl('v2') });
    const second = await cache.tset('k');
    assert.equal(second.created, false);
    assert.equal(cache.size, 1);
    assert.equal(firstValue(cache, 'k'), 'v2');
  });

  it('tset of a key not in the database: TemplateNotFoundError, cache unchanged', async () => {
    const cache = new TemplateCache({ store });
    await store.put({ key: 'k', template: tpl('v1') });
    await cache.tset('k');
    await assert.rejects(cache.tset('nope'), (err: unknown) => {
      assert.ok(err instanceof TemplateNotFoundError);
      assert.equal(err.message, 'template key not exists');
      assert.equal(err.code, 'MEGA_ERR_TEMPLATE_NOT_FOUND');
      assert.equal(err.key, 'nope');
      return true;
    });
    assert.equal(cache.has('nope'), false);
    assert.equal(cache.has('k'), true, 'a key never cached is not dropped from the others');
  });

  it('tset of a key whose row was deleted drops it from the cache (dropped: true)', async () => {
    const cache = new TemplateCache({ store });
    await store.put({ key: 'k', template: tpl('v1') });
    await store.put({ key: 'other', template: tpl('o') });
    await cache.loadAll();
    await store.remove('k');
    await assert.rejects(cache.tset('k'), (err: unknown) => err instanceof TemplateNotFoundError && err.dropped && err.message === 'template key not exists');
    assert.equal(cache.has('k'), false);
    assert.deepEqual(cache.all().map((t) => t.key), ['other']);
    // Again: nothing left to drop.
    await assert.rejects(cache.tset('k'), (err: unknown) => err instanceof TemplateNotFoundError && !err.dropped);
  });

  it('a template without a non-empty string template_id is refused by tset (cache unchanged) and skipped by loadAll', async () => {
    const cache = new TemplateCache({ store });
    await store.put({ key: 'k', template: tpl('v1') });
    await cache.tset('k');
    for (const bad of ['{}', '{"template_id":""}', '{"template_id":7,"data":{}}', '{"data":{"template_id":"nested"}}']) {
      await store.put({ key: 'k', template: bad });
      await assert.rejects(cache.tset('k'), (err: unknown) => err instanceof InvalidTemplateError && /template "k" has (no|a) "template_id"/.test(err.message), bad);
      assert.equal(firstValue(cache, 'k'), 'v1', 'the previous version stays');
    }
    await store.put({ key: 'p', template: '{"template_id":"${tid}"}' });
    assert.equal((await cache.tset('p')).created, true, 'a placeholder is a valid template_id');
    const report = await cache.loadAll();
    assert.deepEqual(report.skipped, [{ key: 'k', reason: 'template "k" has no "template_id" (WeChat refuses every message without one)' }]);
  });

  it('tset of a new key when the cache is full: TableFullError; known keys still refresh', async () => {
    const cache = new TemplateCache({ store, tableSize: 2 });
    for (const k of ['a', 'b', 'c']) await store.put({ key: k, template: tpl(k) });
    await cache.tset('a');
    await cache.tset('b');
    await assert.rejects(cache.tset('c'), (err: unknown) => {
      assert.ok(err instanceof TableFullError);
      assert.equal(err.message, 'over table size');
      assert.equal(err.code, 'MEGA_ERR_TABLE_FULL');
      return true;
    });
    assert.deepEqual(cache.all().map((t) => t.key), ['a', 'b']);
    await store.put({ key: 'b', template: tpl('b2') });
    assert.equal((await cache.tset('b')).created, false);
    assert.equal(firstValue(cache, 'b'), 'b2');
  });

  it('concurrent tsets of different new keys never exceed tableSize', async () => {
    const cache = new TemplateCache({ store, tableSize: 3 });
    const keys = ['k1', 'k2', 'k3', 'k4', 'k5'];
    for (const k of keys) await store.put({ key: k, template: tpl(k) });
    const results = await Promise.allSettled(keys.map((k) => cache.tset(k)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
    assert.equal(results.filter((r) => r.status === 'rejected' && r.reason instanceof TableFullError).length, 2);
    assert.equal(cache.size, 3);
  });

  it('tset of an oversize or invalid template: InvalidTemplateError, the old template stays', async () => {
    const cache = new TemplateCache({ store, templateSize: 100 });
    await store.put({ key: 'k', template: tpl('ok') });
    await cache.tset('k');
    const good = cache.get('k');

    await store.put({ key: 'k', template: tpl('x'.repeat(64)) });
    await assert.rejects(cache.tset('k'), (err: unknown) => {
      assert.ok(err instanceof InvalidTemplateError);
      assert.equal(err.message, 'template "k" is 134 bytes, longer than template_size 100 bytes'); // 70 + 64
      return true;
    });
    await store.put({ key: 'k', template: '"just a string"' });
    await assert.rejects(cache.tset('k'), /must be a JSON object, got a string/);
    assert.equal(cache.get('k'), good);

    await store.put({ key: 'n', template: 'not json' });
    await assert.rejects(cache.tset('n'), InvalidTemplateError);
    assert.equal(cache.has('n'), false);
  });

  it('tset when the store fails: TemplateStoreError, cache unchanged', async () => {
    const cache = new TemplateCache({ store });
    await store.put({ key: 'k', template: tpl('v1') });
    await cache.tset('k');
    const before = cache.all();
    await store.close();
    await assert.rejects(cache.tset('k'), (err: unknown) => {
      assert.ok(err instanceof TemplateStoreError);
      assert.equal(err.message, 'sqlite :memory:: store is closed');
      return true;
    });
    await assert.rejects(cache.tset('new'), TemplateStoreError);
    assert.deepEqual(cache.all(), before);
    assert.equal(cache.get('k'), before[0]);
  });

  it('concurrent tsets of one key: the later database read wins', async () => {
    // The first read is answered slowly: without ordering, its older row would land last.
    let calls = 0;
    const slowFirst: TemplateStore = Object.create(store, {
      get: {
        value: async (key: string) => {
          const n = ++calls;
          const row = await store.get(key);
          await delay(n === 1 ? 30 : 0);
          return row;
        },
      },
    });
    const cache = new TemplateCache({ store: slowFirst });
    await store.put({ key: 'k', template: tpl('old') });
    const a = cache.tset('k');
    await store.put({ key: 'k', template: tpl('new') });
    const b = cache.tset('k');
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(calls, 2);
    assert.equal(ra.created, true);
    assert.equal(rb.created, false);
    assert.equal(firstValue(cache, 'k'), 'new');
    assert.equal(cache.get('k'), rb.template);
  });
});
