/**
 * WeChat's rules for the values of a subscribe message's `data` (Official Account `subscribe/bizsend`,
 * mini program `subscribe/send`). A key names its value's type (`thing1` → thing, `character_string7`
 * → character_string); WeChat refuses a value that breaks its type's rule with errcode 47003
 * ("argument invalid! data.thing1.value invalid"), so the daemon checks the filled values before a
 * message is queued and answers 400 instead of learning it from WeChat after the queue.
 *
 * Sources: WeChat's table "订阅消息参数值内容限制说明" on developers.weixin.qq.com (the mini program's
 * sendMessage page, and the Body.data table of the service account's sendNewSubscribeMsg page, which
 * adds that symbols are "除中文、英文、数字外的常见符号,不能带有换行等控制字符"). The notes on time and
 * date formats ("时间格式支持HH:MM:SS或者HH:MM", dates as y年m月d日, y年m月, m月d日 or joined by '-', '/',
 * '.': 2018-01-01, 2018/01/01, 2018.01.01, 2018-01, 01-01) were found only in third-party copies of
 * WeChat's docs (blogs), not in an official excerpt; they agree with the official examples.
 *
 * Principle: a refusal here stops a message WeChat might have taken, while a miss only costs the
 * 47003 the dispatcher already handles. So where the docs are silent or ambiguous the check is the
 * looser reading, and each such place says so below. Where the docs are explicit (phrase: Chinese
 * only; character_string: no Chinese) the check follows them even though community reports show
 * WeChat sometimes refuses more (e.g. phrase values of pure Chinese refused, presumably a
 * vocabulary check that cannot be known here): passing these checks is necessary, not sufficient.
 *
 * Characters are counted in Unicode code points (a Chinese character or an emoji is 1), which is
 * how the docs' "20个以内字符" reads and how community answers count ("1个汉字也只算1个字"); WeChat
 * does not document how it counts an emoji.
 */

export type SubscribeValueType =
  | 'thing'
  | 'number'
  | 'letter'
  | 'symbol'
  | 'character_string'
  | 'time'
  | 'date'
  | 'amount'
  | 'phone_number'
  | 'car_number'
  | 'name'
  | 'phrase';

export interface SubscribeRuleViolation {
  /** The data key, e.g. `thing1`. */
  field: string;
  type: SubscribeValueType;
  /** The rule broken, for a client: e.g. `at most 20 characters`. */
  rule: string;
  /** The value as checked (the whole of it; describeViolation shortens it). */
  value: string;
  /** What broke the rule, when one part of the value did: a count (`23`) or a character (`"a"`). */
  found?: string;
}

type Check = (value: string) => { rule: string; found?: string } | undefined;

const HAN = /^\p{Script=Han}$/u;
/** Line breaks and control characters: the docs forbid them in symbols, and a one-line card cannot show them. */
const CONTROL = /^[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]$/u;
const LETTER = /^[\p{L}\p{M}]$/u;
const SYMBOL = /^[\p{P}\p{S}]$/u;

function codePoints(value: string): string[] {
  return [...value];
}

/** The first character `allowed` refuses, quoted, or undefined. */
function firstRefused(chars: readonly string[], allowed: (ch: string) => boolean): string | undefined {
  for (const ch of chars) if (!allowed(ch)) return JSON.stringify(ch);
  return undefined;
}

function charsAndLength(rule: string, allowed: (ch: string) => boolean, max: number): Check {
  return (value) => {
    const chars = codePoints(value);
    const bad = firstRefused(chars, allowed);
    if (bad !== undefined) return { rule, found: bad };
    if (chars.length > max) return { rule: `at most ${max} characters`, found: String(chars.length) };
    return undefined;
  };
}

const isHan = (ch: string): boolean => HAN.test(ch);
const isLetter = (ch: string): boolean => LETTER.test(ch) && !isHan(ch);
const isSymbol = (ch: string): boolean => SYMBOL.test(ch);

// Time and date. The docs give 24-hour times with or without seconds, dates in Chinese or joined by
// '-', '/' or '.', either with the other after it, and "时间段": two of them joined by '~'. Loose
// readings: one-digit hours, months and days; the half after '~' may be a time or a date (as in
// "2019年10月1日 15:01~16:00"); a full-width '～'. A date type with a time after it is taken as the
// docs say, although one community report had "2019年08月13日 15:00" refused for a date field.
const YEAR = '\\d{4}';
const MONTH = '(?:0?[1-9]|1[0-2])';
const DAY = '(?:0?[1-9]|[12]\\d|3[01])';
const CLOCK = '(?:[01]?\\d|2[0-3]):[0-5]\\d(?::[0-5]\\d)?';
const CJK_DATE = `(?:${YEAR}年${MONTH}月${DAY}日|${YEAR}年${MONTH}月|${MONTH}月${DAY}日)`;
const NUMERIC_DATE = ['-', '/', '.']
  .map((s) => (s === '.' ? '\\.' : s))
  .map((s) => `${YEAR}${s}${MONTH}${s}${DAY}|${YEAR}${s}${MONTH}|${MONTH}${s}${DAY}`)
  .join('|');
