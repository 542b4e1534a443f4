import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compileTemplate, missingVariables, renderTemplate, type CompiledTemplate } from '../../src/templates/render.js';
import { InvalidTemplateError, TemplateRenderError } from '../../src/errors.js';

/** The example template of the seed README (§ 服务端对Mysql的依赖). */
const SEED_TEMPLATE = `{
    "touser":"\${OPENID}",
    "template_id":"ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
    "url":"http://weixin.qq.com/download",
    "data":{
        "first": {
            "value":"恭喜你购买成功！",
            "color":"#173177"
        },
        "keynote1":{
            "value":"巧克力",
            "color":"#173177"
        },
        "keynote2": {
            "value":"39.8元",
            "color":"#173177"
        },
        "keynote3": {
            "value":"2014年9月22日",
            "color":"#173177"
        },
        "remark":{
            "value":"欢迎再次购买！",
            "color":"#173177"
        }
    }
}`;

function render(source: string, openid: string, vars: Record<string, unknown> | null): Record<string, unknown> {
  return renderTemplate(compileTemplate('k', source), openid, vars);
}

/** Every key path of a JSON value, e.g. `data.first.value`; arrays as `[i]`. */
function keyPaths(value: unknown, prefix = ''): string[] {
  if (value === null || typeof value !== 'object') return [prefix];
  if (Array.isArray(value)) return value.flatMap((v, i) => keyPaths(v, `${prefix}[${i}]`));
  return Object.keys(value).flatMap((k) => keyPaths((value as Record<string, unknown>)[k], prefix ? `${prefix}.${k}` : k));
}

