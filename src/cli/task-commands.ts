import os from 'node:os';
import { Command, InvalidArgumentError } from 'commander';
import { pdoOptions, type MegaConfig } from '../config/config.js';
import { taskDir } from '../config/service-files.js';
import type { MegaClient } from '../client/index.js';
import { openTemplateStore } from '../templates/index.js';
import {
  RecipientFileError,
  TaskRunner,
  TaskStateError,
  createProgressDisplay,
  createTask,
  describeProblems,
  formatDuration,
  openTaskStore,
  ownerAlive,
  pauseTask,
  RECIPIENT_FORMATS,
  type RecipientFormat,
  type TaskRow,
  type TaskStore,
} from '../tasks/index.js';

import { CliFailure } from './failure.js';
import { connectDaemon, loadServiceConfig, resolveDaemonLink, withConfigDir, withDaemonLink, type ConfigFlags, type LinkFlags } from './daemon-link.js';
import { say } from './output.js';

/**
 * `mega <name> task create|run|resume|pause|list|show`: bulk tasks (src/tasks).
 *
 * Tasks live in `{table_prefix}task` on the `[pdo] dsn`; a task's normalised recipient list and
 * failure report live in the `tasks/` folder beside the pid file (default `logs/tasks/`).
 */

/** Exit status of a run stopped by a signal: 128 + the signal's number, as shells report it. */
const SIGNAL_EXIT: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };
const MAX_TIMER_MS = 2 ** 31 - 1;
const ID_HELP = 'task id (a positive integer, as task create printed it)';

/** The `<id>` argument's parser: commander prints the refusal with the value and the argument's name. */
function parseId(text: string): number {
  if (!/^\d{1,10}$/.test(text) || Number(text) < 1) throw new InvalidArgumentError('A task id is a positive integer (see: task list).');
  return Number(text);
}

function parsePositive(max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < 1 || n > max) throw new InvalidArgumentError(`expected an integer from 1 to ${max}`);
    return n;
  };
}

function parseFormat(text: string): RecipientFormat {
  if (!(RECIPIENT_FORMATS as readonly string[]).includes(text)) throw new InvalidArgumentError(`expected ${RECIPIENT_FORMATS.join(', ')}`);
  return text as RecipientFormat;
}

export function openTaskStoreFor(config: MegaConfig): TaskStore {
  return openTaskStore(pdoOptions(config));
}

async function withStore<T>(config: MegaConfig, fn: (store: TaskStore) => Promise<T>): Promise<T> {
  const store = openTaskStoreFor(config);
  try {
    await store.init();
    return await fn(store);
  } finally {
    await store.close().catch(() => undefined);
  }
}

async function getTask(store: TaskStore, id: number): Promise<TaskRow> {
  const task = await store.get(id);
  if (!task) throw new CliFailure(`there is no task ${id}`);
  return task;
}

// ------------------------------------------------------------------ create

interface CreateOptions extends ConfigFlags {
  key: string;
  to: string;
  vars?: string;
  name?: string;
  format?: RecipientFormat;
  skipInvalid?: boolean;
  allowDuplicates?: boolean;
  json?: boolean;
}

