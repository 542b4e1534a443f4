import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { resolveConfigDir, type MegaConfig } from '../config/config.js';
import { pidAlive, runningPid } from '../config/service-files.js';
import { StartupError } from '../errors.js';
import { createLogger, scrubSecrets } from '../log/logger.js';
import { Daemon } from '../server/daemon.js';
import { controlRequest } from '../server/control.js';
import type { DaemonStatus } from '../server/control-protocol.js';
import { loadServiceConfig, type ConfigFlags } from './daemon-link.js';
import { installSampleTemplate, startDemoSimulator } from './demo.js';
import { CliFailure, EXIT_NOT_RUNNING } from './failure.js';
import { say } from './output.js';

export interface StartOptions extends ConfigFlags {
  foreground?: boolean;
  demo?: boolean;
  /** In the background whatever `daemonize` says (unless `foreground`): what `restart` does. */
  background?: boolean;
}

const BIN = fileURLToPath(new URL('../../bin/mega.js', import.meta.url));

/** `mega <name> start`: in the foreground, or as a detached child when `daemonize` is on. */
export async function start(name: string, options: StartOptions): Promise<void> {
  const config = loadServiceConfig(name, options.configDir);
  const pid = runningPid(config.server.pidFile);
  if (pid !== undefined) throw new CliFailure(`${name} is already running (pid ${pid})`);
  if (!options.foreground && (options.background || config.setting.daemonize)) {
    await startDetached(name, config, options);
  } else {
    await runForeground(config, options);
  }
}

/**
 * Starts a detached child that runs the daemon in the foreground, and waits for it to say
 * over IPC that it listens (exit 0) or why it could not start (exit 1 with its reason).
 */
async function startDetached(name: string, config: MegaConfig, options: StartOptions): Promise<void> {
  const args = [BIN, name, 'start', '--foreground', '--config-dir', resolveConfigDir(options.configDir)];
  if (options.demo) args.push('--demo');
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    env: process.env,
  });
  const outcome = await new Promise<{ ready: boolean; message: string; console?: string }>((resolve) => {
    const timer = setTimeout(() => resolve({ ready: false, message: 'did not report ready within 60 s' }), 60000);
    child.on('message', (m: { ready?: boolean; error?: string; listen?: string; console?: string }) => {
      clearTimeout(timer);
      if (m.ready) resolve({ ready: true, message: m.listen ?? '', ...(m.console ? { console: m.console } : {}) });
      else resolve({ ready: false, message: m.error ?? 'unknown error' });
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ ready: false, message: `exited during start-up (${signal ?? `code ${code}`})` });
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ready: false, message: err.message });
    });
  });
  if (child.connected) child.disconnect();
  child.unref();
  if (!outcome.ready) throw new CliFailure(`cannot start ${name}: ${outcome.message}`);
  say(`${name} started in the background (pid ${child.pid}), listening on ${outcome.message}; log: ${config.log.logFile}`);
  if (outcome.console) say(outcome.console);
}