describe('renderTemplate', () => {
  it('renders the seed README example', () => {
    const out = render(SEED_TEMPLATE, 'oUser-1', null);
    assert.deepEqual(out, {
      touser: 'oUser-1',
      template_id: 'ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY',
      url: 'http://weixin.qq.com/download',
      data: {
        first: { value: '恭喜你购买成功！', color: '#173177' },
        keynote1: { value: '巧克力', color: '#173177' },
        keynote2: { value: '39.8元', color: '#173177' },
        keynote3: { value: '2014年9月22日', color: '#173177' },
        remark: { value: '欢迎再次购买！', color: '#173177' },
      },
    });
    // Key order is the template's, so the request body reads like the template.
    assert.deepEqual(Object.keys(out), ['touser', 'template_id', 'url', 'data']);
  });

  it('replaces ${OPENID} anywhere, and a variable named OPENID does not override it', () => {
    const out = render('{"touser":"${OPENID}","url":"https://x/?u=${OPENID}&v=${OPENID}"}', 'oA', { OPENID: 'oEvil' });
    assert.deepEqual(out, { touser: 'oA', url: 'https://x/?u=oA&v=oA' });
  });

  it('substitutes nested values, array items and several placeholders in one string', () => {
    const src = JSON.stringify({
      touser: '${OPENID}',
      data: {
        first: { value: 'Hello ${name}, order ${order} costs ${price}.', color: '#173177' },
        list: ['${a}', 'x${a}y${b}z', 7, true, null, { deep: ['${b}'] }],
      },
    });
    const out = render(src, 'o1', { name: '张三', order: 'A-1', price: '39.8元', a: 'A', b: 'B' });
    assert.deepEqual(out, {
      touser: 'o1',
      data: {
        first: { value: 'Hello 张三, order A-1 costs 39.8元.', color: '#173177' },
        list: ['A', 'xAyBz', 7, true, null, { deep: ['B'] }],
      },
    });
  });

  it('never substitutes object keys', () => {
    const out = render('{"touser":"o","${k}":"${k}"}', 'o1', { k: 'v' });
    assert.deepEqual(out, { touser: 'o', '${k}': 'v' });
  });

  it('keeps unknown placeholders and undefined variables as written; a null variable is ""', () => {
    const src = '{"a":"${missing}","b":"${nul}-${undef}","c":"${}","d":"${a b}","e":"$${x}}","f":"${x"}';
    const out = render(src, 'o1', { nul: null, undef: undefined, x: 'X' });
    assert.deepEqual(out, { a: '${missing}', b: '-${undef}', c: '${}', d: '${a b}', e: '$X}', f: '${x', touser: 'o1' });
    assert.deepEqual(render('{"a":"${x}"}', 'o1', null), { a: '${x}', touser: 'o1' });
  });

  it('missing: "empty" fills a missing variable with "", and null is "" too', () => {
    const t = compileTemplate('k', '{"a":"[${price}]","b":"${nul}","c":"${OPENID}","d":"${}"}');
    assert.deepEqual(renderTemplate(t, 'o1', { nul: null }, { missing: 'empty' }), { a: '[]', b: '', c: 'o1', d: '${}', touser: 'o1' });
    assert.deepEqual(renderTemplate(t, 'o1', null, { missing: 'empty' }), { a: '[]', b: '', c: 'o1', d: '${}', touser: 'o1' });
    assert.deepEqual(renderTemplate(t, 'o1', { price: 3, nul: 'n' }, { missing: 'keep' }), { a: '[3]', b: 'n', c: 'o1', d: '${}', touser: 'o1' });
  });

  it('missing: "reject" throws a TemplateRenderError naming every missing variable, in order of first use', () => {
    const t = compileTemplate('k', '{"a":"${time} ${OPENID}","b":["${price}","${time}"],"c":"${nul}"}');
    assert.deepEqual(missingVariables(t, { nul: null }), ['time', 'price']);
    assert.deepEqual(missingVariables(t, null), ['time', 'price', 'nul']);
    assert.throws(
      () => renderTemplate(t, 'o1', { nul: null }, { missing: 'reject' }),
      (err: unknown) => err instanceof TemplateRenderError && err.code === 'MEGA_ERR_TEMPLATE_RENDER' && err.message === 'missing variables: time, price',
    );
    assert.deepEqual(renderTemplate(t, 'o1', { nul: null, time: 'T', price: 'P' }, { missing: 'reject' }), { a: 'T o1', b: ['P', 'T'], c: '', touser: 'o1' });
  });

  it('a variable that cannot be made text is a TemplateRenderError, not a stack overflow escaping', () => {
    let deep: unknown[] = [];
    for (let i = 0; i < 200_000; i++) deep = [deep];
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const t = compileTemplate('k', '{"a":"${v}"}');
    for (const v of [deep, cyclic]) {
      assert.throws(() => renderTemplate(t, 'o1', { v }), (err: unknown) => err instanceof TemplateRenderError && /^template "k": a variable cannot be made text: /.test(err.message));
    }
  });

  it('reads only own properties of the variables', () => {
    const out = render('{"a":"${constructor}","b":"${toString}","c":"${__proto__}"}', 'o1', {});
    assert.deepEqual(out, { a: '${constructor}', b: '${toString}', c: '${__proto__}', touser: 'o1' });
    const vars = JSON.parse('{"__proto__":"P"}') as Record<string, unknown>;
    assert.equal(render('{"c":"${__proto__}"}', 'o1', vars).c, 'P');
  });

  it('treats dots and dashes as part of a flat variable name', () => {
    const out = render('{"a":"${user.name}","b":"${x-y}"}', 'o1', { 'user.name': 'N', 'x-y': 'XY', user: { name: 'nested' } });
    assert.deepEqual(out, { a: 'N', b: 'XY', touser: 'o1' });
  });

  it('sets a missing touser to the openid, and keeps a present one', () => {
    assert.deepEqual(render('{"template_id":"t"}', 'oX', null), { template_id: 't', touser: 'oX' });
    assert.deepEqual(render('{"touser":"fixed","template_id":"t"}', 'oX', null), { touser: 'fixed', template_id: 't' });
    assert.deepEqual(render('{"touser":""}', 'oX', null), { touser: '' });
  });

  it('inserts hostile variable values literally and never re-expands them', () => {
    const src = JSON.stringify({
      touser: '${OPENID}',
      template_id: 'T',
      data: { first: { value: '${v}', color: '#173177' }, remark: { value: 'pre ${w} post' } },
    });
    const t = compileTemplate('k', src);
    const hostile = [
      '"',
      '\\',
      '\n',
      '","touser":"evil',
      '"},"touser":"evil","x":{"y":"',
      '${OPENID}',
      '${other}',
      '${w}',
      '\\u0022',
      '\u2028</script>',
    ];
    for (const v of hostile) {
      const out = renderTemplate(t, 'oGood', { v, w: v, other: 'OTHER' });
      assert.equal(out.touser, 'oGood');
      const data = out.data as { first: { value: string }; remark: { value: string } };
      assert.equal(data.first.value, v);
      assert.equal(data.remark.value, `pre ${v} post`);
      const json = JSON.stringify(out);
      assert.deepEqual(keyPaths(JSON.parse(json)), keyPaths(JSON.parse(src)), `structure changed for ${JSON.stringify(v)}`);
      assert.deepEqual(JSON.parse(json), out);
    }
  });

  it('converts numbers, booleans and bigints with String, objects and arrays with JSON.stringify', () => {
    const out = render('{"a":"${n}","b":"${f}","c":"${t}","d":"${o}","e":"${arr}","g":"${big}","h":"n=${n}"}', 'o1', {
      n: 42,
      f: 39.8,
      t: false,
      o: { x: 1, y: 'a"b' },
      arr: [1, '2'],
      big: 12345678901234567890n,
    });
    assert.deepEqual(out, {
      a: '42',
      b: '39.8',
      c: 'false',
      d: '{"x":1,"y":"a\\"b"}',
      e: '[1,"2"]',
      g: '12345678901234567890',
      h: 'n=42',
      touser: 'o1',
    });
  });

  it('keeps non-string template values (numbers, booleans, null) as they are', () => {
    assert.deepEqual(render('{"n":1.5,"b":true,"z":null,"a":[]}', 'o1', { n: 9 }), { n: 1.5, b: true, z: null, a: [], touser: 'o1' });
  });

  it('treats a "__proto__" key as an ordinary field', () => {
    const out = render('{"__proto__":{"polluted":"${v}"},"touser":"o"}', 'o1', { v: 'yes' });
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.deepEqual(Object.keys(out), ['__proto__', 'touser']);
    assert.equal(JSON.stringify(out), '{"__proto__":{"polluted":"yes"},"touser":"o"}');
  });

  it('returns a fresh tree each time: mutating one result does not affect the next', () => {
    const t = compileTemplate('k', '{"data":{"first":{"value":"constant","color":"#1"}},"list":[1,{"x":"y"}]}');
    const a = renderTemplate(t, 'o1', null);
    (a.data as { first: { value: string } }).first.value = 'changed';
    ((a.list as unknown[])[1] as { x: string }).x = 'changed';
    a.client_msg_id = 'm1';
    const b = renderTemplate(t, 'o2', null);
    assert.deepEqual(b, { data: { first: { value: 'constant', color: '#1' } }, list: [1, { x: 'y' }], touser: 'o2' });
  });
});

