/** Renders the benchmark's results as Markdown. Every figure is the median of its runs. */
import type { BacklogRun, Cpu, E2eRun, IngestRun, SendRun } from './scenarios.js';
import { median } from './lib/stats.js';
import { DEFAULT_CONCURRENCY, DEFAULT_WORKERS } from './lib/procs.js';
import type { CallbackLoad, CallbackMode, ReceiptStore, ReceiptsRun } from './receipts.js';

export interface BenchResults {
  date: string;
  machine: { cores: number; model: string; memoryBytes: number; node: string; os: string; commit: string };
  settings: {
    runs: number;
    messages: number;
    e2eWarmup: number;
    jobs: number;
    workers: number;
    concurrency: number;
    inflight: number;
    measureMs: number;
    warmupMs: number;
    pacedRates: number[];
    quick: boolean;
  };
  fdatasyncMs: number;
  /** % of one core used by other processes just before the bench started. */
  backgroundCpu: number;
  ingest: Array<{ connections: number; fsync: 'always' | 'none'; window: number; runs: IngestRun[] }>;
  paced: Array<{ rate: number; connections: number; runs: IngestRun[] }>;
  e2e: Array<{ latencyMs: number; daemon: E2eRun[]; bare: E2eRun[]; alt?: { workers: number; concurrency: number; runs: E2eRun[] } }>;
  send: { count: number; runs: SendRun[] } | undefined;
  backlog:
    | { jobs: number; bytes: number; fillSeconds: number; full: BacklogRun[]; empty: BacklogRun[]; fewWorkers: BacklogRun[]; fewWorkersCount: number }
    | undefined;
  receipts?:
    | {
        callbacks: number;
        inflight: number;
        rate: number;
        pacedMs: number;
        warmup: number;
        modes: CallbackMode[];
        stores: Array<{ store: ReceiptStore; runs: ReceiptsRun[] }>;
        /** Why a store was left out (MySQL not reachable). */
        skipped: string[];
      }
    | undefined;
  durationSeconds: number;
}

/** The receipts endpoint's targets (issue 12 item 9). */
const RECEIPTS_RATE = 5_000;
const RECEIPTS_P99_MS = 50;
const STORE_NAME: Record<ReceiptStore, string> = { sqlite: 'SQLite', mysql: 'MySQL (MariaDB)' };
const MODE_NAME: Record<CallbackMode, string> = { plain: 'plaintext', aes: 'safe mode' };

/** The loads of one kind and mode over a store's runs. */
function loadsOf(runs: ReceiptsRun[], mode: CallbackMode, kind: 'closed' | 'paced', bare = false): CallbackLoad[] {
  return runs.flatMap((r) => (bare ? r.bare : r.loads).filter((l) => l.mode === mode && l.kind === kind));
}

const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const ms = (n: number): string => {
  if (!Number.isFinite(n)) return 'n/a';
  return `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ms`;
};
const pct = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? 'n/a' : `${Math.round(n)}%`);
const mb = (bytes: number): string => (Number.isFinite(bytes) ? `${(bytes / 1e6).toFixed(0)} MB` : 'n/a');
const runsOf = (xs: number[], f: (n: number) => string): string => xs.map(f).join(' · ');
const met = (ok: boolean): string => (ok ? '**met**' : '**missed**');

/** Median of one field over runs. */
function med<T>(runs: T[], f: (r: T) => number): number {
  return median(runs.map(f));
}

function cpuMed(runs: Array<{ cpu: Cpu }>): { main: number; workers: number; busiest: number; libuv: number; v8: number; sim: number; bench: number; other: number } {
  return {
    main: med(runs, (r) => r.cpu.daemon?.main ?? NaN),
    workers: med(runs, (r) => r.cpu.daemon?.workers ?? NaN),
    busiest: med(runs, (r) => r.cpu.daemon?.busiestWorker ?? NaN),
    libuv: med(runs, (r) => r.cpu.daemon?.libuv ?? NaN),
    v8: med(runs, (r) => r.cpu.daemon?.v8 ?? NaN),
    sim: med(runs, (r) => r.cpu.sim),
    bench: med(runs, (r) => r.cpu.bench),
    other: med(runs, (r) => r.cpu.other),
  };
}

