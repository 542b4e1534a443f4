/**
 * Processes for the benchmark: the simulator and the daemon each in their own process,
 * started from dist/ exactly as an operator would (`mega simulator`, `mega <name> start
 * --foreground`), plus /proc readers for RSS and per-thread CPU.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { openTemplateStore } from '../../src/templates/index.js';
import { defaultTaskConcurrency } from '../../src/config/config.js';
import type { DaemonStatus } from '../../src/server/control-protocol.js';
import { writeIni, type IniSections } from '../../test/helpers/ini.js';

/** dist/bin/mega.js, from dist/bench/lib/procs.js. */
export const MEGA_BIN = fileURLToPath(new URL('../../bin/mega.js', import.meta.url));

export const APP_ID = 'wx_bench_app';
export const APP_SECRET = 'bench-secret-0123456789abcdef';
/** The README's sample template (`npm start --demo` installs it): a realistic size and shape. */
import { SAMPLE_TEMPLATE_KEY as TEMPLATE_KEY, SAMPLE_TEMPLATE as TEMPLATE } from '../../src/cli/demo.js';
export { freePort } from '../../test/helpers/ports.js';
export { TEMPLATE_KEY, TEMPLATE };
/** The variables every benchmark message carries. */
export const VARIABLES = { product: '巧克力', price: '39.8元', time: '2026-11-26 14:30:00' };

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

/** SIGKILLs (by their pid) every child this process started that still runs. */
export function killChildren(): void {
  for (const c of children) {
    if (isAlive(c)) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  children.clear();
}

/** {@link killChildren}, then removes the temp folders made by {@link tempDir}. */
export function cleanupAll(): void {
  killChildren();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

export function tempDir(prefix = 'mega-bench-'): string {
  const base = process.env['MEGA_BENCH_TMPDIR'] ?? os.tmpdir();
  const d = mkdtempSync(path.join(base, prefix));
  tempDirs.add(d);
  return d;
}

export function removeDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  tempDirs.delete(d);
}

export interface Spawned {
  child: ChildProcess;
  pid: number;
  match: RegExpExecArray;
  /** performance.now() just before spawn() and when the ready line was seen. */
  spawnedAt: number;
  readyAt: number;
  /** The last 64 KiB the process printed (stdout and stderr). */
  output(): string;
}

/**
 * Spawns `node dist/bin/mega.js ...args`; resolves once its stdout matches `ready`, rejects
 * when it exits first (with what it printed) or is not ready within `timeoutMs`.
 */
export function spawnMega(args: string[], ready: RegExp, timeoutMs = 60_000, nodeArgs: string[] = []): Promise<Spawned> {
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, [...nodeArgs, MEGA_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let out = '';
  const keep = (d: string): void => {
    out += d;
    if (out.length > 65536) out = out.slice(-65536);
  };
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      child.kill('SIGKILL');
      reject(new Error(`mega ${args.join(' ')}: not ready within ${timeoutMs} ms; output:\n${out}`));
    }, timeoutMs);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      const readyAt = performance.now();
      keep(d);
      if (done) return;
      const match = ready.exec(out);
      if (match) {
        done = true;
        clearTimeout(timer);
        resolve({ child, pid: child.pid!, match, spawnedAt, readyAt, output: () => out });
      }
    });
    child.stderr!.setEncoding('utf8').on('data', keep);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (done) return;
      done = true;
      reject(new Error(`mega ${args.join(' ')} exited (${signal ?? code}) before ready; output:\n${out}`));
    });
  });
}

export function isAlive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** kill -9 and wait until the process is gone. */
export async function killHard(child: ChildProcess): Promise<void> {
  if (!isAlive(child)) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** SIGTERM, wait for the exit (SIGKILL after `timeoutMs`, then null). */
export async function stopChild(child: ChildProcess, timeoutMs = 15_000): Promise<number | null> {
  if (!isAlive(child)) return child.exitCode;
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill('SIGTERM');
  });
}

// ------------------------------------------------------------------ simulator

export interface SimStats {
  tokenRequests: number;
  sendRequests: number;
  delivered: number;
  duplicates: number;
  byErrcode: Record<string, number>;
  inFlight: number;
  maxInFlight: number;
}

export interface Simulator {
  url: string;
  pid: number;
  child: ChildProcess;
  get<T>(p: string): Promise<T>;
  post<T>(p: string, body: unknown): Promise<T>;
  stats(): Promise<SimStats>;
  /** Clears record and counters, then applies `latencyMs` and `tokenErrcode`. */
  prepare(latencyMs: number, tokenErrcode?: number | null): Promise<void>;
  stop(): Promise<void>;
}

