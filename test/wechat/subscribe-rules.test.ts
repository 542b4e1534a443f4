import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkSubscribeData,
  checkSubscribeValue,
  describeViolation,
  subscribeValueType,
  type SubscribeValueType,
} from '../../src/wechat/subscribe-rules.js';

function ok(key: string, value: string): void {
  const v = checkSubscribeValue(key, value);
  assert.equal(v, undefined, `${key} ${JSON.stringify(value)} should pass, got: ${v ? describeViolation(v) : ''}`);
}

/** Refused, with a rule containing `rule`; returns the violation for further checks. */
function refused(key: string, value: string, rule: string | RegExp) {
  const v = checkSubscribeValue(key, value);
  assert.ok(v, `${key} ${JSON.stringify(value)} should be refused`);
  assert.equal(v.field, key);
  assert.equal(v.value, value);
  if (typeof rule === 'string') assert.ok(v.rule.includes(rule), `rule ${JSON.stringify(v.rule)} should name ${JSON.stringify(rule)}`);
  else assert.match(v.rule, rule);
  return v;
}

const han = (n: number): string => '中'.repeat(n);

describe('subscribeValueType', () => {
  it('reads the type from the key without its trailing digits', () => {
    const cases: Array<[string, SubscribeValueType]> = [
      ['thing1', 'thing'],
      ['time2', 'time'],
      ['amount3', 'amount'],
      ['number4', 'number'],
      ['phrase5', 'phrase'],
      ['name6', 'name'],
      ['character_string7', 'character_string'],
      ['phone_number8', 'phone_number'],
      ['car_number9', 'car_number'],
      ['letter10', 'letter'],
      ['symbol11', 'symbol'],
      ['date12', 'date'],
      ['number01', 'number'],
      ['date', 'date'],
    ];
    for (const [key, type] of cases) assert.equal(subscribeValueType(key), type, key);
  });

  it('knows no type for other keys', () => {
    for (const key of ['enum1', 'const3', 'keyword1', 'first', 'site01', 'Thing1', 'thing1a', '12', '', 'constructor', '__proto__', 'thing 1']) {
      assert.equal(subscribeValueType(key), undefined, key);
    }
  });
});

