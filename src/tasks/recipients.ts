import { createHash } from 'node:crypto';
import { createReadStream, closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, extname } from 'node:path';
import { RecipientFileError, TaskStateError, type RecipientProblem } from '../errors.js';

/**
 * Recipients of a bulk task.
 *
 * A task's source file is one of:
 * - **plain**: one openid per line; blank lines and lines starting with `#` are ignored;
 * - **csv**: a header row naming the columns, one of them `openid` (any case); every other
 *   column becomes a template variable of that name (RFC 4180 quoting: `"a,b"`, `"say ""hi"""`,
 *   line breaks inside quotes). A `.tsv` file, or a header with tabs and no commas, is
 *   tab-separated. A UTF-8 BOM (Excel writes one) is ignored;
 * - **jsonl**: one JSON object per line, `{"openid": "...", "name": "Ann", ...}`: every property
 *   but `openid` is a variable.
 *
 * `create` reads it once and writes the **normalised list** the task runs from: a first line
 * `{"format":"mega-task-recipients","version":1,"vars":{...}|null}` (the `--vars` variables common
 * to everyone), then one line `["<openid>", {vars}|null]` per recipient, in file order. Recipient
 * number `i` (0-based) is line `i + 2`. Its SHA-256 is recorded with the task, so a run refuses a
 * list that changed since `create`: positions saved in the store always mean the same people.
 */

export type RecipientFormat = 'plain' | 'csv' | 'jsonl';

export const RECIPIENT_FORMATS: readonly RecipientFormat[] = ['plain', 'csv', 'jsonl'];

export type Variables = Record<string, unknown>;

/** What the protocol accepts as an openid (docs/PROTOCOL.md: a header word of printable ASCII). */
export const OPENID_PATTERN = /^[\x21-\x7e]{1,128}$/;

/** Problems listed in an error message; the error object carries up to {@link MAX_PROBLEMS_KEPT}. */
const MAX_PROBLEMS_SHOWN = 20;
const MAX_PROBLEMS_KEPT = 1000;

const HEADER_FORMAT = 'mega-task-recipients';
const HEADER_VERSION = 1;

/** The format a file's name implies: `.csv`/`.tsv` → csv, `.jsonl`/`.ndjson`/`.json` → jsonl, else plain. */
export function formatFromName(file: string): RecipientFormat {
  const ext = extname(file).toLowerCase();
  if (ext === '.csv' || ext === '.tsv') return 'csv';
  if (ext === '.jsonl' || ext === '.ndjson' || ext === '.json') return 'jsonl';
  return 'plain';
}

/** One recipient read from a source file. `line` is where its record starts (1-based). */
export interface SourceRecipient {
  line: number;
  openid: string;
  vars: Variables | null;
}

type SourceItem = SourceRecipient | { line: number; problem: string };

// ------------------------------------------------------------------ reading lines

/**
 * The lines of a file, decoded as strict UTF-8 (a file in GBK or Latin-1 is refused rather than
 * sent to users with replacement characters). A trailing `\r` is removed; a BOM on line 1 too.
 */
async function* readLines(file: string): AsyncGenerator<{ line: number; text: string }> {
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
  let rest = '';
  let line = 0;
  const stream = createReadStream(file);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let text: string;
      try {
        text = rest + decoder.decode(chunk, { stream: true });
      } catch {
        throw new RecipientFileError(file, `${file}: not valid UTF-8 (near line ${line + 1}); save it as UTF-8`);
      }
      let start = 0;
      for (;;) {
        const nl = text.indexOf('\n', start);
        if (nl < 0) break;
        line++;
        yield { line, text: stripCr(text.slice(start, nl)) };
        start = nl + 1;
      }
      rest = text.slice(start);
    }
    try {
      rest += decoder.decode();
    } catch {
      throw new RecipientFileError(file, `${file}: not valid UTF-8 (near line ${line + 1}); save it as UTF-8`);
    }
    if (rest !== '') {
      line++;
      yield { line, text: stripCr(rest) };
    }
  } catch (err) {
    if (err instanceof RecipientFileError) throw err;
    throw new RecipientFileError(file, `${file}: cannot read: ${(err as Error).message}`);
  } finally {
    stream.destroy();
  }
}

function stripCr(s: string): string {
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}

function checkOpenid(openid: string): string | undefined {
  if (openid === '') return 'empty openid';
  if (/\s/.test(openid)) return `openid ${JSON.stringify(openid.slice(0, 40))} contains white space`;
  if (!OPENID_PATTERN.test(openid)) {
    return openid.length > 128
      ? `openid is ${openid.length} characters long (at most 128)`
      : `openid ${JSON.stringify(openid.slice(0, 40))} has characters other than printable ASCII`;
  }
  return undefined;
}

