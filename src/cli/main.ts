import { Command, CommanderError, Help } from 'commander';
import { ConfigError, MegaError } from '../errors.js';
import { CliFailure } from './failure.js';
import { restart, resume, start, status, stop } from './service.js';
import { dlqList, dlqRetry, queueInfo } from './queue-commands.js';
import { registerTaskCommands } from './task-commands.js';
import { registerClientCommands } from './client-commands.js';
import { registerMsgCommands } from './msg-commands.js';
import { withConfigDir, type ConfigFlags } from './daemon-link.js';
import { main as simulatorMain } from '../simulator/index.js';

/** Given first, so the caller's own flags (parsed later) win. */
const SIMULATOR_DEFAULTS = ['--port', '9502', '--app-id', 'wx_demo_app', '--app-secret', 'demo_secret'];


/**
 * Whether commander itself printed the error it then throws (exitOverride): its own parse errors
 * and refused option or argument values are printed, an error thrown by an action handler is not.
 */
interface ErrorTracker {
  printed: boolean;
}

/** Codes of the CommanderErrors that follow help or a version commander has already shown. */
const SHOWN_BY_COMMANDER = ['commander.help', 'commander.helpDisplayed', 'commander.version'];

function reporting<T extends Command>(program: T, tracker: ErrorTracker): T {
  program.configureOutput({
    outputError: (text, write) => {
      tracker.printed = true;
      write(text);
    },
  });
  return program;
}

type StartFlags = ConfigFlags & { foreground?: boolean; demo?: boolean };
type JsonFlags = ConfigFlags & { json?: boolean };

/** `mega <name> <command>`: the service commands of one config. */
function serviceProgram(name: string, tracker: ErrorTracker = { printed: false }): Command {
  const program = reporting(new Command(`mega ${name}`), tracker).exitOverride().showHelpAfterError();
  withConfigDir(program.command('start').description('start the daemon (in the background when [setting] daemonize = 1)'))
    .option('--foreground', 'stay in the foreground whatever daemonize says')
    .option('--demo', 'also run the bundled WeChat simulator at [wechat] api_base and install a sample template')
    .action((o: StartFlags) => start(name, o));
  withConfigDir(program.command('stop').description('stop gracefully: finish running WeChat calls, keep the rest queued')).action((o: ConfigFlags) =>
    stop(name, o),
  );
  withConfigDir(
    program
      .command('restart')
      .description('stop (if running), then start in the background whatever daemonize says; --foreground: in this terminal'),
  )
    .option('--foreground', 'run the new daemon in this terminal instead of in the background')
    .option('--demo', 'as for start')
    .action((o: StartFlags) => restart(name, o));
  withConfigDir(program.command('status').description('pid, uptime, queue depth, sent and failed counts; exit 3 when not running'))
    .option('--json', 'print the status as JSON ({"name":...,"running":false} when not running)')
    .action((o: JsonFlags) => status(name, o));
  withConfigDir(program.command('resume').description('resume dispatch now after the daily quota (45009) paused it')).action((o: ConfigFlags) =>
    resume(name, o),
  );
  withConfigDir(program.command('queue').description('queue depth, oldest job age, segment count and disk use'))
    .option('--json', 'print as JSON')
    .action((o: JsonFlags) => queueInfo(name, o));
  const dlq = program.command('dlq').description('the dead-letter log of Push jobs that failed for good');
  withConfigDir(dlq.command('list').description('list dead letters: job id, time, openid, template key, errcode, attempts, errmsg'))
    .option('--json', 'print as JSON')
    .action((o: JsonFlags) => dlqList(name, o));
  withConfigDir(
    dlq
      .command('retry [id]')
      .description('queue dead letters again (same client_msg_id) and remove them from the log')
      .option('--all', 'every dead letter'),
  ).action((id: string | undefined, o: ConfigFlags & { all?: boolean }) => dlqRetry(name, id, o));
  registerClientCommands(program, name);
  registerTaskCommands(program, name);
  registerMsgCommands(program, name);
  return program;
}

/** Headings of `mega --help`, by a service command's first word; anything new lands in "Other". */
const GROUPS: Array<[string, string[]]> = [
  ['Service (mega <name> ...):', ['start', 'stop', 'restart', 'status', 'resume']],
  ['Requests to the running daemon:', ['push', 'send', 'tset']],
  ['Templates in the [pdo] store:', ['template']],
  ['Bulk tasks:', ['task']],
  ['Queue and dead letters:', ['queue', 'dlq']],
  ['Message ledger:', ['msg']],
];