/** `mega simulator --port 0` in its own process. */
export async function startSimulator(latencyMs = 0): Promise<Simulator> {
  const s = await spawnMega(
    ['simulator', '--port', '0', '--latency-ms', String(latencyMs), '--app-id', APP_ID, '--app-secret', APP_SECRET],
    /\{"url":"([^"]+)","port":(\d+)\}/,
  );
  const url = s.match[1]!;
  const call = async <T>(p: string, init?: RequestInit): Promise<T> => {
    const res = await fetch(url + p, init);
    const json = (await res.json()) as T;
    if (!res.ok) throw new Error(`simulator ${p}: HTTP ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const post = <T>(p: string, body: unknown): Promise<T> =>
    call<T>(p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return {
    url,
    pid: s.pid,
    child: s.child,
    get: (p) => call(p),
    post,
    stats: () => call<SimStats>('/_sim/stats'),
    prepare: async (latency, tokenErrcode = null) => {
      await post('/_sim/reset', {});
      // dailyLimit: the default 100,000 would end a long benchmark session with errcode 45009.
      await post('/_sim/config', { latencyMs: latency, tokenErrcode, dailyLimit: 1_000_000_000 });
    },
    stop: async () => {
      await stopChild(s.child);
    },
  };
}

// ------------------------------------------------------------------ daemon

export interface DaemonOptions {
  simUrl: string;
  fsync?: 'always' | 'none';
  taskWorkerNum?: number;
  taskConcurrency?: number;
  /** An existing queue folder (the 1M-jobs case); default a fresh one. */
  queueDir?: string;
  /** Extra raw ini lines per section. */
  extra?: Record<string, Record<string, string | number>>;
}

export interface DaemonDir {
  dir: string;
  configDir: string;
  queueDir: string;
  dbFile: string;
}

export const DAEMON_NAME = 'bench';

/** Defaults of [setting] task_worker_num / task_concurrency (README). */
export const DEFAULT_WORKERS = Math.min(8, os.availableParallelism());
export const DEFAULT_CONCURRENCY = defaultTaskConcurrency(DEFAULT_WORKERS);

/** A fresh folder with the template database and `bench.ini`. */
export async function prepareDaemonDir(o: DaemonOptions): Promise<DaemonDir> {
  const dir = tempDir();
  const configDir = path.join(dir, 'config');
  mkdirSync(configDir, { recursive: true });
  const dbFile = path.join(dir, 'mega.db');
  const queueDir = o.queueDir ?? path.join(dir, 'queue');
  const store = openTemplateStore({ dsn: `sqlite:${dbFile}`, tablePrefix: 'mega_' });
  await store.init();
  await store.put({ key: TEMPLATE_KEY, title: 'order paid', template: JSON.stringify(TEMPLATE) });
  await store.close();
  const sections: IniSections = {
    server: { listen: ['127.0.0.1:0'], queue_file_path: queueDir, pid_file: path.join(dir, 'bench.pid'), shutdown_timeout: 5 },
    setting: {
      task_worker_num: o.taskWorkerNum ?? DEFAULT_WORKERS,
      task_concurrency: o.taskConcurrency ?? DEFAULT_CONCURRENCY,
      daemonize: 0,
    },
    pdo: { dsn: `sqlite:${dbFile}`, table_prefix: 'mega_' },
    wechat: { app_id: APP_ID, app_secret: APP_SECRET, api_base: o.simUrl },
    queue: { fsync: o.fsync ?? 'always' },
    log: { log_file: path.join(dir, 'logs', 'bench.log'), log_level: 'warn' },
  };
  for (const [s, v] of Object.entries(o.extra ?? {})) sections[s] = { ...(sections[s] ?? {}), ...v };
  writeIni(configDir, DAEMON_NAME, sections);
  return { dir, configDir, queueDir, dbFile };
}

export interface Daemon {
  pid: number;
  port: number;
  child: ChildProcess;
  dir: DaemonDir;
  /** ms from spawn() to the `listening on` line on stdout. */
  startupMs: number;
  stop(): Promise<number | null>;
}

export async function startDaemon(dir: DaemonDir, timeoutMs = 60_000): Promise<Daemon> {
  const s = await spawnMega(
    [DAEMON_NAME, 'start', '--foreground', '--config-dir', dir.configDir],
    /listening on [^\s]+:(\d+) \(pid (\d+)\)/,
    timeoutMs,
    // e.g. MEGA_BENCH_DAEMON_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the daemon
    (process.env['MEGA_BENCH_DAEMON_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== ''),
  );
  return {
    pid: s.pid,
    port: Number(s.match[1]),
    child: s.child,
    dir,
    startupMs: s.readyAt - s.spawnedAt,
    stop: () => stopChild(s.child, 30_000),
  };
}

/** `mega bench status --json` (the daemon's control socket). */
export async function daemonStatus(dir: DaemonDir): Promise<DaemonStatus> {
  const out = await new Promise<string>((resolve, reject) => {
    const c = spawn(process.execPath, [MEGA_BIN, DAEMON_NAME, 'status', '--json', '--config-dir', dir.configDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`status exited ${code}: ${text}`))));
  });
  return JSON.parse(out) as DaemonStatus;
}

// ------------------------------------------------------------------ /proc

export function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

const CLK_TCK = 100;

interface ThreadStat {
  tid: number;
  /** CPU seconds (user + system). */
  cpu: number;
  /** Clock ticks after boot at which the thread started. */
  start: number;
}

function readStat(file: string): { cpu: number; start: number } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": f[0] = state (field 3); utime = field 14, stime = 15, starttime = 22.
  return { cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK, start: Number(f[19]) };
}

export function threadStats(pid: number): ThreadStat[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: ThreadStat[] = [];
  for (const t of tids) {
    const s = readStat(`/proc/${pid}/task/${t}/stat`);
    if (s) out.push({ tid: Number(t), ...s });
  }
  return out.sort((a, b) => a.tid - b.tid);
}

/** CPU seconds the whole machine has been busy (all cores; /proc/stat, steal included). */
export function machineBusy(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) / CLK_TCK;
}

export function processCpu(pid: number): number {
  return readStat(`/proc/${pid}/stat`)?.cpu ?? NaN;
}

/**
 * CPU used by each kind of thread of the daemon between two samples, as % of one core.
 * Node names every thread "node", so threads are told apart by creation order (thread ids grow):
 * the main thread is the pid; then come V8's platform threads, created at start-up
 * ({@link V8_PLATFORM_THREADS}: 4 workers for GC and compilation + 1 delayed-task scheduler);
 * then libuv's threadpool, created on the first fs call (fs writes, fdatasync, reads);
 * the task workers are the last `workers` threads (the pool starts after the queue has opened).
 */
export const V8_PLATFORM_THREADS = 5;

export interface DaemonCpu {
  main: number;
  /** Sum over the task worker threads, and the busiest one. */
  workers: number;
  busiestWorker: number;
  v8: number;
  libuv: number;
  threads: number;
}

export interface CpuReport {
  daemon?: DaemonCpu;
  sim: number;
  bench: number;
  /** The rest of the machine's busy time: other processes, kernel threads, softirqs. */
  other: number;
  seconds: number;
}

export class CpuSampler {
  private before: Map<number, ThreadStat> = new Map();
  private t0 = 0;
  private simBefore = 0;
  private selfBefore: NodeJS.CpuUsage = process.cpuUsage();
  private daemonBefore = 0;
  private machineBefore = 0;

  constructor(
    private readonly daemonPid: number | undefined,
    private readonly workers: number,
    private readonly simPid: number | undefined,
  ) {}

  start(): void {
    this.t0 = performance.now();
    this.before = new Map((this.daemonPid ? threadStats(this.daemonPid) : []).map((t) => [t.tid, t]));
    this.simBefore = this.simPid ? processCpu(this.simPid) : 0;
    this.selfBefore = process.cpuUsage();
    this.daemonBefore = this.daemonPid ? processCpu(this.daemonPid) : 0;
    this.machineBefore = machineBusy();
  }

  /**
   * % of one core over the interval since start(): daemon by thread kind, simulator, this bench
   * process, and everything else on the machine (other processes, kernel threads, interrupts).
   */
  stop(): CpuReport {
    const seconds = (performance.now() - this.t0) / 1000;
    const pct = (cpuSeconds: number): number => (100 * cpuSeconds) / seconds;
    const self = process.cpuUsage(this.selfBefore);
    const simCpu = this.simPid ? processCpu(this.simPid) - this.simBefore : 0;
    const daemonCpu = this.daemonPid ? processCpu(this.daemonPid) - this.daemonBefore : 0;
    const benchCpu = (self.user + self.system) / 1e6;
    const result: CpuReport = {
      sim: this.simPid ? pct(simCpu) : NaN,
      bench: pct(benchCpu),
      other: Math.max(0, pct(machineBusy() - this.machineBefore - simCpu - daemonCpu - benchCpu)),
      seconds,
    };
    if (this.daemonPid) {
      const now = threadStats(this.daemonPid);
      const delta = (t: ThreadStat): number => t.cpu - (this.before.get(t.tid)?.cpu ?? 0);
      const main = now.find((t) => t.tid === this.daemonPid);
      const others = now.filter((t) => t.tid !== this.daemonPid);
      const workerThreads = others.slice(-this.workers);
      const rest = others.slice(0, Math.max(0, others.length - this.workers));
      const v8 = rest.slice(0, V8_PLATFORM_THREADS);
      const libuv = rest.slice(V8_PLATFORM_THREADS);
      const sum = (ts: ThreadStat[]): number => ts.reduce((a, t) => a + delta(t), 0);
      result.daemon = {
        main: main ? pct(delta(main)) : NaN,
        workers: pct(sum(workerThreads)),
        busiestWorker: pct(Math.max(0, ...workerThreads.map(delta))),
        v8: pct(sum(v8)),
        libuv: pct(sum(libuv)),
        threads: now.length,
      };
    }
    return result;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
