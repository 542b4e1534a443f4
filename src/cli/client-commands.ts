/**
 * `mega <name> push|send|tset` (requests to the daemon over its TCP port, with MegaClient) and
 * `mega <name> template list|get|set|rm|check` (the template store of the config, then a TSet to the
 * daemon when it runs).
 */

import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { pdoOptions, type MegaConfig } from '../config/config.js';
import { runningPid } from '../config/service-files.js';
import type { MegaClient, MegaResult } from '../client/index.js';
import { encodePush, type Variables } from '../protocol/index.js';
import { compileMessageTemplate, ignoredTemplateFields, openTemplateStore, type TemplateStore } from '../templates/index.js';
import { MESSAGE_KINDS, isMessageKind, type MessageKind } from '../wechat/index.js';
import { BadRequestError, InvalidTemplateError, MegaError } from '../errors.js';
import { CliFailure } from './failure.js';
import {
  addressGiven,
  connectDaemon,
  loadServiceConfig,
  optionalServiceConfig,
  resolveDaemonLink,
  withConfigDir,
  withDaemonLink,
  type ClientExtras,
  type ConfigFlags,
  type LinkFlags,
} from './daemon-link.js';
import { say, errorText } from './output.js';
import { templateCheck } from './template-check.js';

const TEMPLATE_KEY = /^[\x21-\x7e]{1,32}$/;
const TITLE_MAX_CHARS = 100;
/** A well-formed placeholder at the start of the text: `${NAME}`, NAME of [A-Za-z0-9_.-] (as src/templates/render.ts). */
const PLACEHOLDER_AT = /\$\{[A-Za-z0-9_.-]+\}/y;

interface ConnectionFlags extends LinkFlags {
  timeout?: string;
}

interface MessageFlags extends ConnectionFlags {
  data?: string;
  msgid?: string;
}

export function registerClientCommands(program: Command, name: string): void {
  const withConnection = (command: Command): Command =>
    withDaemonLink(command).option('--timeout <ms>', 'give up after this many ms without an answer (default 30000)');

  withConnection(
    program
      .command('push <openid> <key>')
      .description('queue a template message; exit 0 once the daemon answered 200 (durably queued)')
      .option('--data <json>', 'template variables as a JSON object')
      .option('--msgid <id>', "client message id (WeChat's client_msg_id), 1-64 of [A-Za-z0-9_-]"),
  ).action((openid: string, key: string, o: MessageFlags) => message(name, 'push', openid, key, o));

  withConnection(
    program
      .command('send <openid> <key>')
      .description("send a template message and print WeChat's answer; exit 0 when WeChat accepted it")
      .option('--data <json>', 'template variables as a JSON object')
      .option('--msgid <id>', "client message id (WeChat's client_msg_id), 1-64 of [A-Za-z0-9_-]"),
  ).action((openid: string, key: string, o: MessageFlags) => message(name, 'send', openid, key, o));

  withConnection(
    program.command('tset <key>').description('make the daemon (re)load template <key> from its database'),
  ).action((key: string, o: ConnectionFlags) => tsetCommand(name, key, o));

  const template = program.command('template').description('the templates in the [pdo] store of the config');
  withConfigDir(template.command('list').description('list templates: key, title, last update'))
    .option('--json', 'print as JSON')
    .action((o: ConfigFlags & { json?: boolean }) => templateList(name, o));
  withConfigDir(template.command('get <key>').description('print the template JSON as stored')).action((key: string, o: ConfigFlags) =>
    templateGet(name, key, o),
  );
  withConfigDir(template.command('check').description("compare every template with the account's templates at WeChat: template_id and data keys"))
    .option('--json', 'print as JSON')
    .action((o: ConfigFlags & { json?: boolean }) => templateCheck(name, o));
  withConnection(
    template
      .command('set <key>')
      .description('check and store a template, then TSet it when the daemon runs')
      .requiredOption('--file <file>', 'the template JSON (- for standard input)')
      .option('--title <title>', 'a title for operators (kept as it is when omitted)')
      .option('--kind <kind>', `which message: ${MESSAGE_KINDS.join(', ')} (new rows: template; kept as it is when omitted)`, parseKind),
  ).action((key: string, o: ConnectionFlags & { file: string; title?: string }) => templateSet(name, key, o));
  withConnection(
    template.command('rm <key>').description('delete a template from the store, then TSet it so a running daemon drops it'),
  ).action((key: string, o: ConnectionFlags) => templateRm(name, key, o));
}

// ------------------------------------------------------------------ connecting

function parseTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = Number(text);
  if (!/^\d+$/.test(text) || ms < 1 || ms > 2 ** 31 - 1) throw new CliFailure(`--timeout must be a number of milliseconds, got ${JSON.stringify(text)}`);
  return ms;
}

