import { Command, CommanderError } from 'commander';
import { ConfigError, MegaError } from '../errors.js';
import { CliFailure, restart, resume, start, status, stop } from './service.js';
import { dlqList, dlqRetry, queueInfo } from './queue-commands.js';
import { registerTaskCommands } from './task-commands.js';
import { registerClientCommands } from './client-commands.js';
import { main as simulatorMain } from '../wechat/simulator-main.js';

/** Given first, so the caller's own flags (parsed later) win. */
const SIMULATOR_DEFAULTS = ['--port', '9502', '--app-id', 'wx_demo_app', '--app-secret', 'demo_secret'];

const CONFIG_DIR_HELP = 'folder holding <name>.ini (default: $MEGA_CONFIG_DIR, else ./config)';

/** `mega <name> <command>`: the service commands of one config. */
function serviceProgram(name: string): Command {
  const program = new Command(`mega ${name}`).exitOverride().showHelpAfterError();
  program
    .command('start')
    .description('start the daemon (in the background when [setting] daemonize = 1)')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .option('--foreground', 'stay in the foreground whatever daemonize says')
    .option('--demo', 'also run the bundled WeChat simulator at [wechat] api_base and install a sample template')
    .action((o: { configDir?: string; foreground?: boolean; demo?: boolean }) => start(name, o));
  program
    .command('stop')
    .description('stop gracefully: finish running WeChat calls, keep the rest queued')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .action((o: { configDir?: string }) => stop(name, o));
  program
    .command('restart')
    .description('stop, then start')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .option('--foreground', 'stay in the foreground whatever daemonize says')
    .option('--demo', 'as for start')
    .action((o: { configDir?: string; foreground?: boolean; demo?: boolean }) => restart(name, o));
  program
    .command('status')
    .description('pid, uptime, queue depth, sent and failed counts; exit 3 when not running')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .option('--json', 'print the status as JSON')
    .action((o: { configDir?: string; json?: boolean }) => status(name, o));
  program
    .command('resume')
    .description('resume dispatch now after the daily quota (45009) paused it')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .action((o: { configDir?: string }) => resume(name, o));
  program
    .command('queue')
    .description('queue depth, oldest job age, segment count and disk use')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .option('--json', 'print as JSON')
    .action((o: { configDir?: string; json?: boolean }) => queueInfo(name, o));
  const dlq = program.command('dlq').description('the dead-letter log of Push jobs that failed for good');
  dlq
    .command('list')
    .description('list dead letters: job id, time, openid, template key, errcode, attempts, errmsg')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .option('--json', 'print as JSON')
    .action((o: { configDir?: string; json?: boolean }) => dlqList(name, o));
  dlq
    .command('retry [id]')
    .description('queue dead letters again (same client_msg_id) and remove them from the log')
    .option('--all', 'every dead letter')
    .option('--config-dir <dir>', CONFIG_DIR_HELP)
    .action((id: string | undefined, o: { configDir?: string; all?: boolean }) => dlqRetry(name, id, o));
  registerClientCommands(program, name);
  registerTaskCommands(program, name);
  return program;
}

function rootProgram(): Command {
  const program = new Command('mega')
    .usage('<name> start|stop|restart|status|resume|queue|dlq [options]\n       mega simulator [options]')
    .description('Mega-WeChat: a daemon that queues and sends WeChat template messages.\n<name> selects config/<name>.ini.')
    .exitOverride()
    .showHelpAfterError();
  program
    .command('simulator')
    .description(
      'run the bundled WeChat API simulator (tests, demos): [--host H] [--port P] [--latency-ms N]\n' +
        '[--app-id ID] [--app-secret S] [--token-ttl S] [--daily-limit N] [--no-record-bodies].\n' +
        'Defaults match config/wechat.ini: port 9502, app id wx_demo_app, secret demo_secret.',
    )
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action((_options: unknown, command: Command) => simulatorMain([...SIMULATOR_DEFAULTS, ...command.args]));
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const first = argv[0];
  const serviceCall = first !== undefined && !first.startsWith('-') && first !== 'simulator' && first !== 'help';
  const program = serviceCall ? serviceProgram(first) : rootProgram();
  try {
    await program.parseAsync(serviceCall ? argv.slice(1) : argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    if (err instanceof CliFailure) {
      process.stderr.write(`mega: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`mega: config error: ${err.message}\n`);
      return 2;
    }
    if (err instanceof MegaError) {
      process.stderr.write(`mega: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`mega: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
