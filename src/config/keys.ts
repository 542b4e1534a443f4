import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../errors.js';

/**
 * Every key of `config/<name>.ini` in one table: its section, name, type and bounds, default,
 * environment override and help text. Loading and validation (config.ts) and the reference
 * table of docs/CONFIGURATION.md (doc.ts) are both produced from it, so they cannot disagree.
 */

export type SectionName = 'server' | 'setting' | 'pdo' | 'wechat' | 'queue' | 'jetstream' | 'ledger' | 'callback' | 'receipt' | 'http' | 'log';

export const SECTIONS: readonly SectionName[] = ['server', 'setting', 'pdo', 'wechat', 'queue', 'jetstream', 'ledger', 'callback', 'receipt', 'http', 'log'];

export interface ListenAddress {
  host: string;
  port: number;
}

/** What a key's parser may look at besides its own raw value. */
export interface KeyContext {
  /** The service name (`<name>` of `<name>.ini`). */
  name: string;
  /** The folder holding the .ini file: relative paths resolve against it. */
  baseDir: string;
  /** Values of the keys above this one in the table, by `section.prop`: later defaults may depend on them. */
  earlier: Readonly<Record<string, unknown>>;
}

export interface KeySpec {
  section: SectionName;
  /** The key as written in the ini file (`listen` for `listen[]`). */
  key: string;
  /** Its field in `MegaConfig[section]`; absent for keys accepted only for compatibility. */
  prop?: string;
  /** The value's kind as the docs show it, e.g. `whole number 1–256`. */
  type: string;
  /** The default as the docs show it. */
  defaultText: string;
  help: string;
  /** Never echoed in an error message; may come from `env` instead of the file. */
  secret?: boolean;
  /** An environment variable that wins over the file when set and not empty. */
  env?: string;
  /** Turns the raw ini value (undefined when absent) into the config value, or throws ConfigError naming the key. */
  parse?: (raw: unknown, ctx: KeyContext, where: string) => unknown;
}

// ------------------------------------------------------------------ value parsers

function describe(raw: unknown, secret: boolean | undefined): string {
  return secret ? '(hidden)' : JSON.stringify(raw);
}

function single(raw: unknown, where: string, secret?: boolean): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string') throw new ConfigError(`${where} must be a single string value, got ${describe(raw, secret)}`);
  return raw.trim();
}

type Parse = NonNullable<KeySpec['parse']>;

function text(fallback?: string, secret?: boolean): Parse {
  return (raw, _ctx, where) => single(raw, where, secret) ?? fallback;
}

function required(alternative?: string, secret?: boolean): Parse {
  return (raw, _ctx, where) => {
    const value = single(raw, where, secret);
    if (value === undefined || value === '') {
      throw new ConfigError(`${where} is required${alternative ? ` (or set ${alternative})` : ''}`);
    }
    return value;
  };
}

