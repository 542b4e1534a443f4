/**
 * The XML of WeChat's server-URL requests: a `<xml>` root whose children are the message's
 * fields (`<MsgType><![CDATA[event]]></MsgType>`, `<MsgID>200163836</MsgID>`), some events with
 * one more level (`<ScanCodeInfo>`, `<SendPicsInfo>`).
 *
 * A strict reader of exactly that much XML, rather than a general parser: no DOCTYPE, no entity
 * definitions, nothing fetched or expanded (what makes general parsers dangerous on input from
 * the internet), and everything else a clear error. Text may use CDATA sections, the five
 * predefined entities and character references.
 */
import { CallbackXmlError } from '../errors.js';

/** The root's children: text of a leaf, or the nested element's own children. */
export type CallbackFields = { [name: string]: string | CallbackFields };

const NAME = /[A-Za-z_][A-Za-z0-9_.:-]*/y;
const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
/** Nesting WeChat's events never exceed; deeper input is refused rather than recursed into. */
const MAX_DEPTH = 8;

/**
 * The fields of a WeChat XML message.
 * @throws CallbackXmlError when it is not well-formed, has a DOCTYPE, or its root is not `<xml>`
 */
export function parseCallbackXml(text: string): CallbackFields {
  const r = new Reader(text);
  r.skipProlog();
  const root = r.element(0);
  r.skipMisc();
  if (r.pos < text.length) r.fail('content after the root element');
  if (root.name !== 'xml') throw new CallbackXmlError(`the root element is <${root.name}>, not <xml>`);
  return typeof root.value === 'string' ? {} : root.value;
}

/**
 * Every `<name>` child of `parent`, in order: what a list element repeats (`<List>` of a
 * subscribe event, one per template). `parent[name]` itself holds only the first.
 */
export function repeatedFields(parent: CallbackFields, name: string): Array<string | CallbackFields> {
  const all = REPEATS.get(parent)?.get(name);
  if (all) return all;
  const v = parent[name];
  return v === undefined ? [] : [v];
}

/** The repeats of each parsed element's children, beside it rather than in it: CallbackFields keeps its shape. */
const REPEATS = new WeakMap<CallbackFields, Map<string, Array<string | CallbackFields>>>();

/** A top-level text field, or undefined when absent or nested. */
export function textField(fields: CallbackFields, name: string): string | undefined {
  const v = fields[name];
  return typeof v === 'string' ? v : undefined;
}

class Reader {
  pos = 0;
  constructor(private readonly s: string) {}

  fail(what: string): never {
    throw new CallbackXmlError(`malformed XML at character ${this.pos}: ${what}`);
  }

  private ws(): void {
    while (this.pos < this.s.length && ' \t\r\n'.includes(this.s[this.pos]!)) this.pos++;
  }

  private startsWith(t: string): boolean {
    return this.s.startsWith(t, this.pos);
  }

  skipProlog(): void {
    if (this.s.charCodeAt(0) === 0xfeff) this.pos = 1;
    this.ws();
    if (this.startsWith('<?xml')) {
      const end = this.s.indexOf('?>', this.pos);
      if (end < 0) this.fail('unterminated XML declaration');
      this.pos = end + 2;
    }
    this.skipMisc();
    if (this.startsWith('<!DOCTYPE') || this.startsWith('<!doctype')) this.fail('a DOCTYPE is not accepted');
  }

  /** Whitespace and comments. */
  skipMisc(): void {
    for (;;) {
      this.ws();
      if (!this.startsWith('<!--')) return;
      const end = this.s.indexOf('-->', this.pos + 4);
      if (end < 0) this.fail('unterminated comment');
      this.pos = end + 3;
    }
  }

  private name(): string {
    NAME.lastIndex = this.pos;
    const m = NAME.exec(this.s);
    if (!m) this.fail('expected a name');
    this.pos += m[0].length;
    return m[0];
  }

  element(depth: number): { name: string; value: string | CallbackFields } {
    if (depth > MAX_DEPTH) this.fail('nested too deeply');
    if (this.s[this.pos] !== '<') this.fail('expected an element');
    this.pos++;
    const name = this.name();
    this.attributes();
    if (this.startsWith('/>')) {
      this.pos += 2;
      return { name, value: '' };
    }
    if (this.s[this.pos] !== '>') this.fail(`expected > after <${name}`);
    this.pos++;
    let text = '';
    let children: CallbackFields | undefined;
    for (;;) {
      if (this.pos >= this.s.length) this.fail(`<${name}> is not closed`);
      if (this.startsWith('</')) {
        this.pos += 2;
        const close = this.name();
        if (close !== name) this.fail(`</${close}> closes <${name}>`);
        this.ws();
        if (this.s[this.pos] !== '>') this.fail(`expected > after </${close}`);
        this.pos++;
        if (children && text.trim() !== '') this.fail(`<${name}> mixes text and elements`);
        return { name, value: children ?? text };
      }
      if (this.startsWith('<![CDATA[')) {
        const end = this.s.indexOf(']]>', this.pos + 9);
        if (end < 0) this.fail('unterminated CDATA section');
        text += this.s.slice(this.pos + 9, end);
        this.pos = end + 3;
      } else if (this.startsWith('<!--')) {
        this.skipMisc();
      } else if (this.s[this.pos] === '<') {
        const child = this.element(depth + 1);
        children ??= {};
        // a repeated name (`<List>` of a subscribe event) keeps the first as the field, all in REPEATS
        if (!(child.name in children)) children[child.name] = child.value;
        else {
          let repeats = REPEATS.get(children);
          if (!repeats) REPEATS.set(children, (repeats = new Map()));
          let all = repeats.get(child.name);
          if (!all) repeats.set(child.name, (all = [children[child.name]!]));
          all.push(child.value);
        }
      } else {
        const next = this.s.indexOf('<', this.pos);
        const end = next < 0 ? this.s.length : next;
        text += this.decode(this.s.slice(this.pos, end));
        this.pos = end;
      }
    }
  }

  private attributes(): void {
    for (;;) {
      this.ws();
      const c = this.s[this.pos];
      if (c === '>' || c === '/' || c === undefined) return;
      this.name();
      this.ws();
      if (this.s[this.pos] !== '=') this.fail('expected = in an attribute');
      this.pos++;
      this.ws();
      const q = this.s[this.pos];
      if (q !== '"' && q !== "'") this.fail('expected a quoted attribute value');
      const end = this.s.indexOf(q, this.pos + 1);
      if (end < 0) this.fail('unterminated attribute value');
      this.pos = end + 1;
    }
  }

  private decode(raw: string): string {
    if (raw.includes('>') && raw.includes(']]>')) this.fail(']]> in text');
    return raw.replace(/&([^;&\s]{0,10});?/g, (all, ref: string) => {
      if (!all.endsWith(';')) this.fail('an & that starts no reference');
      if (ref in ENTITIES) return ENTITIES[ref]!;
      const m = /^#(?:x([0-9a-fA-F]{1,6})|([0-9]{1,7}))$/.exec(ref);
      const cp = m ? parseInt(m[1] ?? m[2]!, m[1] ? 16 : 10) : NaN;
      if (!(cp > 0 && cp <= 0x10ffff)) this.fail(`unknown reference &${ref};`);
      return String.fromCodePoint(cp);
    });
  }
}
