/**
 * The JetStream backend's benchmark (issue 13 part 8): `npm run bench -- --only jetstream`.
 *
 * For `[queue] backend = jetstream` with replicas 1 (one nats-server) and replicas 3 (a 3-node
 * cluster), and 1, 2 and 3 daemons of one service (the load spread over all of them):
 * - ingest: acknowledged Push/s and ACK p99, dispatch held (the simulator refuses tokens), as
 *   run.ts's ingest figure;
 * - end to end at 50 ms simulator latency: Pushes until the simulator delivered every one.
 * Baselines measured in the same run: a file-backend daemon through the same code paths, and a
 * bare loop of async JetStream publishes from this process of the records the daemon stores
 * (encodeJobRecord, Nats-Msg-Id set, WorkQueue stream, as many outstanding as the daemons had).
 * Targets: (a) one daemon on JetStream delivers end to end >= 0.85 x the file backend at 50 ms;
 * (b) its acknowledged Push/s with replicas 1 >= 0.7 x the bare publish loop.
 *
 * Every NATS server is started here on free loopback ports with its store in a temp folder (never
 * the machine's own server), wiped between phases (every stream deleted, the service's key-value
 * buckets too, so a pause announced while ingest held dispatch does not reach the end-to-end
 * phase) and stopped at the end; an exit handler SIGKILLs any still running.
 *
 * Options it reads (run.ts's): --quick, --runs (default 1 here), --measure-ms (default 3000),
 * --inflight (default 1008: 12 connections x 84), --messages (default 10000), --e2e-warmup
 * (default 1000), --latencies (default 50), --workers, --concurrency, --out, --no-write; its own:
 * --js-daemons LIST (default 1,2,3), --js-replicas LIST (default 1,3).
 * Writes bench/results/jetstream-<date>[-quick].md and .json. About 3 minutes on 2 cores.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { ClientMsgIdGenerator, encodeJobRecord } from '../src/jobs/record.js';
import { pushBurst, runPushLoad, type PushLoadResult } from './lib/client.js';
import { Samples, fmtInt, fmtMs, fmtRatio, median } from './lib/stats.js';
import {
  DAEMON_NAME,
  TEMPLATE_KEY,
  VARIABLES,
  freePort,
  CpuSampler,
  machineBusy,
  prepareDaemonDir,
  processCpu,
  removeDir,
  sleep,
  startDaemon,
  startSimulator,
  tempDir,
  type Daemon,
  type DaemonCpu,
  type DaemonDir,
  type Simulator,
} from './lib/procs.js';
import type { Settings } from './scenarios.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** @defaultValue '/usr/sbin/nats-server' (MEGA_TEST_NATS_SERVER, as the tests) */
const NATS_SERVER_BIN = process.env['MEGA_TEST_NATS_SERVER'] || '/usr/sbin/nats-server';
/** Simulator token errcode that holds dispatch (40164: IP not in the whitelist), as scenarios.ts. */
const HOLD_DISPATCH = 40164;
const E2E_TARGET = 0.85;
const INGEST_TARGET = 0.7;
/** The daemon's stream (MEGA_<NAME>, docs/CONFIGURATION.md). */
const DAEMON_STREAM = `MEGA_${DAEMON_NAME.toUpperCase()}`;

export type Backend = 'file' | 'jetstream';

/** The options run.ts parsed (the ones this part reads). */
export interface JetStreamBenchValues {
  quick?: boolean | undefined;
  runs?: string | undefined;
  messages?: string | undefined;
  'e2e-warmup'?: string | undefined;
  inflight?: string | undefined;
  'measure-ms'?: string | undefined;
  latencies?: string | undefined;
  'js-daemons'?: string | undefined;
  'js-replicas'?: string | undefined;
}

export interface JetStreamBenchInput {
  values: JetStreamBenchValues;
  settings: Settings;
  machine: { cores: number; model: string; memoryBytes: number; node: string; os: string; commit: string };
  fdatasyncMs: number;
  backgroundCpu: number;
  startedAt: Date;
  /** Where the Markdown goes (the JSON next to it); default bench/results/jetstream-<date>[-quick].md; undefined with write false. */
  out?: string | undefined;
  write: boolean;
}

/** % of one core over a measured interval. */
export interface JsCpu {
  daemons: number;
  nats: number;
  sim: number;
  bench: number;
  other: number;
  /** The first daemon by thread (main, V8 helpers, ...): whether one thread is the limit. */
  firstDaemon?: DaemonCpu | undefined;
}

export interface JsIngestRun {
  rate: number;
  p50: number;
  /** The worst daemon's p99 (each daemon's load is measured by its own clients). */
  p99: number;
  max: number;
  perDaemon: number[];
  /** ms until 20 Pushes to each fresh daemon were answered (before the load). */
  firstPushesMs: number;
  cpu: JsCpu;
}

export interface JsE2eRun {
  messages: number;
  seconds: number;
  rate: number;
  /** When every Push was acknowledged, seconds after the first was written. */
  ingestSeconds: number;
  duplicates: number;
  /** Jobs left in the stream once everything was delivered (JetStream only; should be 0). */
  leftInStream: number;
  cpu: JsCpu;
}