function int(fallback: number | ((ctx: KeyContext) => number), min: number, max: number): Parse {
  return (raw, ctx, where) => {
    const value = single(raw, where);
    if (value === undefined) return typeof fallback === 'function' ? fallback(ctx) : fallback;
    if (!/^\d+$/.test(value)) throw new ConfigError(`${where} must be a whole number, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (n < min || n > max) throw new ConfigError(`${where} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

function bool(fallback: boolean): Parse {
  return (raw, _ctx, where) => {
    if (raw === undefined) return fallback;
    if (typeof raw === 'boolean') return raw;
    const value = String(raw).trim().toLowerCase();
    if (['1', 'true', 'on', 'yes'].includes(value)) return true;
    if (['0', 'false', 'off', 'no', ''].includes(value)) return false;
    throw new ConfigError(`${where} must be 0/1 or true/false, got ${JSON.stringify(raw)}`);
  };
}

function oneOf(fallback: string, allowed: readonly string[]): Parse {
  return (raw, _ctx, where) => {
    const value = single(raw, where);
    if (value === undefined) return fallback;
    if (!allowed.includes(value)) throw new ConfigError(`${where} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
    return value;
  };
}

/** A path resolved against the config folder; an empty value means the default. */
function file(fallback: (ctx: KeyContext) => string): Parse {
  return (raw, ctx, where) => path.resolve(ctx.baseDir, single(raw, where) || fallback(ctx));
}

/** A path resolved against the config folder, or undefined when not set. */
function optionalFile(): Parse {
  return (raw, ctx, where) => {
    const value = single(raw, where);
    return value ? path.resolve(ctx.baseDir, value) : undefined;
  };
}

function listen(raw: unknown, _ctx: KeyContext, where: string): ListenAddress[] {
  if (raw === undefined) return [{ host: '127.0.0.1', port: 9501 }];
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0) throw new ConfigError(`${where}[] needs at least one host:port`);
  return list.map((entry) => hostPort(String(entry).trim(), `${where}[]`));
}

function hostPort(value: string, where: string): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new ConfigError(`${where} must be host:port (e.g. 127.0.0.1:9501), got ${JSON.stringify(value)}`);
  return { host: match[1] ?? match[2]!, port };
}

/** One host:port, or undefined (off) when empty. */
function optionalListen(raw: unknown, _ctx: KeyContext, where: string): ListenAddress | undefined {
  const value = single(raw, where);
  return value ? hostPort(value, where) : undefined;
}

/** `[http] listen`: 127.0.0.1:9503 when absent; an empty value turns the HTTP side off. */
function httpListen(raw: unknown, _ctx: KeyContext, where: string): ListenAddress | undefined {
  if (raw === undefined) return { host: '127.0.0.1', port: 9503 };
  const value = single(raw, where);
  return value ? hostPort(value, where) : undefined;
}

/** WeChat's EncodingAESKey: 43 characters of base64 (the key is their decoding with a `=` added). */
function encodingAesKey(raw: unknown, _ctx: KeyContext, where: string): string | undefined {
  const value = single(raw, where, true);
  if (!value) return undefined;
  if (!/^[A-Za-z0-9+/]{43}$/.test(value)) throw new ConfigError(`${where} must be the 43 characters WeChat shows (letters, digits, + and /), got ${value.length} characters`);
  return value;
}

function callbackPath(raw: unknown, _ctx: KeyContext, where: string): string {
  const value = single(raw, where) || '/wechat/callback';
  if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/.test(value)) throw new ConfigError(`${where} must be a URL path starting with /, got ${JSON.stringify(value)}`);
  return value;
}

function apiBase(raw: unknown, _ctx: KeyContext, where: string): string {
  return httpUrl(single(raw, where) ?? 'https://api.weixin.qq.com', where).replace(/\/+$/, '');
}

/** An http(s) URL, or undefined when empty. */
function optionalUrl(raw: unknown, _ctx: KeyContext, where: string): string | undefined {
  const value = single(raw, where);
  return value ? httpUrl(value, where) : undefined;
}

function httpUrl(value: string, where: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new ConfigError(`${where} must be an http:// or https:// URL, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** `nats://host:port` URLs, repeatable (`servers[] = ...`) or comma-separated. */
function natsServers(raw: unknown, _ctx: KeyContext, where: string): string[] {
  if (raw === undefined) return ['nats://127.0.0.1:4222'];
  const list = (Array.isArray(raw) ? raw : [raw]).flatMap((entry) => String(entry).split(',')).map((s) => s.trim()).filter(Boolean);
  if (list.length === 0) throw new ConfigError(`${where}[] needs at least one nats://host:port`);
  for (const entry of list) {
    if (!/^(nats|tls):\/\/([^\s/@]+@)?(\[[0-9a-fA-F:.]+\]|[^\s:/@]+):\d{1,5}$/.test(entry)) {
      // the URL may carry user:password@: never echo it
      throw new ConfigError(`${where}[] must be nats://host:port (or tls://host:port); one entry is not`);
    }
  }
  return list;
}

/** A JetStream stream name, or undefined for the default derived from the service name. */
function streamName(raw: unknown, _ctx: KeyContext, where: string): string | undefined {
  const value = single(raw, where);
  if (!value) return undefined;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(value)) throw new ConfigError(`${where} may hold only letters, digits, _ and - (at most 64), got ${JSON.stringify(value)}`);
  return value;
}

function dsn(raw: unknown, ctx: KeyContext, where: string): string {
  const value = single(raw, where) ?? `sqlite:../data/${ctx.name}.db`;
  if (!/^(sqlite|mysql):/.test(value)) {
    throw new ConfigError(`${where} must start with sqlite: or mysql:, got ${JSON.stringify(value.split(';')[0])}`);
  }
  return value;
}

function tablePrefix(raw: unknown, _ctx: KeyContext, where: string): string {
  const value = single(raw, where) ?? 'mega_';
  if (!/^[A-Za-z0-9_]*$/.test(value)) throw new ConfigError(`${where} may hold only letters, digits and _, got ${JSON.stringify(value)}`);
  return value;
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/** pino's levels, plus monolog's (the original's logger) mapped to the nearest. */
const LOG_LEVELS: Record<string, LogLevel> = {
  trace: 'trace',
  debug: 'debug',
  info: 'info',
  notice: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  critical: 'fatal',
  alert: 'fatal',
  emergency: 'fatal',
  fatal: 'fatal',
};

function logLevel(raw: unknown, _ctx: KeyContext, where: string): LogLevel {
  const value = (single(raw, where) ?? 'info').toLowerCase();
  const level = LOG_LEVELS[value];
  if (!level) throw new ConfigError(`${where} must be one of ${Object.keys(LOG_LEVELS).join(', ')}, got ${JSON.stringify(value)}`);
  return level;
}

/**
 * WeChat calls the daemon keeps in flight by default, over all task workers. Delivery is bound
 * by the API's latency, not by CPU: at 50 ms, 512 calls allow ~10,000 messages/s. The total
 * stays the same whatever the core count, so a bigger host does not open more connections.
 */
export const DEFAULT_CALLS_IN_FLIGHT = 512;

/** `[setting] task_concurrency` when it is not set: {@link DEFAULT_CALLS_IN_FLIGHT} split over the workers, rounded up. */
export function defaultTaskConcurrency(taskWorkerNum: number): number {
  return Math.ceil(DEFAULT_CALLS_IN_FLIGHT / taskWorkerNum);
}

// ------------------------------------------------------------------ the table

/** Accepted so an original config file keeps working; they configured Swoole itself and have no effect here. */
function compat(section: SectionName, key: string, why: string): KeySpec {
  return { section, key, type: 'any', defaultText: '—', help: `accepted for compatibility, **no effect**: ${why}` };
}

const SWOOLE = "configured Swoole's own server, which this daemon does not have";

export const CONFIG_KEYS: readonly KeySpec[] = [
  // ---- [server]
  { section: 'server', key: 'listen', prop: 'listen', type: 'host:port, repeatable', defaultText: '`127.0.0.1:9501`', help: '`listen[] = host:port` to listen on; repeat for several (`[::1]:9501` for IPv6; port 0 = any free port)', parse: listen },
  { section: 'server', key: 'table_size', prop: 'tableSize', type: 'whole number 1–1000000', defaultText: '`100`', help: 'most templates held in the cache', parse: int(100, 1, 1_000_000) },
  { section: 'server', key: 'template_size', prop: 'templateSize', type: 'whole number 16–1048576', defaultText: '`4048`', help: 'largest template in bytes (UTF-8); a longer one is refused, never truncated', parse: int(4048, 16, 1_048_576) },
  { section: 'server', key: 'queue_file_path', prop: 'queueFilePath', type: 'path', defaultText: '`../logs/queue`', help: 'folder of the durable queue', parse: file(() => '../logs/queue') },
  { section: 'server', key: 'pid_file', prop: 'pidFile', type: 'path', defaultText: '`<parent of queue_file_path>/<name>.pid`', help: 'pid file, written in both modes; the dead-letter log and task files live beside it', parse: file((ctx) => path.join(path.dirname(ctx.earlier['server.queueFilePath'] as string), `${ctx.name}.pid`)) },
  { section: 'server', key: 'control_socket', prop: 'controlSocket', type: 'path', defaultText: 'the pid file with `.sock`', help: 'Unix socket that `status`, `queue`, `dlq` and `resume` talk to', parse: file((ctx) => (ctx.earlier['server.pidFile'] as string).replace(/\.pid$/, '') + '.sock') },
  { section: 'server', key: 'shutdown_timeout', prop: 'shutdownTimeout', type: 'seconds 0–3600', defaultText: '`10`', help: 'seconds `stop` lets running WeChat calls finish', parse: int(10, 0, 3600) },
  { section: 'server', key: 'max_connections', prop: 'maxConnections', type: 'whole number 1–1000000', defaultText: '`1024`', help: 'connections served at once; one more is answered `503 too many connections` and closed', parse: int(1024, 1, 1_000_000) },
  { section: 'server', key: 'idle_timeout', prop: 'idleTimeout', type: 'seconds 0–86400', defaultText: '`300`', help: 'seconds a connection with nothing pending may stay silent before it is closed; `0` = never', parse: int(300, 0, 86400) },
  { section: 'server', key: 'frame_timeout', prop: 'frameTimeout', type: 'seconds 1–3600', defaultText: '`30`', help: 'seconds a started frame has to arrive completely; then the connection is closed', parse: int(30, 1, 3600) },
  { section: 'server', key: 'auth_token', prop: 'authToken', type: 'text', defaultText: '—', secret: true, env: 'MEGA_AUTH_TOKEN', help: 'when set, a connection must first send `auth <token>` (compared in constant time); anything else gets `401` and a close', parse: (raw, ctx, where) => text(undefined, true)(raw, ctx, where) || undefined },
  { section: 'server', key: 'tls_cert', prop: 'tlsCert', type: 'path', defaultText: '—', help: 'PEM certificate: serve the protocol over TLS on every listen address (with `tls_key`)', parse: optionalFile() },
  { section: 'server', key: 'tls_key', prop: 'tlsKey', type: 'path', defaultText: '—', help: 'PEM private key of `tls_cert`', parse: optionalFile() },
  { section: 'server', key: 'tls_ca', prop: 'tlsCa', type: 'path', defaultText: '—', help: 'PEM CA file: clients must present a certificate it signed', parse: optionalFile() },
  compat('server', 'class', 'named the original\'s PHP server class'),
  compat('server', 'protocol', 'named the original\'s PHP protocol class; the frame format is fixed'),
  // ---- [setting]
  { section: 'setting', key: 'task_worker_num', prop: 'taskWorkerNum', type: 'whole number 1–256', defaultText: 'min(8, CPU cores)', help: 'worker threads that render templates and call WeChat; each runs many calls at once, so threads beyond the cores only cost memory (~15 MB each)', parse: int(() => Math.min(8, os.availableParallelism()), 1, 256) },
  { section: 'setting', key: 'task_concurrency', prop: 'taskConcurrency', type: 'whole number 1–4096', defaultText: '512 / task_worker_num, rounded up', help: 'WeChat calls in flight per worker thread (and its HTTP keep-alive connections); the default keeps 512 calls in flight in all, whatever the core count, since delivery is bound by WeChat\'s latency (512 calls at 50 ms ≈ 10,000 messages/s)', parse: int((ctx) => defaultTaskConcurrency(ctx.earlier['setting.taskWorkerNum'] as number), 1, 4096) },
  { section: 'setting', key: 'package_max_length', prop: 'packageMaxLength', type: 'bytes 64–268435456', defaultText: '`2465792`', help: 'largest frame in bytes, length field included; a larger one is answered 413 and the connection closed', parse: int(2465792, 64, 256 * 1024 * 1024) },
  { section: 'setting', key: 'daemonize', prop: 'daemonize', type: '0/1', defaultText: '`0`', help: '`1`: `start` runs the daemon in the background', parse: bool(false) },
  { section: 'setting', key: 'missing_variable', prop: 'missingVariable', type: '`keep`, `empty` or `reject`', defaultText: '`keep`', help: 'a placeholder whose variable the message lacks: `keep` leaves `${NAME}` as written (the original\'s way), `empty` fills in "", `reject` answers the Push/Send `400 missing variables: NAME, ...` before anything is queued. A `null` variable is "" in every mode', parse: oneOf('keep', ['keep', 'empty', 'reject']) },
  compat('setting', 'worker_num', 'one Node.js event loop serves every connection; the work that scales is in `task_worker_num` threads'),
  ...['dispatch_mode', 'open_eof_check', 'open_length_check', 'package_length_type', 'package_length_offset', 'package_body_offset', 'log_file'].map((key) => compat('setting', key, SWOOLE)),
  // ---- [pdo]
  { section: 'pdo', key: 'dsn', prop: 'dsn', type: 'DSN', defaultText: '`sqlite:../data/<name>.db`', help: 'template (and task) store: `sqlite:<path>` (embedded) or `mysql:host=..;port=..;dbname=..` (quote it: `;` starts a comment)', parse: dsn },
  { section: 'pdo', key: 'username', prop: 'username', type: 'text', defaultText: '—', help: 'MySQL user', parse: text() },
  { section: 'pdo', key: 'password', prop: 'password', type: 'text', defaultText: '—', secret: true, env: 'MEGA_PDO_PASSWORD', help: 'MySQL password', parse: text(undefined, true) },
  { section: 'pdo', key: 'table_prefix', prop: 'tablePrefix', type: 'letters, digits, _', defaultText: '`mega_`', help: 'prefix of the template and task tables', parse: tablePrefix },
  // ---- [wechat]
  { section: 'wechat', key: 'app_id', prop: 'appId', type: 'text', defaultText: 'required', help: "the Official Account's app id", parse: required() },
  { section: 'wechat', key: 'app_secret', prop: 'appSecret', type: 'text', defaultText: 'required', secret: true, env: 'MEGA_APP_SECRET', help: "the Official Account's app secret", parse: required('MEGA_APP_SECRET', true) },
  { section: 'wechat', key: 'api_base', prop: 'apiBase', type: 'http(s) URL', defaultText: '`https://api.weixin.qq.com`', help: "WeChat API base URL (the simulator's URL in tests and demos)", parse: apiBase },
  { section: 'wechat', key: 'token_endpoint', prop: 'tokenEndpoint', type: '`stable` or `token`', defaultText: '`stable`', help: '`stable` (`POST /cgi-bin/stable_token`) or `token` (`GET /cgi-bin/token`)', parse: oneOf('stable', ['stable', 'token']) },
  { section: 'wechat', key: 'timeout_ms', prop: 'timeoutMs', type: 'ms 100–600000', defaultText: '`10000`', help: 'how long one WeChat call may wait to connect, for the answer once the request is written, and between two parts of the answer; a call that waits longer is retried', parse: int(10000, 100, 600000) },
  { section: 'wechat', key: 'retry_base_ms', prop: 'retryBaseMs', type: 'ms 1–3600000', defaultText: '`1000`', help: 'first retry delay after errcode -1, HTTP 5xx, a timeout or a connection error; doubles each attempt, with jitter', parse: int(1000, 1, 3600000) },
  { section: 'wechat', key: 'retry_max', prop: 'retryMax', type: 'whole number 0–100', defaultText: '`5`', help: 'retries before such a job fails for good', parse: int(5, 0, 100) },
  { section: 'wechat', key: 'quota_retry_interval', prop: 'quotaRetryInterval', type: 'seconds 1–86400', defaultText: '`600`', help: 'seconds between probe messages while the daily quota is used up (45009)', parse: int(600, 1, 86400) },
  { section: 'wechat', key: 'rate_limit', prop: 'rateLimit', type: 'messages/s 0–1000000', defaultText: '`0`', help: 'messages per second for the whole daemon, spaced evenly; `0` = unlimited', parse: int(0, 0, 1_000_000) },
  { section: 'wechat', key: 'token', prop: 'token', type: 'text 3–32', defaultText: '—', secret: true, env: 'MEGA_WECHAT_TOKEN', help: "the Token of the account's server URL (WeChat's console, Basic configuration): what `[callback]` checks every request's signature with. Required when `[callback] listen` is set", parse: (raw, ctx, where) => {
    const value = text(undefined, true)(raw, ctx, where) as string | undefined;
    if (value && !/^[A-Za-z0-9]{3,32}$/.test(value)) throw new ConfigError(`${where} must be 3–32 letters or digits, as WeChat's console accepts`);
    return value || undefined;
  } },
  { section: 'wechat', key: 'encoding_aes_key', prop: 'encodingAesKey', type: '43 characters', defaultText: '—', secret: true, env: 'MEGA_ENCODING_AES_KEY', help: "the EncodingAESKey of the server URL: set it when the account uses safe mode (or compatible mode); encrypted callbacks are refused without it", parse: encodingAesKey },
  // ---- [queue]
  { section: 'queue', key: 'fsync', prop: 'fsync', type: '`always` or `none`', defaultText: '`always`', help: '`always`: a Push is answered after fsync (one fsync covers every record written meanwhile). `none`: no fsync — a process crash loses nothing, a power loss may lose the last records', parse: oneOf('always', ['always', 'none']) },
  { section: 'queue', key: 'segment_size', prop: 'segmentSize', type: 'bytes 4096–2147483647', defaultText: '`41943040`', help: 'bytes per queue segment file (40 MiB)', parse: int(40 * 1024 * 1024, 4096, 0x7fffffff) },
  { section: 'queue', key: 'backend', prop: 'backend', type: '`file` or `jetstream`', defaultText: '`file`', help: '`file`: the embedded durable queue in `queue_file_path`, one daemon. `jetstream`: the jobs live in a NATS JetStream stream (`[jetstream]`) shared by every daemon of the same name, which then share the work (docs/SCALING.md)', parse: oneOf('file', ['file', 'jetstream']) },
  // ---- [jetstream]
  { section: 'jetstream', key: 'servers', prop: 'servers', type: 'nats://host:port, repeatable', defaultText: '`nats://127.0.0.1:4222`', help: '`servers[] = nats://host:port`, one per cluster node (the client fails over between them); with `[queue] backend = jetstream`. nats-server 2.9 or later with JetStream enabled', parse: natsServers },
  { section: 'jetstream', key: 'stream', prop: 'stream', type: 'name', defaultText: '`MEGA_<NAME>`', help: 'the WorkQueue stream of the jobs (created if missing; its subject is `mega.<name>.jobs`, its consumer `mega-<name>`)', parse: streamName },
  { section: 'jetstream', key: 'replicas', prop: 'replicas', type: 'whole number 1–5', defaultText: '`1`', help: 'replicas of the stream and of the service\'s key-value buckets when they are created: 3 on a 3-node cluster, so a Push is answered 200 only once a quorum stored it and a node may fail', parse: int(1, 1, 5) },
  { section: 'jetstream', key: 'user', prop: 'user', type: 'text', defaultText: '—', help: 'user name for the NATS servers (with `password`)', parse: (raw, ctx, where) => text()(raw, ctx, where) || undefined },
  { section: 'jetstream', key: 'password', prop: 'password', type: 'text', defaultText: '—', secret: true, env: 'MEGA_NATS_PASSWORD', help: 'password of `user`', parse: (raw, ctx, where) => text(undefined, true)(raw, ctx, where) || undefined },
  { section: 'jetstream', key: 'token', prop: 'token', type: 'text', defaultText: '—', secret: true, env: 'MEGA_NATS_TOKEN', help: 'authentication token for the NATS servers (instead of user/password)', parse: (raw, ctx, where) => text(undefined, true)(raw, ctx, where) || undefined },
  { section: 'jetstream', key: 'tls_ca', prop: 'tlsCa', type: 'path', defaultText: '—', help: 'PEM CA bundle that the NATS servers\' certificates are checked against (turns TLS on)', parse: optionalFile() },
  { section: 'jetstream', key: 'tls_cert', prop: 'tlsCert', type: 'path', defaultText: '—', help: 'PEM client certificate, for servers that verify clients (with `tls_key`)', parse: optionalFile() },
  { section: 'jetstream', key: 'tls_key', prop: 'tlsKey', type: 'path', defaultText: '—', help: 'PEM private key of `tls_cert`', parse: optionalFile() },
  { section: 'jetstream', key: 'ack_wait_ms', prop: 'ackWaitMs', type: 'ms 1000–3600000', defaultText: '`30000`', help: 'when the consumer is created: a job whose daemon stopped heartbeating it (crashed, cut off) goes to another daemon after this long', parse: int(30000, 1000, 3600000) },
  { section: 'jetstream', key: 'publish_timeout_ms', prop: 'publishTimeoutMs', type: 'ms 100–60000', defaultText: '`10000`', help: 'how long a Push waits for the stream to acknowledge it, retrying while a replicated stream elects a new leader (5–7 s for a killed leader); then it is answered 503 and nothing was stored twice', parse: int(10000, 100, 60000) },
  // ---- [ledger]
  { section: 'ledger', key: 'enabled', prop: 'enabled', type: '0/1', defaultText: '`1`', help: 'the message ledger (docs/LEDGER.md): every accepted Push and Send gets a row in `{table_prefix}message` of the `[pdo]` store, with its state, attempts, WeChat\'s msgid and its delivery receipt. `0`: no table, no journal, no cost (it costs about 2–3% of end-to-end throughput, docs/LEDGER.md); `query` then answers `503 ledger disabled`', parse: bool(true) },
  { section: 'ledger', key: 'retention_days', prop: 'retentionDays', type: 'days 1–3650', defaultText: '`7`', help: 'rows not changed for this long and no longer `queued` are deleted, a few hundred at a time', parse: int(7, 1, 3650) },
  // ---- [callback]
  { section: 'callback', key: 'listen', prop: 'listen', type: 'host:port', defaultText: 'off', help: "the receipts endpoint (docs/CALLBACK.md): WeChat's server-URL protocol over HTTP on this address. Put it behind your HTTPS proxy as the account's server URL. Empty: off", parse: optionalListen },
  { section: 'callback', key: 'path', prop: 'path', type: 'URL path', defaultText: '`/wechat/callback`', help: 'the path the endpoint answers on; any other path is 404', parse: callbackPath },
  { section: 'callback', key: 'forward_url', prop: 'forwardUrl', type: 'http(s) URL', defaultText: 'off', help: "every verified request that is not a delivery receipt (user messages, menu clicks, subscribe events) is passed to this URL unchanged (method, query string, body) and its answer returned to WeChat: the daemon sits in front of the app that had the server URL. Empty: such requests are answered `success` and dropped", parse: optionalUrl },
  { section: 'callback', key: 'forward_receipts', prop: 'forwardReceipts', type: '0/1', defaultText: '`0`', help: '`1`: delivery receipts are forwarded too (after they are recorded)', parse: bool(false) },
  { section: 'callback', key: 'forward_timeout_ms', prop: 'forwardTimeoutMs', type: 'ms 100–60000', defaultText: '`4500`', help: 'how long a forwarded request may take; then WeChat gets a 502 (WeChat itself gives up after 5 s and retries)', parse: int(4500, 100, 60000) },
  // ---- [receipt]
  { section: 'receipt', key: 'webhook_url', prop: 'webhookUrl', type: 'http(s) URL', defaultText: 'off', help: "final states (`delivered`, `failed_user_block`, `failed_system`, `rejected`, `dead`) are POSTed here as signed JSON batches, at least once and in order (docs/WEBHOOK.md). Needs `[ledger] enabled`. Empty: off", parse: optionalUrl },
  { section: 'receipt', key: 'webhook_secret', prop: 'webhookSecret', type: 'text', defaultText: '—', secret: true, env: 'MEGA_WEBHOOK_SECRET', help: 'the HMAC-SHA256 key of `X-Mega-Signature`; without it batches are sent unsigned', parse: (raw, ctx, where) => text(undefined, true)(raw, ctx, where) || undefined },
  { section: 'receipt', key: 'webhook_batch', prop: 'webhookBatch', type: 'whole number 1–1000', defaultText: '`100`', help: 'most events in one POST', parse: int(100, 1, 1000) },
  // ---- [log]
  { section: 'http', key: 'listen', prop: 'listen', type: 'host:port', defaultText: '`127.0.0.1:9503`', help: 'the operations side over HTTP (docs/OPERATIONS.md): `/metrics`, `/healthz`, `/readyz`, the JSON API under `/api/v1/`. Empty: off. Several daemons on one host need a port each', parse: httpListen },
  { section: 'http', key: 'auth_token', prop: 'authToken', type: 'text', defaultText: '—', secret: true, env: 'MEGA_HTTP_TOKEN', help: 'the Bearer token `/metrics` and `/api/v1/` want (`Authorization: Bearer <token>`, compared in constant time). Without it they are open to whoever reaches the address, and the access-token service is refused (403)', parse: (raw, ctx, where) => text(undefined, true)(raw, ctx, where) || undefined },
  { section: 'http', key: 'tls_cert', prop: 'tlsCert', type: 'path', defaultText: '—', help: 'PEM certificate: serve HTTPS (with `tls_key`)', parse: optionalFile() },
  { section: 'http', key: 'tls_key', prop: 'tlsKey', type: 'path', defaultText: '—', help: 'PEM private key of `tls_cert`', parse: optionalFile() },
  { section: 'log', key: 'log_file', prop: 'logFile', type: 'path', defaultText: '`../logs/<name>.log`', help: 'JSON lines (pino)', parse: file((ctx) => `../logs/${ctx.name}.log`) },
  { section: 'log', key: 'log_level', prop: 'logLevel', type: 'level', defaultText: '`info`', help: "`trace`, `debug`, `info`, `warn`/`warning`, `error`, `fatal` (monolog's `notice`, `critical`, `alert`, `emergency` map to the nearest)", parse: logLevel },
  { section: 'log', key: 'log_prefix', prop: 'logPrefix', type: 'text', defaultText: '`mega`', help: '`name` field of every log line', parse: text('mega') },
];