/** CPU microseconds per delivered message of whatever `pick` selects (a % of one core over the run). */
function perMessageUs(run: E2eRun, pick: (c: Cpu) => number): number {
  return ((pick(run.cpu) / 100) * run.seconds * 1e6) / run.messages;
}

/** The original design's bound: each Swoole task worker makes one blocking call at a time. */
export function originalBound(workers: number, latencyMs: number): number {
  return latencyMs > 0 ? workers / (latencyMs / 1000) : NaN;
}
/** The original's default task_worker_num, as in the issue's example. */
export const ORIGINAL_TASK_WORKERS = 8;

export function renderReport(r: BenchResults): string {
  const s = r.settings;
  const m = r.machine;
  const L: string[] = [];
  const total = s.workers * s.concurrency;
  L.push(`# Mega-WeChat benchmark — ${r.date.slice(0, 10)}${s.quick ? ' (quick)' : ''}`);
  L.push('');
  L.push(`- Machine: **${m.cores} cores** (${m.model}), ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB RAM, ${m.os}; **Node ${m.node}**; commit ${m.commit}.`);
  L.push(`- Disk: one 4 KiB write + fdatasync takes ${ms(r.fdatasyncMs)} (median of 200) in the temp folder.`);
  L.push(
    `- Other load: ${pct(r.backgroundCpu)} of one core was busy with other processes just before the bench started` +
      `${r.backgroundCpu > 15 ? ' — **the machine was not idle; figures are lower and noisier than on an idle machine**' : ''}; ` +
      'the "rest of machine" CPU columns show the same during each measurement.',
  );
  L.push(
    `- Daemon: its own process (\`mega bench start --foreground\`), a fresh one with an empty queue for every run; ` +
      `task_worker_num ${s.workers} × task_concurrency ${s.concurrency} = ${total} WeChat calls in flight` +
      `${s.workers === DEFAULT_WORKERS && s.concurrency === DEFAULT_CONCURRENCY ? ' (the defaults on this machine: min(8, cores) workers × ceil(512 / workers) calls)' : ''}; \`[queue] fsync = always\` unless stated; log_level warn; SQLite template store (the receipts part: the ledger's store, SQLite or MySQL, holds the templates too).`,
  );
  L.push('- Simulator: `mega simulator` in its own process. Load generator and bare undici loop: the bench process. All on the same machine.');
  L.push(`- Every figure is the **median of ${s.runs} run${s.runs === 1 ? '' : 's'}**; the individual runs follow in the detail tables. Whole bench: ${Math.round(r.durationSeconds)} s.`);
  L.push('');

  // ---------------------------------------------------------------- summary
  L.push('## Summary against the targets');
  L.push('');
  L.push('| figure | result | target | |');
  L.push('|---|---|---|---|');
  const ingest16 = r.ingest.find((x) => x.connections === 16 && x.fsync === 'always');
  if (ingest16) {
    const rate = med(ingest16.runs, (x) => x.rate);
    const p99 = med(ingest16.runs, (x) => x.p99);
    L.push(`| ingest, 16 connections, fsync on, ${ingest16.window} in flight each (closed loop) | ${int(rate)} Push/s, ACK p99 ${ms(p99)} | ≥ 50,000 Push/s | ${met(rate >= 50_000)} |`);
  }
  const paced50 = r.paced.find((x) => x.rate >= 50_000);
  if (paced50) {
    const rate = med(paced50.runs, (x) => x.rate);
    const p99 = med(paced50.runs, (x) => x.p99);
    L.push(
      `| ingest paced at ${int(paced50.rate)} Push/s, 16 connections, fsync on (open loop) | ${int(rate)} Push/s acknowledged, ACK p99 ${ms(p99)} | p99 < 20 ms at 50,000 Push/s | ${met(p99 < 20 && rate >= 0.98 * paced50.rate)} |`,
    );
  }
  const e50 = r.e2e.find((x) => x.latencyMs === 50);
  if (e50) {
    const d = med(e50.daemon, (x) => x.rate);
    const b = med(e50.bare, (x) => x.rate);
    const ratio = median(e50.daemon.map((x, i) => x.rate / (e50.bare[i]?.rate ?? NaN)));
    const bound = originalBound(ORIGINAL_TASK_WORKERS, 50);
    L.push(`| end to end, simulator at 50 ms: daemon / bare undici loop | **${ratio.toFixed(2)}** (${int(d)} vs ${int(b)} msg/s) | ≥ 0.9 | ${met(ratio >= 0.9)} |`);
    L.push(`| end to end, simulator at 50 ms: daemon / original design's bound | ${(d / bound).toFixed(1)}× (${int(d)} vs ${int(bound)} msg/s, computed) | ≥ 30× | ${met(d / bound >= 30)} |`);
  }
  if (r.backlog) {
    const rss = med(r.backlog.full, (x) => x.rss);
    const hwm = med(r.backlog.full, (x) => x.hwm);
    const start = med(r.backlog.full, (x) => x.startupMs);
    L.push(`| ${int(r.backlog.jobs)} queued jobs: RSS 2 s after listening | ${mb(rss)} (peak VmHWM ${mb(hwm)}) | < 200 MB | ${met(rss < 200e6 && hwm < 200e6)} |`);
    L.push(`| ${int(r.backlog.jobs)} queued jobs: spawn → \`listening on\` | ${ms(start)} | < 2 s | ${met(start < 2000)} |`);
  }
  for (const st of r.receipts?.stores ?? []) {
    for (const mode of r.receipts!.modes) {
      const closed = loadsOf(st.runs, mode, 'closed');
      const paced = loadsOf(st.runs, mode, 'paced');
      if (closed.length === 0 || paced.length === 0) continue;
      const rate = med(closed, (x) => x.rate);
      const p99 = med(closed, (x) => x.p99);
      const pacedRate = med(paced, (x) => x.rate);
      const pacedP99 = med(paced, (x) => x.p99);
      const offered = paced[0]!.offered ?? NaN;
      // paced latency counts from when each request was due, so a daemon that falls behind fails the p99 by itself
      const ok = rate >= RECEIPTS_RATE && p99 < RECEIPTS_P99_MS && offered >= RECEIPTS_RATE && pacedP99 < RECEIPTS_P99_MS;
      L.push(
        `| receipts endpoint, ledger on ${STORE_NAME[st.store]}, ${MODE_NAME[mode]}: closed loop (${r.receipts!.inflight} in flight) / paced at ${int(offered)}/s | ` +
          `${int(rate)} callbacks/s, p99 ${ms(p99)} / p99 ${ms(pacedP99)} at ${int(pacedRate)}/s | ≥ ${int(RECEIPTS_RATE)}/s with p99 < ${RECEIPTS_P99_MS} ms | ${met(ok)} |`,
      );
    }
  }
  for (const why of r.receipts?.skipped ?? []) L.push(`| receipts endpoint, ledger on MySQL | not measured: ${why} | | |`);
  if (r.send) {
    L.push(`| Send round trip, idle daemon, simulator at 0 ms | p50 ${ms(med(r.send.runs, (x) => x.p50))}, p99 ${ms(med(r.send.runs, (x) => x.p99))} | (no target) | |`);
  }
  L.push('');
  L.push('MB = 10⁶ bytes.');
  L.push('');

  // ---------------------------------------------------------------- ingest
  if (r.ingest.length > 0 || r.paced.length > 0) {
    L.push('## Ingest: acknowledged Push/s');
    L.push('');
    L.push(
      `Pipelined raw-protocol clients (one template frame copied with a fresh opaque; answers read with FrameDecoder + parseResult); ` +
        `${s.inflight} pushes in flight in total, split over the connections. ${s.warmupMs} ms warm-up, then ${s.measureMs} ms measured: ` +
        'rate = `result 200` answers read in the interval / its length; ACK latency = write of a request → its answer read, for requests written in the interval. ' +
        "Dispatch is held (the simulator refuses tokens with 40164), so the daemon's workers are idle and the figure is the TCP front end + queue. " +
        'CPU columns: % of one core during the measured interval (median), by thread of the daemon (told apart by creation order: main, V8 platform, libuv pool, task workers), of the bench process (the client), and of everything else on the machine.',
    );
    L.push('');
    L.push('| connections | fsync | in flight / conn | acked Push/s | ACK p50 | ACK p99 | runs (Push/s) | daemon main | daemon libuv pool | daemon V8 helpers | client | rest of machine |');
    L.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const x of r.ingest) {
      const c = cpuMed(x.runs);
      L.push(
        `| ${x.connections} | ${x.fsync} | ${x.window} | **${int(med(x.runs, (y) => y.rate))}** | ${ms(med(x.runs, (y) => y.p50))} | ${ms(med(x.runs, (y) => y.p99))} | ${runsOf(x.runs.map((y) => y.rate), int)} | ${pct(c.main)} | ${pct(c.libuv)} | ${pct(c.v8)} | ${pct(c.bench)} | ${pct(c.other)} |`,
      );
    }
    if (r.paced.length > 0) {
      L.push('');
      L.push(
        `Open loop at fixed rates over 16 connections, fsync on: every millisecond the client writes what the schedule says is due (ramping up linearly over a ${2 * s.warmupMs} ms warm-up, then steady for the ${s.measureMs} ms measured), ` +
          'with at most 1,024 requests outstanding per connection (an overloaded daemon then gets less than offered, and the acked rate shows it). ' +
          'This is the ACK latency a client sees at that rate.',
      );
      L.push('');
      L.push('| offered Push/s | acked Push/s | ACK p50 | ACK p99 | ACK max | runs (acked/s) | runs (p99) | daemon main | daemon libuv pool | daemon V8 helpers | client | rest of machine |');
      L.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
      for (const p of r.paced) {
        const c = cpuMed(p.runs);
        L.push(
          `| ${int(p.rate)} | ${int(med(p.runs, (y) => y.rate))} | ${ms(med(p.runs, (y) => y.p50))} | **${ms(med(p.runs, (y) => y.p99))}** | ${ms(med(p.runs, (y) => y.max))} | ${runsOf(p.runs.map((y) => y.rate), int)} | ${runsOf(p.runs.map((y) => y.p99), ms)} | ${pct(c.main)} | ${pct(c.libuv)} | ${pct(c.v8)} | ${pct(c.bench)} | ${pct(c.other)} |`,
        );
      }
    }
    L.push('');
  }

  // ---------------------------------------------------------------- e2e
  if (r.e2e.length > 0) {
    L.push(`## End to end: delivered messages/s (${int(s.messages)} messages per run)`);
    L.push('');
    L.push(
      `**Daemon**: a fresh daemon first sends ${int(s.e2eWarmup)} messages, untimed (token fetched, keep-alive connections open, code compiled); ` +
        `then ${int(s.messages)} Pushes are written over 16 pipelined connections (256 in flight each) and the time is taken from the first write until the simulator's \`/_sim/stats\` ` +
        '`delivered` reaches the count (polled every 50 ms, every 2 ms in the last 10%). Ingesting those Pushes is part of the timed work. ' +
        `**Bare undici loop**: in the bench process, one undici \`Pool\` with ${total} connections and ${total} requests in flight ` +
        '(= task_worker_num × task_concurrency) posting the same rendered bodies (pre-rendered, unique client_msg_id) to the same simulator process, ' +
        `after the same ${int(s.e2eWarmup)}-message warm-up; daemon and bare runs alternate. ` +
        `**Original design's bound** (computed, not measured): the PHP/Swoole original's ${ORIGINAL_TASK_WORKERS} task workers each make one blocking call at a time, ` +
        'so at most task_worker_num / latency messages per second.',
    );
    L.push('');
    L.push('| simulator latency | daemon | daemon msg/s | bare undici loop msg/s | daemon / bare | original bound (computed) | daemon / original | runs daemon | runs bare | pushes acked after | daemon msg/s after that (/ bare) |');
    L.push('|---|---|---|---|---|---|---|---|---|---|---|');
    for (const x of r.e2e) {
      const b = med(x.bare, (y) => y.rate);
      const bound = originalBound(ORIGINAL_TASK_WORKERS, x.latencyMs);
      const variants: Array<[string, E2eRun[]]> = [[`${s.workers} × ${s.concurrency}`, x.daemon]];
      if (x.alt) variants.push([`${x.alt.workers} × ${x.alt.concurrency}`, x.alt.runs]);
      for (const [name, runs] of variants) {
        const d = med(runs, (y) => y.rate);
        const ratio = median(runs.map((y, i) => y.rate / (x.bare[i]?.rate ?? NaN)));
        L.push(
          `| ${x.latencyMs} ms | ${name} | **${int(d)}** | ${int(b)} | **${ratio.toFixed(2)}** | ${Number.isFinite(bound) ? `${int(bound)} msg/s` : 'none (no latency)'} | ${Number.isFinite(bound) ? `${(d / bound).toFixed(1)}×` : 'n/a'} | ${runsOf(runs.map((y) => y.rate), int)} | ${runsOf(x.bare.map((y) => y.rate), int)} | ${med(runs, (y) => y.ingestSeconds ?? NaN).toFixed(2)} s | ${int(med(runs, (y) => y.afterIngestRate ?? NaN))} (${median(runs.map((y, i) => (y.afterIngestRate ?? NaN) / (x.bare[i]?.rate ?? NaN))).toFixed(2)}) |`,
        );
      }
    }
    L.push('');
    L.push(
      'The daemon column is task_worker_num × task_concurrency; both splits have the same total in flight as the bare loop. ' +
        'Ratios are the median of the per-iteration ratios (each daemon run against the bare run right after it). ' +
        'The last column is the delivery rate from the first poll after every Push was acknowledged to the end: the daemon without the ingest ' +
        '(and this process pushing) competing for the main thread and the two cores.',
    );
    L.push('');
    L.push('CPU during the end-to-end runs (% of one core, median; 200% = both cores):');
    L.push('');
    L.push('| simulator latency | run | daemon main | daemon task workers (sum / busiest) | daemon libuv pool | daemon V8 helpers | simulator | bench process | rest of machine | total | CPU µs per message: sender / simulator |');
    L.push('|---|---|---|---|---|---|---|---|---|---|---|');
    for (const x of r.e2e) {
      const variants: Array<[string, E2eRun[]]> = [[`daemon ${s.workers} × ${s.concurrency}`, x.daemon]];
      if (x.alt) variants.push([`daemon ${x.alt.workers} × ${x.alt.concurrency}`, x.alt.runs]);
      for (const [name, runs] of variants) {
        const c = cpuMed(runs);
        const totalD = c.main + c.workers + c.libuv + c.v8 + c.sim + c.bench + c.other;
        const sender = med(runs, (y) => perMessageUs(y, (cc) => (cc.daemon ? cc.daemon.main + cc.daemon.workers + cc.daemon.libuv + cc.daemon.v8 : NaN)));
        const simUs = med(runs, (y) => perMessageUs(y, (cc) => cc.sim));
        L.push(`| ${x.latencyMs} ms | ${name} | ${pct(c.main)} | ${pct(c.workers)} / ${pct(c.busiest)} | ${pct(c.libuv)} | ${pct(c.v8)} | ${pct(c.sim)} | ${pct(c.bench)} (pushing, polling) | ${pct(c.other)} | ${pct(totalD)} | ${int(sender)} (daemon, all threads) / ${int(simUs)} |`);
      }
      const cb = cpuMed(x.bare);
      const bareUs = med(x.bare, (y) => perMessageUs(y, (cc) => cc.bench));
      const bareSimUs = med(x.bare, (y) => perMessageUs(y, (cc) => cc.sim));
      L.push(`| ${x.latencyMs} ms | bare loop | | | | | ${pct(cb.sim)} | ${pct(cb.bench)} (undici loop) | ${pct(cb.other)} | ${pct(cb.sim + cb.bench + cb.other)} | ${int(bareUs)} (bare loop) / ${int(bareSimUs)} |`);
    }
    L.push('');
  }

  // ---------------------------------------------------------------- send
  if (r.send) {
    L.push('## Send round trip on an idle daemon');
    L.push('');
    L.push(
      `${int(r.send.count)} Sends one after another on one connection (after 200 warm-up), simulator at 0 ms: write → \`result 200\` read. ` +
        'A Send is fsynced into the queue, dispatched to a worker, rendered, posted to the simulator, and answered when the outcome comes back.',
    );
    L.push('');
    L.push('| p50 | p99 | mean | runs (p50) | runs (p99) |');
    L.push('|---|---|---|---|---|');
    L.push(
      `| **${ms(med(r.send.runs, (y) => y.p50))}** | **${ms(med(r.send.runs, (y) => y.p99))}** | ${ms(med(r.send.runs, (y) => y.mean))} | ${runsOf(r.send.runs.map((y) => y.p50), ms)} | ${runsOf(r.send.runs.map((y) => y.p99), ms)} |`,
    );
    L.push('');
  }

  // ---------------------------------------------------------------- backlog
  if (r.backlog) {
    const b = r.backlog;
    L.push(`## Start-up and memory with ${int(b.jobs)} queued jobs`);
    L.push('');
    L.push(
      `The queue folder is filled directly (FileQueue.appendMany of encodeJobRecord records, ${mb(b.bytes)} in segments, ${b.fillSeconds.toFixed(1)} s), ` +
        'then the daemon is started on it with the simulator refusing tokens, so the backlog stays queued (the daemon reports the depth through `mega bench status`). ' +
        'Start-up = spawn of `node dist/bin/mega.js bench start --foreground` → its `listening on` line (includes Node start-up, SQLite, queue recovery and the ' +
        `${s.workers} worker threads). Memory = VmRSS and VmHWM (peak) of the daemon process, 2 s after listening. The same with an empty queue for comparison. ` +
        'The segment files are in the page cache (just written), as after a restart of a running daemon.',
    );
    L.push('');
    L.push('| queue | spawn → listening | RSS | VmHWM (peak) | runs (start-up) | runs (RSS) | rest of machine during start-up |');
    L.push('|---|---|---|---|---|---|---|');
    const row = (name: string, xs: BacklogRun[]): string =>
      `| ${name} | **${ms(med(xs, (y) => y.startupMs))}** | **${mb(med(xs, (y) => y.rss))}** | ${mb(med(xs, (y) => y.hwm))} | ${runsOf(xs.map((y) => y.startupMs), ms)} | ${runsOf(xs.map((y) => y.rss), mb)} | ${runsOf(xs.map((y) => y.otherCpu), pct)} |`;
    L.push(row(`${int(b.jobs)} jobs, task_worker_num ${s.workers}`, b.full));
    L.push(row(`empty, task_worker_num ${s.workers}`, b.empty));
    if (b.fewWorkers.length > 0) L.push(row(`${int(b.jobs)} jobs, task_worker_num ${b.fewWorkersCount}`, b.fewWorkers));
    L.push('');
  }

  if (r.receipts) renderReceipts(L, r.receipts);

  L.push('## Reproduce');
  L.push('');
  L.push('```sh');
  L.push(`npm run bench${s.quick ? ' -- --quick' : ''}     # see bench/run.ts for options (--runs, --only, --workers, --concurrency, ...)`);
  L.push('```');
  L.push('');
  return L.join('\n');
}

