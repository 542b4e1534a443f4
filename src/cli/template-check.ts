/**
 * `mega <name> template check`: compares the rows of the template store with the account's own
 * templates at WeChat (the private template list for `template` rows, the subscription template
 * list for `subscribe`/`miniprogram` rows), so that a wrong template_id (40037) or a data key
 * WeChat's template does not have (47003 on the subscribe endpoints) shows before the first send.
 */

import { pdoOptions, type MegaConfig } from '../config/config.js';
import { openTemplateStore, type TemplateRow } from '../templates/index.js';
import { WechatClient, type TemplateListResult } from '../wechat/client.js';
import type { MessageKind } from '../wechat/kinds.js';
import { redactLiterals, redactSecrets } from '../wechat/redact.js';
import { TokenError } from '../errors.js';
import { CliFailure } from './failure.js';
import { loadServiceConfig, type ConfigFlags } from './daemon-link.js';
import { errorText, say } from './output.js';

/** One template as WeChat lists it: its id and the `content` whose `{{name.DATA}}` are its data keys. */
export interface WechatTemplateDef {
  id: string;
  title?: string;
  content: string;
}

/** The lists a check compares against; a list left out leaves the rows that need it not checked. */
export interface TemplateLists {
  /** `get_all_private_template`: for rows of kind `template`. */
  private?: readonly WechatTemplateDef[];
  /** `wxaapi/newtmpl/gettemplate`: for rows of kind `subscribe` and `miniprogram`. */
  subscribe?: readonly WechatTemplateDef[];
}

export type CheckStatus = 'ok' | 'unknown_template' | 'keys_differ' | 'invalid' | 'not_checked';

export interface RowCheck {
  key: string;
  kind: MessageKind;
  /** The row's top-level template_id; null when it has none. */
  templateId: string | null;
  status: CheckStatus;
  /** Keys of the row's `data` that WeChat's template lacks. */
  extraKeys: string[];
  /** Keys of WeChat's template that the row's `data` lacks. */
  missingKeys: string[];
  /** Why the row is `invalid` or `not_checked`. */
  reason?: string;
}

/** Statuses that make the command exit 1. */
const PROBLEMS: readonly CheckStatus[] = ['unknown_template', 'keys_differ', 'invalid'];

const DATA_KEY = /\{\{\s*([A-Za-z0-9_]+)\.DATA\s*\}\}/g;

/** The data keys a WeChat template's `content` names (`{{keyword1.DATA}}` → `keyword1`), in order, each once. */
export function contentKeys(content: string): string[] {
  return [...new Set([...content.matchAll(DATA_KEY)].map((m) => m[1]!))];
}

function listFor(kind: MessageKind, lists: TemplateLists): { list: readonly WechatTemplateDef[] | undefined; name: string } {
  return kind === 'template'
    ? { list: lists.private, name: "the private template list (get_all_private_template)" }
    : { list: lists.subscribe, name: "the subscription template list (wxaapi/newtmpl/gettemplate)" };
}

/** Compares each row with the list of its kind. Pure: no I/O. */
export function checkTemplates(rows: readonly Pick<TemplateRow, 'key' | 'kind' | 'template'>[], lists: TemplateLists): RowCheck[] {
  return rows.map((row) => {
    const out: RowCheck = { key: row.key, kind: row.kind, templateId: null, status: 'ok', extraKeys: [], missingKeys: [] };
    let parsed: unknown;
    try {
      parsed = JSON.parse(row.template);
    } catch {
      return { ...out, status: 'invalid', reason: 'the template is not valid JSON' };
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return { ...out, status: 'invalid', reason: 'the template is not a JSON object' };
    }
    const t = parsed as Record<string, unknown>;
    const id = t['template_id'];
    if (typeof id !== 'string' || id === '') return { ...out, status: 'invalid', reason: 'the template has no template_id' };
    out.templateId = id;
    // The id is only known once a request fills it in.
    if (id.includes('${')) return { ...out, status: 'not_checked', reason: 'template_id holds a placeholder' };
    const { list, name } = listFor(row.kind, lists);
    if (list === undefined) return { ...out, status: 'not_checked', reason: `${name} was not fetched` };
    const def = list.find((d) => d.id === id);
    if (def === undefined) return { ...out, status: 'unknown_template', reason: `not in ${name}` };
    const data = t['data'];
    const rowKeys = data !== null && typeof data === 'object' && !Array.isArray(data) ? Object.keys(data) : [];
    const wechatKeys = contentKeys(def.content);
    out.extraKeys = rowKeys.filter((k) => !wechatKeys.includes(k));
    out.missingKeys = wechatKeys.filter((k) => !rowKeys.includes(k));
    if (out.extraKeys.length > 0 || out.missingKeys.length > 0) out.status = 'keys_differ';
    return out;
  });
}

