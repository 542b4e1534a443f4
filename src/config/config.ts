import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ini from 'ini';
import { ConfigError } from '../errors.js';

/**
 * `config/<name>.ini`, as in the original (sections [server], [setting], [pdo], [wechat], [log])
 * plus [queue]. Every key is checked: an unknown key or a bad value fails start-up with a
 * message naming `[section] key`, so a typo never silently falls back to a default.
 *
 * Relative paths are resolved against the folder that holds the .ini file, so a config
 * folder can be moved as a whole and the daemon's working directory never matters.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface ListenAddress {
  host: string;
  port: number;
}

export interface MegaConfig {
  /** The service name: `<name>` in `config/<name>.ini`. */
  name: string;
  /** Absolute path of the .ini file this came from. */
  file: string;
  server: {
    /** `listen[] = host:port`, one or more. @defaultValue [127.0.0.1:9501] */
    listen: ListenAddress[];
    /** Most templates the cache holds. @defaultValue 100 */
    tableSize: number;
    /** Largest template, in bytes of UTF-8; longer ones are refused, never truncated. @defaultValue 4048 */
    templateSize: number;
    /** Folder of the durable queue (segments, acks, checkpoint). @defaultValue ../logs/queue */
    queueFilePath: string;
    /** @defaultValue `<parent of queue_file_path>/<name>.pid` */
    pidFile: string;
    /** Unix socket that `mega <name> status` talks to. @defaultValue the pid file with `.sock` */
    controlSocket: string;
    /** Seconds `stop` lets in-flight WeChat calls finish before exiting. @defaultValue 10 */
    shutdownTimeout: number;
    /** Connections served at once; more are answered 503 and closed. @defaultValue 1024 */
    maxConnections: number;
    /** Seconds a connection with nothing pending may stay silent; 0 = forever. @defaultValue 300 */
    idleTimeout: number;
    /** Seconds a started frame has to arrive completely. @defaultValue 30 */
    frameTimeout: number;
    /**
     * When set, a connection must first send `auth <token>`. From `MEGA_AUTH_TOKEN`, else the
     * ini. @defaultValue none (no authentication)
     */
    authToken: string | undefined;
    /** TLS on every listen address when both are set (PEM files). */
    tls: { cert: string; key: string; ca: string | undefined } | undefined;
  };
  setting: {
    /**
     * Number of `worker_threads` task workers. Each runs many calls at once, so threads beyond
     * the CPU cores only add a V8 heap (~15 MB) and scheduling cost.
     * @defaultValue min(8, CPU cores)
     */
    taskWorkerNum: number;
    /** WeChat calls in flight per task worker (and its HTTP keep-alive connections). @defaultValue 128 */
    taskConcurrency: number;
    /** Largest frame in bytes, length field included. @defaultValue 2465792 */
    packageMaxLength: number;
    /** Run in the background when started without `--foreground`. @defaultValue false */
    daemonize: boolean;
    /**
     * A placeholder whose variable a message lacks: `keep` it as written (the original's way),
     * fill in `empty` text, or `reject` the Push/Send with 400 before it is queued.
     * @defaultValue keep
     */
    missingVariable: 'keep' | 'empty' | 'reject';
  };
  pdo: {
    /** `sqlite:<path>` or `mysql:host=..;port=..;dbname=..`. @defaultValue sqlite:../data/<name>.db */
    dsn: string;
    username: string | undefined;
    password: string | undefined;
    /** @defaultValue mega_ */
    tablePrefix: string;
  };
  wechat: {
    appId: string;
    appSecret: string;
    /** @defaultValue https://api.weixin.qq.com */
    apiBase: string;
    /** @defaultValue stable */
    tokenEndpoint: 'stable' | 'token';
    /** @defaultValue 10000 */
    timeoutMs: number;
    /** @defaultValue 1000 */
    retryBaseMs: number;
    /** @defaultValue 5 */
    retryMax: number;
    /** Seconds between probe messages while the daily quota is used up. @defaultValue 600 */
    quotaRetryInterval: number;
    /** Messages per second for the whole daemon; 0 = unlimited. @defaultValue 0 */
    rateLimit: number;
  };
  queue: {
    /** @defaultValue always */
    fsync: 'always' | 'none';
    /** @defaultValue 40 MiB */
    segmentSize: number;
  };
  log: {
    /** @defaultValue ../logs/<name>.log */
    logFile: string;
    /** @defaultValue info */
    logLevel: LogLevel;
    /** Written as `name` on every log line. @defaultValue mega */
    logPrefix: string;
  };
}

