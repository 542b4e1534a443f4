/**
 * The benchmark's scenarios. Each function runs ONE run of one figure against a fresh daemon
 * process (fresh queue folder) and the shared simulator process; run.ts repeats them and takes
 * medians.
 */
import { performance } from 'node:perf_hooks';
import { openSync, writeSync, fdatasyncSync, closeSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Pool } from 'undici';
import { FileQueue } from '../src/queue/index.js';
import { encodeJobRecord } from '../src/jobs/record.js';
import { compileTemplate, renderTemplate } from '../src/templates/index.js';
import { pushBurst, runPushLoad, sendSequential, type PushLoadResult } from './lib/client.js';
import {
  APP_ID,
  APP_SECRET,
  CpuSampler,
  TEMPLATE,
  TEMPLATE_KEY,
  VARIABLES,
  daemonStatus,
  machineBusy,
  memoryOf,
  processCpu,
  prepareDaemonDir,
  removeDir,
  sleep,
  startDaemon,
  tempDir,
  type CpuReport,
  type Daemon,
  type DaemonOptions,
  type Simulator,
} from './lib/procs.js';

/** Simulator token errcode that holds dispatch (40164: IP not in the whitelist). */
const HOLD_DISPATCH = 40164;

export type Cpu = Omit<CpuReport, 'seconds'>;

export interface Settings {
  workers: number;
  concurrency: number;
  log: (line: string) => void;
}

// ------------------------------------------------------------------ ingest

export interface IngestRun extends PushLoadResult {
  cpu: Cpu;
}

/**
 * Acknowledged Push/s with dispatch held (the simulator refuses tokens, so the daemon's
 * workers stay idle and the figure is the front end + queue alone).
 */
export async function ingestRun(
  sim: Simulator,
  s: Settings,
  o: { connections: number; window?: number; rate?: number; fsync: 'always' | 'none'; warmupMs: number; measureMs: number },
): Promise<IngestRun> {
  await sim.prepare(0, HOLD_DISPATCH);
  const dir = await prepareDaemonDir({ simUrl: sim.url, fsync: o.fsync, taskWorkerNum: s.workers, taskConcurrency: s.concurrency });
  const daemon = await startDaemon(dir);
  const sampler = new CpuSampler(daemon.pid, s.workers, sim.pid);
  let cpu: Cpu = { sim: NaN, bench: NaN, other: NaN };
  try {
    const loadOptions: Parameters<typeof runPushLoad>[0] = {
      port: daemon.port,
      connections: o.connections,
      warmupMs: o.warmupMs,
      measureMs: o.measureMs,
      onMeasureStart: () => sampler.start(),
      onMeasureEnd: () => (cpu = sampler.stop()),
    };
    if (o.window !== undefined) loadOptions.window = o.window;
    if (o.rate !== undefined) loadOptions.rate = o.rate;
    const r = await runPushLoad(loadOptions);
    return { ...r, cpu };
  } finally {
    await daemon.stop();
    removeDir(dir.dir);
  }
}

// ------------------------------------------------------------------ end to end

export interface E2eRun {
  messages: number;
  seconds: number;
  rate: number;
  /** Daemon only: when every Push was acknowledged, seconds after the first was written. */
  ingestSeconds?: number;
  /** Daemon only: delivered/s from the moment every Push was acknowledged to the end. */
  afterIngestRate?: number;
  delivered: number;
  cpu: Cpu;
  /** Largest number of sends the simulator held at once. */
  maxInFlight: number;
}

/** Polls until `delivered` reaches `target`; returns when it did, and every (time, delivered) seen on the way. */
async function waitDelivered(sim: Simulator, target: number, timeoutMs: number, seen: Array<[number, number]> = []): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const st = await sim.stats();
    const now = performance.now();
    seen.push([now, st.delivered]);
    if (st.delivered >= target) return now;
    const bad = Object.entries(st.byErrcode).filter(([code]) => code !== '0');
    if (bad.length > 0) throw new Error(`simulator answered errors: ${JSON.stringify(st.byErrcode)}`);
    if (now > deadline) throw new Error(`only ${st.delivered} of ${target} delivered within ${timeoutMs} ms`);
    // Coarse polling while far from the end, fine polling near it (the end time is what counts).
    await sleep(st.delivered >= target * 0.9 ? 2 : 50);
  }
}