// ------------------------------------------------------------------ the three formats

async function* readPlain(file: string): AsyncGenerator<SourceItem> {
  for await (const { line, text } of readLines(file)) {
    const openid = text.trim();
    if (openid === '' || openid.startsWith('#')) continue;
    const problem = checkOpenid(openid);
    yield problem === undefined ? { line, openid, vars: null } : { line, problem };
  }
}

async function* readJsonl(file: string): AsyncGenerator<SourceItem> {
  for await (const { line, text } of readLines(file)) {
    if (text.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      yield { line, problem: `not JSON: ${(err as Error).message}` };
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      yield { line, problem: 'not a JSON object ({"openid": "...", ...variables})' };
      continue;
    }
    const { openid, ...vars } = value as Record<string, unknown>;
    if (typeof openid !== 'string') {
      yield { line, problem: openid === undefined ? 'no "openid" property' : '"openid" is not a string' };
      continue;
    }
    const problem = checkOpenid(openid);
    if (problem !== undefined) {
      yield { line, problem };
      continue;
    }
    yield { line, openid, vars: Object.keys(vars).length === 0 ? null : vars };
  }
}

/**
 * RFC 4180 records over lines: a record continues on the next line while a quoted field is open.
 * Yields each record's fields and the line it started on, or a problem for a malformed one.
 */
async function* readCsvRecords(
  file: string,
  delimiterFor: (firstLine: string) => string,
): AsyncGenerator<{ line: number; fields: string[] } | { line: number; problem: string }> {
  let delimiter: string | undefined;
  let fields: string[] = [];
  let field = '';
  let inQuotes = false;
  let afterQuote = false;
  let startLine = 0;
  let broken: string | undefined;
  for await (const { line, text } of readLines(file)) {
    if (!inQuotes) {
      if (text.trim() === '') continue;
      if (delimiter === undefined) delimiter = delimiterFor(text);
      startLine = line;
      fields = [];
      field = '';
      afterQuote = false;
      broken = undefined;
    } else {
      field += '\n';
    }
    for (let i = 0; i < text.length; i++) {
      const c = text[i]!;
      if (inQuotes) {
        if (c === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i++;
          } else {
            inQuotes = false;
            afterQuote = true;
          }
        } else {
          field += c;
        }
      } else if (c === delimiter) {
        fields.push(field);
        field = '';
        afterQuote = false;
      } else if (c === '"' && field.trim() === '' && !afterQuote) {
        inQuotes = true;
        field = '';
      } else if (afterQuote) {
        if (c !== ' ' && c !== '\t') broken ??= `text after a closing quote in field ${fields.length + 1}`;
      } else if (c === '"') {
        broken ??= `a quote inside unquoted field ${fields.length + 1} (quote the field and double the quote: "a ""b""")`;
        field += c;
      } else {
        field += c;
      }
    }
    if (inQuotes) continue;
    fields.push(field);
    yield broken === undefined ? { line: startLine, fields } : { line: startLine, problem: broken };
  }
  if (inQuotes) yield { line: startLine, problem: 'a quoted field is never closed' };
}

async function* readCsv(file: string): AsyncGenerator<SourceItem> {
  const tsv = extname(file).toLowerCase() === '.tsv';
  const delimiterFor = (first: string): string => (tsv || (first.includes('\t') && !first.includes(',')) ? '\t' : ',');
  let columns: string[] | undefined;
  let openidColumn = -1;
  for await (const record of readCsvRecords(file, delimiterFor)) {
    if ('problem' in record) {
      if (columns === undefined) throw new RecipientFileError(file, `${file}: line ${record.line}: bad header row: ${record.problem}`);
      yield record;
      continue;
    }
    if (columns === undefined) {
      columns = record.fields.map((f) => f.trim());
      const seen = new Set<string>();
      for (const [i, c] of columns.entries()) {
        if (c === '') throw new RecipientFileError(file, `${file}: line ${record.line}: header column ${i + 1} has no name`);
        if (seen.has(c)) throw new RecipientFileError(file, `${file}: line ${record.line}: header names ${JSON.stringify(c)} twice`);
        seen.add(c);
      }
      openidColumn = columns.findIndex((c) => c.toLowerCase() === 'openid');
      if (openidColumn < 0) {
        throw new RecipientFileError(
          file,
          `${file}: line ${record.line}: the header row has no "openid" column (found: ${columns.slice(0, 10).join(', ')})`,
        );
      }
      continue;
    }
    if (record.fields.length !== columns.length) {
      yield { line: record.line, problem: `${record.fields.length} fields, the header has ${columns.length}` };
      continue;
    }
    const openid = record.fields[openidColumn]!.trim();
    const problem = checkOpenid(openid);
    if (problem !== undefined) {
      yield { line: record.line, problem };
      continue;
    }
    let vars: Variables | null = null;
    for (const [i, c] of columns.entries()) {
      if (i === openidColumn) continue;
      vars ??= {};
      vars[c] = record.fields[i]!;
    }
    yield { line: record.line, openid, vars };
  }
  if (columns === undefined) throw new RecipientFileError(file, `${file}: empty CSV file (no header row)`);
}