export interface BareRun {
  outstanding: number;
  rate: number;
  p50: number;
  p99: number;
  payloadBytes: number;
  cpu: JsCpu;
}

export interface JsCase {
  backend: Backend;
  /** 0 for the file backend. */
  replicas: number;
  daemons: number;
  ingest: JsIngestRun[];
  e2e: JsE2eRun[];
}


export interface JetStreamResults {
  date: string;
  machine: JetStreamBenchInput['machine'];
  fdatasyncMs: number;
  backgroundCpu: number;
  settings: {
    runs: number;
    workers: number;
    concurrency: number;
    connections: number;
    window: number;
    warmupMs: number;
    measureMs: number;
    messages: number;
    e2eWarmup: number;
    latencyMs: number[];
    daemonCounts: number[];
    replicas: number[];
    quick: boolean;
    natsServer: string;
  };
  /** One entry per latency: every case measured at it. */
  cases: Array<{ latencyMs: number; cases: JsCase[] }>;
  bare: Array<{ replicas: number; runs: BareRun[] }>;
  durationSeconds: number;
}

function intOpt(name: string, v: string | undefined, def: number, min = 1): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

function listOpt(name: string, v: string | undefined, def: number[], min: number, max: number): number[] {
  if (v === undefined) return def;
  return v.split(',').map((x) => {
    const n = intOpt(name, x.trim(), 0, min);
    if (n > max) throw new Error(`--${name}: ${n} is more than ${max}`);
    return n;
  });
}

// ------------------------------------------------------------------ nats-server

interface NatsServers {
  servers: string[];
  pids: number[];
  stop(): Promise<void>;
}

/** Every nats-server this process started and has not seen exit; SIGKILLed by the exit handler. */
const natsChildren = new Map<ChildProcess, string>();
let exitHandler = false;

function killNatsSync(): void {
  for (const [child, dir] of natsChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  }
  natsChildren.clear();
}

/**
 * `size` nats-servers with JetStream on free loopback ports (a cluster with routes when more than
 * one), resolved once JetStream accepts a stream of `size` replicas (a new cluster elects its meta
 * leader first, a few seconds).
 */