/**
 * Keys of the original that configured Swoole itself. They are accepted so an existing
 * config file keeps working, and have no effect here: Node's single event loop replaces
 * Swoole's reactor/worker processes, and the frame format is fixed by the protocol.
 */
export const IGNORED_KEYS: Record<string, readonly string[]> = {
  server: ['class', 'protocol'],
  setting: [
    'worker_num',
    'dispatch_mode',
    'open_eof_check',
    'open_length_check',
    'package_length_type',
    'package_length_offset',
    'package_body_offset',
    'log_file',
  ],
  wechat: ['token'],
};

const KNOWN_KEYS: Record<string, readonly string[]> = {
  server: [
    'listen',
    'table_size',
    'template_size',
    'queue_file_path',
    'pid_file',
    'control_socket',
    'shutdown_timeout',
    'max_connections',
    'idle_timeout',
    'frame_timeout',
    'auth_token',
    'tls_cert',
    'tls_key',
    'tls_ca',
  ],
  setting: ['task_worker_num', 'task_concurrency', 'package_max_length', 'daemonize', 'missing_variable'],
  pdo: ['dsn', 'username', 'password', 'table_prefix'],
  wechat: [
    'app_id',
    'app_secret',
    'api_base',
    'token_endpoint',
    'timeout_ms',
    'retry_base_ms',
    'retry_max',
    'quota_retry_interval',
    'rate_limit',
  ],
  queue: ['fsync', 'segment_size'],
  log: ['log_file', 'log_level', 'log_prefix'],
};

/** Keys whose values must never be echoed back in an error message. */
const SECRET_KEYS = new Set(['password', 'app_secret', 'auth_token']);

/**
 * Secrets may come from the environment instead of the ini file (which then need not hold
 * them at all); the environment wins when both are set.
 */
export const SECRET_ENV = {
  appSecret: 'MEGA_APP_SECRET',
  pdoPassword: 'MEGA_PDO_PASSWORD',
  authToken: 'MEGA_AUTH_TOKEN',
} as const;

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

/** A service name selects `<name>.ini`; keep it to something safe as a file name. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

type Section = Record<string, unknown>;

class SectionReader {
  constructor(
    private readonly name: string,
    private readonly values: Section,
    private readonly baseDir: string,
  ) {}

  private where(key: string): string {
    return `[${this.name}] ${key}`;
  }

  private describe(key: string, value: unknown): string {
    return SECRET_KEYS.has(key) ? '(hidden)' : JSON.stringify(value);
  }

  raw(key: string): unknown {
    return this.values[key];
  }

  string(key: string, fallback: string): string;
  string(key: string, fallback?: undefined): string | undefined;
  string(key: string, fallback?: string): string | undefined {
    const value = this.values[key];
    if (value === undefined) return fallback;
    if (typeof value !== 'string') {
      throw new ConfigError(`${this.where(key)} must be a single string value, got ${this.describe(key, value)}`);
    }
    return value.trim();
  }

  required(key: string, alternative?: string): string {
    const value = this.string(key);
    if (value === undefined || value === '') {
      throw new ConfigError(`${this.where(key)} is required${alternative ? ` (or set ${alternative})` : ''}`);
    }
    return value;
  }

  int(key: string, fallback: number, min: number, max: number): number {
    const value = this.string(key);
    if (value === undefined) return fallback;
    if (!/^\d+$/.test(value)) {
      throw new ConfigError(`${this.where(key)} must be a whole number, got ${this.describe(key, value)}`);
    }
    const n = Number(value);
    if (n < min || n > max) {
      throw new ConfigError(`${this.where(key)} must be between ${min} and ${max}, got ${n}`);
    }
    return n;
  }

  bool(key: string, fallback: boolean): boolean {
    const value = this.values[key];
    if (value === undefined) return fallback;
    if (typeof value === 'boolean') return value;
    const text = String(value).trim().toLowerCase();
    if (['1', 'true', 'on', 'yes'].includes(text)) return true;
    if (['0', 'false', 'off', 'no', ''].includes(text)) return false;
    throw new ConfigError(`${this.where(key)} must be 0/1 or true/false, got ${this.describe(key, value)}`);
  }

  oneOf<T extends string>(key: string, fallback: T, allowed: readonly T[]): T {
    const value = this.string(key);
    if (value === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(value)) {
      throw new ConfigError(`${this.where(key)} must be one of ${allowed.join(', ')}, got ${this.describe(key, value)}`);
    }
    return value as T;
  }

  path(key: string, fallback: string): string {
    const value = this.string(key) || fallback;
    return path.resolve(this.baseDir, value);
  }
}

function parseListen(value: unknown): ListenAddress[] {
  const where = '[server] listen[]';
  if (value === undefined) return [{ host: '127.0.0.1', port: 9501 }];
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) throw new ConfigError(`${where} needs at least one host:port`);
  return list.map((entry) => {
    const text = String(entry).trim();
    const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text);
    const port = match ? Number(match[3]) : NaN;
    if (!match || port > 65535) {
      throw new ConfigError(`${where} must be host:port (e.g. 127.0.0.1:9501), got ${JSON.stringify(text)}`);
    }
    return { host: match[1] ?? match[2]!, port };
  });
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

/** Where `<name>.ini` is looked for: `--config-dir`, else `MEGA_CONFIG_DIR`, else ./config. */
export function resolveConfigDir(configDir: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(configDir ?? env.MEGA_CONFIG_DIR ?? 'config');
}