/** Connects (daemon-link.ts), runs one request, closes. Connection failures become CliFailure (exit 1). */
async function withClient(
  name: string,
  o: ConnectionFlags,
  config: MegaConfig | undefined,
  fn: (client: MegaClient) => Promise<MegaResult>,
): Promise<MegaResult> {
  const timeoutMs = parseTimeout(o.timeout);
  const link = await resolveDaemonLink(name, o, config);
  const options: ClientExtras = { reconnect: false, window: 16 };
  if (timeoutMs !== undefined) options.timeoutMs = timeoutMs;
  const client = await connectDaemon(link, options);
  try {
    return await fn(client);
  } catch (err) {
    if (err instanceof BadRequestError) throw err;
    throw new CliFailure(errorText(err));
  } finally {
    client.destroy();
  }
}

function printResult(result: MegaResult): void {
  say(`result ${result.code}${result.message ? ` ${result.message}` : ''}`);
}

/** `--data`: a JSON object (or null); anything else stops the command before it connects. */
function parseData(text: string | undefined): Variables {
  if (text === undefined) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CliFailure(`--data is not valid JSON: ${errorText(err)}`);
  }
  if (value !== null && (typeof value !== 'object' || Array.isArray(value))) {
    throw new CliFailure(`--data must be a JSON object of template variables (or null), got ${Array.isArray(value) ? 'an array' : typeof value}`);
  }
  return value as Variables;
}

async function message(name: string, kind: 'push' | 'send', openid: string, key: string, o: MessageFlags): Promise<void> {
  const data = parseData(o.data);
  // The protocol's own checks of openid, key and msgid, before connecting.
  encodePush(1, openid, key, data, o.msgid);
  const config = optionalServiceConfig(name, o);
  const result = await withClient(name, o, config, (client) =>
    client[kind](openid, key, data, o.msgid === undefined ? undefined : { msgid: o.msgid }),
  );
  printResult(result);
  if (!result.ok) throw new CliFailure(`${kind} failed with result ${result.code}`);
}

async function tsetCommand(name: string, key: string, o: ConnectionFlags): Promise<void> {
  const config = optionalServiceConfig(name, o);
  const result = await withClient(name, o, config, (client) => client.tset(key));
  printResult(result);
  if (!result.ok) throw new CliFailure(`tset failed with result ${result.code}`);
}

// ------------------------------------------------------------------ templates

async function withStore<T>(config: MegaConfig, fn: (store: TemplateStore) => Promise<T>): Promise<T> {
  const store = openTemplateStore(pdoOptions(config));
  try {
    await store.init();
    return await fn(store);
  } finally {
    await store.close().catch(() => undefined);
  }
}

function formatTime(unixSeconds: number): string {
  return unixSeconds > 0 ? new Date(unixSeconds * 1000).toISOString().replace('.000Z', 'Z') : '-';
}

async function templateList(name: string, o: ConfigFlags & { json?: boolean }): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  const rows = await withStore(config, (store) => store.list());
  if (o.json) {
    say(JSON.stringify(rows.map((r) => ({ key: r.key, kind: r.kind, title: r.title, createdAt: r.createdAt, updatedAt: r.updatedAt })), null, 2));
    return;
  }
  if (rows.length === 0) {
    say(`no templates in ${config.pdo.tablePrefix}wechat_template`);
    return;
  }
  const table = [['KEY', 'KIND', 'TITLE', 'UPDATED'], ...rows.map((r) => [r.key, r.kind, r.title, formatTime(r.updatedAt)])];
  const widths = [0, 1, 2].map((c) => Math.max(...table.map((row) => [...row[c]!].length)));
  for (const row of table) {
    say(row.map((cell, c) => (c < 3 ? cell + ' '.repeat(widths[c]! - [...cell].length) : cell)).join('  '));
  }
}

async function templateGet(name: string, key: string, o: ConfigFlags): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  const row = await withStore(config, (store) => store.get(key));
  if (!row) throw new CliFailure(`no template ${JSON.stringify(key)}`);
  process.stdout.write(row.template.endsWith('\n') ? row.template : row.template + '\n');
}

/**
 * The daemon a template change is TSet to, as messages name it: this host's running daemon, or
 * the one at the address the flags give (another host's); undefined when there is none to tell.
 */
function daemonToTell(name: string, config: MegaConfig, o: ConnectionFlags): string | undefined {
  const pid = runningPid(config.server.pidFile);
  if (pid !== undefined) return `${name} (pid ${pid})`;
  return addressGiven(o) ? name : undefined;
}

/**
 * Deletes the row, then, when the daemon runs, TSets the key so the daemon drops its cached
 * copy: from then on a Push of the key is answered `template key not exists`, and its queued
 * jobs fail for good with that reason.
 */
async function templateRm(name: string, key: string, o: ConnectionFlags): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  const removed = await withStore(config, (store) => store.remove(key));
  if (!removed) throw new CliFailure(`no template ${JSON.stringify(key)}`);
  const daemon = daemonToTell(name, config, o);
  if (daemon === undefined) {
    say(`template ${key} removed`);
    return;
  }
  let result: MegaResult;
  try {
    result = await withClient(name, o, config, (client) => client.tset(key));
  } catch (err) {
    throw new CliFailure(`template ${key} removed, but the TSet telling ${daemon} to drop it failed: ${errorText(err)}; run \`mega ${name} tset ${key}\``);
  }
  // `template key not exists` is the answer that means "not cached any more"; 200 would mean the row is back.
  if (result.code !== 400 || result.message !== 'template key not exists') {
    throw new CliFailure(`template ${key} removed, but ${daemon} answered the TSet with result ${result.code}${result.message ? ` ${result.message}` : ''}`);
  }
  say(`template ${key} removed; ${daemon} no longer sends it`);
}

