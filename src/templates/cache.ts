import { InvalidTemplateError, TableFullError, TemplateNotFoundError } from '../errors.js';
import { compileTemplate, type CompileOptions, type CompiledTemplate } from './render.js';
import type { TemplateStore } from './store.js';

/**
 * Compiles a template as the daemon accepts it for sending (TSet, start-up, `template set`):
 * {@link compileTemplate}'s rules, plus a top-level `template_id` that is a non-empty string.
 * Without one WeChat refuses every message (40037); refusing the template says so at once,
 * not one dead letter per message later. The value may hold placeholders.
 *
 * @throws InvalidTemplateError
 */
export function compileMessageTemplate(key: string, source: string, options: CompileOptions = {}): CompiledTemplate {
  const compiled = compileTemplate(key, source, options);
  const at = compiled.root.keys.indexOf('template_id');
  const node = at < 0 ? undefined : compiled.root.vals[at]!;
  const isText = node !== undefined && ((node.k === 'v' && typeof node.v === 'string' && node.v !== '') || node.k === 't');
  if (!isText) {
    const problem = node === undefined ? 'has no "template_id"' : 'has a "template_id" that is not a non-empty string';
    throw new InvalidTemplateError(`template ${JSON.stringify(key)} ${problem} (WeChat refuses every message without one)`);
  }
  return compiled;
}

export interface TemplateCacheOptions {
  /** Only `get` and `list` are used, so a test double needs no more. */
  store: Pick<TemplateStore, 'get' | 'list'>;
  /** `[server] table_size`: most templates held. @defaultValue 100 */
  tableSize?: number;
  /** `[server] template_size`: largest template in UTF-8 bytes; longer ones are refused. @defaultValue 4048 */
  templateSize?: number;
}

export interface LoadReport {
  loaded: number;
  /** Rows not loaded, with the reason (invalid JSON, too long, over table size). */
  skipped: Array<{ key: string; reason: string }>;
}

/**
 * The compiled templates messages are rendered with, as the original's swoole_table: filled at
 * start, changed only by TSet. Keys are the keys TSet was called with: MySQL may match `ABC`
 * to the row `abc`, and the template is then cached under `ABC`, as the original did.
 *
 * A failed TSet (invalid, over table size, database error) leaves the cache exactly as it
 * was: a typo in a template being edited never stops that template's messages. The one
 * exception is a key whose row is gone from the database: TSet drops it from the cache (and
 * answers `template key not exists`), since a deleted template must stop being sent.
 */
export class TemplateCache {
  readonly #store: Pick<TemplateStore, 'get' | 'list'>;
  readonly #tableSize: number;
  readonly #templateSize: number;
  readonly #map = new Map<string, CompiledTemplate>();
  /** The TSet running for a key; the next TSet of that key waits for it (see tset). */
  readonly #inFlight = new Map<string, Promise<unknown>>();
  /** A running loadAll, which TSets wait for so it cannot overwrite what they read later. */
  #loading: Promise<unknown> | undefined;

  constructor(options: TemplateCacheOptions) {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
    const { store, tableSize = 100, templateSize = 4048 } = options;
    if (store === null || typeof store !== 'object' || typeof store.get !== 'function' || typeof store.list !== 'function') {
      throw new TypeError('options.store must be a TemplateStore');
    }
    if (!Number.isSafeInteger(tableSize) || tableSize < 1) {
      throw new RangeError(`options.tableSize ([server] table_size) must be a positive integer, got ${String(tableSize)}`);
    }
    if (!Number.isSafeInteger(templateSize) || templateSize < 1) {
      throw new RangeError(
        `options.templateSize ([server] template_size) must be a positive integer, got ${String(templateSize)}`,
      );
    }
    this.#store = store;
    this.#tableSize = tableSize;
    this.#templateSize = templateSize;
  }

  get size(): number {
    return this.#map.size;
  }

  get tableSize(): number {
    return this.#tableSize;
  }