/** Every recipient of a source file, in order, with a problem in place of each bad line. */
export function readSource(file: string, format: RecipientFormat): AsyncGenerator<SourceItem> {
  if (format === 'csv') return readCsv(file);
  if (format === 'jsonl') return readJsonl(file);
  return readPlain(file);
}

/** Reads `--vars FILE`: one JSON object, the variables every recipient gets (theirs win). */
export function readCommonVars(file: string): Variables {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RecipientFileError(file, `${file}: cannot read: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    throw new RecipientFileError(file, `${file}: not JSON: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RecipientFileError(file, `${file}: must hold a JSON object of variables, e.g. {"product": "tea"}`);
  }
  return value as Variables;
}

// ------------------------------------------------------------------ normalising

export interface NormaliseOptions {
  /** The source file. */
  source: string;
  /** @defaultValue from the file name ({@link formatFromName}) */
  format?: RecipientFormat;
  /** Variables for everyone (`--vars`); a recipient's own win. */
  commonVars?: Variables | null;
  /** Where to write the normalised list (written to `<out>.tmp`, fsynced, then renamed). */
  out: string;
  /** Skip bad lines (and report them) instead of refusing the file. @defaultValue false */
  skipInvalid?: boolean;
  /** Keep every occurrence of an openid listed twice. @defaultValue false: the first is kept, later ones are skipped and reported */
  allowDuplicates?: boolean;
}

export interface NormaliseResult {
  total: number;
  /** SHA-256 (hex) of the normalised file. */
  checksum: string;
  format: RecipientFormat;
  /** Bad lines skipped (only with `skipInvalid`). */
  invalid: RecipientProblem[];
  invalidCount: number;
  /** Later occurrences of an openid, skipped (unless `allowDuplicates`). */
  duplicates: RecipientProblem[];
  duplicateCount: number;
}

export function describeProblems(problems: readonly RecipientProblem[], count = problems.length): string {
  const shown = problems.slice(0, MAX_PROBLEMS_SHOWN).map((p) => `  line ${p.line}: ${p.reason}`);
  if (count > shown.length) shown.push(`  ... and ${count - shown.length} more`);
  return shown.join('\n');
}

/**
 * Reads a source file and writes the task's normalised list.
 * @throws RecipientFileError naming every bad line (up to 20 in the message), or when no recipient is left.
 */
export async function normaliseRecipients(options: NormaliseOptions): Promise<NormaliseResult> {
  const format = options.format ?? formatFromName(options.source);
  const tmp = `${options.out}.tmp`;
  const hash = createHash('sha256');
  let fd: number | undefined;
  let pending: string[] = [];
  let pendingBytes = 0;
  const flush = (): void => {
    if (pending.length === 0) return;
    const chunk = Buffer.from(pending.join(''), 'utf8');
    hash.update(chunk);
    let off = 0;
    while (off < chunk.length) off += writeSync(fd!, chunk, off);
    pending = [];
    pendingBytes = 0;
  };
  const write = (text: string): void => {
    pending.push(text);
    pendingBytes += text.length;
    if (pendingBytes >= 1 << 16) flush();
  };

  const invalid: RecipientProblem[] = [];
  const duplicates: RecipientProblem[] = [];
  let invalidCount = 0;
  let duplicateCount = 0;
  const firstLine = new Map<string, number>();
  let total = 0;
  try {
    fd = openSync(tmp, 'w', 0o644);
    const common = options.commonVars && Object.keys(options.commonVars).length > 0 ? options.commonVars : null;
    write(JSON.stringify({ format: HEADER_FORMAT, version: HEADER_VERSION, vars: common }) + '\n');
    for await (const item of readSource(options.source, format)) {
      if ('problem' in item) {
        invalidCount++;
        if (invalid.length < MAX_PROBLEMS_KEPT) invalid.push({ line: item.line, reason: item.problem });
        continue;
      }
      if (!options.allowDuplicates) {
        const first = firstLine.get(item.openid);
        if (first !== undefined) {
          duplicateCount++;
          if (duplicates.length < MAX_PROBLEMS_KEPT) {
            duplicates.push({ line: item.line, reason: `${item.openid} is already listed on line ${first}` });
          }
          continue;
        }
        firstLine.set(item.openid, item.line);
      }
      total++;
      write(JSON.stringify([item.openid, item.vars]) + '\n');
    }
    if (invalidCount > 0 && !options.skipInvalid) {
      throw new RecipientFileError(
        options.source,
        `${options.source}: ${invalidCount} bad line${invalidCount === 1 ? '' : 's'} (nothing created; fix them, or pass --skip-invalid to leave them out):\n` +
          describeProblems(invalid, invalidCount),
        invalid,
      );
    }
    if (total === 0) throw new RecipientFileError(options.source, `${options.source}: no recipients`);
    flush();
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, options.out);
    syncDir(dirname(options.out));
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  return { total, checksum: hash.digest('hex'), format, invalid, invalidCount, duplicates, duplicateCount };
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some file systems refuse fsync on a directory; the rename is still atomic
  }
}