/**
 * Every `${` in the template's strings (values and object keys) that does not start a
 * well-formed `${NAME}` placeholder, described with where it is. The daemon would send such
 * text unchanged, which is almost always a typo.
 */
export function placeholderProblems(template: unknown): string[] {
  const problems: string[] = [];
  const checkText = (text: string, where: string): void => {
    for (let i = text.indexOf('${'); i >= 0; i = text.indexOf('${', i + 1)) {
      PLACEHOLDER_AT.lastIndex = i;
      if (PLACEHOLDER_AT.test(text)) {
        i = PLACEHOLDER_AT.lastIndex - 1;
        continue;
      }
      const close = text.indexOf('}', i);
      if (close < 0) {
        problems.push(`${where}: placeholder ${JSON.stringify(clip(text.slice(i)))} is not closed with }`);
        break;
      }
      problems.push(`${where}: malformed placeholder ${JSON.stringify(clip(text.slice(i, close + 1)))}: NAME must be one or more of A-Z a-z 0-9 _ . -`);
      i = close - 1;
    }
  };
  const walk = (value: unknown, where: string): void => {
    if (typeof value === 'string') {
      checkText(value, where);
    } else if (Array.isArray(value)) {
      value.forEach((item, i) => walk(item, `${where}[${i}]`));
    } else if (value !== null && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) {
        const at = where ? `${where}.${k}` : k;
        if (k.includes('${')) problems.push(`${at}: placeholders are not filled in object keys`);
        walk(v, at);
      }
    }
  };
  walk(template, '');
  return problems;
}

function clip(text: string): string {
  return text.length > 40 ? text.slice(0, 40) + '…' : text;
}

function readTemplateFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CliFailure(`cannot read ${file === '-' ? 'standard input' : file}: ${(err as NodeJS.ErrnoException).code ?? errorText(err)}`);
  }
  // An editor's byte order mark would make the JSON invalid for the daemon.
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function parseKind(text: string): MessageKind {
  if (!isMessageKind(text)) throw new InvalidArgumentError(`expected ${MESSAGE_KINDS.join(', ')}`);
  return text;
}

async function templateSet(name: string, key: string, o: ConnectionFlags & { file: string; title?: string; kind?: MessageKind }): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  const refuse = (why: string): never => {
    throw new CliFailure(`template ${key} not saved: ${why}`);
  };
  if (!TEMPLATE_KEY.test(key)) refuse('the key must be 1-32 printable ASCII characters without spaces');
  if (o.title !== undefined && [...o.title].length > TITLE_MAX_CHARS) refuse(`the title is longer than ${TITLE_MAX_CHARS} characters`);
  const text = readTemplateFile(o.file);
  // without --kind an existing row keeps its kind: the checks below are that kind's
  const kind = o.kind ?? (await withStore(config, (store) => store.get(key)))?.kind ?? 'template';
  let placeholders: readonly string[];
  let ignored: string[];
  try {
    const compiled = compileMessageTemplate(key, text, { maxBytes: config.server.templateSize, kind });
    placeholders = compiled.placeholders;
    ignored = ignoredTemplateFields(compiled);
  } catch (err) {
    if (err instanceof InvalidTemplateError) refuse(err.message);
    throw err;
  }
  const problems = placeholderProblems(JSON.parse(text));
  if (problems.length > 0) refuse(`malformed placeholders (a placeholder is \${NAME}):\n  ${problems.join('\n  ')}`);

  await withStore(config, (store) => store.put({ key, title: o.title, template: text, ...(o.kind ? { kind: o.kind } : {}) }));
  const bytes = Buffer.byteLength(text, 'utf8');
  say(`template ${key} saved (${bytes} bytes; placeholders: ${placeholders!.length > 0 ? placeholders!.join(', ') : 'none'})`);
  if (ignored!.length > 0) say(`warning: WeChat no longer shows ${ignored!.join(', ')} in template messages (since 4 May 2023); that text will not appear`);

  const daemon = daemonToTell(name, config, o);
  if (daemon === undefined) {
    say(`${name} is not running: it loads the template when it starts`);
    return;
  }
  let result: MegaResult;
  try {
    result = await withClient(name, o, config, (client) => client.tset(key));
  } catch (err) {
    throw new CliFailure(`template ${key} saved, but the TSet to ${daemon} failed: ${err instanceof MegaError || err instanceof CliFailure ? err.message : errorText(err)}`);
  }
  if (!result.ok) {
    throw new CliFailure(`template ${key} saved, but ${daemon} refused the TSet: result ${result.code}${result.message ? ` ${result.message}` : ''}`);
  }
  say(`${daemon} reloaded ${key}: result ${result.code}`);
}