/** Push `messages` through a fresh daemon and time until the simulator delivered all of them. */
export async function e2eDaemonRun(
  sim: Simulator,
  s: Settings,
  o: {
    latencyMs: number;
    messages: number;
    warmup: number;
    /** More ini keys for the daemon. */
    extra?: DaemonOptions['extra'];
    /** Started once the daemon is up (before the warm-up); the function it returns is awaited at the end. */
    alongside?: (daemon: Daemon) => Promise<() => Promise<void>>;
  },
): Promise<E2eRun> {
  await sim.prepare(o.latencyMs);
  const dir = await prepareDaemonDir({ simUrl: sim.url, fsync: 'always', taskWorkerNum: s.workers, taskConcurrency: s.concurrency, ...(o.extra ? { extra: o.extra } : {}) });
  const daemon = await startDaemon(dir);
  const stopAlongside = o.alongside ? await o.alongside(daemon) : undefined;
  try {
    await sleep(200); // let the fresh process settle (JIT of start-up code, GC)
    if (o.warmup > 0) {
      // Warm-up, not timed: the token is fetched, the workers' keep-alive connections are open
      // and the hot code is compiled, as in a daemon that has been running for a while.
      const w = await pushBurst(daemon.port, o.warmup, 16, 256);
      if (w.errors > 0) throw new Error(`${w.errors} warm-up pushes refused: ${w.firstError}`);
      await waitDelivered(sim, o.warmup, 120_000);
      await sleep(100);
      await sim.prepare(o.latencyMs); // counters back to 0; issued tokens stay valid
    }
    const sampler = new CpuSampler(daemon.pid, s.workers, sim.pid);
    sampler.start();
    const t0 = performance.now();
    const burst = pushBurst(daemon.port, o.messages, 16, 256);
    const seen: Array<[number, number]> = [];
    const tEnd = await waitDelivered(sim, o.messages, 300_000, seen);
    const cpu = sampler.stop();
    const b = await burst;
    if (b.errors > 0) throw new Error(`${b.errors} pushes refused: ${b.firstError}`);
    const st = await sim.stats();
    const seconds = (tEnd - t0) / 1000;
    // Delivery rate once every Push was acknowledged (from the first poll after that moment):
    // the daemon no longer shares its main thread and the two cores with the ingest.
    const after = seen.find(([t]) => t >= b.ackedAt);
    const afterIngestRate = after && tEnd > after[0] ? (o.messages - after[1]) / ((tEnd - after[0]) / 1000) : NaN;
    return {
      messages: o.messages,
      seconds,
      rate: o.messages / seconds,
      afterIngestRate,
      ingestSeconds: (b.ackedAt - t0) / 1000,
      delivered: st.delivered,
      cpu,
      maxInFlight: st.maxInFlight,
    };
  } finally {
    await stopAlongside?.();
    await daemon.stop();
    removeDir(dir.dir);
  }
}

/** The bodies the daemon would send: the template rendered with the same variables, one client_msg_id each. */
export function renderBodies(messages: number, tag: string): string[] {
  const compiled = compileTemplate(TEMPLATE_KEY, JSON.stringify(TEMPLATE));
  const bodies: string[] = new Array<string>(messages);
  for (let i = 0; i < messages; i++) {
    const body = renderTemplate(compiled, `oBenchUser${String(i % 16).padStart(6, '0')}Abcdefghijklm`, VARIABLES);
    body['client_msg_id'] = `${tag}-${i.toString(36)}`;
    bodies[i] = JSON.stringify(body);
  }
  return bodies;
}

