/**
 * How every `mega <name>` command finds its config and reaches the daemon over its TCP port:
 * push, send, tset, template set|rm and task run|resume all go through here, so `--connect`,
 * `--host/--port` and `--tls-cert/--tls-key` mean the same in each, and there is one TLS policy.
 *
 * Address: `--connect HOST:PORT`, or `--host` and `--port`; else where the running daemon says it
 * listens (its control socket knows the port it got for `listen[] = ...:0`); else the first
 * `[server] listen[]`. A missing `--host` or `--port` is taken from there.
 *
 * Auth: `MEGA_AUTH_TOKEN`, else `[server] auth_token`.
 *
 * TLS, when the config has `[server] tls_cert` (or a client certificate is given): the host name
 * is always checked against the daemon's certificate. Trusted are the system CAs, the daemon's
 * own certificate (`tls_cert`, a trust anchor of its own: it needs no CA) and `tls_ca`. Never is
 * the check switched off: with it off, anyone holding any certificate a trusted CA signed could
 * stand in for a remote daemon. When the daemon asks for client certificates (`tls_ca`) the
 * command presents `--tls-cert/--tls-key`, else the daemon's own `tls_cert/tls_key` (which works
 * when tls_ca signed them: the operator on the daemon's host).
 */
import { existsSync, readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { Command } from 'commander';
import { configFilePath, loadConfig, resolveConfigDir, type MegaConfig } from '../config/config.js';
import { runningPid } from '../config/service-files.js';
import { MegaClient, type MegaClientOptions } from '../client/index.js';
import { controlRequest } from '../server/control.js';
import { CliFailure } from './failure.js';
import { errorText } from './output.js';

export interface ConfigFlags {
  configDir?: string;
}

/** The flags of every command that reaches the daemon. */
export interface LinkFlags extends ConfigFlags {
  connect?: string;
  host?: string;
  port?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** Adds `--config-dir`, which every `mega <name>` command takes. */
export function withConfigDir<C extends Command>(command: C): C {
  return command.option('--config-dir <dir>', 'folder holding <name>.ini (default: $MEGA_CONFIG_DIR, else ./config)');
}

/** Adds `--config-dir` and the options that say how to reach the daemon. */
export function withDaemonLink<C extends Command>(command: C): C {
  return withConfigDir(command)
    .option('--connect <host:port>', 'daemon address (default: where the running daemon listens, else [server] listen[])')
    .option('--host <host>', 'daemon host (default: as for --connect)')
    .option('--port <port>', 'daemon port (default: as for --connect)')
    .option('--tls-cert <file>', 'client certificate, when the daemon requires one ([server] tls_ca; default: [server] tls_cert)')
    .option('--tls-key <file>', "the client certificate's key");
}

export function loadServiceConfig(name: string, configDir: string | undefined): MegaConfig {
  return loadConfig(name, resolveConfigDir(configDir));
}

function parsePort(text: string, flag: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port < 1 || port > 65535) throw new CliFailure(`${flag} must be a port number from 1 to 65535, got ${JSON.stringify(text)}`);
  return port;
}

function parseConnect(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:([^:]*)$/.exec(text) ?? /^([^:[\]]+):([^:]*)$/.exec(text);
  if (!m) throw new CliFailure(`--connect expects host:port (or [v6]:port), got ${JSON.stringify(text)}`);
  return { host: m[1]!, port: parsePort(m[2]!, '--connect port') };
}

/** A wildcard listen address is reached through the loopback interface. */
function connectHost(host: string): string {
  if (host === '' || host === '0.0.0.0') return '127.0.0.1';
  if (host === '::' || host === '::0' || host === '[::]') return '::1';
  return host;
}

/** The address the flags give on their own, if they give all of it. */
function addressFromFlags(flags: LinkFlags): { host: string; port: number } | undefined {
  if (flags.connect !== undefined) {
    if (flags.host !== undefined || flags.port !== undefined) throw new CliFailure('give either --connect or --host/--port, not both');
    return parseConnect(flags.connect);
  }
  if (flags.host !== undefined && flags.port !== undefined) return { host: flags.host, port: parsePort(flags.port, '--port') };
  return undefined;
}

/** Whether the flags name the daemon's address themselves (then it may well not be this host's daemon). */
export function addressGiven(flags: LinkFlags): boolean {
  return flags.connect !== undefined || flags.host !== undefined || flags.port !== undefined;
}

/**
 * The config, or undefined when the flags give the whole address and there is no config file
 * (a client-only machine). A config that exists is always read: it may hold TLS and auth.
 */
export function optionalServiceConfig(name: string, flags: LinkFlags): MegaConfig | undefined {
  if (addressFromFlags(flags) !== undefined && !existsSync(configFilePath(name, resolveConfigDir(flags.configDir)))) return undefined;
  return loadServiceConfig(name, flags.configDir);
}

async function daemonAddress(name: string, flags: LinkFlags, config: MegaConfig | undefined): Promise<{ host: string; port: number }> {
  const given = addressFromFlags(flags);
  if (given) return given;
  if (!config) throw new CliFailure(`no config for ${name}: give --connect host:port`);
  const portFlag = flags.port === undefined ? undefined : parsePort(flags.port, '--port');
  const first = config.server.listen[0]!;
  if (portFlag !== undefined) return { host: flags.host ?? connectHost(first.host), port: portFlag };
  const pid = runningPid(config.server.pidFile);
  if (pid !== undefined) {
    // Only the running daemon knows the port it got for `listen[] = ...:0`.
    try {
      const listening = (await controlRequest(config.server.controlSocket, { cmd: 'listen' }))[0];
      if (listening && listening.port > 0) return { host: flags.host ?? connectHost(listening.host), port: listening.port };
    } catch (err) {
      if (first.port === 0) throw new CliFailure(`${name} (pid ${pid}) does not say which port it listens on: ${errorText(err)}; give --port or --connect`);
    }
  }
  if (first.port === 0) throw new CliFailure(`${name} is not running, and [server] listen[] has port 0: give --port (or --connect host:port)`);
  return { host: flags.host ?? connectHost(first.host), port: first.port };
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new CliFailure(`cannot read ${file} (${what}): ${(err as NodeJS.ErrnoException).code ?? errorText(err)}`);
  }
}