describe('checkSubscribeValue', () => {
  it('passes any value of an unknown type', () => {
    ok('enum1', '');
    ok('const3', 'x'.repeat(500));
    ok('keyword1', '\n');
  });

  it('refuses an empty value of every known type', () => {
    for (const key of ['thing1', 'number1', 'letter1', 'symbol1', 'character_string1', 'time1', 'date1', 'amount1', 'phone_number1', 'car_number1', 'name1', 'phrase1']) {
      refused(key, '', 'must not be empty');
    }
  });

  it('thing: at most 20 characters of any printable kind', () => {
    ok('thing1', han(20));
    ok('thing1', 'Order 12, 苹果 ×5 (ok)'); // 20, with spaces and symbols
    ok('thing1', 'a'.repeat(20));
    const v = refused('thing1', han(21), 'at most 20 characters');
    assert.equal(v.found, '21');
    refused('thing1', 'a'.repeat(21), 'at most 20 characters');
    refused('thing1', '第一行\n第二行', 'no control characters or line breaks');
    refused('thing1', 'tab\there', 'control');
    refused('thing1', 'a\u2028b', 'line breaks');
  });

  it('counts code points: an emoji or a Chinese character is one character', () => {
    const emoji = '😀'.repeat(20);
    assert.equal(emoji.length, 40, 'UTF-16 units would count 40');
    ok('thing1', emoji);
    assert.equal(refused('thing1', '😀'.repeat(21), 'at most 20').found, '21');
    ok('thing1', '𠀀'.repeat(20)); // a CJK Extension B character, outside the BMP
    ok('phrase1', '𠀀𠀁𠀂𠀃𠀄');
    ok('symbol1', '😀😀😀😀😀');
    refused('symbol1', '😀😀😀😀😀😀', 'at most 5 characters');
    ok('name1', '张'.repeat(10));
  });

  it('thing: a lone surrogate is refused', () => {
    refused('thing1', 'a\ud800b', 'control');
  });

  it('number: digits with one optional decimal point, at most 32 digits', () => {
    ok('number1', '339208499');
    ok('number1', '3.14');
    ok('number1', '0');
    ok('number1', '9'.repeat(32));
    ok('number1', '1'.repeat(16) + '.' + '2'.repeat(16));
    assert.equal(refused('number1', '9'.repeat(33), 'at most 32 digits').found, '33');
    refused('number1', '1'.repeat(17) + '.' + '2'.repeat(16), 'at most 32 digits');
    for (const bad of ['12a', '1.2.3', '-5', '+5', '1,000', '.5', '5.', ' 5', '五', '１２']) refused('number1', bad, 'digits only');
  });

  it('letter: letters only, at most 32', () => {
    ok('letter1', 'a'.repeat(32));
    ok('letter1', 'ABCxyz');
    ok('letter1', 'Ωé');
    refused('letter1', 'a'.repeat(33), 'at most 32 characters');
    assert.equal(refused('letter1', 'abc1', 'letters only').found, '"1"');
    refused('letter1', 'ab c', 'letters only');
    refused('letter1', 'ab中', 'letters only');
  });

  it('symbol: symbols only, at most 5', () => {
    ok('symbol1', '+-*/%');
    ok('symbol1', '¥');
    ok('symbol1', '，。');
    refused('symbol1', '!!!!!!', 'at most 5 characters');
    refused('symbol1', '+a', 'symbols only');
    refused('symbol1', '+1', 'symbols only');
    refused('symbol1', '+中', 'symbols only');
    refused('symbol1', '+ -', 'symbols only');
  });

  it('character_string: digits, letters or symbols, at most 32', () => {
    ok('character_string1', '2020011316024527670');
    ok('character_string1', 'A-' + 'x'.repeat(30));
    ok('character_string1', '19001DD1900001_#');
    refused('character_string1', 'x'.repeat(33), 'at most 32 characters');
    assert.equal(refused('character_string1', '北京', 'no Chinese').found, '"北"');
    refused('character_string1', 'AB 123', 'no Chinese characters or spaces');
  });

  it('time: a 24-hour time, optionally after a date, or a range', () => {
    for (const good of [
      '15:01',
      '9:05',
      '15:01:30',
      '00:00',
      '23:59:59',
      '2019年10月1日 15:01',
      '2019年10月01日 15:01:30',
      '2019年10月1日15:01',
      '10月1日 15:01',
      '2019-10-01 15:01',
      '2019/10/01 15:01',
      '2019.10.01 15:01:00',
      '15:01~16:30',
      '15:01 ~ 16:30',
      '2019年10月1日 15:01~16:00',
      '2019年10月1日 15:01~2019年10月2日 09:00',
      '2019-10-01 15:01～2019-10-02 09:00',
    ]) {
      ok('time1', good);
    }
    for (const bad of [
      '24:00',
      '15:60',
      '15',
      '15:1',
      '3pm',
      '2019年10月1日',
      '2019-10-01',
      ':2020年4月12日',
      '2019-10-0115:01',
      '2019-10-01T15:01',
      '2019-13-01 15:01',
      '15:01-16:00',
      '15:01~',
      'now',
    ]) {
      refused('time1', bad, '24-hour time');
    }
  });

  it('date: a date, optionally with a 24-hour time, or a range', () => {
    for (const good of [
      '2019年10月1日',
      '2015年01月05日',
      '2019年10月',
      '10月1日',
      '2019-10-01',
      '2019/10/01',
      '2019.10.01',
      '2019-10',
      '10-01',
      '2019年10月1日 15:01',
      '2019-12-25 09:42',
      '2019年10月1日~2019年10月3日',
      '2025-03-13 ~ 2025-03-14',
      '2019年10月1日 15:01~16:00',
    ]) {
      ok('date1', good);
    }
    for (const bad of [
      '15:01',
      '2019',
      '2019年13月1日',
      '2019年10月32日',
      '2019-10/01',
      '2019-10-01 25:00',
      '2019年10月1日-2019年10月3日',
      'Oct 1, 2019',
      '2019-10-01T15:01',
    ]) {
      refused('date1', bad, 'a date (');
    }
  });

  it('amount: an optional currency sign, at most 10 digits before the point, optional 元', () => {
    for (const good of ['¥100', '¥100.00', '$5', '€0.5', '￥1234567890.99', '100元', '100.5元', '¥100元', '6000.00', '1234567890']) {
      ok('amount1', good);
    }
    assert.equal(refused('amount1', '¥12345678901', 'at most 10 digits').found, '11');
    refused('amount1', '12345678901.00元', 'at most 10 digits');
    for (const bad of ['¥¥100', '100¥', '-¥5', '¥-5', '1,000.00', 'CNY100', '¥', '元', '¥1.2.3', '100 元', '¥ 100', '一百元']) {
      refused('amount1', bad, 'currency sign');
    }
  });

  it('phone_number: digits and symbols, at most 17', () => {
    ok('phone_number1', '+86-0766-66888866');
    ok('phone_number1', '18888888888');
    ok('phone_number1', '(0766)66888866');
    ok('phone_number1', '1'.repeat(17));
    assert.equal(refused('phone_number1', '1'.repeat(18), 'at most 17 characters').found, '18');
    refused('phone_number1', '+86 0766 66888866', 'digits and symbols only');
    refused('phone_number1', '400-ABC', 'digits and symbols only');
    refused('phone_number1', '电话123', 'digits and symbols only');
  });

  it('car_number: letters and digits, a Chinese character allowed first and last, at most 8', () => {
    for (const good of ['粤A8Z888挂', '粤A8Z888', 'A8Z888', '京A12345', '粤B1234学', 'WJ12345', '粤A12345D']) ok('car_number1', good);
    assert.equal(refused('car_number1', '粤A8Z8888挂', 'at most 8 characters').found, '9');
    for (const bad of ['粤A8中888', '粤粤A888', 'A888挂挂', '粤A-8Z888', '粤A 8Z888', '粤Ａ8Z888']) refused('car_number1', bad, 'Chinese character allowed first and last');
  });

  it('name: 10 when it has a Chinese character, else 20 letters or symbols', () => {
    ok('name1', '张三');
    ok('name1', '欧阳'.repeat(5));
    ok('name1', '阿卜杜·热合曼');
    ok('name1', 'Niya');
    ok('name1', 'a'.repeat(20));
    ok('name1', 'John Smith');
    ok('name1', 'Tom张');
    assert.equal(refused('name1', han(11), 'at most 10 characters when it has a Chinese character').found, '11');
    refused('name1', 'Tom张' + 'a'.repeat(7), 'at most 10 characters when it has a Chinese character');
    assert.equal(refused('name1', 'a'.repeat(21), 'at most 20 characters').found, '21');
    refused('name1', 'Agent 007', 'Chinese characters, letters or symbols only');
    refused('name1', '张\n三', 'Chinese characters, letters or symbols only');
  });

  it('phrase: Chinese characters only, at most 5', () => {
    ok('phrase1', '配送中');
    ok('phrase1', '货物配送中');
    refused('phrase1', '货物正在配送', 'at most 5 characters');
    assert.equal(refused('phrase1', '配送a', 'Chinese characters only').found, '"a"');
    refused('phrase1', '111', 'Chinese characters only');
    refused('phrase1', '配送中。', 'Chinese characters only');
    refused('phrase1', '配 送', 'Chinese characters only');
  });
});