export async function startNatsServers(size: number): Promise<NatsServers> {
  if (!exitHandler) {
    exitHandler = true;
    process.on('exit', killNatsSync);
  }
  const root = tempDir('mega-bench-nats-');
  const ports = await Promise.all(Array.from({ length: size }, () => freePort()));
  const routePorts = size > 1 ? await Promise.all(Array.from({ length: size }, () => freePort())) : [];
  const routes = routePorts.map((p) => `nats://127.0.0.1:${p}`).join(',');
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      children.map(async (child) => {
        if (child.exitCode === null && child.signalCode === null) {
          const gone = once(child, 'exit');
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await gone;
          clearTimeout(timer);
        }
        natsChildren.delete(child);
      }),
    );
    removeDir(root);
  };
  try {
    await Promise.all(
      ports.map(async (port, i) => {
        const name = `n${i + 1}`;
        const cluster = size > 1 ? ['--cluster_name', 'mega-bench', '--cluster', `nats://127.0.0.1:${routePorts[i]}`, '--routes', routes] : [];
        const child = spawn(NATS_SERVER_BIN, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', path.join(root, name), '-n', name, ...cluster], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        children.push(child);
        natsChildren.set(child, root);
        child.once('exit', () => natsChildren.delete(child));
        let text = '';
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`nats-server ${name} not ready within 10 s:\n${text}`)), 10_000);
          child.stderr!.setEncoding('utf8').on('data', (d: string) => {
            // keep reading (a full pipe would stall the server), keep little
            if (text.length < 20_000) text += d;
            if (text.includes('Server is ready')) {
              clearTimeout(timer);
              resolve();
            }
          });
          child.once('error', (err) => {
            clearTimeout(timer);
            reject(err);
          });
          child.once('exit', (code) => {
            clearTimeout(timer);
            reject(new Error(`nats-server ${name} exited (${code}) before it was ready:\n${text}`));
          });
        });
      }),
    );
    const servers = ports.map((p) => `nats://127.0.0.1:${p}`);
    // jetstreamManager() itself asks for the account info, which fails until there is a meta leader
    const deadline = performance.now() + 30_000;
    for (;;) {
      try {
        await withJsm(servers, async (jsm) => {
          await jsm.streams.add({ name: 'BENCH_PROBE', subjects: ['bench.probe'], num_replicas: size, storage: StorageType.File });
          await jsm.streams.delete('BENCH_PROBE');
        });
        break;
      } catch (err) {
        if (performance.now() > deadline) throw new Error(`JetStream of ${size} node(s) not ready within 30 s: ${(err as Error).message}`);
        await sleep(250);
      }
    }
    return { servers, pids: children.map((c) => c.pid!), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function withJsm<T>(servers: string[], f: (jsm: JetStreamManager, nc: NatsConnection) => Promise<T>): Promise<T> {
  const nc = await connect({ servers, name: 'mega-bench', maxReconnectAttempts: 10 });
  try {
    return await f(await jetstreamManager(nc), nc);
  } finally {
    await nc.close();
  }
}

/** Deletes every stream (the jobs and the service's key-value buckets): the next phase starts as a new service. */
async function wipeStreams(servers: string[]): Promise<void> {
  await withJsm(servers, async (jsm) => {
    const names: string[] = [];
    for await (const s of jsm.streams.list()) names.push(s.config.name);
    for (const n of names) await jsm.streams.delete(n);
  });
}

async function streamMessages(servers: string[], stream: string): Promise<number> {
  return withJsm(servers, async (jsm) => (await jsm.streams.info(stream)).state.messages);
}

// ------------------------------------------------------------------ CPU

/** CPU of the daemons, the NATS servers, the simulator, this process and the rest of the machine. */
class GroupCpu {
  private t0 = 0;
  private before = { daemons: 0, nats: 0, sim: 0, machine: 0 };
  private self = process.cpuUsage();
  private readonly threads: CpuSampler | undefined;
  constructor(
    private readonly daemons: number[],
    private readonly nats: number[],
    private readonly sim: number,
    workers = 0,
  ) {
    this.threads = daemons.length > 0 ? new CpuSampler(daemons[0], workers, undefined) : undefined;
  }
  private read(): { daemons: number; nats: number; sim: number; machine: number } {
    const sum = (pids: number[]): number => pids.reduce((a, p) => a + (processCpu(p) || 0), 0);
    return { daemons: sum(this.daemons), nats: sum(this.nats), sim: processCpu(this.sim) || 0, machine: machineBusy() };
  }
  start(): void {
    this.t0 = performance.now();
    this.before = this.read();
    this.self = process.cpuUsage();
    this.threads?.start();
  }
  stop(): JsCpu {
    const seconds = (performance.now() - this.t0) / 1000;
    const now = this.read();
    const own = process.cpuUsage(this.self);
    const bench = (own.user + own.system) / 1e6;
    const d = now.daemons - this.before.daemons;
    const n = now.nats - this.before.nats;
    const s = now.sim - this.before.sim;
    const pct = (x: number): number => (100 * x) / seconds;
    const firstDaemon = this.threads?.stop().daemon;
    return { daemons: pct(d), nats: pct(n), sim: pct(s), bench: pct(bench), other: Math.max(0, pct(now.machine - this.before.machine - d - n - s - bench)), firstDaemon };
  }
}

// ------------------------------------------------------------------ daemons

interface Service {
  daemons: Daemon[];
  stop(): Promise<void>;
}

async function startService(sim: Simulator, s: Settings, backend: Backend, count: number, servers: string[], replicas: number): Promise<Service> {
  const dirs: DaemonDir[] = [];
  const daemons: Daemon[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(daemons.map((d) => d.stop()));
    for (const d of dirs) removeDir(d.dir);
  };
  try {
    for (let i = 0; i < count; i++) {
      const o: Parameters<typeof prepareDaemonDir>[0] = { simUrl: sim.url, fsync: 'always', taskWorkerNum: s.workers, taskConcurrency: s.concurrency };
      // comma-separated servers: the key also takes that form (config/keys.ts natsServers)
      if (backend === 'jetstream') o.extra = { queue: { backend: 'jetstream' }, jetstream: { servers: servers.join(','), replicas } };
      const dir = await prepareDaemonDir(o);
      dirs.push(dir);
      // one after the other: the first creates the stream and the buckets
      daemons.push(await startDaemon(dir));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { daemons, stop };
}

/**
 * 20 Pushes to each daemon, answered: each one's stream (with a new replicated stream, its
 * leader) takes publishes before the measurement starts. Returns how long that took, in ms.
 */
async function firstPushes(svc: Service): Promise<number> {
  const t0 = performance.now();
  const rs = await Promise.all(svc.daemons.map((d) => pushBurst(d.port, 20, 1, 20)));
  const bad = rs.find((r) => r.errors > 0);
  if (bad) throw new Error(`first pushes refused: ${bad.firstError}`);
  return performance.now() - t0;
}

/** Splits `total` over `parts` as evenly as whole numbers allow. */
function spread(total: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));
}

async function ingestCase(
  sim: Simulator,
  s: Settings,
  c: { backend: Backend; daemons: number; servers: string[]; natsPids: number[]; replicas: number },
  o: { connections: number; window: number; warmupMs: number; measureMs: number },
): Promise<JsIngestRun> {
  await sim.prepare(0, HOLD_DISPATCH);
  const svc = await startService(sim, s, c.backend, c.daemons, c.servers, c.replicas);
  try {
    await sleep(200);
    const ready = await firstPushes(svc);
    if (ready > 500) s.log(`jetstream: the first Pushes (20 per daemon) took ${Math.round(ready)} ms to be acknowledged`);
    const cpu = new GroupCpu(svc.daemons.map((d) => d.pid), c.natsPids, sim.pid, s.workers);
    let measured: JsCpu | undefined;
    const conns = spread(o.connections, c.daemons);
    const results: PushLoadResult[] = await Promise.all(
      svc.daemons.map((d, i) =>
        runPushLoad({
          port: d.port,
          connections: Math.max(1, conns[i]!),
          window: o.window,
          warmupMs: o.warmupMs,
          measureMs: o.measureMs,
          ...(i === 0 ? { onMeasureStart: () => cpu.start(), onMeasureEnd: () => (measured = cpu.stop()) } : {}),
        }),
      ),
    );
    const bad = results.find((r) => r.errors > 0);
    if (bad) throw new Error(`ingest ${c.backend} ${c.daemons} daemon(s): ${results.reduce((a, r) => a + r.errors, 0)} pushes not acknowledged: ${bad.firstError}`);
    return {
      rate: results.reduce((a, r) => a + r.rate, 0),
      p50: Math.max(...results.map((r) => r.p50)),
      p99: Math.max(...results.map((r) => r.p99)),
      max: Math.max(...results.map((r) => r.max)),
      perDaemon: results.map((r) => r.rate),
      firstPushesMs: ready,
      cpu: measured!,
    };
  } finally {
    await svc.stop();
  }
}

/** Polls until the simulator delivered `target`; returns when it did. */
async function waitDelivered(sim: Simulator, target: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const st = await sim.stats();
    const now = performance.now();
    if (st.delivered >= target) return now;
    const bad = Object.entries(st.byErrcode).filter(([code]) => code !== '0');
    if (bad.length > 0) throw new Error(`simulator answered errors: ${JSON.stringify(st.byErrcode)}`);
    if (now > deadline) throw new Error(`only ${st.delivered} of ${target} delivered within ${timeoutMs} ms`);
    await sleep(st.delivered >= target * 0.9 ? 2 : 50);
  }
}