describe('compileTemplate', () => {
  it('records key, source, byte size and placeholder names', () => {
    const src = '{"touser":"${OPENID}","a":"${x}${y}","b":"${x}"}';
    const t = compileTemplate('k1', src);
    assert.equal(t.key, 'k1');
    assert.equal(t.source, src);
    assert.equal(t.bytes, Buffer.byteLength(src));
    assert.deepEqual(t.placeholders, ['OPENID', 'x', 'y']);
  });

  it('accepts a template of exactly maxBytes and rejects one byte more, counting UTF-8 bytes', () => {
    // "元" is 3 bytes in UTF-8 but one UTF-16 unit: a length check in characters would pass it.
    const base = '{"a":""}'; // 8 bytes
    const fill = (n: number): string => `{"a":"${'元'.repeat(n)}"}`;
    assert.equal(Buffer.byteLength(fill(4)), base.length + 12);
    assert.equal(compileTemplate('k', fill(4), { maxBytes: 20 }).bytes, 20);
    assert.throws(
      () => compileTemplate('k', fill(4), { maxBytes: 19 }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidTemplateError);
        assert.equal(err.code, 'MEGA_ERR_INVALID_TEMPLATE');
        assert.equal(err.message, 'template "k" is 20 bytes, longer than template_size 19 bytes');
        return true;
      },
    );
    const exact = `{"a":"${'x'.repeat(4048 - 8)}"}`;
    assert.equal(compileTemplate('k', exact, { maxBytes: 4048 }).bytes, 4048);
    assert.throws(() => compileTemplate('k', `{"a":"${'x'.repeat(4049 - 8)}"}`, { maxBytes: 4048 }), /4049 bytes, longer than template_size 4048/);
  });

  it('rejects text that is not JSON, or JSON that is not an object', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /not valid JSON/],
      ['{"a":', /not valid JSON/],
      ["{'a':'b'}", /not valid JSON/],
      ['[1,2]', /must be a JSON object, got an array/],
      ['"text"', /must be a JSON object, got a string/],
      ['42', /must be a JSON object, got a number/],
      ['null', /must be a JSON object, got null/],
    ];
    for (const [src, re] of cases) {
      assert.throws(() => compileTemplate('bad', src), (err: unknown) => err instanceof InvalidTemplateError && re.test(err.message), src);
    }
  });

  it('rejects absurd nesting instead of overflowing the stack', () => {
    const deep = '{"a":' + '['.repeat(100) + ']'.repeat(100) + '}';
    assert.throws(() => compileTemplate('k', deep), /nests deeper than 64 levels/);
    assert.doesNotThrow(() => compileTemplate('k', '{"a":' + '['.repeat(60) + ']'.repeat(60) + '}'));
  });

  it('produces a compiled form that survives structuredClone and renders the same', () => {
    const t = compileTemplate('k', SEED_TEMPLATE.replace('巧克力', '${item}'));
    const copy = structuredClone(t) as CompiledTemplate;
    assert.deepEqual(copy, t);
    assert.deepEqual(renderTemplate(copy, 'o9', { item: '糖' }), renderTemplate(t, 'o9', { item: '糖' }));
    assert.equal((renderTemplate(copy, 'o9', { item: '糖' }).data as { keynote1: { value: string } }).keynote1.value, '糖');
  });

  it('validates maxBytes', () => {
    assert.throws(() => compileTemplate('k', '{}', { maxBytes: -1 }), /maxBytes must be a non-negative number/);
  });
});