function renderReceipts(L: string[], x: NonNullable<BenchResults['receipts']>): void {
  L.push('## The receipts endpoint: WeChat\'s delivery callbacks/s');
  L.push('');
  L.push(
    `A fresh daemon per run with \`[ledger] enabled = 1\`, \`[callback] listen\` and \`[wechat] token\` + \`encoding_aes_key\`, \`[queue] fsync = always\` (the ledger's journal is fdatasynced before a receipt is answered \`success\`). ` +
      'First, as many messages as there will be receipts are Pushed through it to the simulator, and WeChat\'s msgids are read back from `/_sim/messages`: every receipt refers to a real message and turns its `sent` row `delivered`. ' +
      'The requests are built before the timing starts: TEMPLATESENDJOBFINISH XML as WeChat sends it, `signature` = sha1 of the sorted token, timestamp and nonce, a fresh nonce each; ' +
      'safe mode: the XML encrypted (AES-256-CBC, `encrypt_type=aes`) with its `msg_signature`. ' +
      `${int(x.warmup)} untimed receipts first. **Closed loop**: an undici Pool, ${x.inflight} keep-alive connections, ${x.inflight} requests in flight, ${int(x.callbacks)} callbacks per load; rate = callbacks / time from the first write to the last answer. ` +
      `**Paced**: ${int(x.rate)} callbacks/s for ${(x.pacedMs / 1000).toFixed(1)} s over the same connections (open loop); latency from when a request was due, not when it was written, so a generator or daemon falling behind shows. ` +
      'Latency = until the whole `success` answer is read; *generator late* = the most the load generator\'s own event loop was behind during the load (a stall of the generator would show in the latencies too; a spike with a small figure here is the server\'s). **Bare node:http**: the same plaintext requests against a node:http server in its own process that reads the body and answers `success` (no signature, no journal, no ledger): the ceiling of this machine, HTTP stack and load generator. ' +
      'CPU: % of one core during the load (server = the daemon or the bare server, all threads; main = its main thread; MySQL server = the mariadbd/mysqld process when it runs on this machine, n/a for SQLite, whose writes are in the daemon\'s store thread; rest = other processes); µs per callback = the server\'s CPU time over the load / callbacks answered.',
  );
  L.push('');
  L.push('| ledger store | mode | load | callbacks/s | p50 | p99 | max | generator late (max) | runs (callbacks/s) | runs (p99) | / bare | server CPU (main) | server CPU µs per callback | client | MySQL server | rest of machine |');
  L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const st of x.stores) {
    const rows: Array<[string, CallbackMode, 'closed' | 'paced', boolean]> = [];
    for (const mode of x.modes) for (const kind of ['closed', 'paced'] as const) rows.push([STORE_NAME[st.store], mode, kind, false]);
    if (x.modes.includes('plain')) for (const kind of ['closed', 'paced'] as const) rows.push(['bare node:http (same run)', 'plain', kind, true]);
    for (const [name, mode, kind, bare] of rows) {
      const ls = loadsOf(st.runs, mode, kind, bare);
      if (ls.length === 0) continue;
      const bareLs = loadsOf(st.runs, 'plain', kind, true);
      const ratio = !bare && bareLs.length > 0 ? median(ls.map((l, i) => l.rate / (bareLs[i]?.rate ?? NaN))).toFixed(2) : '';
      const load = kind === 'closed' ? `closed, ${x.inflight} in flight` : `paced ${int(ls[0]!.offered ?? NaN)}/s`;
      L.push(
        `| ${name} | ${MODE_NAME[mode]} | ${load} | **${int(med(ls, (l) => l.rate))}** | ${ms(med(ls, (l) => l.p50))} | **${ms(med(ls, (l) => l.p99))}** | ${ms(med(ls, (l) => l.max))} | ${ms(med(ls, (l) => l.generatorLagMax))} | ` +
          `${runsOf(ls.map((l) => l.rate), int)} | ${runsOf(ls.map((l) => l.p99), ms)} | ${ratio} | ${pct(med(ls, (l) => l.cpu.daemonTotal))} (${pct(med(ls, (l) => l.cpu.daemonMain))}) | ${int(med(ls, (l) => (l.cpu.daemonTotal / 100) * 1e6 / l.rate))} | ${pct(med(ls, (l) => l.cpu.bench))} | ${pct(med(ls, (l) => l.cpu.db))} | ${pct(med(ls, (l) => l.cpu.other))} |`,
      );
    }
  }
  L.push('');
  L.push('The check after each run (a run that fails it fails the bench): every message\'s row in the ledger\'s table is `delivered` and there is no other row; 200 random rows have the msgid WeChat gave; the endpoint counted every receipt and refused none.');
  L.push('');
  L.push('| ledger store | receipts per run | rows delivered | all in the database after the last answer | sampled rows matching | endpoint: receipts / refused |');
  L.push('|---|---|---|---|---|---|');
  for (const st of x.stores) {
    for (const run of st.runs) {
      const c = run.check;
      L.push(
        `| ${STORE_NAME[st.store]} | ${int(c.expected)} | ${int(c.states['delivered'] ?? 0)} of ${int(Object.values(c.states).reduce((a, n) => a + n, 0))} | ${ms(c.applyMs)} | ${c.sampled - c.sampleMismatches} of ${c.sampled} | ${int(c.endpointReceipts)} / ${int(c.endpointRefused)} |`,
      );
    }
  }
  for (const why of x.skipped) L.push(`| MySQL | not measured: ${why} | | | | |`);
  L.push('');
}