/** A date, then optionally a time (no space needed after 日 or 月, one needed after digits). */
const DATE_POINT = `(?:${CJK_DATE}(?:\\s*${CLOCK})?|(?:${NUMERIC_DATE})(?:\\s+${CLOCK})?)`;
/** A time, optionally after a date. */
const TIME_POINT = `(?:(?:${CJK_DATE}\\s*|(?:${NUMERIC_DATE})\\s+)?${CLOCK})`;
const ANY_POINT = `(?:${DATE_POINT}|${TIME_POINT})`;
const TILDE = '\\s*[~～]\\s*';
const TIME_RULE =
  'a 24-hour time (15:01 or 15:01:30), optionally after a date (2019年10月1日 15:01, 2019-10-01 15:01), or two joined by "~"';
const DATE_RULE =
  'a date (2019年10月1日, 2019年10月, 10月1日, 2019-10-01, 2019/10/01, 2019.10.01, 2019-10, 10-01), ' +
  'optionally followed by a 24-hour time, or two joined by "~"';
const TIME_VALUE = new RegExp(`^${TIME_POINT}(?:${TILDE}${ANY_POINT})?$`, 'u');
const DATE_VALUE = new RegExp(`^${DATE_POINT}(?:${TILDE}${ANY_POINT})?$`, 'u');

/** The docs' "1个币种符号": looser here, the sign may be left out (the docs' own rule reads it as required). */
const AMOUNT = /^\p{Sc}?([0-9]+)(?:\.[0-9]+)?元?$/u;
const AMOUNT_RULE = 'an optional currency sign, digits with an optional decimal part, optionally ending in 元 (e.g. ¥100.00, 100元)';
const NUMBER = /^([0-9]+)(?:\.([0-9]+))?$/u;
const CAR_NUMBER = /^\p{Script=Han}?[A-Za-z0-9]*\p{Script=Han}?$/u;

const CHECKS: Readonly<Record<SubscribeValueType, Check>> = {
  // "可汉字、数字、字母或符号组合", read as anything printable (spaces and emoji included); only
  // control characters and line breaks are refused.
  thing: charsAndLength('no control characters or line breaks', (ch) => !CONTROL.test(ch), 20),

  // "只能数字,可带小数", "32位以内数字": ASCII digits, one decimal point, no sign (none is documented);
  // the 32 counts digits, not the point.
  number: (value) => {
    const m = NUMBER.exec(value);
    if (!m) return { rule: 'digits only, with at most one decimal point' };
    const digits = m[1]!.length + (m[2]?.length ?? 0);
    if (digits > 32) return { rule: 'at most 32 digits', found: String(digits) };
    return undefined;
  },

  // "只能字母": letters of any script but Chinese characters (which would be phrase or thing).
  letter: charsAndLength('letters only', isLetter, 32),

  symbol: charsAndLength('symbols only (no letters, digits, Chinese characters or spaces)', isSymbol, 5),

  // "可数字、字母或符号组合": spaces are none of these, so they are refused as the docs list it.
  character_string: charsAndLength(
    'digits, letters or symbols only (no Chinese characters or spaces)',
    (ch) => !isHan(ch) && (isLetter(ch) || /^\p{N}$/u.test(ch) || isSymbol(ch)),
    32,
  ),

  time: (value) => (TIME_VALUE.test(value) ? undefined : { rule: TIME_RULE }),

  date: (value) => (DATE_VALUE.test(value) ? undefined : { rule: DATE_RULE }),

  // "10位以内纯数字,可带小数": the 10 is read as the digits before the point (the looser reading).
  amount: (value) => {
    const m = AMOUNT.exec(value);
    if (!m) return { rule: AMOUNT_RULE };
    if (m[1]!.length > 10) return { rule: 'at most 10 digits before the decimal point', found: String(m[1]!.length) };
    return undefined;
  },

  // "17位以内,数字、符号": as listed, so spaces are refused.
  phone_number: charsAndLength(
    'digits and symbols only (e.g. +86-0766-66888866)',
    (ch) => /^\p{Nd}$/u.test(ch) || isSymbol(ch),
    17,
  ),

  // "8位以内,第一位与最后一位可为汉字,其余为字母或数字".
  car_number: (value) => {
    if (!CAR_NUMBER.test(value)) {
      return { rule: 'letters or digits, with a Chinese character allowed first and last (e.g. 粤A8Z888挂)' };
    }
    const n = codePoints(value).length;
    if (n > 8) return { rule: 'at most 8 characters', found: String(n) };
    return undefined;
  },

  // "10个以内纯汉字或20个以内纯字母或符号; 中文和字母混合按中文名算,10个字内". Spaces are allowed
  // (looser: an English name has them, and the docs' "纯英文名" does not say otherwise); digits are not.
  name: (value) => {
    const chars = codePoints(value);
    const bad = firstRefused(chars, (ch) => isHan(ch) || isLetter(ch) || isSymbol(ch) || /^\p{Zs}$/u.test(ch));
    if (bad !== undefined) return { rule: 'Chinese characters, letters or symbols only', found: bad };
    if (chars.some(isHan)) {
      if (chars.length > 10) {
        return { rule: 'at most 10 characters when it has a Chinese character', found: String(chars.length) };
      }
    } else if (chars.length > 20) {
      return { rule: 'at most 20 characters', found: String(chars.length) };
    }
    return undefined;
  },

  // "5个以内纯汉字": Chinese punctuation (，。) is not a Chinese character, so it is refused too.
  phrase: charsAndLength('Chinese characters only', isHan, 5),
};

