/**
 * The templates as the HTTP side edits them (GET/PUT/DELETE /api/v1/templates, preview): rows of
 * the `[pdo]` store, saved through the same TSet a client or `mega <name> template set` uses, so an
 * edit reaches every daemon of the service before the answer.
 */

import { BadRequestError, TemplateNotFoundError } from '../errors.js';
import { MESSAGE_KINDS, isMessageKind, type MessageKind } from '../wechat/index.js';
import type { TemplateOps, TemplateView } from '../http/index.js';
import { ResultCode } from '../protocol/index.js';
import { compileMessageTemplate, missingVariables, renderTemplate, type MissingVariable, type TemplateCache, type TemplateRow, type TemplateStore } from '../templates/index.js';

export interface TemplateOpsOptions {
  store: TemplateStore;
  cache: TemplateCache;
  /** The daemon's TSet (here and on the service's other daemons). */
  tset(key: string): Promise<{ code: number; message: string }>;
  missingVariable: MissingVariable;
}

const iso = (unixSeconds: number): string | null => (unixSeconds > 0 ? new Date(unixSeconds * 1000).toISOString() : null);

export function templateOps(o: TemplateOpsOptions): TemplateOps {
  const view = (row: TemplateRow): TemplateView => ({
    key: row.key,
    title: row.title,
    template: row.template,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
    loaded: o.cache.has(row.key),
    kind: row.kind,
  });
  const compile = (key: string, source: string, kind: MessageKind) => compileMessageTemplate(key, source, { maxBytes: o.cache.templateSize, kind });

  return {
    list: async () => (await o.store.list()).map(view),

    get: async (key) => {
      const row = await o.store.get(key);
      if (!row) throw new TemplateNotFoundError(key);
      return view(row);
    },

    set: async (key, row) => {
      if (row.kind !== undefined && !isMessageKind(row.kind)) throw new BadRequestError(`kind must be one of ${MESSAGE_KINDS.join(', ')}`);
      // refused before anything is written: a broken edit never reaches the table
      compile(key, row.template, (row.kind as MessageKind | undefined) ?? (await o.store.get(key))?.kind ?? 'template');
      await o.store.put({ key, template: row.template, ...(row.title !== undefined ? { title: row.title } : {}), ...(row.kind !== undefined ? { kind: row.kind } : {}) });
      return o.tset(key);
    },

    remove: async (key) => {
      if (!(await o.store.remove(key))) throw new TemplateNotFoundError(key);
      try {
        return await o.tset(key);
      } catch (err) {
        // the row is gone, so TSet drops the key everywhere: that is what was asked
        if (err instanceof TemplateNotFoundError) return { code: ResultCode.OK, message: 'dropped' };
        throw err;
      }
    },

    preview: async ({ key, template, variables, openid }) => {
      let source = template;
      const name = key ?? 'preview';
      const row = key === undefined ? undefined : await o.store.get(key);
      if (source === undefined) {
        if (key === undefined) throw new TemplateNotFoundError('(none: give key or template)');
        if (!row) throw new TemplateNotFoundError(key);
        source = row.template;
      }
      const compiled = compile(name, source, row?.kind ?? 'template');
      // 'reject' would only refuse; the preview shows what is missing and the text as 'keep' leaves it
      const missing = missingVariables(compiled, variables);
      const message = renderTemplate(compiled, openid, variables, { missing: o.missingVariable === 'reject' ? 'keep' : o.missingVariable });
      return { message, missing };
    },
  };
}