/** Pushes spread over the daemons of a fresh service, timed until the simulator delivered every one. */
async function e2eCase(
  sim: Simulator,
  s: Settings,
  c: { backend: Backend; daemons: number; servers: string[]; natsPids: number[]; replicas: number },
  o: { latencyMs: number; messages: number; warmup: number },
): Promise<JsE2eRun> {
  await sim.prepare(o.latencyMs);
  const svc = await startService(sim, s, c.backend, c.daemons, c.servers, c.replicas);
  // 16 connections x 256 in flight in total, as scenarios.ts's end to end
  const conns = spread(16, c.daemons).map((n) => Math.max(1, n));
  const burst = async (count: number): Promise<{ ackedAt: number }> => {
    const rs = await Promise.all(svc.daemons.map((d, i) => pushBurst(d.port, spread(count, c.daemons)[i]!, conns[i]!, 256)));
    const bad = rs.find((r) => r.errors > 0);
    if (bad) throw new Error(`e2e ${c.backend} ${c.daemons} daemon(s): pushes refused: ${bad.firstError}`);
    return { ackedAt: Math.max(...rs.map((r) => r.ackedAt)) };
  };
  try {
    await sleep(200);
    const ready = await firstPushes(svc);
    if (ready > 500) s.log(`jetstream: the first Pushes (20 per daemon) took ${Math.round(ready)} ms to be acknowledged`);
    await waitDelivered(sim, 20 * c.daemons, 60_000);
    await sim.prepare(o.latencyMs);
    if (o.warmup > 0) {
      // untimed: tokens fetched, keep-alive connections open, hot code compiled
      await burst(o.warmup);
      await waitDelivered(sim, o.warmup, 120_000);
      await sleep(100);
      await sim.prepare(o.latencyMs);
    }
    const cpu = new GroupCpu(svc.daemons.map((d) => d.pid), c.natsPids, sim.pid, s.workers);
    cpu.start();
    const t0 = performance.now();
    const pushed = burst(o.messages);
    const tEnd = await waitDelivered(sim, o.messages, 300_000);
    const measured = cpu.stop();
    const b = await pushed;
    const seconds = (tEnd - t0) / 1000;
    let leftInStream = 0;
    if (c.backend === 'jetstream') {
      // acknowledgements follow the deliveries by a moment
      const deadline = performance.now() + 3000;
      while ((leftInStream = await streamMessages(c.servers, DAEMON_STREAM)) > 0 && performance.now() < deadline) await sleep(100);
    }
    await sleep(200); // a redelivered job would show as a duplicate
    const st = await sim.stats();
    return { messages: o.messages, seconds, rate: o.messages / seconds, ingestSeconds: (b.ackedAt - t0) / 1000, duplicates: st.duplicates, leftInStream, cpu: measured };
  } finally {
    await svc.stop();
  }
}

// ------------------------------------------------------------------ the bare publish loop

/**
 * `outstanding` async JetStream publishes at all times from this process, to a WorkQueue stream
 * of `replicas`, each a job record as the daemon encodes it for a Push with a fresh
 * client_msg_id, sent as Nats-Msg-Id: the ceiling of the daemon's ingest on this NATS.
 */