/**
 * `mega --help`: every command of `mega <name>`, subcommands spelled out, read from the
 * service program itself so that a new command cannot be left out.
 */
function rootHelp(helper: Help): string {
  const rows = new Map<string, Array<[string, string]>>();
  const add = (group: string, term: string, description: string): void => {
    const list = rows.get(group) ?? [];
    list.push([term, description]);
    rows.set(group, list);
  };
  const argsOf = (c: Command): string =>
    c.registeredArguments
      .map((a) => {
        const word = a.name() + (a.variadic ? '...' : '');
        return a.required ? ` <${word}>` : ` [${word}]`;
      })
      .join('');
  for (const c of serviceProgram('<name>').commands) {
    const group = GROUPS.find(([, names]) => names.includes(c.name()))?.[0] ?? 'Other:';
    const subs = c.commands.filter((s) => s.name() !== 'help');
    if (subs.length === 0) add(group, `<name> ${c.name()}${argsOf(c)}`, c.description());
    for (const s of subs) add(group, `<name> ${c.name()} ${s.name()}${argsOf(s)}`, s.description());
  }
  add('Other:', 'simulator', 'run the bundled WeChat API simulator (tests, demos); see: mega simulator --help');
  add('Other:', 'help', 'this list');
  const width = Math.max(...[...rows.values()].flat().map(([term]) => term.length));
  const out = [
    'Usage: mega <name> <command> [options]',
    '       mega simulator [options]',
    '',
    helper.boxWrap(
      'Mega-WeChat: a daemon that queues and sends WeChat template messages. <name> selects <name>.ini ' +
        'in the config folder (--config-dir DIR, else $MEGA_CONFIG_DIR, else ./config).',
      helper.helpWidth ?? 80,
    ),
    '',
  ];
  for (const [group] of [...GROUPS, ['Other:', []] as [string, string[]]]) {
    const list = rows.get(group);
    if (!list) continue;
    out.push(group, ...list.map(([term, description]) => helper.formatItem(term, width, description, helper)), '');
  }
  out.push(helper.boxWrap("A command's options: mega <name> <command> --help (e.g. mega wechat task run --help).", helper.helpWidth ?? 80), '');
  return out.join('\n');
}

function rootProgram(tracker: ErrorTracker): Command {
  const program = reporting(new Command('mega'), tracker)
    .configureHelp({ formatHelp: (_cmd, helper) => rootHelp(helper) })
    .exitOverride()
    .showHelpAfterError();
  program
    .command('simulator')
    .description('run the bundled WeChat API simulator (tests, demos); see: mega simulator --help')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action((_options: unknown, command: Command) => simulatorMain([...SIMULATOR_DEFAULTS, ...command.args]));
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // `mega help simulator` is `mega simulator --help`: the simulator parses its own options.
  if (argv[0] === 'help' && argv[1] === 'simulator') argv = ['simulator', '--help'];
  const first = argv[0];
  const serviceCall = first !== undefined && !first.startsWith('-') && first !== 'simulator' && first !== 'help';
  const tracker: ErrorTracker = { printed: false };
  const program = serviceCall ? serviceProgram(first, tracker) : rootProgram(tracker);
  try {
    await program.parseAsync(serviceCall ? argv.slice(1) : argv, { from: 'user' });
    return 0;
  } catch (err) {
    const { exitCode, message } = describeFailure(err, tracker.printed);
    if (message !== undefined) process.stderr.write(`mega: ${message}\n`);
    return exitCode;
  }
}

/**
 * The exit status of a failed command and what to print for it (nothing when commander already
 * printed it). Every refusal says why: an argument refused inside an action handler
 * (InvalidArgumentError, a CommanderError commander did not print) is printed here.
 */
export function describeFailure(err: unknown, printedByCommander: boolean): { exitCode: number; message?: string } {
  if (err instanceof CommanderError) {
    const shown = printedByCommander || err.exitCode === 0 || SHOWN_BY_COMMANDER.includes(err.code);
    return shown ? { exitCode: err.exitCode } : { exitCode: err.exitCode, message: err.message };
  }
  if (err instanceof CliFailure) return { exitCode: err.exitCode, message: err.message };
  if (err instanceof ConfigError) return { exitCode: 2, message: `config error: ${err.message}` };
  if (err instanceof MegaError) return { exitCode: 1, message: err.message };
  return { exitCode: 1, message: err instanceof Error ? (err.stack ?? err.message) : String(err) };
}