async function createCommand(name: string, o: CreateOptions): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  // A key missing from the template table would only pause the task at its first send.
  const templates = openTemplateStore(pdoOptions(config));
  try {
    await templates.init();
    if (!(await templates.get(o.key))) throw new CliFailure(`there is no template ${JSON.stringify(o.key)} in ${templates.table} (${templates.location})`);
  } finally {
    await templates.close().catch(() => undefined);
  }
  await withStore(config, async (store) => {
    let created;
    try {
      created = await createTask({
        store,
        key: o.key,
        source: o.to,
        varsFile: o.vars,
        name: o.name,
        format: o.format,
        skipInvalid: o.skipInvalid,
        allowDuplicates: o.allowDuplicates,
        dir: taskDir(config),
      });
    } catch (err) {
      if (err instanceof RecipientFileError || err instanceof RangeError) throw new CliFailure(err.message);
      throw err;
    }
    const { task, recipients } = created;
    if (o.json) {
      say(JSON.stringify({ ...task, skippedInvalid: recipients.invalidCount, skippedDuplicates: recipients.duplicateCount }, null, 2));
      return;
    }
    say(`task ${task.id} created: ${task.total} recipients (${recipients.format}), template ${task.key}`);
    if (recipients.invalidCount > 0) {
      say(`  ${recipients.invalidCount} bad line(s) left out (--skip-invalid):\n${describeProblems(recipients.invalid, recipients.invalidCount)}`);
    }
    if (recipients.duplicateCount > 0) {
      say(`  ${recipients.duplicateCount} repeated openid(s) left out (each recipient gets one message; --allow-duplicates keeps them):\n${describeProblems(recipients.duplicates, recipients.duplicateCount)}`);
    }
    say(`  run it with: mega ${name} task run ${task.id}`);
  });
}

// ------------------------------------------------------------------ run / resume

interface RunOptions extends LinkFlags {
  window?: number;
  quiet?: boolean;
  plain?: boolean;
}

async function runCommand(name: string, id: number, o: RunOptions, resume: boolean): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  const window = o.window ?? 64;
  await withStore(config, async (store) => {
    const before = await getTask(store, id);
    if (before.status === 'done') {
      say(`task ${id} is already done: ${before.success} sent, ${before.fail} failed`);
      return;
    }
    const address = await resolveDaemonLink(name, o, config);
    const client: MegaClient = await connectDaemon(address, {
      window,
      timeoutMs: MAX_TIMER_MS,
      reconnect: { initialDelayMs: 100, maxDelayMs: 2000 },
    });
    client.on('error', () => undefined); // reconnection attempts report through the requests

    const notices: string[] = [];
    const display = createProgressDisplay({ quiet: o.quiet, plain: o.plain, label: `task ${id}` });
    let runner: TaskRunner | undefined;
    try {
      runner = await TaskRunner.claim({
        store,
        id,
        client,
        window,
        resume,
        onNotice: (t) => notices.push(t),
        onProgress: (p) => display.update(p),
      });
    } catch (err) {
      client.destroy();
      if (err instanceof TaskStateError || err instanceof RangeError) throw new CliFailure(err.message);
      throw err;
    }
    if (!runner) {
      await client.close();
      say(`task ${id} is already done`);
      return;
    }
    for (const n of notices.splice(0)) process.stderr.write(`mega: ${n}\n`);

    const task = runner.task;
    // --quiet: the outcome line is all that goes to stdout.
    if (!o.quiet) say(`task ${id}: sending ${task.key} to ${task.total - task.success - task.fail} of ${task.total} recipients via ${address.host}:${address.port} (${window} in flight); failures: ${task.report}`);
    let signal: string | undefined;
    const onSignal = (s: NodeJS.Signals): void => {
      signal ??= s;
      runner.stop(s);
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
    let outcome;
    try {
      outcome = await runner.run();
    } finally {
      for (const s of signals) process.off(s, onSignal);
      display.stop();
    }
    for (const n of notices) process.stderr.write(`mega: ${n}\n`);
    const t = outcome.task;
    const counts = `${t.success + t.fail}/${t.total} (${t.success} sent, ${t.fail} failed)`;
    switch (outcome.end) {
      case 'done':
        say(`task ${id} done: ${t.total} recipients, ${t.success} sent, ${t.fail} failed${t.fail > 0 ? `; failures: ${t.report}` : ''}`);
        return;
      case 'paused':
        say(`task ${id} ${outcome.status}${outcome.message ? ` (${outcome.message})` : ''} at ${counts}; continue with: mega ${name} task resume ${id}`);
        return;
      case 'stopped':
        throw new CliFailure(`task ${id} stopped (${signal ?? 'signal'}) at ${counts}; continue with: mega ${name} task run ${id}`, SIGNAL_EXIT[signal ?? 'SIGINT'] ?? 130);
      case 'paused-error':
        throw new CliFailure(`task ${id} ${outcome.status}: ${outcome.message}\n  progress saved at ${counts}; once the cause is fixed: mega ${name} task resume ${id}`);
      case 'lost':
        throw new CliFailure(`task ${id}: stopped without saving more: ${outcome.message}`);
    }
  });
}