export async function bareLoop(servers: string[], natsPids: number[], simPid: number, o: { replicas: number; outstanding: number; warmupMs: number; measureMs: number }): Promise<BareRun> {
  const nc = await connect({ servers, name: 'mega-bench-bare', noAsyncTraces: true });
  try {
    const jsm = await jetstreamManager(nc);
    const subject = 'bench.bare.jobs';
    await jsm.streams.add({ name: 'BENCH_BARE', subjects: [subject], retention: RetentionPolicy.Workqueue, storage: StorageType.File, num_replicas: o.replicas });
    const js = jetstream(nc);
    const ids = new ClientMsgIdGenerator();
    // the variables as a client sends them; the daemon embeds those bytes as they came
    const body = Buffer.from(JSON.stringify(VARIABLES));
    const record = (): { payload: Buffer; msgId: string } => {
      const msgId = ids.generate();
      return { payload: encodeJobRecord({ kind: 'push', openid: 'oBenchUser000000Abcdefghijklm', key: TEMPLATE_KEY, clientMsgId: msgId, body, at: Date.now() }), msgId };
    };
    const payloadBytes = record().payload.length;
    const latencies = new Samples(1 << 18);
    const cpu = new GroupCpu([], natsPids, simPid);
    let measured: JsCpu | undefined;
    const t0 = performance.now();
    const measureStart = t0 + o.warmupMs;
    const measureEnd = measureStart + o.measureMs;
    // Not a timer: with a thousand publishes outstanding, the NATS client keeps this event loop
    // from its timers for a second or more (measured: a 500 ms timer fired after ~2,000 ms).
    let started = false;
    let acked = 0;
    let failures = 0;
    let firstFailure = '';
    const loop = async (): Promise<void> => {
      while (performance.now() < measureEnd) {
        const { payload, msgId } = record();
        const sentAt = performance.now();
        try {
          await js.publish(subject, payload, { msgID: msgId, timeout: 10_000 });
        } catch (err) {
          failures++;
          firstFailure ||= (err as Error).message;
          continue;
        }
        const now = performance.now();
        if (!started && now >= measureStart) {
          started = true;
          cpu.start();
        }
        if (now >= measureStart && now < measureEnd) acked++;
        if (sentAt >= measureStart && sentAt < measureEnd) latencies.push(now - sentAt);
      }
      if (started) measured ??= cpu.stop();
    };
    await Promise.all(Array.from({ length: o.outstanding }, loop));
    if (failures > 0) throw new Error(`bare publish loop: ${failures} publishes failed, first: ${firstFailure}`);
    await jsm.streams.delete('BENCH_BARE');
    const [p50, p99] = latencies.percentiles([50, 99]);
    return { outstanding: o.outstanding, rate: acked / (o.measureMs / 1000), p50: p50!, p99: p99!, payloadBytes, cpu: measured! };
  } finally {
    await nc.close();
  }
}

// ------------------------------------------------------------------ the part

