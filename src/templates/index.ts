/**
 * Templates: the store operators edit (SQLite or MySQL), the cache TSet fills, and the
 * compile-once / render-per-message substitution (docs/TEMPLATES.md).
 */
export { parseDsn, type ParsedDsn, type MysqlDsn, type SqliteDsn } from '../db/index.js';
export { openTemplateStore, type TemplateStore, type TemplateRow, type TemplatePut, type StoreOptions } from './store.js';
export { ignoredTemplateFields } from './ignored-fields.js';
export {
  compileTemplate,
  renderTemplate,
  missingVariables,
  missingMessage,
  OPENID_PLACEHOLDER,
  MAX_TEMPLATE_DEPTH,
  type CompiledTemplate,
  type CompileOptions,
  type RenderOptions,
  type MissingVariable,
  type TemplateNode,
  type ValueNode,
  type TextNode,
  type ObjectNode,
  type ArrayNode,
} from './render.js';
export { TemplateCache, compileMessageTemplate, type TemplateCacheOptions, type LoadReport } from './cache.js';