// ------------------------------------------------------------------ pause / list / show

async function pauseCommand(name: string, id: number, o: ConfigFlags): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  await withStore(config, async (store) => {
    const by = `paused by ${os.userInfo().username}@${os.hostname()} at ${new Date().toISOString()}`;
    let result;
    try {
      result = await pauseTask(store, id, by);
    } catch (err) {
      if (err instanceof TaskStateError) throw new CliFailure(err.message);
      throw err;
    }
    const { before } = result;
    if (before.status === 'paused') return say(`task ${id} is already paused${before.message ? ` (${before.message})` : ''}`);
    if (before.status === 'running' && ownerAlive(before.owner, before.heartbeatAt)) {
      // Wait (a little) for the runner to notice, finish its answers in flight and let go.
      const deadline = Date.now() + 15_000;
      for (;;) {
        const row = await getTask(store, id);
        if (row.owner === '' || !ownerAlive(row.owner, row.heartbeatAt)) {
          return say(`task ${id} paused at ${row.success + row.fail}/${row.total}; continue with: mega ${name} task resume ${id}`);
        }
        if (Date.now() > deadline) {
          return say(`task ${id} marked paused; its runner (${row.owner}) stops once the answers in flight are back`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    say(`task ${id} paused (it was ${before.status}); continue with: mega ${name} task resume ${id}`);
  });
}

/** `52.3% (5234/10000)` */
function describeTaskProgress(t: TaskRow): string {
  const finished = t.success + t.fail;
  const pct = t.total === 0 ? 100 : (finished / t.total) * 100;
  return `${pct.toFixed(1)}% (${finished}/${t.total})`;
}

function when(unix: number): string {
  return unix === 0 ? '-' : new Date(unix * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** The status as people should read it: a `running` task whose runner is gone is `interrupted`. */
function shownStatus(t: TaskRow): string {
  if (t.status === 'running' && !ownerAlive(t.owner, t.heartbeatAt)) return 'interrupted';
  return t.status;
}

function taskJson(t: TaskRow): Record<string, unknown> {
  const { doneAbove, ...rest } = t;
  return { ...rest, finished: t.success + t.fail, doneAbove: doneAbove.length, shownStatus: shownStatus(t) };
}

async function listCommand(name: string, o: ConfigFlags & { json?: boolean; limit?: number }): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  await withStore(config, async (store) => {
    const tasks = await store.list(o.limit ?? 50);
    if (o.json) return say(JSON.stringify(tasks.map(taskJson), null, 2));
    if (tasks.length === 0) return say(`no tasks (create one with: mega ${name} task create --key KEY --to FILE)`);
    const rows = [['ID', 'STATUS', 'KEY', 'PROGRESS', 'SENT', 'FAILED', 'UPDATED', 'NAME']];
    for (const t of tasks) {
      rows.push([String(t.id), shownStatus(t), t.key, describeTaskProgress(t), String(t.success), String(t.fail), when(t.updatedAt), t.name]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) say(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  });
}

async function showCommand(name: string, id: number, o: ConfigFlags & { json?: boolean }): Promise<void> {
  const config = loadServiceConfig(name, o.configDir);
  await withStore(config, async (store) => {
    const t = await getTask(store, id);
    if (o.json) return say(JSON.stringify(taskJson(t), null, 2));
    const status = shownStatus(t);
    const running = status === 'running';
    const elapsed = t.startedAt === 0 ? undefined : (t.finishedAt || Math.floor(Date.now() / 1000)) - t.startedAt;
    const lines = [
      `task ${t.id}: ${t.name}`,
      `  status:     ${status}${t.message ? ` (${t.message})` : ''}${status === 'interrupted' ? `; continue with: mega ${name} task run ${t.id}` : ''}`,
      `  template:   ${t.key}`,
      `  progress:   ${describeTaskProgress(t)}`,
      `  sent:       ${t.success}`,
      `  failed:     ${t.fail}`,
      `  left:       ${t.total - t.success - t.fail}`,
      `  runner:     ${t.owner ? `${t.owner}${running ? '' : ' (gone)'}, last saved ${Math.max(0, Math.round((Date.now() - t.heartbeatAt) / 1000))} s ago` : '-'}`,
      `  created:    ${when(t.createdAt)}`,
      `  started:    ${when(t.startedAt)}`,
      `  finished:   ${when(t.finishedAt)}${t.status === 'done' && elapsed !== undefined ? ` (${formatDuration(elapsed)} after the start)` : ''}`,
      `  updated:    ${when(t.updatedAt)}`,
      `  recipients: ${t.source} (normalised: ${t.file})`,
      `  failures:   ${t.report}`,
    ];
    say(lines.join('\n'));
  });
}

// ------------------------------------------------------------------ registration

/** Adds `task ...` to `mega <name>`. */
export function registerTaskCommands(program: Command, name: string): void {
  const task = program
    .command('task')
    .description('bulk tasks: one template sent to a list of recipients with Send, resumable, each recipient once');
  withConfigDir(
    task
      .command('create')
      .description('record a task: --to holds openids (one per line), CSV with a header, or JSONL {openid, ...vars}')
      .requiredOption('--key <key>', 'template key')
      .requiredOption('--to <file>', 'recipients: .txt (openids), .csv (header row with an openid column), .jsonl')
      .option('--vars <file>', 'JSON object: variables for every recipient (their own win)')
      .option('--name <text>', 'a label (default: the file name)')
      .option('--format <format>', `${RECIPIENT_FORMATS.join('|')} (default: from the file extension)`, parseFormat)
      .option('--skip-invalid', 'leave bad lines out (listed) instead of refusing the file')
      .option('--allow-duplicates', 'keep an openid listed twice (default: the first is kept)'),
  )
    .option('--json', 'print the task as JSON')
    .action((o: CreateOptions) => createCommand(name, o));
  const runOptions = (c: Command): Command =>
    withDaemonLink(
      c
        .option('--window <n>', 'most recipients sent and not yet saved: in flight, waiting for a retry, or answered and waiting for the save (default 64)', parsePositive(10_000))
        .option('--quiet', 'print only the outcome line (warnings still go to stderr)')
        .option('--plain', 'a progress line per second instead of a bar'),
    );
  runOptions(
    task
      .command('run')
      .argument('<id>', ID_HELP, parseId)
      .description('send to every recipient not finished yet; Ctrl-C stops after the answers in flight (twice: at once)'),
  ).action((id: number, o: RunOptions) => runCommand(name, id, o, false));
  runOptions(
    task.command('resume').argument('<id>', ID_HELP, parseId).description('continue a paused, stopped or failed task (and run it)'),
  ).action((id: number, o: RunOptions) => runCommand(name, id, o, true));
  withConfigDir(
    task
      .command('pause')
      .argument('<id>', ID_HELP, parseId)
      .description('pause a task; its runner stops within a second, after the answers in flight'),
  ).action((id: number, o: ConfigFlags) => pauseCommand(name, id, o));
  withConfigDir(
    task
      .command('list')
      .description('tasks, newest first, with their progress')
      .option('--limit <n>', 'at most this many (default 50)', parsePositive(1_000_000))
      .option('--json', 'print as JSON'),
  ).action((o: ConfigFlags & { json?: boolean; limit?: number }) => listCommand(name, o));
  withConfigDir(task.command('show').argument('<id>', ID_HELP, parseId).description('one task: status, counts, files').option('--json', 'print as JSON')).action(
    (id: number, o: ConfigFlags & { json?: boolean }) => showCommand(name, id, o),
  );
}
