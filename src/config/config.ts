import { readFileSync } from 'node:fs';
import path from 'node:path';
import ini from 'ini';
import { ConfigError } from '../errors.js';
import { CONFIG_KEYS, SECTIONS, type KeyContext, type ListenAddress, type LogLevel } from './keys.js';

/**
 * `config/<name>.ini`, as in the original (sections [server], [setting], [pdo], [wechat], [log])
 * plus [queue]. Every key is checked: an unknown key or a bad value fails start-up with a
 * message naming `[section] key`, so a typo never silently falls back to a default.
 *
 * Relative paths are resolved against the folder that holds the .ini file, so a config
 * folder can be moved as a whole and the daemon's working directory never matters.
 */

export { DEFAULT_CALLS_IN_FLIGHT, defaultTaskConcurrency, CONFIG_KEYS, type KeySpec } from './keys.js';
export type { ListenAddress, LogLevel };

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
    /** The server URL's Token, for `[callback]`'s signatures. From `MEGA_WECHAT_TOKEN`, else the ini. */
    token: string | undefined;
    /** The server URL's EncodingAESKey (safe mode). From `MEGA_ENCODING_AES_KEY`, else the ini. */
    encodingAesKey: string | undefined;
  };
  queue: {
    /** @defaultValue always */
    fsync: 'always' | 'none';
    /** @defaultValue 40 MiB */
    segmentSize: number;
    /** Where the jobs live: `file` (this host) or `jetstream` (a NATS stream the daemons of the service share). @defaultValue file */
    backend: 'file' | 'jetstream';
  };
  /** With `[queue] backend = jetstream` (docs/SCALING.md). */
  jetstream: {
    /** @defaultValue ['nats://127.0.0.1:4222'] */
    servers: string[];
    /** @defaultValue undefined: `MEGA_<NAME>` */
    stream: string | undefined;
    /** @defaultValue 1 */
    replicas: number;
    user: string | undefined;
    /** From `MEGA_NATS_PASSWORD`, else the ini. */
    password: string | undefined;
    /** From `MEGA_NATS_TOKEN`, else the ini. */
    token: string | undefined;
    tlsCa: string | undefined;
    tlsCert: string | undefined;
    tlsKey: string | undefined;
    /** @defaultValue 30000 */
    ackWaitMs: number;
    /** @defaultValue 10000 */
    publishTimeoutMs: number;
  };
  ledger: {
    /** @defaultValue true */
    enabled: boolean;
    /** @defaultValue 7 */
    retentionDays: number;
  };
  callback: {
    /** The receipts endpoint's address. @defaultValue undefined (off) */
    listen: ListenAddress | undefined;
    /** @defaultValue /wechat/callback */
    path: string;
    /** Where verified requests that are not receipts go. @defaultValue undefined (answered `success`, dropped) */
    forwardUrl: string | undefined;
    /** Forward receipts too, once recorded. @defaultValue false */
    forwardReceipts: boolean;
    /** @defaultValue 4500 */
    forwardTimeoutMs: number;
  };
  /** The operations side over HTTP (docs/OPERATIONS.md). */
  http: {
    /** @defaultValue 127.0.0.1:9503; undefined: off */
    listen: ListenAddress | undefined;
    /** Bearer token of /metrics and /api/v1/. From `MEGA_HTTP_TOKEN`, else the ini. @defaultValue undefined (open; no access-token service) */
    authToken: string | undefined;
    tlsCert: string | undefined;
    tlsKey: string | undefined;
  };
  receipt: {
    /** Where final states are POSTed. @defaultValue undefined (off) */
    webhookUrl: string | undefined;
    /** HMAC key of `X-Mega-Signature`. From `MEGA_WEBHOOK_SECRET`, else the ini. @defaultValue undefined (unsigned) */
    webhookSecret: string | undefined;
    /** @defaultValue 100 */
    webhookBatch: number;
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

/** A service name selects `<name>.ini`; keep it to something safe as a file name. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

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

/** Parses and validates ini text with the key table of keys.ts; `file` anchors relative paths. */
export function parseConfig(name: string, file: string, text: string, env: NodeJS.ProcessEnv = {}): MegaConfig {
  const parsed = ini.parse(text) as Record<string, unknown>;
  const sectionList = SECTIONS.map((s) => `[${s}]`).join(', ');
  for (const [sectionName, section] of Object.entries(parsed)) {
    if (section === null || typeof section !== 'object' || Array.isArray(section)) {
      throw new ConfigError(`${sectionName} is outside any section; put it under ${sectionList}`);
    }
    if (!(SECTIONS as readonly string[]).includes(sectionName)) {
      throw new ConfigError(`unknown section [${sectionName}] (expected ${SECTIONS.join(', ')})`);
    }
    for (const key of Object.keys(section)) {
      if (!CONFIG_KEYS.some((k) => k.section === sectionName && k.key === key)) {
        throw new ConfigError(`unknown key [${sectionName}] ${key}`);
      }
    }
  }

  const ctx: KeyContext = { name, baseDir: path.dirname(file), earlier: {} };
  const earlier = ctx.earlier as Record<string, unknown>;
  const sections: Record<string, Record<string, unknown>> = Object.fromEntries(SECTIONS.map((s) => [s, {}]));
  for (const spec of CONFIG_KEYS) {
    if (spec.prop === undefined || spec.parse === undefined) continue; // accepted for compatibility only
    const fromEnv = spec.env === undefined ? undefined : env[spec.env];
    const value = fromEnv !== undefined && fromEnv !== '' ? fromEnv : spec.parse((parsed[spec.section] as Record<string, unknown> | undefined)?.[spec.key], ctx, `[${spec.section}] ${spec.key}`);
    sections[spec.section]![spec.prop] = value;
    earlier[`${spec.section}.${spec.prop}`] = value;
  }

  // Keys that are only meaningful together.
  const { tlsCert, tlsKey, tlsCa, ...server } = sections.server as Record<string, string | undefined>;
  if (Boolean(tlsCert) !== Boolean(tlsKey)) {
    throw new ConfigError(`[server] ${tlsCert ? 'tls_key' : 'tls_cert'} is required when [server] ${tlsCert ? 'tls_cert' : 'tls_key'} is set`);
  }
  if (tlsCa && !tlsCert) throw new ConfigError('[server] tls_ca needs [server] tls_cert and tls_key');
  const tls = tlsCert && tlsKey ? { cert: tlsCert, key: tlsKey, ca: tlsCa } : undefined;
  if (sections.callback!.listen && !sections.wechat!.token) {
    throw new ConfigError('[wechat] token is required when [callback] listen is set (every request is checked against it)');
  }
  const http = sections.http as MegaConfig['http'];
  if (Boolean(http.tlsCert) !== Boolean(http.tlsKey)) {
    throw new ConfigError(`[http] ${http.tlsCert ? 'tls_key' : 'tls_cert'} is required when [http] ${http.tlsCert ? 'tls_cert' : 'tls_key'} is set`);
  }
  const js = sections.jetstream as MegaConfig['jetstream'];
  if (Boolean(js.tlsCert) !== Boolean(js.tlsKey)) {
    throw new ConfigError(`[jetstream] ${js.tlsCert ? 'tls_key' : 'tls_cert'} is required when [jetstream] ${js.tlsCert ? 'tls_cert' : 'tls_key'} is set`);
  }
  if (js.password && !js.user) throw new ConfigError('[jetstream] password needs [jetstream] user');
  if (sections.receipt!.webhookUrl && !sections.ledger!.enabled) {
    throw new ConfigError('[receipt] webhook_url needs [ledger] enabled = 1 (the webhook sends what the ledger records)');
  }

  return { name, file, ...sections, server: { ...server, tls } } as unknown as MegaConfig;
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
