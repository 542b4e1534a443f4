/**
 * `npm run bench [-- options]`: the Mega-WeChat benchmark (issues 3 and 5; the receipts endpoint, issue 12).
 *
 * Starts the WeChat simulator and, per run, a fresh daemon, each in its own process; this
 * process is the load generator (pipelined raw-protocol clients) and the bare undici loop.
 * Prints a Markdown report on stdout (progress goes to stderr) and writes it to
 * bench/results/<date>.md (and the raw figures to <date>.json).
 *
 * Options:
 *   --quick              1 run per figure, shorter measurements, 200,000 queued jobs
 *   --runs N             runs per figure (default 3; each figure is the median)
 *   --only LIST          comma-separated subset of: ingest,e2e,send,backlog,receipts; also jetstream (not by
 *                        default; its own NATS servers and report, bench/jetstream.ts) and metrics (not by
 *                        default: end to end with the HTTP side on and scraped against off, bench/metrics.ts,
 *                        at least 5 runs, --latencies default 50,0, its own report)
 *   --js-daemons LIST    jetstream: daemons per service (default 1,2,3); --js-replicas LIST: 1,3
 *   --messages N         end-to-end messages per run (default 20000)
 *   --e2e-warmup N       end to end: messages sent first, untimed, by the daemon and the bare loop (default 2000)
 *   --jobs N             queued jobs for the start-up / RSS figure (default 1000000)
 *   --workers N          [setting] task_worker_num (default min(8, cores), the daemon's default)
 *   --concurrency N      [setting] task_concurrency (default ceil(512 / workers), the daemon's default)
 *   --inflight N         ingest: pushes in flight in total, split over the connections (default 512)
 *   --measure-ms N       ingest: measured interval per run (default 5000; warm-up 1000)
 *   --paced-rates LIST   ingest: open-loop rates at which ACK latency is measured (default 50000,10000)
 *   --alt-config WxC     end to end: also a daemon with W workers × C calls each, same total in flight
 *                        (default: the old defaults' 8 threads, 8x(total/8); none to skip)
 *   --latencies LIST     end-to-end simulator latencies in ms (default 0,50)
 *   --callbacks N        receipts: callbacks per closed-loop load (default 20000; --quick 5000)
 *   --callback-inflight N  receipts: requests in flight in the closed loop, one keep-alive connection each (default 64)
 *   --callback-rate N    receipts: open-loop callbacks/s (default 5000, the target)
 *   --callback-paced-ms N  receipts: length of the open-loop load (default 3000; --quick 2000)
 *   --callback-modes LIST  receipts: plain,aes (plaintext and safe mode; default both)
 *   --receipt-stores LIST  receipts: the ledger's store, sqlite,mysql (default both; MySQL from MEGA_TEST_MYSQL_*,
 *                        default root@127.0.0.1:3306/test, skipped with a notice when not reachable)
 *   --wait-quiet S       wait up to S seconds for the machine to be idle (< 15% of a core busy) first
 *   --out FILE           where to write the Markdown (default bench/results/<date>[-quick].md)
 *   --no-write           print only
 *
 * Environment:
 *   MEGA_BENCH_TMPDIR            where the temporary daemon folders and the 1M-job queue go (default os.tmpdir())
 *   MEGA_BENCH_DAEMON_NODE_ARGS  extra node flags for every daemon, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
 *   MEGA_BENCH_COMMIT            the commit to print when running from an exported copy (not a git checkout)
 *   MEGA_TEST_MYSQL_HOST/PORT/USER/PASSWORD/DATABASE  the MySQL of the receipts part (a unique table prefix, dropped after)
 *
 * Not part of `npm test`. Needs ~8 minutes on 2 cores (the receipts part ~2.5 of them), ~400 MB free in the temp folder.
 */
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { cleanupAll, machineBusy, removeDir, sleep, startSimulator, DEFAULT_CONCURRENCY, DEFAULT_WORKERS } from './lib/procs.js';
import {
  backlogRun,
  e2eBareRun,
  e2eDaemonRun,
  fdatasyncLatency,
  ingestRun,
  prefillBacklog,
  sendRttRun,
  type BacklogRun,
  type E2eRun,
  type IngestRun,
  type SendRun,
  type Settings,
} from './scenarios.js';
import { jetstreamBench } from './jetstream.js';
import { metricsBench, renderMetrics } from './metrics.js';
import { receiptsRun, type CallbackMode, type ReceiptStore, type ReceiptsRun } from './receipts.js';
import { renderReport, type BenchResults } from './report.js';
import { mysqlAvailable, mysqlTestTarget } from '../test/helpers/mysql.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

