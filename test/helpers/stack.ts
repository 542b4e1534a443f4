import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { openTemplateStore } from '../../src/templates/index.js';
import { spawnMega, stopChild, tempDir, writeIni, type IniSections } from './processes.js';
import { RawClient } from './client.js';
import { TEST_APP_SECRET } from './secrets.js';

export interface SimulatorHandle {
  child: ChildProcess;
  url: string;
  port: number;
  get<T>(pathname: string): Promise<T>;
  post<T>(pathname: string, body: unknown): Promise<T>;
  messages(): Promise<SimMessage[]>;
  stop(): Promise<void>;
}

/** One entry of the simulator's record (see ReceivedMessage in src/simulator/simulator.ts). */
export interface SimMessage {
  index: number;
  touser?: string;
  template_id?: string;
  client_msg_id?: string;
  data?: Record<string, { value: string; color?: string }>;
  body?: Record<string, unknown>;
  status: number;
  errcode: number | null;
  duplicate: boolean;
}

/** The bundled simulator in its own process (`mega simulator --port 0`). */
export async function startSimulator(args: string[] = []): Promise<SimulatorHandle> {
  const started = await spawnMega(['simulator', '--port', '0', ...args], /\{"url":"([^"]+)","port":(\d+)\}/);
  const url = started.match[1]!;
  const call = async <T>(pathname: string, init?: RequestInit): Promise<T> => {
    const res = await fetch(url + pathname, init);
    return (await res.json()) as T;
  };
  const handle: SimulatorHandle = {
    child: started.child,
    url,
    port: Number(started.match[2]),
    get: (p) => call(p),
    post: (p, body) => call(p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    messages: async () => {
      const r = await call<{ messages: SimMessage[] } | SimMessage[]>('/_sim/messages');
      return Array.isArray(r) ? r : r.messages;
    },
    stop: async () => {
      await stopChild(started.child);
    },
  };
  return handle;
}

export interface StackOptions {
  /** Templates put into the SQLite store before start: key → JSON object or raw text. */
  templates?: Record<string, unknown>;
  /** Extra or replaced ini keys, by section. */
  ini?: IniSections;
  simulator?: SimulatorHandle;
  name?: string;
  /** Extra environment for the daemon process. */
  env?: NodeJS.ProcessEnv;
}

export interface Stack {
  dir: string;
  configDir: string;
  name: string;
  dbFile: string;
  port: number;
  daemon: ChildProcess;
  sim: SimulatorHandle;
  output: () => string;
  connect(): Promise<RawClient>;
  putTemplate(key: string, template: unknown): Promise<void>;
  stop(): Promise<number | null>;
}

export const APP_ID = 'wx_test_app';
export const APP_SECRET = TEST_APP_SECRET;

export function baseIni(dir: string, dbFile: string, apiBase: string): IniSections {
  return {
    server: { 'listen': ['127.0.0.1:0'], queue_file_path: path.join(dir, 'queue'), shutdown_timeout: 5 },
    setting: { task_worker_num: 2, task_concurrency: 8, daemonize: 0 },
    pdo: { dsn: `sqlite:${dbFile}`, table_prefix: 'mega_' },
    wechat: { app_id: APP_ID, app_secret: APP_SECRET, api_base: apiBase, retry_base_ms: 50, retry_max: 3, timeout_ms: 2000 },
    log: { log_file: path.join(dir, 'logs', 'mega.log'), log_level: 'debug' },
  };
}

function merge(base: IniSections, extra: IniSections | undefined): IniSections {
  const out: IniSections = {};
  for (const [s, v] of Object.entries(base)) out[s] = { ...v };
  for (const [s, v] of Object.entries(extra ?? {})) out[s] = { ...(out[s] ?? {}), ...v };
  return out;
}

export async function putTemplates(dbFile: string, templates: Record<string, unknown>): Promise<void> {
  const store = openTemplateStore({ dsn: `sqlite:${dbFile}`, tablePrefix: 'mega_' });
  await store.init();
  for (const [key, t] of Object.entries(templates)) {
    await store.put({ key, title: key, template: typeof t === 'string' ? t : JSON.stringify(t) });
  }
  await store.close();
}

/** A simulator (own process) and a daemon (own process, foreground) on a fresh temp folder. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = tempDir();
  const name = options.name ?? 'wechat';
  const configDir = path.join(dir, 'config');
  const dbFile = path.join(dir, 'mega.db');
  const sim = options.simulator ?? (await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET]));
  await putTemplates(dbFile, options.templates ?? {});
  writeIni(configDir, name, merge(baseIni(dir, dbFile, sim.url), options.ini));
  const started = await spawnMega([name, 'start', '--foreground', '--config-dir', configDir], /listening on [^:\s]+:(\d+)/, { env: options.env });
  const port = Number(started.match[1]);
  return {
    dir,
    configDir,
    name,
    dbFile,
    port,
    daemon: started.child,
    sim,
    output: started.output,
    connect: () => RawClient.connect(port),
    putTemplate: (key, t) => putTemplates(dbFile, { [key]: t }),
    stop: async () => {
      const code = await stopChild(started.child);
      if (!options.simulator) await sim.stop();
      return code;
    },
  };
}

/** Polls `fn` until it returns a truthy value or the timeout passes. */
export async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 10000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await fn();
    if (last) return last as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