/** Runs the daemon in this process until SIGTERM/SIGINT. */
async function runForeground(config: MegaConfig, options: StartOptions): Promise<void> {
  // --demo: the console on at its address (the default one if [http] listen is empty), with a
  // token made for this run when none is configured: printed once, never written to the log
  let oneTimeToken: string | undefined;
  if (options.demo) {
    oneTimeToken = config.http.authToken === undefined ? randomBytes(18).toString('base64url') : undefined;
    config = { ...config, http: { ...config.http, listen: config.http.listen ?? { host: '127.0.0.1', port: 9503 }, authToken: config.http.authToken ?? oneTimeToken } };
  }
  const log = createLogger({ file: config.log.logFile, level: config.log.logLevel, name: config.log.logPrefix });
  const logger = log.logger;
  try {
    await log.ready;
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new CliFailure(`cannot open [log] log_file ${config.log.logFile}: ${reason}`);
  }
  const report = (message: { ready?: boolean; error?: string; listen?: string; console?: string }): void => {
    if (process.send) {
      process.send(message);
      process.disconnect?.();
    }
  };

  // Signal handlers go in before anything can announce readiness: a supervisor may signal
  // the moment it reads "listening", and an unhandled SIGHUP or SIGTERM would kill us outright.
  let daemon: Daemon | undefined;
  let stopDemo: (() => Promise<void>) | undefined;
  let stopRequested: string | undefined;
  let exiting = false;
  const shutdown = (signal: string): void => {
    if (!daemon) {
      stopRequested = signal; // still starting: stop as soon as it is up
      return;
    }
    if (exiting) return;
    exiting = true;
    logger.info({ signal }, 'stop requested');
    void daemon
      .stop()
      .then(async ({ leftQueued }) => {
        await stopDemo?.();
        return leftQueued;
      })
      .then(
        (left) => {
          say(`${config.name} stopped; ${left} job${left === 1 ? '' : 's'} left queued in ${config.server.queueFilePath}`);
          log.flush();
          process.exit(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'error while stopping');
          log.flush();
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    log.reopen();
    logger.info('log file reopened');
  });
  process.on('uncaughtException', (err) => {
    // A bug, not a client's doing: record it and exit; the queue keeps every acknowledged job.
    logger.fatal({ err }, 'uncaught exception; exiting');
    log.flush();
    process.stderr.write(`mega: uncaught exception: ${scrubSecrets(err instanceof Error ? (err.stack ?? err.message) : String(err))}\n`);
    process.exit(70);
  });

  try {
    // The demo's simulator first, the sample template last: a start that fails (a port taken)
    // has written nothing.
    if (options.demo) stopDemo = await startDemoSimulator(config, logger);
    daemon = await Daemon.start(config, logger);
    if (options.demo) await installSampleTemplate(config, daemon, logger);
  } catch (err) {
    const message = explainStartFailure(err, config);
    await daemon?.stop().catch(() => undefined);
    logger.fatal({ err }, 'mega-wechat could not start');
    log.flush();
    await stopDemo?.();
    report({ error: message });
    throw new CliFailure(`cannot start ${config.name}: ${message}`);
  }

  const listen = daemon.listening.map((a) => `${a.host}:${a.port}`).join(', ');
  const consoleLine = options.demo && daemon.httpUrl
    ? `console: ${daemon.httpUrl}/ (log in with ${oneTimeToken ? `the one-time token ${oneTimeToken}` : 'your [http] auth_token'})`
    : undefined;
  report({ ready: true, listen, ...(consoleLine ? { console: consoleLine } : {}) });
  const http = daemon.httpUrl ? `; HTTP on ${daemon.httpUrl}` : '';
  if (!process.send) say(`${config.name} listening on ${listen} (pid ${process.pid})${http}; log: ${config.log.logFile}`);
  if (!process.send && consoleLine) say(consoleLine);
  if (stopRequested) shutdown(stopRequested);
}

/** A start failure as the user should read it: a port taken names the key that moves it. */
function explainStartFailure(err: unknown, config: MegaConfig): string {
  const message = err instanceof Error ? err.message : String(err);
  // a failure that already names its key (`[http] listen`) needs no hint about [server]
  const code = err instanceof StartupError && !/\[\w+\] \w+/.test(message) ? (err.cause as NodeJS.ErrnoException | undefined)?.code : undefined;
  if (code === 'EADDRINUSE') {
    return `${message}. Another process (another ${config.name} daemon?) holds that port: stop it, or change [server] listen[] in ${config.file}`;
  }
  if (code === 'EACCES' || code === 'EADDRNOTAVAIL') return `${message}. Change [server] listen[] in ${config.file}`;
  return message;
}

/** `mega <name> stop`: SIGTERM, then wait for the process to be gone. */
export async function stop(name: string, options: ConfigFlags & { quiet?: boolean }): Promise<void> {
  const config = loadServiceConfig(name, options.configDir);
  const pid = runningPid(config.server.pidFile);
  if (pid === undefined) {
    if (!options.quiet) say(`${name} is not running`);
    return;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + (config.server.shutdownTimeout + 15) * 1000;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) {
      throw new CliFailure(`${name} (pid ${pid}) did not stop within ${config.server.shutdownTimeout + 15} s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  say(`${name} stopped (pid ${pid})`);
}

/**
 * `mega <name> restart`: stop, then start in the background whatever `daemonize` says, so the
 * terminal that typed it gets its prompt back; `--foreground` runs the new daemon in it instead.
 */
export async function restart(name: string, options: StartOptions): Promise<void> {
  await stop(name, { configDir: options.configDir, quiet: true });
  await start(name, { ...options, background: true });
}

function formatStatus(s: DaemonStatus): string {
  const failed = Object.entries(s.failedByErrcode)
    .map(([code, n]) => `${code}: ${n}`)
    .join(', ');
  const lines = [
    `${s.name} is running`,
    `  pid:              ${s.pid}`,
    `  uptime:           ${s.uptimeSeconds} s`,
    `  listen:           ${s.listen.map((a) => `${a.host}:${a.port}`).join(', ')}`,
    `  HTTP side:        ${s.http ?? 'off'}`,
    `  connections:      ${s.connections}`,
    `  templates:        ${s.templates}`,
    `  task workers:     ${s.workers}`,
    `  queue depth:      ${s.queue.depth} (${s.queue.inFlight} in flight${s.queue.backend === 'jetstream' ? ` here, JetStream stream ${s.queue.stream}` : `, ${s.queue.segments} segments, ${s.queue.bytes} bytes`}${s.queue.oldestAgeSeconds === null ? '' : `, oldest ${s.queue.oldestAgeSeconds} s`})`,
    `  sent:             ${s.sent}`,
    `  failed:           ${s.failed}${failed ? ` (${failed})` : ''}`,
    `  retries pending:  ${s.retriesPending}`,
    `  running calls:    ${s.running}`,
    `  send rate:        ${s.sendRate}/s`,
    `  dispatch:         ${s.paused ? `PAUSED (${s.paused.reason}) since ${s.paused.since}: ${s.paused.detail}` : 'running'}`,
    `  daily quota:      ${s.quota ? `${s.quota.remain} of ${s.quota.dailyLimit} left` : 'unknown'}`,
    `  access token:     ${s.token.ageSeconds === null ? 'none yet' : `${s.token.ageSeconds} s old`}, ${s.token.fetches} fetches${s.token.error ? `; ERROR: ${s.token.error}` : ''}`,
    `  message ledger:   ${s.ledger ? `${s.ledger.backlog} changes not in the database yet${s.ledger.error ? `; ERROR: ${s.ledger.error}` : ''}` : 'off'}`,
    `  receipts:         ${callbackLine(s.callback)}`,
    `  webhook:          ${webhookLine(s.webhook)}`,
    ...serviceLines(s.service),
  ];
  return lines.join('\n');
}

/** The JetStream backend's service: its live daemons, the shared pause and rate. */
function serviceLines(svc: DaemonStatus['service']): string[] {
  if (!svc) return [];
  const rate = svc.rateLimit === 0 ? 'unlimited' : `${svc.rateLimit}/s for the service, ${svc.rateShare}/s here`;
  return [
    `  service:          ${svc.members.length} daemon(s); rate ${rate}; ${svc.pause ? `PAUSED (${svc.pause.reason}) since ${svc.pause.since} by ${svc.pause.by}` : 'not paused'}`,
    ...svc.members.map(
      (m) => `    ${m.id === svc.self ? '*' : '-'} ${m.id}  ${m.host} pid ${m.pid}  ${m.addresses.join(', ')}  up ${m.uptimeSeconds} s  ${m.sendRate}/s`,
    ),
  ];
}

function callbackLine(c: DaemonStatus['callback']): string {
  if (!c) return 'off';
  const r = c.refused;
  const refused = r.signature + r.stale + r.replay + r.malformed + r.tooLarge;
  return `${c.listen.host}:${c.listen.port}, ${c.receipts} receipts, ${c.forwarded} forwarded${c.forwardFailures ? ` (${c.forwardFailures} failed)` : ''}, ${refused} refused`;
}

function webhookLine(w: DaemonStatus['webhook']): string {
  if (!w) return 'off';
  return `${w.backlog} events to send, ${w.delivered} delivered${w.lastError ? `; ERROR: ${w.lastError}` : ''}`;
}

/** `mega <name> resume`: ends a daily-quota pause now instead of at the next probe. */
export async function resume(name: string, options: ConfigFlags): Promise<void> {
  const config = loadServiceConfig(name, options.configDir);
  const pid = runningPid(config.server.pidFile);
  if (pid === undefined) throw new CliFailure(`${name} is not running`, EXIT_NOT_RUNNING);
  const answer = await controlRequest(config.server.controlSocket, { cmd: 'resume' });
  say(answer.resumed ? `${name}: dispatch resumed` : `${name}: dispatch was not paused`);
}

/** `mega <name> status`: exits 3 when the daemon is not running. */
export async function status(name: string, options: ConfigFlags & { json?: boolean }): Promise<void> {
  const config = loadServiceConfig(name, options.configDir);
  const pid = runningPid(config.server.pidFile);
  if (pid === undefined) {
    if (!options.json) throw new CliFailure(`${name} is not running`, EXIT_NOT_RUNNING);
    // A script reading --json gets JSON either way; the exit status still says "not running".
    // Not `running: false`: in a running daemon's status, `running` counts WeChat calls.
    say(JSON.stringify({ name, state: 'not running', pid: null }));
    throw new CliFailure(`${name} is not running`, EXIT_NOT_RUNNING);
  }
  let result: DaemonStatus;
  try {
    result = await controlRequest(config.server.controlSocket, { cmd: 'status' });
  } catch (err) {
    throw new CliFailure(`${name} (pid ${pid}) does not answer: ${err instanceof Error ? err.message : String(err)}`);
  }
  say(options.json ? JSON.stringify({ state: 'running', ...result }, null, 2) : formatStatus(result));
}
