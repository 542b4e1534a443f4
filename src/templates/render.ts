import { InvalidTemplateError, TemplateRenderError } from '../errors.js';
import type { MessageKind } from '../wechat/kinds.js';

/**
 * Template compilation and rendering (rules: docs/TEMPLATES.md).
 *
 * A template is the JSON body of WeChat's `message/template/send` with `${NAME}` placeholders
 * in string values. Substitution works on the parsed JSON, never on its text: the original
 * replaced placeholders in the JSON text, so a variable holding `","touser":"x` could rewrite
 * the message. Here a variable's value only ever becomes (part of) one string value.
 *
 * Compilation happens once per TSet, rendering once per message; so everything that can be
 * decided without the message (where the placeholders are, the literal text around them) is
 * decided at compile time, and rendering is a walk over precomputed nodes with no regex and no
 * JSON parsing.
 */

/** A placeholder name: `${NAME}` with NAME made of these characters. A dot is part of the name (no path lookup). */
const PLACEHOLDER = /\$\{([A-Za-z0-9_.-]+)\}/g;

/** `${OPENID}` is always the message's openid, never a variable of that name. */
export const OPENID_PLACEHOLDER = 'OPENID';

/**
 * Nesting deeper than this is refused at compile time: WeChat bodies are 3 levels deep, and the
 * bound keeps the recursive compile/render far from the stack limit whatever `maxBytes` is.
 */
export const MAX_TEMPLATE_DEPTH = 64;

/**
 * The compiled form is made of plain objects, arrays and strings only, because it is posted to
 * `worker_threads` (structured clone keeps no functions, prototypes or frozenness).
 * `k` tells the node kind apart.
 */
export type TemplateNode = ValueNode | TextNode | ObjectNode | ArrayNode;

/** A JSON primitive (number, boolean, null) or a string without placeholders. */
export interface ValueNode {
  readonly k: 'v';
  readonly v: string | number | boolean | null;
}

/**
 * A string with placeholders: `parts[0] + fill(names[0]) + parts[1] + ... + parts[n]`.
 * `raws[i]` is `${names[i]}` as written, kept so an unknown placeholder costs no concatenation.
 */
export interface TextNode {
  readonly k: 't';
  readonly parts: readonly string[];
  readonly names: readonly string[];
  readonly raws: readonly string[];
}

export interface ObjectNode {
  readonly k: 'o';
  readonly keys: readonly string[];
  readonly vals: readonly TemplateNode[];
}

export interface ArrayNode {
  readonly k: 'a';
  readonly items: readonly TemplateNode[];
}

export interface CompiledTemplate {
  /** The template key it was loaded under (the key TSet / push used). */
  readonly key: string;
  /** The template text as stored in the database. */
  readonly source: string;
  /** `Buffer.byteLength(source)`. */
  readonly bytes: number;
  /** Distinct placeholder names used, `OPENID` included, in order of first use. */
  readonly placeholders: readonly string[];
  readonly root: ObjectNode;
  /** Which WeChat message it is, so which endpoint it goes to (the row's `kind`). */
  readonly kind: MessageKind;
}

export interface CompileOptions {
  /**
   * Largest accepted source in UTF-8 bytes (`[server] template_size`). Longer templates are
   * refused, never truncated (the original cut them off at the swoole_table column size).
   * @defaultValue Infinity (no limit; the cache passes `template_size`)
   */
  maxBytes?: number;
  /** @defaultValue 'template' */
  kind?: MessageKind;
}

/**
 * Parses and compiles one template.
 *
 * @throws InvalidTemplateError when the source is longer than `maxBytes`, is not JSON, is not a
 *   JSON object, or nests deeper than {@link MAX_TEMPLATE_DEPTH}.
 */