export async function jetstreamBench(input: JetStreamBenchInput): Promise<JetStreamResults> {
  const { values, settings } = input;
  const log = settings.log;
  const quick = values.quick === true;
  const runs = intOpt('runs', values.runs, 1);
  const connections = 12; // divides over 1, 2 and 3 daemons evenly
  const inflight = intOpt('inflight', values.inflight, 1008);
  const window = Math.max(1, Math.ceil(inflight / connections));
  const measureMs = intOpt('measure-ms', values['measure-ms'], quick ? 1500 : 3000);
  const warmupMs = quick ? 500 : 1000;
  const messages = intOpt('messages', values.messages, quick ? 4000 : 10_000);
  const e2eWarmup = intOpt('e2e-warmup', values['e2e-warmup'], quick ? 500 : 1000, 0);
  const latencies = listOpt('latencies', values.latencies, [50], 0, 60_000);
  const daemonCounts = listOpt('js-daemons', values['js-daemons'], [1, 2, 3], 1, 12);
  const replicaCounts = listOpt('js-replicas', values['js-replicas'], [1, 3], 1, 5);
  const natsServer = await natsVersion();
  const t0 = performance.now();
  const results: JetStreamResults = {
    date: input.startedAt.toISOString(),
    machine: input.machine,
    fdatasyncMs: input.fdatasyncMs,
    backgroundCpu: input.backgroundCpu,
    settings: {
      runs,
      workers: settings.workers,
      concurrency: settings.concurrency,
      connections,
      window,
      warmupMs,
      measureMs,
      messages,
      e2eWarmup,
      latencyMs: latencies,
      daemonCounts,
      replicas: replicaCounts,
      quick,
      natsServer,
    },
    cases: latencies.map((latencyMs) => ({ latencyMs, cases: [] })),
    bare: [],
    durationSeconds: 0,
  };
  log(`jetstream: ${natsServer}; ingest ${connections} connections x ${window} in flight, ${measureMs} ms measured; end to end ${messages} messages at ${latencies.join(', ')} ms`);

  const sim = await startSimulator(0);
  try {
    const caseOf = (latencyMs: number, backend: Backend, replicas: number, daemons: number): JsCase => {
      const list = results.cases.find((x) => x.latencyMs === latencyMs)!.cases;
      let c = list.find((x) => x.backend === backend && x.replicas === replicas && x.daemons === daemons);
      if (!c) list.push((c = { backend, replicas, daemons, ingest: [], e2e: [] }));
      return c;
    };
    const ingestCases: Map<string, JsIngestRun[]> = new Map();
    const ingestOf = (backend: Backend, replicas: number, daemons: number): JsIngestRun[] => {
      const k = `${backend}/${replicas}/${daemons}`;
      if (!ingestCases.has(k)) ingestCases.set(k, []);
      return ingestCases.get(k)!;
    };
    const cpuText = (c: JsCpu): string =>
      `CPU daemons ${c.daemons.toFixed(0)}% (first: main ${c.firstDaemon?.main.toFixed(0) ?? '-'}%, V8 ${c.firstDaemon?.v8.toFixed(0) ?? '-'}%, libuv ${c.firstDaemon?.libuv.toFixed(0) ?? '-'}%, workers ${c.firstDaemon?.workers.toFixed(0) ?? '-'}%), NATS ${c.nats.toFixed(0)}%, sim ${c.sim.toFixed(0)}%, bench ${c.bench.toFixed(0)}%, rest ${c.other.toFixed(0)}%`;

    for (let run = 0; run < runs; run++) {
      // the baseline: one file-backend daemon, same loads
      {
        const c = { backend: 'file' as const, daemons: 1, servers: [], natsPids: [], replicas: 0 };
        const r = await ingestCase(sim, settings, c, { connections, window, warmupMs, measureMs });
        log(`jetstream: ingest file backend, 1 daemon: ${Math.round(r.rate)} Push/s, p99 ${r.p99.toFixed(2)} ms; ${cpuText(r.cpu)}`);
        ingestOf('file', 0, 1).push(r);
        for (const latencyMs of latencies) {
          const e = await e2eCase(sim, settings, c, { latencyMs, messages, warmup: e2eWarmup });
          log(`jetstream: e2e ${latencyMs} ms file backend, 1 daemon: ${Math.round(e.rate)} msg/s (${e.seconds.toFixed(2)} s, acked after ${e.ingestSeconds.toFixed(2)} s); ${cpuText(e.cpu)}`);
          caseOf(latencyMs, 'file', 0, 1).e2e.push(e);
        }
      }
      for (const replicas of replicaCounts) {
        const nats = await startNatsServers(replicas);
        try {
          const bare = await bareLoop(nats.servers, nats.pids, sim.pid, { replicas, outstanding: connections * window, warmupMs, measureMs });
          log(`jetstream: bare publish loop, replicas ${replicas}, ${bare.outstanding} outstanding: ${Math.round(bare.rate)} msg/s, p99 ${bare.p99.toFixed(2)} ms; ${cpuText(bare.cpu)}`);
          let b = results.bare.find((x) => x.replicas === replicas);
          if (!b) results.bare.push((b = { replicas, runs: [] }));
          b.runs.push(bare);
          await wipeStreams(nats.servers);
          for (const daemons of daemonCounts) {
            const c = { backend: 'jetstream' as const, daemons, servers: nats.servers, natsPids: nats.pids, replicas };
            const r = await ingestCase(sim, settings, c, { connections, window, warmupMs, measureMs });
            log(
              `jetstream: ingest replicas ${replicas}, ${daemons} daemon(s): ${Math.round(r.rate)} Push/s (${r.perDaemon.map((x) => Math.round(x)).join(' + ')}), p99 ${r.p99.toFixed(2)} ms; ${cpuText(r.cpu)}`,
            );
            ingestOf('jetstream', replicas, daemons).push(r);
            await wipeStreams(nats.servers);
            for (const latencyMs of latencies) {
              const e = await e2eCase(sim, settings, c, { latencyMs, messages, warmup: e2eWarmup });
              log(
                `jetstream: e2e ${latencyMs} ms replicas ${replicas}, ${daemons} daemon(s): ${Math.round(e.rate)} msg/s (${e.seconds.toFixed(2)} s, acked after ${e.ingestSeconds.toFixed(2)} s; ${e.duplicates} duplicates, ${e.leftInStream} left in the stream); ${cpuText(e.cpu)}`,
              );
              caseOf(latencyMs, 'jetstream', replicas, daemons).e2e.push(e);
              await wipeStreams(nats.servers);
            }
          }
        } finally {
          await nats.stop();
        }
      }
    }
    // ingest figures do not depend on the latency: shown with every latency's table
    for (const l of results.cases) for (const c of l.cases) c.ingest = ingestOf(c.backend, c.replicas, c.daemons);
  } finally {
    await sim.stop();
  }
  results.durationSeconds = (performance.now() - t0) / 1000;

  const markdown = renderJetStream(results);
  process.stdout.write(markdown);
  if (input.write) {
    const day = input.startedAt.toISOString().slice(0, 10);
    const out = input.out ?? path.join(REPO, 'bench', 'results', `jetstream-${day}${quick ? '-quick' : ''}.md`);
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, markdown);
    writeFileSync(out.replace(/\.md$/, '') + '.json', `${JSON.stringify(results, null, 2)}\n`);
    log(`written: ${out}`);
  }
  log(`jetstream part took ${results.durationSeconds.toFixed(0)} s`);
  return results;
}

