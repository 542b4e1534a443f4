import { CONFIG_KEYS, type KeySpec } from './keys.js';

/**
 * The reference tables of docs/CONFIGURATION.md, made from the key table: one row per key that
 * has an effect, then the keys accepted only for compatibility. A test compares the file with
 * this, so the docs cannot drift from the code (`npm run docs:config` rewrites them).
 */
export function configReferenceMarkdown(keys: readonly KeySpec[] = CONFIG_KEYS): string {
  const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const rows = ['| key | default | value | meaning |', '|---|---|---|---|'];
  for (const k of keys) {
    if (k.prop === undefined) continue;
    const listKey = k.section === 'server' && k.key === 'listen' ? 'listen[]' : k.key;
    let help = k.help;
    if (k.env) help += `. Env \`${k.env}\` wins over the file`;
    if (k.secret) help += '. Never logged or echoed';
    rows.push(`| \`[${k.section}] ${listKey}\` | ${cell(k.defaultText)} | ${cell(k.type)} | ${cell(help)} |`);
  }
  const compat = keys.filter((k) => k.prop === undefined);
  const lines = [...rows, '', 'Accepted for compatibility with the original\'s files, with **no effect**:', ''];
  for (const k of compat) lines.push(`- \`[${k.section}] ${k.key}\`: ${k.help.replace(/^accepted for compatibility, \*\*no effect\*\*: /, '')}`);
  return lines.join('\n') + '\n';
}

export const CONFIG_DOC_BEGIN = '<!-- config-table:begin (made by `npm run docs:config` from src/config/keys.ts; do not edit by hand) -->';
export const CONFIG_DOC_END = '<!-- config-table:end -->';

/** `doc` with the text between the markers replaced by the current tables. */
export function withConfigReference(doc: string): string {
  const begin = doc.indexOf(CONFIG_DOC_BEGIN);
  const end = doc.indexOf(CONFIG_DOC_END);
  if (begin < 0 || end < begin) throw new Error('the config-table markers are missing');
  return doc.slice(0, begin + CONFIG_DOC_BEGIN.length) + '\n' + configReferenceMarkdown() + doc.slice(end);
}