/** The TLS options of the policy in this file's header; false for a plain TCP daemon. */
export function clientTls(config: MegaConfig | undefined, flags: LinkFlags): NonNullable<MegaClientOptions['tls']> {
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new CliFailure('--tls-cert and --tls-key go together');
  const server = config?.server.tls;
  if (!server && flags.tlsCert === undefined) return false;
  const ca = [...tls.rootCertificates];
  // allowPartialTrustChain: the daemon's own certificate is a trust anchor even when a CA of
  // its own (not trusted here) signed it. The host name is still checked (no checkServerIdentity).
  const options: tls.ConnectionOptions = { ca, allowPartialTrustChain: true };
  if (server) {
    ca.push(readPem(server.cert, '[server] tls_cert'));
    if (server.ca) ca.push(readPem(server.ca, '[server] tls_ca'));
  }
  if (flags.tlsCert !== undefined && flags.tlsKey !== undefined) {
    options.cert = readPem(flags.tlsCert, '--tls-cert');
    options.key = readPem(flags.tlsKey, '--tls-key');
  } else if (server?.ca) {
    options.cert = readPem(server.cert, '[server] tls_cert');
    options.key = readPem(server.key, '[server] tls_key');
  }
  return options;
}

/** Where and how to reach the daemon. */
export interface DaemonLink {
  name: string;
  config: MegaConfig | undefined;
  host: string;
  port: number;
  client: Pick<MegaClientOptions, 'host' | 'port' | 'tls' | 'authToken' | 'maxFrameLength'>;
}

/** Resolves the address, auth and TLS; `config` undefined: see {@link optionalServiceConfig}. */
export async function resolveDaemonLink(name: string, flags: LinkFlags, config: MegaConfig | undefined): Promise<DaemonLink> {
  const tlsOptions = clientTls(config, flags);
  const { host, port } = await daemonAddress(name, flags, config);
  const client: DaemonLink['client'] = { host, port, tls: tlsOptions };
  const authToken = process.env.MEGA_AUTH_TOKEN || config?.server.authToken;
  if (authToken) client.authToken = authToken;
  if (config) client.maxFrameLength = config.setting.packageMaxLength;
  return { name, config, host, port, client };
}

/** Node's codes for a certificate chain that leads to nothing trusted. */
const UNTRUSTED = ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_UNTRUSTED'];

/** A failed connect, with what to do when it is the daemon's certificate. */
export function describeConnectFailure(link: DaemonLink, err: unknown): string {
  const code = ((err as { cause?: { code?: unknown } } | undefined)?.cause?.code ?? (err as { code?: unknown } | undefined)?.code) as string | undefined;
  let hint = '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    hint = `; the daemon's TLS certificate is not issued for ${link.host}: connect with a name the certificate holds (--connect HOST:PORT), or give the daemon a certificate for ${link.host}`;
  } else if (code !== undefined && UNTRUSTED.includes(code)) {
    hint = "; the daemon's TLS certificate is not trusted: it is neither [server] tls_cert of this config nor signed by [server] tls_ca or a system CA";
  } else if (code === 'ECONNREFUSED') {
    hint = ` (is it running? mega ${link.name} status)`;
  }
  return `cannot reach ${link.name}: ${errorText(err)}${hint}`;
}

/** The client options a command chooses itself (window, timeouts, reconnecting). */
export type ClientExtras = Omit<MegaClientOptions, keyof DaemonLink['client']>;

/** Connects with the link's address, auth and TLS; a failure is a CliFailure that says why. */
export async function connectDaemon(link: DaemonLink, options: ClientExtras = {}): Promise<MegaClient> {
  try {
    return await MegaClient.connect({ ...options, ...link.client });
  } catch (err) {
    throw new CliFailure(describeConnectFailure(link, err));
  }
}