/**
 * The bare undici loop: one Pool with `concurrency` connections to the same simulator, that
 * many requests in flight, posting pre-rendered bodies. The token fetch is inside the timing,
 * as a fresh daemon's is.
 */
export async function e2eBareRun(
  sim: Simulator,
  o: { latencyMs: number; messages: number; concurrency: number; tag: string; warmup: number },
): Promise<E2eRun> {
  await sim.prepare(o.latencyMs);
  const bodies = renderBodies(o.messages + o.warmup, o.tag);
  const origin = new URL(sim.url).origin;
  const pool = new Pool(origin, { connections: o.concurrency, pipelining: 1 });
  try {
    await sleep(200);
    const tokenRes = await pool.request({
      method: 'POST',
      path: '/cgi-bin/stable_token',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credential', appid: APP_ID, secret: APP_SECRET }),
    });
    const token = ((await tokenRes.body.json()) as { access_token: string }).access_token;
    const p = `/cgi-bin/message/template/send?access_token=${encodeURIComponent(token)}`;
    let failures = 0;
    let firstFailure = '';
    /** `concurrency` loops posting bodies[from, to), one request in flight each. */
    const sendAll = async (from: number, to: number): Promise<void> => {
      let next = from;
      const loop = async (): Promise<void> => {
        while (next < to) {
          const body = bodies[next++]!;
          const res = await pool.request({ method: 'POST', path: p, headers: { 'content-type': 'application/json; charset=utf-8' }, body });
          const text = await res.body.text();
          if (res.statusCode !== 200 || (JSON.parse(text) as { errcode: number }).errcode !== 0) {
            failures++;
            firstFailure ||= `${res.statusCode} ${text}`;
          }
        }
      };
      await Promise.all(Array.from({ length: o.concurrency }, loop));
    };
    if (o.warmup > 0) {
      // Warm-up, not timed, as for the daemon: connections open, code compiled.
      await sendAll(0, o.warmup);
      await sleep(100);
      await sim.prepare(o.latencyMs);
    }
    const sampler = new CpuSampler(undefined, 0, sim.pid);
    sampler.start();
    const t0 = performance.now();
    await sendAll(o.warmup, o.warmup + o.messages);
    const tEnd = performance.now();
    const cpu = sampler.stop();
    if (failures > 0) throw new Error(`bare loop: ${failures} sends failed, first: ${firstFailure}`);
    const st = await sim.stats();
    const seconds = (tEnd - t0) / 1000;
    return { messages: o.messages, seconds, rate: o.messages / seconds, delivered: st.delivered, cpu, maxInFlight: st.maxInFlight };
  } finally {
    await pool.close();
  }
}

// ------------------------------------------------------------------ send round trip

export interface SendRun {
  count: number;
  p50: number;
  p99: number;
  mean: number;
}

/** Sequential Sends on one connection to an otherwise idle daemon, simulator at 0 ms. */
export async function sendRttRun(sim: Simulator, s: Settings, o: { count: number; warmup: number }): Promise<SendRun> {
  await sim.prepare(0);
  const dir = await prepareDaemonDir({ simUrl: sim.url, fsync: 'always', taskWorkerNum: s.workers, taskConcurrency: s.concurrency });
  const daemon = await startDaemon(dir);
  try {
    await sleep(200);
    const r = await sendSequential(daemon.port, o.count, o.warmup);
    if (r.errors > 0) throw new Error(`${r.errors} sends failed: ${r.firstError}`);
    const [p50, p99] = r.samples.percentiles([50, 99]);
    return { count: o.count, p50: p50!, p99: p99!, mean: r.samples.mean() };
  } finally {
    await daemon.stop();
    removeDir(dir.dir);
  }
}

// ------------------------------------------------------------------ 1M queued jobs

export interface Backlog {
  dir: string;
  queueDir: string;
  jobs: number;
  bytes: number;
  fillSeconds: number;
}