describe('checkSubscribeData', () => {
  it('checks every entry in key order and lists each broken one', () => {
    const data = {
      thing1: { value: '一'.repeat(23) },
      number2: { value: 42 },
      phrase3: { value: 'ok' },
      enum4: { value: 'anything' },
      amount5: { value: 656887888.0 },
      time6: { value: '15:01' },
    };
    const vs = checkSubscribeData(data);
    assert.deepEqual(
      vs.map((v) => [v.field, v.type]),
      [
        ['thing1', 'thing'],
        ['phrase3', 'phrase'],
      ],
    );
    assert.deepEqual(checkSubscribeData({ thing1: { value: '好' }, date2: { value: '2019年10月1日' } }), []);
  });

  it('checks a non-string value as String(value)', () => {
    assert.deepEqual(checkSubscribeData({ number1: { value: 3.5 }, thing2: { value: true } }), []);
    const [v] = checkSubscribeData({ letter1: { value: 12 } });
    assert.equal(v?.value, '12');
    assert.equal(v?.rule, 'letters only');
  });

  it('takes a missing value as empty, as WeChat does', () => {
    const vs = checkSubscribeData({ thing1: {}, thing2: { value: null }, thing3: 'bare', thing4: null });
    assert.deepEqual(
      vs.map((v) => [v.field, v.rule]),
      [
        ['thing1', 'must not be empty'],
        ['thing2', 'must not be empty'],
        ['thing3', 'must not be empty'],
        ['thing4', 'must not be empty'],
      ],
    );
  });

  it('gives [] for data that is not a plain object', () => {
    for (const data of [undefined, null, 'thing1', 42, [], [{ value: 'x' }]]) assert.deepEqual(checkSubscribeData(data), []);
  });
});

describe('describeViolation', () => {
  it('names the field, the value, the type and the rule on one line', () => {
    const v = checkSubscribeValue('thing1', '一'.repeat(23))!;
    assert.equal(describeViolation(v), `data.thing1: "${'一'.repeat(23)}" breaks thing's rule: at most 20 characters (got 23)`);
    assert.equal(describeViolation(checkSubscribeValue('phrase5', '配送a')!), `data.phrase5: "配送a" breaks phrase's rule: Chinese characters only (got "a")`);
    assert.equal(
      describeViolation(checkSubscribeValue('time2', '3pm')!),
      `data.time2: "3pm" breaks time's rule: a 24-hour time (15:01 or 15:01:30), optionally after a date (2019年10月1日 15:01, 2019-10-01 15:01), or two joined by "~"`,
    );
  });

  it('keeps a line break escaped and cuts a long value by code point', () => {
    const line = describeViolation(checkSubscribeValue('thing1', 'a\nb')!);
    assert.ok(!line.includes('\n'));
    assert.ok(line.startsWith('data.thing1: "a\\nb" breaks'), line);
    const long = describeViolation(checkSubscribeValue('phrase1', '😀'.repeat(100))!);
    assert.ok(long.startsWith(`data.phrase1: "${'😀'.repeat(40)}…" breaks phrase's rule`), long);
    assert.ok(!/[\ud800-\udbff](?![\udc00-\udfff])/.test(long), 'no half of a surrogate pair');
  });
});