// ------------------------------------------------------------------ reading the normalised list

/** One recipient of a task: number `index` (0-based) of its normalised list. */
export interface TaskRecipient {
  index: number;
  openid: string;
  /** The common variables merged with the recipient's own; null when there are none. */
  vars: Variables | null;
}

/**
 * Checks that the normalised list is the one recorded at `create`: same SHA-256, `total`
 * recipients.
 * @throws TaskStateError when the file is missing, changed or truncated.
 */
export async function verifyRecipientList(file: string, checksum: string, total: number): Promise<void> {
  const hash = createHash('sha256');
  let newlines = 0;
  try {
    for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) newlines++;
    }
  } catch (err) {
    throw new TaskStateError(`recipient list ${file} cannot be read: ${(err as Error).message}`);
  }
  const actual = hash.digest('hex');
  if (actual !== checksum) {
    throw new TaskStateError(`recipient list ${file} changed since the task was created (SHA-256 ${actual.slice(0, 12)}…, expected ${checksum.slice(0, 12)}…)`);
  }
  if (newlines - 1 !== total) throw new TaskStateError(`recipient list ${file} holds ${newlines - 1} recipients, the task ${total}`);
}

/**
 * Reads a normalised list in order, skipping the recipients `skip` says are done. Pull-based:
 * it reads only as far as the runner asks, so a list of millions costs little memory.
 */
export class RecipientListReader {
  #lines: AsyncGenerator<{ line: number; text: string }>;
  #common: Variables | null = null;
  #started = false;
  #index = -1;
  #ended = false;

  constructor(
    readonly file: string,
    private readonly skip: (index: number) => boolean,
  ) {
    this.#lines = readLines(file);
  }

  /** The next recipient not skipped, or undefined at the end of the list. */
  async next(): Promise<TaskRecipient | undefined> {
    if (this.#ended) return undefined;
    for (;;) {
      const r = await this.#lines.next();
      if (r.done) {
        this.#ended = true;
        return undefined;
      }
      const { line, text } = r.value;
      if (!this.#started) {
        this.#started = true;
        this.#common = parseHeader(this.file, text);
        continue;
      }
      this.#index++;
      if (this.skip(this.#index)) continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new TaskStateError(`recipient list ${this.file}: line ${line} is not JSON`);
      }
      if (!Array.isArray(parsed) || typeof parsed[0] !== 'string') {
        throw new TaskStateError(`recipient list ${this.file}: line ${line} is not ["openid", vars]`);
      }
      const own = (parsed[1] ?? null) as Variables | null;
      const vars = this.#common === null ? own : own === null ? this.#common : { ...this.#common, ...own };
      return { index: this.#index, openid: parsed[0], vars };
    }
  }

  async close(): Promise<void> {
    this.#ended = true;
    await this.#lines.return(undefined);
  }
}

function parseHeader(file: string, text: string): Variables | null {
  try {
    const h = JSON.parse(text) as { format?: unknown; version?: unknown; vars?: unknown };
    if (h.format === HEADER_FORMAT && h.version === HEADER_VERSION) {
      return h.vars !== null && typeof h.vars === 'object' && !Array.isArray(h.vars) ? (h.vars as Variables) : null;
    }
  } catch {
    // reported below
  }
  throw new TaskStateError(`recipient list ${file} is not a normalised task list (bad first line)`);
}