async function natsVersion(): Promise<string> {
  const child = spawn(NATS_SERVER_BIN, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${NATS_SERVER_BIN} --version exited ${code}`);
  return text.trim();
}

// ------------------------------------------------------------------ report

const int = fmtInt;
const pct = (n: number): string => (Number.isFinite(n) ? `${Math.round(n)}%` : 'n/a');
const met = (ratio: number, target: number): string => (!Number.isFinite(ratio) ? 'n/a' : ratio >= target ? '**met**' : '**not met**');

function caseName(c: { backend: Backend; replicas: number }): string {
  return c.backend === 'file' ? 'file queue (fsync always)' : `JetStream, replicas ${c.replicas} (${c.replicas} node${c.replicas > 1 ? 's' : ''})`;
}

function medianCpu(cs: JsCpu[]): JsCpu & { main: number; v8: number } {
  return {
    main: median(cs.map((c) => c.firstDaemon?.main ?? NaN)),
    v8: median(cs.map((c) => c.firstDaemon?.v8 ?? NaN)),
    daemons: median(cs.map((c) => c.daemons)),
    nats: median(cs.map((c) => c.nats)),
    sim: median(cs.map((c) => c.sim)),
    bench: median(cs.map((c) => c.bench)),
    other: median(cs.map((c) => c.other)),
  };
}

export function renderJetStream(r: JetStreamResults): string {
  const s = r.settings;
  const L: string[] = [];
  const gib = (b: number): string => `${(b / 1024 ** 3).toFixed(1)} GiB`;
  const runsText = s.runs === 1 ? 'one run' : `the **median of ${s.runs} runs**`;
  L.push(`# Mega-WeChat benchmark: the JetStream backend — ${r.date.slice(0, 10)}${s.quick ? ' (quick)' : ''}`, '');
  L.push(
    `- Machine: **${r.machine.cores} cores** (${r.machine.model}), ${gib(r.machine.memoryBytes)} RAM, ${r.machine.os}; **Node ${r.machine.node}**; commit ${r.machine.commit}; ${s.natsServer} (\`${NATS_SERVER_BIN}\`).`,
    `- Disk: one 4 KiB write + fdatasync takes ${r.fdatasyncMs.toFixed(2)} ms (median of 200). Other load before the start: ${pct(r.backgroundCpu)} of one core.`,
    `- Everything on this one machine: the daemons (\`mega ${DAEMON_NAME} start --foreground\`, each its own process and folder, task_worker_num ${s.workers} × task_concurrency ${s.concurrency}, log_level warn, SQLite template store), the nats-servers (JetStream, file store in a temp folder, loopback; 3 nodes: a cluster with routes), the simulator, and this process (load generator and bare publish loop). With several daemons they share one stream and one consumer as one service; every case starts as a new service (daemons fresh, every stream and key-value bucket deleted).`,
    `- Each figure is ${runsText}; the whole part took ${r.durationSeconds.toFixed(0)} s.`,
    '',
  );

  const file = (lat: number): JsCase | undefined => r.cases.find((x) => x.latencyMs === lat)?.cases.find((c) => c.backend === 'file');
  const js = (lat: number, replicas: number, daemons: number): JsCase | undefined =>
    r.cases.find((x) => x.latencyMs === lat)?.cases.find((c) => c.backend === 'jetstream' && c.replicas === replicas && c.daemons === daemons);
  const ingestRate = (c: JsCase | undefined): number => median(c?.ingest.map((x) => x.rate) ?? []);
  const e2eRate = (c: JsCase | undefined): number => median(c?.e2e.map((x) => x.rate) ?? []);
  const bareRate = (replicas: number): number => median(r.bare.find((b) => b.replicas === replicas)?.runs.map((x) => x.rate) ?? []);
  const lat0 = s.latencyMs.includes(50) ? 50 : s.latencyMs[0]!;

  L.push('## Against the targets', '');
  L.push('| figure | JetStream | baseline (same run) | ratio | target | |', '|---|---|---|---|---|---|');
  for (const replicas of s.replicas) {
    const j = e2eRate(js(lat0, replicas, 1));
    const f = e2eRate(file(lat0));
    L.push(
      `| (a) end to end at ${lat0} ms, 1 daemon, replicas ${replicas} / file queue | ${int(j)} msg/s | ${int(f)} msg/s | **${fmtRatio(j / f)}** | ≥ ${E2E_TARGET} | ${met(j / f, E2E_TARGET)} |`,
    );
  }
  for (const replicas of s.replicas) {
    const j = ingestRate(js(lat0, replicas, 1));
    const b = bareRate(replicas);
    const p99 = median(js(lat0, replicas, 1)?.ingest.map((x) => x.p99) ?? []);
    const target = replicas === 1 ? `≥ ${INGEST_TARGET}` : '(no target)';
    L.push(
      `| (b) ingest, 1 daemon, replicas ${replicas} / bare publish loop, replicas ${replicas} | ${int(j)} Push/s, ACK p99 ${fmtMs(p99)} | ${int(b)} msg/s | **${fmtRatio(j / b)}** | ${target} | ${replicas === 1 ? met(j / b, INGEST_TARGET) : ''} |`,
    );
  }
  L.push('');

  L.push('## Ingest: acknowledged Push/s', '');
  L.push(
    `Pipelined raw-protocol Push clients (bench/lib/client.ts), ${s.connections} connections × ${s.window} in flight = ${int(s.connections * s.window)} outstanding in total, the connections spread evenly over the daemons of the service. ${s.warmupMs} ms warm-up, then ${s.measureMs} ms measured: rate = \`result 200\` answers in the interval / its length, summed over the daemons; ACK latency = write → answer, of requests written in the interval (with several daemons: the worst daemon's percentile). Before the load, 20 Pushes to each fresh daemon, answered ("first Pushes answered after": a new replicated stream elects its leader first). Dispatch is held (the simulator refuses tokens with 40164): the figure is the front end + queue. A 200 means the stream's PubAck (with replicas 3: a quorum of 2 has the job). CPU: % of one core during the interval, summed over the daemons and over the nats-servers; the first daemon's main thread and V8 helper threads (GC, compilation) apart (threads told apart by creation order, bench/lib/procs.ts).`,
    '',
  );
  L.push(
    '| queue | daemons | acked Push/s | per daemon | ACK p50 | ACK p99 | ACK max | first Pushes answered after | vs file queue | vs bare loop | runs (Push/s) | CPU daemons | 1st daemon: main thread | 1st daemon: V8 helpers | CPU NATS | CPU client | rest |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  );
  const fIngest = ingestRate(file(lat0));
  for (const c of r.cases.find((x) => x.latencyMs === lat0)?.cases ?? []) {
    const rate = ingestRate(c);
    const cpu = medianCpu(c.ingest.map((x) => x.cpu));
    const per = c.daemons > 1 ? Array.from({ length: c.daemons }, (_, i) => int(median(c.ingest.map((x) => x.perDaemon[i]!)))).join(' + ') : '';
    L.push(
      `| ${caseName(c)} | ${c.daemons} | **${int(rate)}** | ${per} | ${fmtMs(median(c.ingest.map((x) => x.p50)))} | ${fmtMs(median(c.ingest.map((x) => x.p99)))} | ${fmtMs(median(c.ingest.map((x) => x.max)))} | ${fmtMs(median(c.ingest.map((x) => x.firstPushesMs)))} | ${c.backend === 'file' ? '1.00' : fmtRatio(rate / fIngest)} | ${c.backend === 'file' ? '' : fmtRatio(rate / bareRate(c.replicas))} | ${c.ingest.map((x) => int(x.rate)).join(' · ')} | ${pct(cpu.daemons)} | ${pct(cpu.main)} | ${pct(cpu.v8)} | ${c.backend === 'file' ? '' : pct(cpu.nats)} | ${pct(cpu.bench)} | ${pct(cpu.other)} |`,
    );
  }
  L.push('');
  L.push(
    `The bare publish loop: this process, one NATS connection, ${int(s.connections * s.window)} async \`js.publish()\` outstanding at all times (the same number as the daemons' clients), each a job record as the daemon encodes it for a Push (encodeJobRecord, ${r.bare[0]?.runs[0]?.payloadBytes ?? 'n/a'} bytes, a fresh client_msg_id sent as \`Nats-Msg-Id\`) to a WorkQueue stream of the same replicas and storage; same warm-up and interval. No TCP front end, no protocol, no second process: the ceiling of the daemon's ingest on this NATS.`,
    '',
  );
  L.push('| stream | published msg/s | publish p50 | publish p99 | runs | CPU NATS | CPU bench | rest |', '|---|---|---|---|---|---|---|---|');
  for (const b of r.bare) {
    const cpu = medianCpu(b.runs.map((x) => x.cpu));
    L.push(
      `| replicas ${b.replicas} | **${int(bareRate(b.replicas))}** | ${fmtMs(median(b.runs.map((x) => x.p50)))} | ${fmtMs(median(b.runs.map((x) => x.p99)))} | ${b.runs.map((x) => int(x.rate)).join(' · ')} | ${pct(cpu.nats)} | ${pct(cpu.bench)} | ${pct(cpu.other)} |`,
    );
  }
  L.push('');

  for (const l of r.cases) {
    L.push(`## End to end, simulator at ${l.latencyMs} ms`, '');
    L.push(
      `${int(s.e2eWarmup)} messages first, untimed (tokens, connections, JIT); then ${int(s.messages)} Pushes over 16 connections × 256 in flight, spread over the daemons, timed from the first write until the simulator has delivered every one. "acked after": when the last Push was answered. Duplicates: sends the simulator saw twice (should be 0); left: jobs still in the stream after the last delivery (should be 0).`,
      '',
    );
    L.push('| queue | daemons | delivered msg/s | vs file queue | acked after | runs (msg/s) | duplicates | left | CPU daemons | 1st daemon: main thread | CPU NATS | CPU sim | CPU client | rest |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    const f = e2eRate(file(l.latencyMs));
    for (const c of l.cases) {
      const rate = e2eRate(c);
      const cpu = medianCpu(c.e2e.map((x) => x.cpu));
      L.push(
        `| ${caseName(c)} | ${c.daemons} | **${int(rate)}** | ${fmtRatio(rate / f)} | ${median(c.e2e.map((x) => x.ingestSeconds)).toFixed(2)} s | ${c.e2e.map((x) => int(x.rate)).join(' · ')} | ${c.e2e.reduce((a, x) => a + x.duplicates, 0)} | ${c.backend === 'file' ? '' : c.e2e.reduce((a, x) => a + x.leftInStream, 0)} | ${pct(cpu.daemons)} | ${pct(cpu.main)} | ${c.backend === 'file' ? '' : pct(cpu.nats)} | ${pct(cpu.sim)} | ${pct(cpu.bench)} | ${pct(cpu.other)} |`,
      );
    }
    L.push('');
  }
  L.push(
    `On ${r.machine.cores} cores, more daemons do not add CPU: every daemon, nats-server, the simulator and the load generator share the same cores, so the 2- and 3-daemon rows show what spreading one service over several processes costs or gains here, not the scaling of a service over several hosts.`,
    '',
  );
  return `${L.join('\n')}\n`;
}