/**
 * The type a data key names (`thing1` → 'thing', `character_string7` → 'character_string', `date`
 * → 'date': WeChat's examples have keys with and without digits); undefined for keys of no known
 * type, including `enum` and `const`, whose allowed values come from the template itself.
 */
export function subscribeValueType(key: string): SubscribeValueType | undefined {
  const m = /^([a-z_]+?)\d*$/.exec(key);
  if (!m) return undefined;
  const type = m[1]!;
  return Object.prototype.hasOwnProperty.call(CHECKS, type) ? (type as SubscribeValueType) : undefined;
}

/** The first rule `value` breaks for its key's type, or undefined when it is fine (or the type is unknown). */
export function checkSubscribeValue(key: string, value: string): SubscribeRuleViolation | undefined {
  const type = subscribeValueType(key);
  if (type === undefined) return undefined;
  // WeChat answers "data.<key>.value is empty" for these; every type needs at least one character.
  if (value === '') return { field: key, type, rule: 'must not be empty', value };
  const broken = CHECKS[type](value);
  if (broken === undefined) return undefined;
  const v: SubscribeRuleViolation = { field: key, type, rule: broken.rule, value };
  if (broken.found !== undefined) v.found = broken.found;
  return v;
}

/**
 * Every `data` entry of a rendered subscribe message ({key: {value}}), in key order; [] when all are
 * fine. A non-string value is checked as String(value); a missing, null or undefined value, or an
 * entry that is not an object, as '' (WeChat's "is empty"). Data that is not a plain object gives []:
 * its shape is the renderer's concern (WeChat answers 47001 for it), not a rule of a value's type.
 */
export function checkSubscribeData(data: unknown): SubscribeRuleViolation[] {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return [];
  const out: SubscribeRuleViolation[] = [];
  for (const [key, entry] of Object.entries(data)) {
    const raw: unknown = typeof entry === 'object' && entry !== null ? (entry as { value?: unknown }).value : undefined;
    const value = raw === undefined || raw === null ? '' : typeof raw === 'string' ? raw : String(raw);
    const v = checkSubscribeValue(key, value);
    if (v) out.push(v);
  }
  return out;
}

const SHOWN = 40;

/** One line for a client: `data.thing1: "..." breaks thing's rule: at most 20 characters (got 23)`. */
export function describeViolation(v: SubscribeRuleViolation): string {
  const chars = codePoints(v.value);
  // JSON quoting keeps it one line (a line break shows as \n); long values are cut, by code point
  // so a cut never splits a surrogate pair.
  const shown =
    chars.length > SHOWN ? JSON.stringify(chars.slice(0, SHOWN).join('')).slice(0, -1) + '…"' : JSON.stringify(v.value);
  const got = v.found !== undefined ? ` (got ${v.found})` : '';
  return `data.${v.field}: ${shown} breaks ${v.type}'s rule: ${v.rule}${got}`;
}