export function compileTemplate(key: string, source: string, options: CompileOptions = {}): CompiledTemplate {
  const maxBytes = options.maxBytes ?? Infinity;
  if (typeof maxBytes !== 'number' || Number.isNaN(maxBytes) || maxBytes < 0) {
    throw new TypeError(`maxBytes must be a non-negative number, got ${String(maxBytes)}`);
  }
  const name = JSON.stringify(key);
  if (typeof source !== 'string') {
    throw new InvalidTemplateError(`template ${name} is not text`);
  }
  // Checked before parsing so an oversize row costs no JSON.parse.
  const bytes = Buffer.byteLength(source, 'utf8');
  if (bytes > maxBytes) {
    throw new InvalidTemplateError(
      `template ${name} is ${bytes} bytes, longer than template_size ${maxBytes} bytes`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(source);
  } catch (err) {
    throw new InvalidTemplateError(`template ${name} is not valid JSON: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    const got = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`;
    throw new InvalidTemplateError(`template ${name} must be a JSON object, got ${got}`);
  }
  const placeholders = new Set<string>();
  const root = compileNode(parsed, 0, name, placeholders) as ObjectNode;
  return { key, source, bytes, placeholders: [...placeholders], root, kind: options.kind ?? 'template' };
}

function compileNode(value: unknown, depth: number, name: string, placeholders: Set<string>): TemplateNode {
  if (typeof value === 'string') return compileString(value, placeholders);
  if (value === null || typeof value !== 'object') {
    return { k: 'v', v: value as number | boolean | null };
  }
  if (depth >= MAX_TEMPLATE_DEPTH) {
    throw new InvalidTemplateError(`template ${name} nests deeper than ${MAX_TEMPLATE_DEPTH} levels`);
  }
  if (Array.isArray(value)) {
    return { k: 'a', items: value.map((item) => compileNode(item, depth + 1, name, placeholders)) };
  }
  // Object keys are never substituted: a placeholder in a key would let a variable choose a field name.
  const keys = Object.keys(value);
  const vals = keys.map((k) => compileNode((value as Record<string, unknown>)[k], depth + 1, name, placeholders));
  return { k: 'o', keys, vals };
}

function compileString(text: string, placeholders: Set<string>): ValueNode | TextNode {
  const parts: string[] = [];
  const names: string[] = [];
  const raws: string[] = [];
  let last = 0;
  for (const m of text.matchAll(PLACEHOLDER)) {
    parts.push(text.slice(last, m.index));
    names.push(m[1]!);
    raws.push(m[0]);
    placeholders.add(m[1]!);
    last = m.index! + m[0].length;
  }
  if (names.length === 0) return { k: 'v', v: text };
  parts.push(text.slice(last));
  return { k: 't', parts, names, raws };
}

/**
 * What becomes of a placeholder whose variable the message does not have (`[setting]
 * missing_variable`): `keep` leaves `${NAME}` as written (the original's behaviour), `empty`
 * fills in "", `reject` refuses the message (the daemon checks at ingest, so a client hears
 * 400 before anything is queued; rendering refuses too, for a template changed by TSet after
 * the message was queued).
 */
export type MissingVariable = 'keep' | 'empty' | 'reject';

export interface RenderOptions {
  /** @defaultValue 'keep' */
  missing?: MissingVariable;
}

/**
 * Builds the WeChat request body for one message.
 *
 * - `${OPENID}` is `openid`; a variable named `OPENID` does not override it (the openid is the
 *   recipient the client addressed in the frame header, a variable must not redirect the message).
 * - Other placeholders take `vars[NAME]` (own properties only, so `${constructor}` is not
 *   Object's). Strings are inserted as they are; numbers, booleans and bigints as `String(v)`;
 *   objects and arrays as `JSON.stringify(v)`; `null` as "" (as the original did). A variable
 *   the message does not have is handled as `options.missing` says.
 * - Single pass: inserted text is never scanned for placeholders again.
 * - When the result has no `touser`, it is set to `openid`.
 *
 * The result is a fresh tree that shares no object or array with the compiled template, so the
 * caller may add fields (`client_msg_id`) or edit it without affecting later renders.
 *
 * @throws TemplateRenderError with `missing: 'reject'` when a variable is missing, or when a
 *   variable's value cannot be made text (a cycle or a nesting too deep for JSON.stringify).
 */
export function renderTemplate(
  t: CompiledTemplate,
  openid: string,
  vars: Record<string, unknown> | null,
  options: RenderOptions = {},
): Record<string, unknown> {
  const missing = options.missing ?? 'keep';
  if (missing === 'reject') {
    const absent = missingVariables(t, vars);
    if (absent.length > 0) throw new TemplateRenderError(missingMessage(absent));
  }
  const ctx: RenderContext = { openid, vars: vars ?? null, empty: missing === 'empty' };
  let out: Record<string, unknown>;
  try {
    out = renderObject(t.root, ctx);
  } catch (err) {
    // Only JSON.stringify of a variable can throw here (RangeError on deep nesting, TypeError on a cycle).
    throw new TemplateRenderError(`template ${JSON.stringify(t.key)}: a variable cannot be made text: ${(err as Error).message}`);
  }
  if (!Object.hasOwn(out, 'touser')) out.touser = openid;
  return out;
}

/** The placeholders of `t`, other than `${OPENID}`, that `vars` has no own property for, in order of first use. */
export function missingVariables(t: CompiledTemplate, vars: Record<string, unknown> | null): string[] {
  const absent: string[] = [];
  for (const name of t.placeholders) {
    if (name !== OPENID_PLACEHOLDER && (vars === null || !Object.hasOwn(vars, name))) absent.push(name);
  }
  return absent;
}

/** The 400 message and the render failure's reason for `missing_variable = reject`. */
export function missingMessage(names: readonly string[]): string {
  return `missing variables: ${names.join(', ')}`;
}

interface RenderContext {
  readonly openid: string;
  readonly vars: Record<string, unknown> | null;
  /** `missing_variable = empty`: a missing variable fills in "" instead of staying as written. */
  readonly empty: boolean;
}

function renderNode(node: TemplateNode, ctx: RenderContext): unknown {
  switch (node.k) {
    case 'v':
      return node.v;
    case 't':
      return renderText(node, ctx);
    case 'o':
      return renderObject(node, ctx);
    case 'a': {
      const items = node.items;
      const out = new Array<unknown>(items.length);
      for (let i = 0; i < items.length; i++) out[i] = renderNode(items[i]!, ctx);
      return out;
    }
  }
}

function renderObject(node: ObjectNode, ctx: RenderContext): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const { keys, vals } = node;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const value = renderNode(vals[i]!, ctx);
    // A JSON key "__proto__" is an ordinary field; plain assignment would set the prototype instead.
    if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
    else out[key] = value;
  }
  return out;
}

function renderText(node: TextNode, ctx: RenderContext): string {
  const { parts, names, raws } = node;
  const { openid, vars } = ctx;
  let s = parts[0]!;
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    let fill: string | undefined;
    if (name === OPENID_PLACEHOLDER) fill = openid;
    else if (vars !== null && Object.hasOwn(vars, name)) fill = variableText(vars[name]);
    s += fill ?? (ctx.empty ? '' : raws[i]!);
    s += parts[i + 1]!;
  }
  return s;
}

/** The text a variable contributes, or undefined when it has none (handled as a missing variable). */
function variableText(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      return v;
    case 'number':
    case 'boolean':
    case 'bigint':
      return String(v);
    case 'object':
      return v === null ? '' : JSON.stringify(v);
    default:
      return undefined; // undefined, function, symbol: nothing JSON could have carried
  }
}