export function configFilePath(name: string, configDir: string): string {
  if (!NAME_RE.test(name)) {
    throw new ConfigError(`service name ${JSON.stringify(name)} must be letters, digits, '.', '_' or '-'`);
  }
  return path.join(configDir, `${name}.ini`);
}

/** Reads and validates `<configDir>/<name>.ini`. Throws ConfigError naming the bad key. */
export function loadConfig(name: string, configDir: string, env: NodeJS.ProcessEnv = process.env): MegaConfig {
  const file = configFilePath(name, configDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot read config file ${file}: ${code ?? String(err)}`);
  }
  return parseConfig(name, file, text, env);
}

export function parseConfig(name: string, file: string, text: string, env: NodeJS.ProcessEnv = {}): MegaConfig {
  const parsed = ini.parse(text) as Record<string, unknown>;
  const baseDir = path.dirname(file);

  for (const [sectionName, section] of Object.entries(parsed)) {
    if (section === null || typeof section !== 'object' || Array.isArray(section)) {
      throw new ConfigError(`${sectionName} is outside any section; put it under [server], [setting], [pdo], [wechat], [queue] or [log]`);
    }
    const known = KNOWN_KEYS[sectionName];
    if (!known) {
      throw new ConfigError(`unknown section [${sectionName}] (expected server, setting, pdo, wechat, queue or log)`);
    }
    const ignored = IGNORED_KEYS[sectionName] ?? [];
    for (const key of Object.keys(section)) {
      if (!known.includes(key) && !ignored.includes(key)) {
        throw new ConfigError(`unknown key [${sectionName}] ${key}`);
      }
    }
  }

  const section = (s: string): SectionReader => new SectionReader(s, (parsed[s] as Section | undefined) ?? {}, baseDir);
  const server = section('server');
  const setting = section('setting');
  const pdo = section('pdo');
  const wechat = section('wechat');
  const queue = section('queue');
  const log = section('log');

  const queueFilePath = server.path('queue_file_path', '../logs/queue');
  const pidFile = server.path('pid_file', path.join(path.dirname(queueFilePath), `${name}.pid`));

  const apiBase = wechat.string('api_base', 'https://api.weixin.qq.com').replace(/\/+$/, '');
  let apiUrl: URL | undefined;
  try {
    apiUrl = new URL(apiBase);
  } catch {
    apiUrl = undefined;
  }
  if (!apiUrl || (apiUrl.protocol !== 'http:' && apiUrl.protocol !== 'https:')) {
    throw new ConfigError(`[wechat] api_base must be an http:// or https:// URL, got ${JSON.stringify(apiBase)}`);
  }

  const levelText = log.string('log_level', 'info').toLowerCase();
  const logLevel = LOG_LEVELS[levelText];
  if (!logLevel) {
    throw new ConfigError(`[log] log_level must be one of ${Object.keys(LOG_LEVELS).join(', ')}, got ${JSON.stringify(levelText)}`);
  }

  const dsn = pdo.string('dsn', `sqlite:../data/${name}.db`);
  if (!/^(sqlite|mysql):/.test(dsn)) {
    throw new ConfigError(`[pdo] dsn must start with sqlite: or mysql:, got ${JSON.stringify(dsn.split(';')[0])}`);
  }

  const fromEnv = (key: keyof typeof SECRET_ENV): string | undefined => {
    const value = env[SECRET_ENV[key]];
    return value === undefined || value === '' ? undefined : value;
  };

  const tlsCert = server.string('tls_cert');
  const tlsKey = server.string('tls_key');
  if (Boolean(tlsCert) !== Boolean(tlsKey)) {
    throw new ConfigError(`[server] ${tlsCert ? 'tls_key' : 'tls_cert'} is required when [server] ${tlsCert ? 'tls_cert' : 'tls_key'} is set`);
  }
  const tlsCa = server.string('tls_ca');
  if (tlsCa && !tlsCert) throw new ConfigError('[server] tls_ca needs [server] tls_cert and tls_key');
  const tls = tlsCert && tlsKey
    ? { cert: path.resolve(baseDir, tlsCert), key: path.resolve(baseDir, tlsKey), ca: tlsCa ? path.resolve(baseDir, tlsCa) : undefined }
    : undefined;

  const tablePrefix = pdo.string('table_prefix', 'mega_');
  if (!/^[A-Za-z0-9_]*$/.test(tablePrefix)) {
    throw new ConfigError(`[pdo] table_prefix may hold only letters, digits and _, got ${JSON.stringify(tablePrefix)}`);
  }

  const taskWorkerNum = setting.int('task_worker_num', Math.min(8, os.availableParallelism()), 1, 256);
  return {
    name,
    file,
    server: {
      listen: parseListen(server.raw('listen')),
      tableSize: server.int('table_size', 100, 1, 1_000_000),
      templateSize: server.int('template_size', 4048, 16, 1_048_576),
      queueFilePath,
      pidFile,
      controlSocket: server.path('control_socket', pidFile.replace(/\.pid$/, '') + '.sock'),
      shutdownTimeout: server.int('shutdown_timeout', 10, 0, 3600),
      maxConnections: server.int('max_connections', 1024, 1, 1_000_000),
      idleTimeout: server.int('idle_timeout', 300, 0, 86400),
      frameTimeout: server.int('frame_timeout', 30, 1, 3600),
      authToken: fromEnv('authToken') ?? (server.string('auth_token') || undefined),
      tls,
    },
    setting: {
      taskWorkerNum,
      taskConcurrency: setting.int('task_concurrency', defaultTaskConcurrency(taskWorkerNum), 1, 4096),
      packageMaxLength: setting.int('package_max_length', 2465792, 64, 256 * 1024 * 1024),
      daemonize: setting.bool('daemonize', false),
      missingVariable: setting.oneOf('missing_variable', 'keep', ['keep', 'empty', 'reject'] as const),
    },
    pdo: {
      dsn,
      username: pdo.string('username'),
      password: fromEnv('pdoPassword') ?? pdo.string('password'),
      tablePrefix,
    },
    wechat: {
      appId: wechat.required('app_id'),
      appSecret: fromEnv('appSecret') ?? wechat.required('app_secret', SECRET_ENV.appSecret),
      apiBase,
      tokenEndpoint: wechat.oneOf('token_endpoint', 'stable', ['stable', 'token'] as const),
      timeoutMs: wechat.int('timeout_ms', 10000, 100, 600000),
      retryBaseMs: wechat.int('retry_base_ms', 1000, 1, 3600000),
      retryMax: wechat.int('retry_max', 5, 0, 100),
      quotaRetryInterval: wechat.int('quota_retry_interval', 600, 1, 86400),
      rateLimit: wechat.int('rate_limit', 0, 0, 1_000_000),
    },
    queue: {
      fsync: queue.oneOf('fsync', 'always', ['always', 'none'] as const),
      segmentSize: queue.int('segment_size', 40 * 1024 * 1024, 4096, 0x7fffffff),
    },
    log: {
      logFile: log.path('log_file', `../logs/${name}.log`),
      logLevel,
      logPrefix: log.string('log_prefix', 'mega'),
    },
  };
}

/** The `[pdo]` settings as every store (templates, tasks) takes them; `sqlite:` paths resolve against the config folder. */
export function pdoOptions(config: MegaConfig): {
  dsn: string;
  username: string | undefined;
  password: string | undefined;
  tablePrefix: string;
  baseDir: string;
} {
  return { ...config.pdo, baseDir: path.dirname(config.file) };
}