function intOpt(name: string, v: string | undefined, def: number, min = 1): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** % of one core the machine is busy with over `ms` (before the bench starts anything). */
async function backgroundLoad(ms = 2000): Promise<number> {
  const before = machineBusy();
  const self = process.cpuUsage();
  await sleep(ms);
  const mine = process.cpuUsage(self);
  return (100 * (machineBusy() - before - (mine.user + mine.system) / 1e6)) / (ms / 1000);
}

function gitDescribe(): string {
  // MEGA_BENCH_COMMIT: when running from an exported copy (git archive) of a commit.
  if (process.env['MEGA_BENCH_COMMIT']) return process.env['MEGA_BENCH_COMMIT'];
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin'], { cwd: REPO, encoding: 'utf8' }).trim();
    return dirty ? `${head} (src/ modified)` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      quick: { type: 'boolean' },
      runs: { type: 'string' },
      only: { type: 'string' },
      messages: { type: 'string' },
      'e2e-warmup': { type: 'string' },
      jobs: { type: 'string' },
      workers: { type: 'string' },
      concurrency: { type: 'string' },
      inflight: { type: 'string' },
      'measure-ms': { type: 'string' },
      'paced-rates': { type: 'string' },
      latencies: { type: 'string' },
      out: { type: 'string' },
      'wait-quiet': { type: 'string' },
      'alt-config': { type: 'string' },
      'no-write': { type: 'boolean' },
      callbacks: { type: 'string' },
      'callback-inflight': { type: 'string' },
      'callback-rate': { type: 'string' },
      'callback-paced-ms': { type: 'string' },
      'callback-modes': { type: 'string' },
      'receipt-stores': { type: 'string' },
      'js-daemons': { type: 'string' },
      'js-replicas': { type: 'string' },
    },
  });
  const quick = values.quick === true;
  const runs = intOpt('runs', values.runs, quick ? 1 : 3);
  const only = new Set((values.only ?? 'ingest,e2e,send,backlog,receipts').split(',').map((s) => s.trim()));
  for (const o of only) if (!['ingest', 'e2e', 'send', 'backlog', 'receipts', 'jetstream', 'metrics'].includes(o)) throw new Error(`--only: unknown part ${o}`);
  const listOpt = <T extends string>(name: string, v: string | undefined, all: readonly T[]): T[] => {
    const xs = (v ?? all.join(',')).split(',').map((x) => x.trim());
    for (const x of xs) if (!all.includes(x as T)) throw new Error(`--${name}: unknown ${x} (one of ${all.join(', ')})`);
    return xs as T[];
  };
  const receiptOptions = {
    callbacks: intOpt('callbacks', values.callbacks, quick ? 5_000 : 20_000),
    inflight: intOpt('callback-inflight', values['callback-inflight'], 64),
    rate: intOpt('callback-rate', values['callback-rate'], 5_000),
    pacedMs: intOpt('callback-paced-ms', values['callback-paced-ms'], quick ? 2_000 : 3_000),
    modes: listOpt<CallbackMode>('callback-modes', values['callback-modes'], ['plain', 'aes']),
    warmup: 2_000,
  };
  const receiptStores = listOpt<ReceiptStore>('receipt-stores', values['receipt-stores'], ['sqlite', 'mysql']);
  const messages = intOpt('messages', values.messages, 20_000);
  const e2eWarmup = intOpt('e2e-warmup', values['e2e-warmup'], 2_000, 0);
  const jobs = intOpt('jobs', values.jobs, quick ? 200_000 : 1_000_000);
  const settings: Settings = {
    workers: intOpt('workers', values.workers, DEFAULT_WORKERS),
    concurrency: intOpt('concurrency', values.concurrency, DEFAULT_CONCURRENCY),
    log,
  };
  const inflight = intOpt('inflight', values.inflight, 512);
  const measureMs = intOpt('measure-ms', values['measure-ms'], quick ? 2000 : 5000);
  const warmupMs = quick ? 500 : 1000;
  const pacedRates = (values['paced-rates'] ?? '50000,10000').split(',').map((x) => intOpt('paced-rates', x.trim(), 50_000));
  const latencies = (values.latencies ?? '0,50').split(',').map((s) => intOpt('latencies', s.trim(), 0, 0));

  const waitQuiet = intOpt('wait-quiet', values['wait-quiet'], 0, 0);
  let background = await backgroundLoad();
  const quietDeadline = performance.now() + waitQuiet * 1000;
  while (background > 15 && performance.now() < quietDeadline) {
    log(`the machine is busy (${Math.round(background)}% of a core used by other processes); waiting...`);
    background = await backgroundLoad(5000);
  }
  if (background > 15) log(`warning: other processes use ${Math.round(background)}% of a core; figures will be lower and noisier`);

  const startedAt = new Date();
  const t0 = performance.now();
  const cpu = os.cpus();
  const results: BenchResults = {
    date: startedAt.toISOString(),
    machine: {
      cores: cpu.length,
      model: cpu[0]?.model.trim() ?? 'unknown',
      memoryBytes: os.totalmem(),
      node: process.version,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      commit: gitDescribe(),
    },
    settings: { runs, messages, e2eWarmup, jobs, workers: settings.workers, concurrency: settings.concurrency, inflight, measureMs, warmupMs, pacedRates, quick },
    fdatasyncMs: fdatasyncLatency(),
    backgroundCpu: background,
    ingest: [],
    paced: [],
    e2e: [],
    send: undefined,
    backlog: undefined,
    receipts: undefined,
    durationSeconds: 0,
  };
  log(`mega-wechat bench: ${runs} run(s) per figure; ${results.machine.cores} cores, node ${process.version}; fdatasync ${results.fdatasyncMs.toFixed(2)} ms`);

  if (only.delete('metrics')) {
    // its own report (bench/results/metrics-<date>.md): the HTTP side on against off, same run
    const msim = await startSimulator(0);
    try {
      const m = await metricsBench(msim, settings, { runs: Math.max(runs, 5), messages: intOpt('messages', values.messages, 10_000), warmup: e2eWarmup, latencies: (values.latencies ?? '50,0').split(',').map((x) => intOpt('latencies', x.trim(), 0, 0)) });
      const day = startedAt.toISOString().slice(0, 10);
      const md = `# Mega-WeChat benchmark: the HTTP side's cost — ${day}\n\n- ${results.machine.cores} cores (${results.machine.model}), Node ${results.machine.node}, commit ${results.machine.commit}; task_worker_num ${settings.workers} × task_concurrency ${settings.concurrency}.\n\n${renderMetrics(m)}`;
      process.stdout.write(md);
      if (values['no-write'] !== true) {
        const out = path.join(REPO, 'bench', 'results', `metrics-${day}${quick ? '-quick' : ''}.md`);
        writeFileSync(out, md);
        writeFileSync(out.replace(/\.md$/, '.json'), `${JSON.stringify(m, null, 2)}\n`);
        log(`written: ${out}`);
      }
    } finally {
      await msim.stop();
    }
    if (only.size === 0) return;
  }

  if (only.delete('jetstream')) {
    const out = only.size === 0 ? values.out : undefined;
    await jetstreamBench({ values, settings, machine: results.machine, fdatasyncMs: results.fdatasyncMs, backgroundCpu: background, startedAt, out, write: values['no-write'] !== true });
    if (only.size === 0) return;
  }
  const sim = await startSimulator(0);
  try {
    if (only.has('ingest')) {
      const cases: Array<{ connections: number; fsync: 'always' | 'none' }> = [
        { connections: 1, fsync: 'always' },
        { connections: 4, fsync: 'always' },
        { connections: 16, fsync: 'always' },
        { connections: 16, fsync: 'none' },
      ];
      for (const c of cases) {
        const window = Math.max(1, Math.floor(inflight / c.connections));
        const rs: IngestRun[] = [];
        for (let i = 0; i < runs; i++) {
          const r = await ingestRun(sim, settings, { ...c, window, warmupMs, measureMs });
          if (r.errors > 0) throw new Error(`ingest: ${r.errors} pushes not acknowledged: ${r.firstError}`);
          log(`ingest ${c.connections} conn fsync ${c.fsync} window ${window}: ${Math.round(r.rate)} Push/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms; CPU main ${r.cpu.daemon?.main.toFixed(0)}%, libuv ${r.cpu.daemon?.libuv.toFixed(0)}%, bench ${r.cpu.bench.toFixed(0)}%`);
          rs.push(r);
        }
        results.ingest.push({ ...c, window, runs: rs });
      }
      for (const rate of pacedRates) {
        const rs: IngestRun[] = [];
        for (let i = 0; i < runs; i++) {
          const r = await ingestRun(sim, settings, { connections: 16, fsync: 'always', rate, warmupMs: 2 * warmupMs, measureMs });
          if (r.errors > 0) throw new Error(`ingest paced: ${r.errors} pushes not acknowledged: ${r.firstError}`);
          log(`ingest paced ${rate}/s, 16 conn, fsync always: ${Math.round(r.rate)} Push/s acked, ${Math.round(r.sent / r.seconds)} written/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms; CPU main ${r.cpu.daemon?.main.toFixed(0)}%, libuv ${r.cpu.daemon?.libuv.toFixed(0)}%, bench ${r.cpu.bench.toFixed(0)}%`);
          rs.push(r);
        }
        results.paced.push({ rate, connections: 16, runs: rs });
      }
    }

    if (only.has('e2e')) {
      const total = settings.workers * settings.concurrency;
      // Another split of the same total concurrency over other threads (--alt-config, 'none' to skip):
      // by default the original's 8 task workers, the daemon's default before it became min(8, cores).
      let alt: Settings | undefined;
      const altText = values['alt-config'] ?? (total % 8 === 0 ? `8x${total / 8}` : 'none');
      if (altText !== 'none') {
        const m = /^(\d+)x(\d+)$/.exec(altText);
        if (!m) throw new Error(`--alt-config must be WORKERSxCONCURRENCY or none, got ${altText}`);
        alt = { ...settings, workers: Number(m[1]), concurrency: Number(m[2]) };
        if (alt.workers * alt.concurrency !== total) throw new Error(`--alt-config ${altText} must have the same total concurrency (${total})`);
        if (alt.workers === settings.workers) alt = undefined;
      }
      for (const latencyMs of latencies) {
        const daemonRuns: E2eRun[] = [];
        const bareRuns: E2eRun[] = [];
        const altRuns: E2eRun[] = [];
        for (let i = 0; i < runs; i++) {
          // Interleaved, so that drift (page cache, thermal, neighbours) hits both alike.
          const d = await e2eDaemonRun(sim, settings, { latencyMs, messages, warmup: e2eWarmup });
          log(`e2e ${latencyMs} ms daemon: ${Math.round(d.rate)} msg/s (${d.seconds.toFixed(2)} s, pushes acked after ${d.ingestSeconds?.toFixed(2)} s); CPU main ${d.cpu.daemon?.main.toFixed(0)}%, workers ${d.cpu.daemon?.workers.toFixed(0)}%, V8 ${d.cpu.daemon?.v8.toFixed(0)}%, sim ${d.cpu.sim.toFixed(0)}%`);
          daemonRuns.push(d);
          if (alt) {
            const a = await e2eDaemonRun(sim, alt, { latencyMs, messages, warmup: e2eWarmup });
            log(`e2e ${latencyMs} ms daemon ${alt.workers}x${alt.concurrency}: ${Math.round(a.rate)} msg/s (${a.seconds.toFixed(2)} s, pushes acked after ${a.ingestSeconds?.toFixed(2)} s); CPU main ${a.cpu.daemon?.main.toFixed(0)}%, workers ${a.cpu.daemon?.workers.toFixed(0)}%, V8 ${a.cpu.daemon?.v8.toFixed(0)}%, sim ${a.cpu.sim.toFixed(0)}%`);
            altRuns.push(a);
          }
          const b = await e2eBareRun(sim, { latencyMs, messages, warmup: e2eWarmup, concurrency: total, tag: `bare${latencyMs}r${i}t${Date.now().toString(36)}` });
          log(`e2e ${latencyMs} ms bare undici loop (${total} in flight): ${Math.round(b.rate)} msg/s (${b.seconds.toFixed(2)} s); CPU bench ${b.cpu.bench.toFixed(0)}%, sim ${b.cpu.sim.toFixed(0)}%`);
          bareRuns.push(b);
        }
        const entry: BenchResults['e2e'][number] = { latencyMs, daemon: daemonRuns, bare: bareRuns };
        if (alt) entry.alt = { workers: alt.workers, concurrency: alt.concurrency, runs: altRuns };
        results.e2e.push(entry);
      }
    }

    if (only.has('send')) {
      const rs: SendRun[] = [];
      for (let i = 0; i < runs; i++) {
        const r = await sendRttRun(sim, settings, { count: quick ? 500 : 2000, warmup: 200 });
        log(`send round trip: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`);
        rs.push(r);
      }
      results.send = { count: quick ? 500 : 2000, runs: rs };
    }

    if (only.has('backlog')) {
      log(`prefilling a queue with ${jobs.toLocaleString('en-US')} jobs...`);
      const backlog = await prefillBacklog(jobs, log);
      log(`prefill: ${(backlog.bytes / 1e6).toFixed(0)} MB in ${backlog.fillSeconds.toFixed(1)} s`);
      const full: BacklogRun[] = [];
      const empty: BacklogRun[] = [];
      const fewWorkers: BacklogRun[] = [];
      // The same backlog with another thread count shows how much of the memory and start-up is
      // the worker threads: 8 (the original's and the old default) unless that is what runs, else 2.
      const few = { ...settings, workers: settings.workers === 8 ? 2 : 8 };
      try {
        for (let i = 0; i < runs; i++) {
          const r = await backlogRun(sim, settings, { queueDir: backlog.queueDir, settleMs: 2000 });
          if (r.depth !== jobs) throw new Error(`daemon reports queue depth ${r.depth}, expected ${jobs}`);
          log(`${jobs} queued: listening after ${r.startupMs.toFixed(0)} ms, RSS ${(r.rss / 1e6).toFixed(0)} MB (HWM ${(r.hwm / 1e6).toFixed(0)} MB)`);
          full.push(r);
          const e = await backlogRun(sim, settings, { settleMs: 2000 });
          log(`empty queue: listening after ${e.startupMs.toFixed(0)} ms, RSS ${(e.rss / 1e6).toFixed(0)} MB (HWM ${(e.hwm / 1e6).toFixed(0)} MB)`);
          empty.push(e);
          if (settings.workers !== few.workers) {
            const f = await backlogRun(sim, few, { queueDir: backlog.queueDir, settleMs: 2000 });
            log(`${jobs} queued, ${few.workers} workers: listening after ${f.startupMs.toFixed(0)} ms, RSS ${(f.rss / 1e6).toFixed(0)} MB (HWM ${(f.hwm / 1e6).toFixed(0)} MB)`);
            fewWorkers.push(f);
          }
        }
      } finally {
        removeDir(backlog.dir);
      }
      results.backlog = { jobs, bytes: backlog.bytes, fillSeconds: backlog.fillSeconds, full, empty, fewWorkers, fewWorkersCount: few.workers };
    }

    if (only.has('receipts')) {
      const stores: Array<{ store: ReceiptStore; runs: ReceiptsRun[] }> = [];
      const skipped: string[] = [];
      for (const store of receiptStores) {
        if (store === 'mysql' && !(await mysqlAvailable())) {
          log(`receipts on MySQL skipped: MySQL not reachable at ${mysqlTestTarget}`);
          skipped.push(`MySQL not reachable at ${mysqlTestTarget}`);
          continue;
        }
        const rs: ReceiptsRun[] = [];
        for (let i = 0; i < runs; i++) rs.push(await receiptsRun(sim, settings, { store, ...receiptOptions }));
        stores.push({ store, runs: rs });
      }
      results.receipts = { ...receiptOptions, stores, skipped };
    }
  } finally {
    await sim.stop();
  }

  results.durationSeconds = (performance.now() - t0) / 1000;
  const markdown = renderReport(results);
  process.stdout.write(markdown);
  if (values['no-write'] !== true) {
    const day = startedAt.toISOString().slice(0, 10);
    const out = values.out ?? path.join(REPO, 'bench', 'results', `${day}${quick ? '-quick' : ''}.md`);
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, markdown);
    writeFileSync(out.replace(/\.md$/, '') + '.json', `${JSON.stringify(results, null, 2)}\n`);
    log(`written: ${out}`);
  }
  log(`bench took ${results.durationSeconds.toFixed(0)} s`);
}

process.on('SIGINT', () => {
  cleanupAll();
  process.exit(130);
});
process.on('SIGTERM', () => {
  cleanupAll();
  process.exit(143);
});

main().then(
  () => {
    cleanupAll();
  },
  (err: unknown) => {
    log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    cleanupAll();
    process.exitCode = 1;
  },
);