  get templateSize(): number {
    return this.#templateSize;
  }

  get(key: string): CompiledTemplate | undefined {
    return this.#map.get(key);
  }

  has(key: string): boolean {
    return this.#map.has(key);
  }

  /** Every cached template, in insertion order: what the task workers are sent. */
  all(): CompiledTemplate[] {
    return [...this.#map.values()];
  }

  /**
   * Fills the cache from the database (at start): rows in `tmpl_key` order until `tableSize`
   * templates are loaded. Invalid and oversize rows are skipped and reported, not fatal, so
   * one bad row cannot keep the daemon from starting; rows past `tableSize` are reported too,
   * because a template that silently failed to load looks like `template key not exists` later.
   *
   * Replaces the cache contents in one step, and only on success.
   * @throws TemplateStoreError when the database fails (the cache is unchanged).
   */
  async loadAll(): Promise<LoadReport> {
    // Wait for running TSets, then hold new ones off until the swap.
    const run = (async () => {
      await Promise.allSettled([...this.#inFlight.values()]);
      // All rows, not LIMIT tableSize: skipped rows must not hide valid ones behind them.
      const rows = await this.#store.list();
      const next = new Map<string, CompiledTemplate>();
      const skipped: LoadReport['skipped'] = [];
      for (const row of rows) {
        if (next.size >= this.#tableSize) {
          skipped.push({ key: row.key, reason: `over table size (table_size ${this.#tableSize})` });
          continue;
        }
        try {
          next.set(row.key, compileMessageTemplate(row.key, row.template, { maxBytes: this.#templateSize, kind: row.kind }));
        } catch (err) {
          skipped.push({ key: row.key, reason: (err as Error).message });
        }
      }
      this.#map.clear();
      for (const [k, v] of next) this.#map.set(k, v);
      return { loaded: next.size, skipped };
    })();
    this.#loading = run;
    try {
      return await run;
    } finally {
      if (this.#loading === run) this.#loading = undefined;
    }
  }

  /**
   * Loads or refreshes one template from the database (the TSet command).
   *
   * TSets of the same key run one after the other, so the one issued last reads last and its
   * row is what stays cached, whatever order the database answers in.
   *
   * @returns the compiled template and whether the key is new to the cache.
   * @throws TemplateNotFoundError (`template key not exists`) when the database has no such row;
   *   the key is then dropped from the cache, and the error's `dropped` says whether it was there.
   * @throws InvalidTemplateError when the row is not a JSON object, is longer than `templateSize`
   *   bytes, or has no `template_id` (see {@link compileMessageTemplate}).
   * @throws TableFullError (`over table size`) for a new key when the cache holds `tableSize` templates.
   * @throws TemplateStoreError when the database fails.
   */
  tset(key: string): Promise<{ template: CompiledTemplate; created: boolean }> {
    const previous = this.#inFlight.get(key);
    const run = (async () => {
      if (previous) await previous.catch(() => {});
      if (this.#loading) await this.#loading.catch(() => {});
      return this.#load(key);
    })();
    this.#inFlight.set(key, run);
    const cleanup = (): void => {
      if (this.#inFlight.get(key) === run) this.#inFlight.delete(key);
    };
    run.then(cleanup, cleanup);
    return run;
  }

  async #load(key: string): Promise<{ template: CompiledTemplate; created: boolean }> {
    const row = await this.#store.get(key);
    if (row === undefined) throw new TemplateNotFoundError(key, this.#map.delete(key));
    const template = compileMessageTemplate(key, row.template, { maxBytes: this.#templateSize, kind: row.kind });
    // Checked after the read and in the same synchronous step as the insert, so concurrent
    // TSets of different new keys cannot together exceed tableSize.
    const created = !this.#map.has(key);
    if (created && this.#map.size >= this.#tableSize) throw new TableFullError();
    this.#map.set(key, template);
    return { template, created };
  }
}
