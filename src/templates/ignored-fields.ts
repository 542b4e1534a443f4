import type { CompiledTemplate, ObjectNode, TemplateNode } from './render.js';

/**
 * The fields of a template message WeChat no longer shows (since 4 May 2023): `data.first`,
 * `data.remark` and every `color`. Sending them does no harm, but an operator editing the
 * template should know the text will not appear. Empty for the subscribe kinds (their data has
 * no such fields to begin with) and for a template without them.
 */
export function ignoredTemplateFields(t: CompiledTemplate): string[] {
  if (t.kind !== 'template') return [];
  const out: string[] = [];
  const data = field(t.root, 'data');
  if (data?.k !== 'o') return out;
  for (const name of ['first', 'remark']) if (field(data, name)) out.push(`data.${name}`);
  data.keys.forEach((key, i) => {
    const value = data.vals[i]!;
    if (value.k === 'o' && field(value, 'color')) out.push(`data.${key}.color`);
  });
  return out;
}

function field(o: ObjectNode, name: string): TemplateNode | undefined {
  const i = o.keys.indexOf(name);
  return i < 0 ? undefined : o.vals[i];
}