/** Fills a queue folder directly with `jobs` job records, as the daemon would have written them. */
export async function prefillBacklog(jobs: number, log: (l: string) => void): Promise<Backlog> {
  const dir = tempDir('mega-bench-backlog-');
  const queueDir = path.join(dir, 'queue');
  const t0 = performance.now();
  const q = await FileQueue.open({ dir: queueDir, fsync: 'none' });
  const body = Buffer.from(JSON.stringify(VARIABLES));
  const at = Date.now();
  const CHUNK = 20_000;
  for (let done = 0; done < jobs; ) {
    const n = Math.min(CHUNK, jobs - done);
    const batch: Buffer[] = new Array<Buffer>(n);
    for (let i = 0; i < n; i++) {
      const k = done + i;
      batch[i] = encodeJobRecord({
        kind: 'push',
        openid: `oBenchUser${String(k % 100_000).padStart(6, '0')}Abcdefghijklm`,
        key: TEMPLATE_KEY,
        clientMsgId: `mwbench-${k.toString(36)}`,
        body,
        at,
      });
    }
    await q.appendMany(batch);
    done += n;
    if (done % 200_000 === 0) log(`  prefill: ${done.toLocaleString('en-US')} jobs`);
  }
  const stats = q.stats();
  await q.close();
  if (stats.depth !== jobs) throw new Error(`prefill: queue depth ${stats.depth}, expected ${jobs}`);
  return { dir, queueDir, jobs, bytes: stats.bytes, fillSeconds: (performance.now() - t0) / 1000 };
}

export interface BacklogRun {
  startupMs: number;
  /** % of one core the rest of the machine used while the daemon started. */
  otherCpu: number;
  rss: number;
  hwm: number;
  depth: number;
}

/**
 * Starts a daemon on the queue folder (or a fresh one when `queueDir` is undefined) with the
 * simulator refusing tokens, so the backlog stays queued; time from spawn to `listening on`,
 * memory `settleMs` later.
 */
export async function backlogRun(sim: Simulator, s: Settings, o: { queueDir?: string; settleMs: number }): Promise<BacklogRun> {
  await sim.prepare(0, HOLD_DISPATCH);
  const dirOptions: Parameters<typeof prepareDaemonDir>[0] = {
    simUrl: sim.url,
    fsync: 'always',
    taskWorkerNum: s.workers,
    taskConcurrency: s.concurrency,
  };
  if (o.queueDir !== undefined) dirOptions.queueDir = o.queueDir;
  const dir = await prepareDaemonDir(dirOptions);
  // Everything else the machine did from spawn to listening (other processes slow a start-up down).
  const busyBefore = machineBusy();
  const simBefore = processCpu(sim.pid);
  const selfBefore = process.cpuUsage();
  const spawnedAt = performance.now();
  const daemon = await startDaemon(dir);
  const daemonCpu = processCpu(daemon.pid);
  const self = process.cpuUsage(selfBefore);
  const otherSeconds = machineBusy() - busyBefore - daemonCpu - (processCpu(sim.pid) - simBefore) - (self.user + self.system) / 1e6;
  const otherCpu = Math.max(0, (100 * otherSeconds) / ((performance.now() - spawnedAt) / 1000));
  try {
    await sleep(o.settleMs);
    const mem = memoryOf(daemon.pid);
    const st = await daemonStatus(dir);
    return { startupMs: daemon.startupMs, rss: mem.rss, hwm: mem.hwm, depth: st.queue.depth, otherCpu };
  } finally {
    await daemon.stop();
    removeDir(dir.dir);
  }
}

// ------------------------------------------------------------------ the disk

/** Median time of one 4 KiB write + fdatasync in the temp folder: the floor under fsync'ed ingest. */
export function fdatasyncLatency(samples = 200): number {
  const dir = tempDir('mega-bench-fsync-');
  const file = path.join(dir, 'probe');
  const fd = openSync(file, 'w');
  const buf = Buffer.alloc(4096, 1);
  const times: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const t = performance.now();
      writeSync(fd, buf, 0, buf.length, i * buf.length);
      fdatasyncSync(fd);
      times.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
    removeDir(dir);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1]!;
}
