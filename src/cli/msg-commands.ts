/**
 * `mega <name> msg show <msgid>` and `mega <name> msg list`: the message ledger. With the daemon
 * running they ask it over its control socket (`msg-show`, `msg-list`), so changes it has not
 * written to the database yet are included; with it stopped they read the `{table_prefix}message`
 * table of the `[pdo]` store directly.
 */

import { InvalidArgumentError, type Command } from 'commander';
import { pdoOptions, type MegaConfig } from '../config/config.js';
import { runningPid } from '../config/service-files.js';
import { ledgerJournalDir, openLedgerStore, StoppedLedger } from '../ledger/index.js';
import { controlRequest } from '../server/control.js';
import { checkMessageFilter, MESSAGE_LIST_DEFAULT, MESSAGE_LIST_MAX, type AnswerOf, type ControlRequest } from '../server/control-protocol.js';
import { isMsgid, MESSAGE_STATES, type LedgerReader, type MessageFilter, type MessageRecord } from '../protocol/index.js';
import { BadRequestError } from '../errors.js';
import { CliFailure } from './failure.js';
import { loadServiceConfig, withConfigDir, type ConfigFlags } from './daemon-link.js';
import { say } from './output.js';

interface ShowFlags extends ConfigFlags {
  json?: boolean;
}

interface ListFlags extends ShowFlags {
  openid?: string;
  state?: string;
  since?: number;
  limit?: string;
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--since`: a duration ago (`90s`, `30m`, `2h`, `7d`) or an ISO 8601 time (`2026-12-02`,
 * `2026-12-02T08:00:00Z`; without a zone it is local time, as Date reads it). Returns ms since
 * the epoch.
 */
export function parseSince(text: string, now = Date.now()): number {
  const ago = /^(\d+)([smhd])$/.exec(text);
  if (ago) return now - Number(ago[1]) * UNIT_MS[ago[2]!]!;
  const at = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(text) ? Date.parse(text) : NaN;
  if (!Number.isFinite(at) || at < 0) {
    throw new InvalidArgumentError('expected a time ago (90s, 30m, 2h, 7d) or an ISO time (2026-12-02, 2026-12-02T08:00:00Z)');
  }
  return at;
}

export function registerMsgCommands(program: Command, name: string): void {
  const msg = program.command('msg').description("the message ledger: every accepted message's state, by msgid");
  withConfigDir(msg.command('show <msgid>').description("one message's record: state, attempts, WeChat msgid, errcode, times; exit 1 when unknown"))
    .option('--json', 'print the record as JSON')
    .action((msgid: string, o: ShowFlags) => msgShow(name, msgid, o));
  withConfigDir(msg.command('list').description('messages, newest first, optionally by openid, state and time'))
    .option('--openid <openid>', 'only messages to this openid')
    .option('--state <state>', `only messages in this state: ${MESSAGE_STATES.join(', ')}`)
    .option('--since <time>', 'only messages queued since then: a time ago (30m, 2h, 7d) or an ISO time (2026-12-02T08:00:00Z)', (t: string) => parseSince(t))
    .option('--limit <n>', `at most n messages, 1-${MESSAGE_LIST_MAX} (default ${MESSAGE_LIST_DEFAULT})`)
    .option('--json', 'print as JSON (an array of records)')
    .action((o: ListFlags) => msgList(name, o));
}

function daemonCall<R extends ControlRequest>(config: MegaConfig, request: R): Promise<AnswerOf<R['cmd']>> {
  return controlRequest(config.server.controlSocket, request, 30000).catch((err: unknown) => {
    throw new CliFailure(`${config.name}: ${err instanceof Error ? err.message : String(err)}`);
  });
}

/** The table and what the journal holds over it, for a stopped daemon: nobody else writes them meanwhile. */
async function withStoppedLedger<T>(config: MegaConfig, fn: (ledger: LedgerReader) => Promise<T>): Promise<T> {
  if (!config.ledger.enabled) throw new CliFailure(`${config.name}: ledger disabled ([ledger] enabled = 0)`);
  const store = openLedgerStore(pdoOptions(config));
  try {
    await store.init();
    return await fn(new StoppedLedger(store, ledgerJournalDir(config)));
  } finally {
    await store.close().catch(() => undefined);
  }
}

function running(config: MegaConfig): boolean {
  return runningPid(config.server.pidFile) !== undefined;
}

export async function msgShow(name: string, msgid: string, options: ShowFlags): Promise<void> {
  if (!isMsgid(msgid)) throw new CliFailure(`msgid must be 1-64 characters of [A-Za-z0-9_-], got ${JSON.stringify(msgid)}`);
  const config = loadServiceConfig(name, options.configDir);
  const record = running(config)
    ? await daemonCall(config, { cmd: 'msg-show', msgid })
    : await withStoppedLedger(config, async (l) => (await l.get(msgid)) ?? null);
  if (!record) throw new CliFailure(`no message ${msgid} in the ledger of ${name}`);
  if (options.json) return say(JSON.stringify(record, null, 2));
  say(formatRecord(record));
}

export async function msgList(name: string, options: ListFlags): Promise<void> {
  let filter: MessageFilter;
  try {
    filter = checkMessageFilter({
      openid: options.openid,
      state: options.state,
      since: options.since,
      limit: options.limit === undefined ? undefined : /^\d+$/.test(options.limit) ? Number(options.limit) : NaN,
    });
  } catch (err) {
    if (err instanceof BadRequestError) throw new CliFailure(err.message.replace(/^(openid|state|since|limit)\b/, '--$1'));
    throw err;
  }
  filter.limit ??= MESSAGE_LIST_DEFAULT;
  const config = loadServiceConfig(name, options.configDir);
  const records = running(config) ? await daemonCall(config, { cmd: 'msg-list', filter }) : await withStoppedLedger(config, (l) => l.list(filter));
  if (options.json) return say(JSON.stringify(records, null, 2));
  if (records.length === 0) return say('no messages');
  say(['queued', 'msgid', 'state', 'openid', 'key', 'attempts', 'errcode', 'errmsg'].join('\t'));
  for (const r of records) {
    say([time(r.queuedAt), r.msgid, r.state, r.openid, r.key, r.attempts, r.errcode ?? '-', r.errmsg ?? '-'].join('\t'));
  }
  say(`${records.length} message(s)${records.length === filter.limit ? ` (the newest ${filter.limit}; --limit for more)` : ''}`);
}

function time(ms: number | null): string {
  return ms === null || ms === 0 ? '-' : new Date(ms).toISOString();
}

function formatRecord(r: MessageRecord): string {
  const rows: Array<[string, string | number]> = [
    ['msgid', r.msgid],
    ['state', r.state],
    ['openid', r.openid],
    ['template key', r.key],
    ['kind', r.kind],
    ['attempts', r.attempts],
    ['wechat msgid', r.wechatMsgid ?? '-'],
    ['errcode', r.errcode === null ? '-' : `${r.errcode}${r.errmsg ? ` ${r.errmsg}` : ''}`],
    ['queued', time(r.queuedAt)],
    ['sent', time(r.sentAt)],
    ['final', time(r.finalAt)],
  ];
  const lines = rows.map(([label, value]) => `${(label + ':').padEnd(14)}${value}`);
  // the openid's, for every template: the ledger knows a message's template key, not its WeChat template id
  if (r.subscriptions && r.subscriptions.length > 0) {
    lines.push(`subscriptions of ${r.openid} (latest per template id, all templates):`);
    for (const s of r.subscriptions) lines.push(`  ${s.templateId}\t${s.status}\t${s.event}\t${time(s.at)}`);
  }
  return lines.join('\n');
}