/** The lines printed for one row's problems (one per difference), or its "not checked" line; none when it is ok. */
export function describeCheck(c: RowCheck): string[] {
  const where = `${c.key} (${c.kind}${c.templateId !== null ? `, template_id ${c.templateId}` : ''})`;
  switch (c.status) {
    case 'ok':
      return [];
    case 'not_checked':
      return [`${where}: not checked: ${c.reason}`];
    case 'invalid':
      return [`${where}: ${c.reason}`];
    case 'unknown_template':
      return [`${where}: no such template at WeChat (${c.reason}); sending would fail with 40037`];
    case 'keys_differ': {
      const lines: string[] = [];
      if (c.extraKeys.length > 0) lines.push(`${where}: data has ${c.extraKeys.join(', ')}, which WeChat's template lacks`);
      if (c.missingKeys.length > 0) lines.push(`${where}: WeChat's template has ${c.missingKeys.join(', ')}, which data lacks`);
      return lines;
    }
  }
}

export function isProblem(c: RowCheck): boolean {
  return PROBLEMS.includes(c.status);
}

// ------------------------------------------------------------------ the command

function listAnswer<T>(what: string, r: TemplateListResult<T>, token: string): T[] {
  if (r.errcode !== 0 || r.templates === undefined) {
    const errmsg = r.errmsg ? ` ${redactLiterals(redactSecrets(r.errmsg), [token])}` : '';
    throw new CliFailure(`cannot fetch the templates from WeChat: ${what} answered ${r.errcode}${errmsg}`);
  }
  return r.templates;
}

/** Fetches a token and the lists the rows' kinds need. */
async function fetchLists(config: MegaConfig, kinds: ReadonlySet<MessageKind>): Promise<TemplateLists> {
  const client = new WechatClient({ apiBase: config.wechat.apiBase, timeoutMs: config.wechat.timeoutMs, connections: 1 });
  try {
    // stable_token without force_refresh hands back the current token and leaves the one the
    // daemon holds valid (a /cgi-bin/token call would start expiring it), whatever token_endpoint says.
    const { accessToken } = await client.fetchToken('stable', config.wechat.appId, config.wechat.appSecret);
    const lists: TemplateLists = {};
    if (kinds.has('template')) {
      lists.private = listAnswer('get_all_private_template', await client.privateTemplates(accessToken), accessToken).map((t) => ({
        id: t.templateId,
        title: t.title,
        content: t.content,
      }));
    }
    if (kinds.has('subscribe') || kinds.has('miniprogram')) {
      lists.subscribe = listAnswer('wxaapi/newtmpl/gettemplate', await client.subscribeTemplates(accessToken), accessToken).map((t) => ({
        id: t.priTmplId,
        title: t.title,
        content: t.content,
      }));
    }
    return lists;
  } catch (err) {
    if (err instanceof CliFailure) throw err;
    // TokenError and WechatTransportError messages carry no secret or token.
    throw new CliFailure(`cannot fetch the templates from WeChat (${config.wechat.apiBase}): ${err instanceof TokenError ? err.message : errorText(err)}`);
  } finally {
    await client.close().catch(() => undefined);
  }
}

export async function templateCheck(name: string, o: ConfigFlags & { json?: boolean }): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  const store = openTemplateStore(pdoOptions(config));
  let rows: TemplateRow[];
  try {
    await store.init();
    rows = await store.list();
  } finally {
    await store.close().catch(() => undefined);
  }
  const checks = rows.length === 0 ? [] : checkTemplates(rows, await fetchLists(config, new Set(rows.map((r) => r.kind))));
  const problems = checks.filter(isProblem).length;
  if (o.json) {
    say(JSON.stringify({ ok: problems === 0, rows: checks }, null, 2));
  } else {
    for (const c of checks) for (const line of describeCheck(c)) say(line);
    const count = (s: CheckStatus): number => checks.filter((c) => c.status === s).length;
    say(`${checks.length} template${checks.length === 1 ? '' : 's'}: ${count('ok')} match WeChat, ${problems} do not, ${count('not_checked')} not checked`);
  }
  if (problems > 0) throw new CliFailure(`${problems} of ${checks.length} templates do not match WeChat's`);
}
