/**
 * `npm run chaos [-- options]`: load and faults together, for a fixed duration (issue 7).
 *
 * One real daemon process (`mega chaos start --foreground`) on a fixed loopback port, fed by
 * pipelined pushers and Send clients at a steady rate, while, at moments drawn from a seeded
 * PRNG:
 *
 * - the daemon is killed with SIGKILL and started again on the same files (a start that fails
 *   because the template database is cut off at that moment is retried every 500 ms);
 * - the template database is cut off: the daemon's `[pdo] dsn` is MySQL through a TcpProxy to
 *   the real MariaDB (127.0.0.1:3306, database `test`, a table prefix unique to the run, dropped
 *   at the end); the proxy is taken down for a few seconds while a client keeps issuing TSet;
 * - the WeChat API is cut off: `[wechat] api_base` points at a second TcpProxy in front of the
 *   simulator process; taking it down refuses and cuts every connection, while the simulator
 *   (and its record of every send) stays up.
 *
 * Clients behave as the README tells them to: a request whose connection closed before its
 * answer has an unknown fate, and one that carries a `<msgid>` is sent again with the same msgid
 * (half of the pushes and every Send carry one).
 *
 * At the end the load stops, the faults are over, the daemon drains its queue and is stopped
 * with SIGTERM, and the simulator's record is checked against every answer: each message
 * acknowledged 200 must have been delivered (lost = 0), none delivered twice (a repeat must carry
 * the same client_msg_id, which WeChat drops), nothing delivered that was never pushed, each
 * message with its own variables. A Markdown table goes to stdout and to
 * bench/results/chaos-<date>.md. Exit 1 when a message was lost or delivered wrongly; 2 when
 * the run could not be set up (e.g. MariaDB not reachable).
 *
 * Options:
 *   --duration-s N   seconds of load and faults (default 120)
 *   --seed N         PRNG seed (default: random; printed, so a run can be replayed)
 *   --rate N         pushes per second in total (default 200)
 *   --send-rate N    Sends per second in total (default 10)
 *   --kills N        kill -9 + restart count (default duration/20, at least 1)
 *   --db-outages N   template database outages (default duration/40, at least 1)
 *   --api-outages N  WeChat API outages (default duration/40, at least 1)
 *   --out FILE       where to write the Markdown (default bench/results/chaos-<date>.md)
 *   --no-write       print only
 *   --keep           keep the temporary folder (always kept when the check fails)
 *   --cluster        a service of three daemons on a 3-node NATS cluster instead (bench/chaos-cluster.ts)
 */
import { parseArgs } from 'node:util';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import { TcpProxy } from '../test/helpers/tcp-proxy.js';
import { controlRequest } from '../src/server/control.js';
import type { DaemonStatus } from '../src/server/control-protocol.js';
import {
  LoadClient,
  SimControl,
  TsetClient,
  checkRecord,
  gitDescribe,
  intOpt,
  deliveredOpenids,
  emptyCounters,
  freePort,
  isAlive,
  killChildren,
  killHard,
  seededRandom,
  sleep,
  spawnMega,
  stopChild,
  writeIni,
  type CheckResult,
  type ClientCounters,
  type Msg,
  type SimMessage,
  type Spawned,
} from './chaos-lib.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const NAME = 'chaos';
const KEY = 'chaos_tmpl';
const APP_ID = 'wx_chaos_app';
const APP_SECRET = 'chaos-secret-0123456789abcdef';
const SIM_LATENCY_MS = 20;
const PUSHERS = 4;
const PUSH_WINDOW = 64;
const SENDERS = 2;
const SEND_WINDOW = 16;
const MAX_RESENDS = 5;
const DRAIN_TIMEOUT_MS = 240_000;

const MYSQL = {
  host: process.env['MEGA_TEST_MYSQL_HOST'] || '127.0.0.1',
  port: Number(process.env['MEGA_TEST_MYSQL_PORT'] || 3306),
  user: process.env['MEGA_TEST_MYSQL_USER'] || 'root',
  password: process.env['MEGA_TEST_MYSQL_PASSWORD'] ?? '',
  database: process.env['MEGA_TEST_MYSQL_DATABASE'] || 'test',
};

function templateJson(revision: number): string {
  return JSON.stringify({
    touser: '${OPENID}',
    template_id: 'tmpl-chaos',
    data: {
      first: { value: 'msg ${n}' },
      keyword1: { value: '${pad}' },
      remark: { value: `revision ${revision}` },
    },
  });
}

function log(line: string): void {
  process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

interface FaultEvent {
  kind: 'kill' | 'db' | 'api';
  /** ms after the load started */
  at: number;
  /** outage length, ms */
  durationMs: number;
}

interface KillRecord {
  atS: number;
  pushesInFlight: number;
  sendsInFlight: number;
  simInFlight: number | null;
  downMs: number;
  failedStarts: number;
}

interface OutageRecord {
  kind: 'db' | 'api';
  atS: number;
  seconds: number;
  /** When the proxy accepted again (ms since the epoch; overlapping outages share it). */
  upAt?: number;
  /** Seconds from upAt to the first delivery (api) or the first TSet answered 200 (db). */
  recoveredAfterS?: number | null;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'duration-s': { type: 'string' },
      seed: { type: 'string' },
      rate: { type: 'string' },
      'send-rate': { type: 'string' },
      kills: { type: 'string' },
      'db-outages': { type: 'string' },
      'api-outages': { type: 'string' },
      out: { type: 'string' },
      'no-write': { type: 'boolean' },
      keep: { type: 'boolean' },
    },
  });
  const durationS = intOpt('duration-s', values['duration-s'], 120, 10);
  const seed = intOpt('seed', values.seed, (Math.random() * 2 ** 32) >>> 0) >>> 0;
  const pushRate = intOpt('rate', values.rate, 200, 1);
  const sendRate = intOpt('send-rate', values['send-rate'], 10, 0);
  const killCount = intOpt('kills', values.kills, Math.max(1, Math.round(durationS / 20)));
  const dbCount = intOpt('db-outages', values['db-outages'], Math.max(1, Math.round(durationS / 40)));
  const apiCount = intOpt('api-outages', values['api-outages'], Math.max(1, Math.round(durationS / 40)));
  const rnd = seededRandom(seed);
  const tag = seed.toString(36);
  const startedAt = new Date();
  log(`seed ${seed} (replay with --seed ${seed}); ${durationS} s; ${pushRate} pushes/s, ${sendRate} sends/s; ${killCount} kills, ${dbCount} DB outages, ${apiCount} API outages`);

  // ---------------------------------------------------------------- MariaDB
  let db: mysql.Connection;
  try {
    db = await mysql.createConnection({ ...MYSQL, connectTimeout: 3000, charset: 'utf8mb4' });
  } catch (err) {
    log(`MariaDB not reachable at ${MYSQL.user}@${MYSQL.host}:${MYSQL.port}/${MYSQL.database}: ${(err as Error).message}`);
    return 2;
  }
  const prefix = `chaos${process.pid.toString(36)}${tag.slice(0, 6)}_`;
  const table = `${prefix}wechat_template`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mega-chaos-'));
  const configDir = path.join(dir, 'config');
  const dbProxy = new TcpProxy(MYSQL.host, MYSQL.port);
  let apiProxy: TcpProxy | undefined;
  let sim: Spawned | undefined;
  let daemon: Spawned | undefined;
  let keepDir = values.keep === true;
  const clients: LoadClient[] = [];
  let tsetClient: TsetClient | undefined;
  let ticker: NodeJS.Timeout | undefined;
  /** The status/record sampler runs while this is true. */
  let sampling = false;

  const cleanup = async (): Promise<void> => {
    sampling = false;
    if (ticker) clearInterval(ticker);
    for (const c of clients) c.close();
    tsetClient?.close();
    if (daemon && isAlive(daemon.child)) await killHard(daemon.child);
    if (sim && isAlive(sim.child)) await stopChild(sim.child, 5000);
    await apiProxy?.down().catch(() => undefined);
    await dbProxy.down().catch(() => undefined);
    try {
      await db.query(`DROP TABLE IF EXISTS \`${table}\``);
      await db.end();
    } catch (err) {
      log(`could not drop table ${table}: ${(err as Error).message}`);
    }
    killChildren();
    if (keepDir) log(`files kept in ${dir} (daemon log: ${path.join(dir, 'logs', `${NAME}.log`)})`);
    else rmSync(dir, { recursive: true, force: true });
  };
  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) return;
    interrupted = true;
    log('interrupted: cleaning up');
    keepDir = true;
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    await db.query(
      `CREATE TABLE \`${table}\` (tmpl_key char(32) NOT NULL PRIMARY KEY, title varchar(100) NOT NULL DEFAULT '', template text NOT NULL, created_at int NOT NULL DEFAULT 0, updated_at int NOT NULL DEFAULT 0) DEFAULT CHARSET=utf8mb4`,
    );
    await db.query(`INSERT INTO \`${table}\` (tmpl_key, title, template, created_at, updated_at) VALUES (?, 'chaos', ?, UNIX_TIMESTAMP(), UNIX_TIMESTAMP())`, [KEY, templateJson(0)]);
    await dbProxy.up();

    // ---------------------------------------------------------------- simulator + API proxy
    sim = await spawnMega(
      ['simulator', '--port', '0', '--app-id', APP_ID, '--app-secret', APP_SECRET, '--latency-ms', String(SIM_LATENCY_MS), '--daily-limit', '100000000'],
      /\{"url":"([^"]+)","port":(\d+)\}/,
      30_000,
    );
    const simCtl = new SimControl(sim.match[1]!);
    apiProxy = new TcpProxy('127.0.0.1', Number(sim.match[2]));
    await apiProxy.up();

    // ---------------------------------------------------------------- daemon config
    const port = await freePort();
    writeIni(configDir, NAME, {
      server: {
        'listen': [`127.0.0.1:${port}`],
        queue_file_path: path.join(dir, 'queue'),
        pid_file: path.join(dir, `${NAME}.pid`),
        control_socket: path.join(dir, `${NAME}.sock`),
        shutdown_timeout: 10,
      },
      setting: { task_worker_num: 2, task_concurrency: 16, daemonize: 0 },
      pdo: {
        dsn: `mysql:host=127.0.0.1;port=${dbProxy.port};dbname=${MYSQL.database}`,
        username: MYSQL.user,
        ...(MYSQL.password === '' ? {} : { password: MYSQL.password }),
        table_prefix: prefix,
      },
      wechat: { app_id: APP_ID, app_secret: APP_SECRET, api_base: `http://127.0.0.1:${apiProxy.port}`, retry_base_ms: 500, retry_max: 5, timeout_ms: 5000 },
      queue: { fsync: 'always', segment_size: 1024 * 1024 },
      log: { log_file: path.join(dir, 'logs', `${NAME}.log`), log_level: 'info' },
    });
    const controlSocket = path.join(dir, `${NAME}.sock`);

    // ---------------------------------------------------------------- fault state
    let dbDownDepth = 0;
    let apiDownDepth = 0;
    const dbDown = (): boolean => dbDownDepth > 0;
    const outages: OutageRecord[] = [];
    const kills: KillRecord[] = [];
    let failedStartsTotal = 0;
    const startFailures: string[] = [];
    let t0 = Date.now();
    const sinceStart = (): number => (Date.now() - t0) / 1000;

    /** Starts the daemon; while it fails (e.g. database cut off), tries again every 500 ms. */
    const startDaemon = async (): Promise<number> => {
      let failed = 0;
      for (let attempt = 0; attempt < 240; attempt++) {
        try {
          daemon = await spawnMega([NAME, 'start', '--foreground', '--config-dir', configDir], /listening on [^:\s]+:(\d+)/, 60_000);
          return failed;
        } catch (err) {
          failed++;
          const first = (err as Error).message.split('\n').find((l) => /error|fail|cannot|template store/i.test(l)) ?? (err as Error).message.split('\n')[0]!;
          if (startFailures.length < 10) startFailures.push(`${sinceStart().toFixed(1)} s (DB ${dbDown() ? 'down' : 'up'}): ${first.trim().slice(0, 200)}`);
          await sleep(500);
        }
      }
      throw new Error('the daemon did not start in 240 attempts');
    };

    await startDaemon();
    log(`daemon listening on 127.0.0.1:${port}; simulator ${simCtl.url} behind proxy :${apiProxy.port}; MariaDB behind proxy :${dbProxy.port}, table ${table}`);

    // ---------------------------------------------------------------- load
    const msgs = new Map<string, Msg>();
    let n = 0;
    const make = (kind: 'push' | 'send') => (): Msg => {
      const i = n++;
      const openid = `oK${tag}_${i}`;
      // every Send and every second push carries a client msgid (resent on unknown fate)
      const msgid = kind === 'send' || i % 2 === 0 ? `ck${tag}-${i}` : undefined;
      const m: Msg = { n: i, openid, kind, vars: { n: i, pad: `p${'x'.repeat(i % 61)}` }, answers: [], errcodes: [], resends: 0, ...(msgid ? { msgid } : {}) };
      msgs.set(openid, m);
      return m;
    };
    const pushCounters = emptyCounters();
    const sendCounters = emptyCounters();
    for (let p = 0; p < PUSHERS; p++) {
      clients.push(new LoadClient({ kind: 'push', port: () => port, key: KEY, rate: pushRate / PUSHERS, window: PUSH_WINDOW, make: make('push'), counters: pushCounters, maxResends: MAX_RESENDS }));
    }
    const pushClients = [...clients];
    const sendClients: LoadClient[] = [];
    if (sendRate > 0) {
      for (let s = 0; s < SENDERS; s++) {
        const c = new LoadClient({ kind: 'send', port: () => port, key: KEY, rate: sendRate / SENDERS, window: SEND_WINDOW, make: make('send'), counters: sendCounters, maxResends: MAX_RESENDS });
        clients.push(c);
        sendClients.push(c);
      }
    }
    tsetClient = new TsetClient(() => port, KEY, dbDown, () => (dbDown() ? 300 : 1000));
    const tset = tsetClient;
    let last = Date.now();
    ticker = setInterval(() => {
      const now = Date.now();
      const dt = now - last;
      last = now;
      for (const c of clients) c.tick(dt);
      tset.tick();
    }, 10);

    // status samples (through the control socket) and the simulator's record, every 2 s
    const pausedSeen = new Map<string, number>();
    let maxDepth = 0;
    let lastStatus: DaemonStatus | undefined;
    const status = async (): Promise<DaemonStatus | undefined> => {
      try {
        return await controlRequest(controlSocket, { cmd: 'status' }, 3000);
      } catch {
        return undefined;
      }
    };
    sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const s = await status();
        if (s) {
          lastStatus = s;
          maxDepth = Math.max(maxDepth, s.queue.depth);
          if (s.paused) pausedSeen.set(s.paused.reason, (pausedSeen.get(s.paused.reason) ?? 0) + 1);
        }
        await simCtl.refresh().catch(() => undefined);
        for (let i = 0; i < 20 && sampling; i++) await sleep(100);
      }
    })();

    // ---------------------------------------------------------------- faults
    const events: FaultEvent[] = [];
    const durationMs = durationS * 1000;
    // the i-th of `count` events of a kind falls at a random point of the i-th of `count` equal
    // slices of 8 %..85 % of the run: random, but not all bunched together
    const when = (i: number, count: number): number => Math.round(durationMs * (0.08 + (0.77 * (i + rnd())) / count));
    for (let i = 0; i < killCount; i++) events.push({ kind: 'kill', at: when(i, killCount), durationMs: 0 });
    for (let i = 0; i < dbCount; i++) events.push({ kind: 'db', at: when(i, dbCount), durationMs: Math.round(3000 + rnd() * 4000) });
    for (let i = 0; i < apiCount; i++) events.push({ kind: 'api', at: when(i, apiCount), durationMs: Math.round(4000 + rnd() * 6000) });
    events.sort((a, b) => a.at - b.at);
    // restart gaps drawn up front, so the schedule depends on the seed only
    const gaps = events.filter((e) => e.kind === 'kill').map(() => Math.round(200 + rnd() * 1300));
    let revision = 0;

    const activeOutages: Record<'db' | 'api', OutageRecord[]> = { db: [], api: [] };
    const beginOutage = (kind: 'db' | 'api', e: FaultEvent): void => {
      const rec: OutageRecord = { kind, atS: sinceStart(), seconds: e.durationMs / 1000 };
      outages.push(rec);
      activeOutages[kind].push(rec);
    };
    const endOutages = (kind: 'db' | 'api'): void => {
      for (const rec of activeOutages[kind]) rec.upAt = Date.now();
      activeOutages[kind] = [];
    };
    const dbOutage = async (e: FaultEvent): Promise<void> => {
      beginOutage('db', e);
      if (dbDownDepth++ === 0) await dbProxy.down();
      log(`template database cut off for ${(e.durationMs / 1000).toFixed(1)} s`);
      // an operator edits the template meanwhile: TSet can load it only once the database is back
      revision++;
      await db.query(`UPDATE \`${table}\` SET template = ?, updated_at = UNIX_TIMESTAMP() WHERE tmpl_key = ?`, [templateJson(revision), KEY]);
      await sleep(e.durationMs);
      if (--dbDownDepth === 0) {
        for (let i = 0; ; i++) {
          try {
            await dbProxy.up();
            break;
          } catch (err) {
            if (i >= 50) throw err;
            await sleep(100);
          }
        }
        endOutages('db');
        log('template database back');
      }
    };
    const apiOutage = async (e: FaultEvent): Promise<void> => {
      beginOutage('api', e);
      if (apiDownDepth++ === 0) await apiProxy!.down();
      log(`WeChat API cut off for ${(e.durationMs / 1000).toFixed(1)} s`);
      await sleep(e.durationMs);
      if (--apiDownDepth === 0) {
        for (let i = 0; ; i++) {
          try {
            await apiProxy!.up();
            break;
          } catch (err) {
            if (i >= 50) throw err;
            await sleep(100);
          }
        }
        endOutages('api');
        log('WeChat API back');
      }
    };
    let killChain: Promise<void> = Promise.resolve();
    let killIndex = 0;
    let lastRestartAt = 0;
    const kill = (): Promise<void> => {
      const gap = gaps[killIndex++]!;
      killChain = killChain.then(async () => {
        // a kill right after a restart would find no client reconnected yet: give them 2 s
        const settle = lastRestartAt + 2000 - Date.now();
        if (settle > 0) await sleep(settle);
        const d = daemon!;
        const simStats = await simCtl.stats().catch(() => undefined);
        const rec: KillRecord = {
          atS: sinceStart(),
          pushesInFlight: pushClients.reduce((s, c) => s + c.inFlight, 0),
          sendsInFlight: sendClients.reduce((s, c) => s + c.inFlight, 0),
          simInFlight: simStats?.inFlight ?? null,
          downMs: 0,
          failedStarts: 0,
        };
        const downAt = Date.now();
        await killHard(d.child);
        log(`kill -9 #${kills.length + 1} (${rec.pushesInFlight} pushes and ${rec.sendsInFlight} sends in flight, ${rec.simInFlight ?? '?'} calls at WeChat)`);
        await sleep(gap);
        rec.failedStarts = await startDaemon();
        failedStartsTotal += rec.failedStarts;
        rec.downMs = Date.now() - downAt;
        lastRestartAt = Date.now();
        kills.push(rec);
        log(`daemon back after ${(rec.downMs / 1000).toFixed(1)} s${rec.failedStarts > 0 ? ` (${rec.failedStarts} failed starts)` : ''}`);
      });
      return killChain;
    };

    t0 = Date.now();
    const running: Array<Promise<void>> = [];
    for (const e of events) {
      const wait = t0 + e.at - Date.now();
      if (wait > 0) await sleep(wait);
      if (e.kind === 'kill') running.push(kill());
      else if (e.kind === 'db') running.push(dbOutage(e));
      else running.push(apiOutage(e));
    }
    const left = t0 + durationMs - Date.now();
    if (left > 0) await sleep(left);
    const loadSeconds = (Date.now() - t0) / 1000;

    // ---------------------------------------------------------------- end of load, drain
    log('load stopped; waiting for the faults to end and the answers in flight');
    for (const c of clients) c.stop();
    tset.stop();
    await Promise.all(running);
    await killChain;
    const answersDeadline = Date.now() + 120_000;
    while (Date.now() < answersDeadline && !(clients.every((c) => c.idle) && tset.idle)) await sleep(100);
    const notIdle = clients.filter((c) => !c.idle).length;
    clearInterval(ticker);
    ticker = undefined;
    for (const c of clients) c.close();
    tset.close();

    const acknowledged = [...msgs.values()].filter((m) => m.answers.includes(200));
    log(`draining: ${acknowledged.length} messages acknowledged`);
    const drainStart = Date.now();
    let missing = acknowledged.length;
    let depth = -1;
    while (Date.now() - drainStart < DRAIN_TIMEOUT_MS) {
      await simCtl.refresh();
      const delivered = deliveredOpenids(simCtl.messages);
      missing = acknowledged.filter((m) => !delivered.has(m.openid)).length;
      const s = await status();
      if (s) lastStatus = s;
      depth = s?.queue.depth ?? -1;
      if (missing === 0 && depth === 0) break;
      await sleep(250);
    }
    // quiet: nothing more reaches the simulator for 2 s
    let lastSends = -1;
    for (let quietSince = Date.now(), end = Date.now() + 30_000; Date.now() - quietSince < 2000 && Date.now() < end; ) {
      const st = await simCtl.stats();
      if (st.sendRequests !== lastSends || st.inFlight > 0) {
        lastSends = st.sendRequests;
        quietSince = Date.now();
      }
      await sleep(200);
    }
    const drainSeconds = (Date.now() - drainStart) / 1000;
    sampling = false;
    await sampler;
    await simCtl.refresh();
    const finalStatus = (await status()) ?? lastStatus;
    // The drain may end with calls still in flight: give SIGTERM 30 s before SIGKILL.
    const exitCode = await stopChild(daemon!.child, 30_000);
    const simStats = await simCtl.stats();
    const deadLetterFile = path.join(dir, `${NAME}.dead-letter.jsonl`);
    const deadLetters = existsSync(deadLetterFile) ? readFileSync(deadLetterFile, 'utf8').split('\n').filter((l) => l.trim() !== '').length : 0;

    // ---------------------------------------------------------------- check
    for (const o of outages) {
      if (o.upAt === undefined) continue;
      const upAt = o.upAt;
      if (o.kind === 'api') {
        const first = simCtl.messages.find((m) => m.receivedAt >= upAt && m.errcode === 0);
        o.recoveredAfterS = first ? (first.receivedAt - upAt) / 1000 : null;
      } else {
        const first = tset.records.find((r) => r.code === 200 && r.answeredAt !== undefined && r.answeredAt >= upAt);
        o.recoveredAfterS = first ? (first.answeredAt! - upAt) / 1000 : null;
      }
    }
    const check = checkRecord(msgs, simCtl.messages);
    const tsets = tset.records;
    const tsetBy = (during: boolean): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const r of tsets.filter((x) => x.duringOutage === during)) {
        const k = r.code === null ? 'unanswered' : String(r.code);
        out[k] = (out[k] ?? 0) + 1;
      }
      return out;
    };
    const revisionsSeen = new Map<string, number>();
    for (const m of simCtl.messages) {
      const r = m.data?.['remark']?.value ?? '?';
      if (m.errcode === 0 && !m.duplicate) revisionsSeen.set(r, (revisionsSeen.get(r) ?? 0) + 1);
    }
    const pushMsgs = [...msgs.values()].filter((m) => m.kind === 'push');
    const sendMsgs = [...msgs.values()].filter((m) => m.kind === 'send');
    const sendOkDelivered = sendMsgs.filter((m) => m.answers.includes(200)).every((m) => check.deliveredOpenids.has(m.openid));
    const sendErrcodes: Record<string, number> = {};
    for (const m of sendMsgs) for (const e of m.errcodes) sendErrcodes[String(e)] = (sendErrcodes[String(e)] ?? 0) + 1;

    const problems = [...check.problems];
    if (missing > 0 && check.lost === 0) problems.push(`drain: ${missing} acknowledged messages still missing at the drain deadline`);
    if (notIdle > 0) problems.push(`${notIdle} client(s) still had requests in flight 120 s after the load stopped`);
    if (exitCode !== 0) problems.push(`the final SIGTERM stop exited ${exitCode}`);
    if (!sendOkDelivered) problems.push('a Send answered 200 has no delivery in the record');

    const failed = check.lost > 0 || check.problems.length > 0;
    const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? '?'}), load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} at the end, Node ${process.version}, ${os.platform()} ${os.release()}`;
    const md = renderReport({
      date: startedAt.toISOString(),
      commit: gitDescribe(),
      machine,
      seed,
      durationS,
      loadSeconds,
      drainSeconds,
      pushRate,
      sendRate,
      kills,
      failedStartsTotal,
      startFailures,
      outages,
      push: pushCounters,
      send: sendCounters,
      pushMsgs,
      sendMsgs,
      check,
      simStats,
      tsetDuring: tsetBy(true),
      tsetOutside: tsetBy(false),
      tsetTotal: tsets.length,
      tsetFailMessages: [...new Set(tsets.filter((r) => r.code !== null && r.code !== 200).map((r) => `${r.code} ${r.message}`))],
      revisions: revision,
      revisionsSeen,
      deadLetters,
      maxDepth,
      finalStatus,
      pausedSeen,
      exitCode,
      sendErrcodes,
      problems,
    });
    process.stdout.write(md);
    if (values['no-write'] !== true) {
      const out = values.out ?? path.join(REPO, 'bench', 'results', `chaos-${startedAt.toISOString().slice(0, 10)}.md`);
      mkdirSync(path.dirname(out), { recursive: true });
      writeFileSync(out, md);
      log(`written: ${out}`);
    }
    if (failed || problems.length > 0) keepDir = true;
    return failed ? 1 : 0;
  } catch (err) {
    keepDir = true;
    log(`chaos run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    if (daemon) log(`daemon output (tail):\n${daemon.output().slice(-4000)}`);
    return 2;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!interrupted) await cleanup();
  }
}


interface ReportInput {
  date: string;
  commit: string;
  machine: string;
  seed: number;
  durationS: number;
  loadSeconds: number;
  drainSeconds: number;
  pushRate: number;
  sendRate: number;
  kills: KillRecord[];
  failedStartsTotal: number;
  startFailures: string[];
  outages: OutageRecord[];
  push: ClientCounters;
  send: ClientCounters;
  pushMsgs: Msg[];
  sendMsgs: Msg[];
  check: CheckResult;
  simStats: { sendRequests: number; delivered: number; duplicates: number; tokenRequests: number; maxInFlight: number };
  tsetDuring: Record<string, number>;
  tsetOutside: Record<string, number>;
  tsetTotal: number;
  tsetFailMessages: string[];
  revisions: number;
  revisionsSeen: Map<string, number>;
  deadLetters: number;
  maxDepth: number;
  finalStatus: DaemonStatus | undefined;
  pausedSeen: Map<string, number>;
  exitCode: number | null;
  sendErrcodes: Record<string, number>;
  problems: string[];
}

const fmt = (x: number): string => x.toLocaleString('en-US');
const codes = (o: Record<string, number>): string =>
  Object.keys(o).length === 0
    ? '0'
    : Object.entries(o)
        .sort()
        .map(([k, v]) => `${k}: ${fmt(v)}`)
        .join(', ');

function renderReport(r: ReportInput): string {
  const db = r.outages.filter((o) => o.kind === 'db');
  const api = r.outages.filter((o) => o.kind === 'api');
  const sum = (os: OutageRecord[]): string => os.reduce((s, o) => s + o.seconds, 0).toFixed(1);
  const pushAcked = r.pushMsgs.filter((m) => m.answers.includes(200)).length;
  const sendAcked = r.sendMsgs.filter((m) => m.answers.includes(200)).length;
  const tsetDuring500 = r.tsetDuring['500'] ?? 0;
  const tsetAfter200 = r.tsetOutside['200'] ?? 0;
  const lines: string[] = [];
  lines.push(`# Chaos run ${r.date.slice(0, 19).replace('T', ' ')} UTC`);
  lines.push('');
  lines.push(`Commit ${r.commit}. ${r.machine}.`);
  lines.push(
    `Daemon: 2 task workers × 16 calls, \`[queue] fsync = always\`, 1 MiB segments, \`retry_base_ms = 500\`, \`retry_max = 5\`, \`timeout_ms = 5000\`; simulator latency ${SIM_LATENCY_MS} ms; ` +
      `${PUSHERS} pushers (window ${PUSH_WINDOW}) at ${r.pushRate}/s in total, ${r.sendRate > 0 ? `${SENDERS} Send clients (window ${SEND_WINDOW}) at ${r.sendRate}/s` : 'no Send clients'}, one TSet client ` +
      `(every 1 s, every 0.3 s while the database is cut off). Half of the pushes and every Send carry a \`<msgid>\`; one left without an answer by a kill is sent again with it.`,
  );
  lines.push('');
  lines.push('| figure | value |');
  lines.push('|---|---|');
  lines.push(`| duration (load and faults) | ${r.loadSeconds.toFixed(0)} s (then ${r.drainSeconds.toFixed(0)} s to drain) |`);
  lines.push(`| seed | ${r.seed} |`);
  lines.push(`| kill -9 of the daemon (each followed by a restart) | ${r.kills.length}${r.failedStartsTotal > 0 ? ` (${r.failedStartsTotal} start attempts failed while the template database was cut off, retried)` : ''} |`);
  lines.push(`| template DB outages | ${db.length} (${sum(db)} s in total) |`);
  lines.push(`| WeChat API outages | ${api.length} (${sum(api)} s in total) |`);
  lines.push(`| pushes sent (requests, resends included) | ${fmt(r.push.frames)} (${fmt(r.pushMsgs.length)} messages, ${fmt(r.push.resent)} resends with the same msgid) |`);
  lines.push(`| acknowledged (200) | ${fmt(r.push.ok)} (${fmt(pushAcked)} messages) |`);
  lines.push(`| refused (503) | ${fmt(r.push.refused503)} |`);
  lines.push(`| unanswered (connection lost at a kill) | ${fmt(r.push.unanswered)} |`);
  lines.push(`| other answers | ${codes(r.push.other)} |`);
  lines.push(`| delivered (unique openids) | ${fmt(r.check.deliveredOpenids.size)} of ${fmt(r.pushMsgs.length + r.sendMsgs.length)} messages (pushes and Sends); ${fmt(r.check.deliveredUnacknowledged)} of them never acknowledged |`);
  const undelivered = [...r.pushMsgs, ...r.sendMsgs].filter((m) => !r.check.deliveredOpenids.has(m.openid));
  const undeliveredNoMsgid = undelivered.filter((m) => m.msgid === undefined && !m.answers.includes(200)).length;
  lines.push(
    `| not delivered | ${fmt(undelivered.length)}: ${fmt(r.check.lost)} acknowledged, ${fmt(undeliveredNoMsgid)} never answered and without a msgid to resend them with, ${fmt(undelivered.length - r.check.lost - undeliveredNoMsgid)} others |`,
  );
  lines.push(`| duplicates (same client_msg_id repeats dropped by the simulator) | ${fmt(r.check.duplicates)} (on ${fmt(r.check.repeatedOpenids)} openids) |`);
  lines.push(`| delivered twice (different client_msg_ids) | ${fmt(r.check.doubles)} |`);
  lines.push(`| **lost** (acknowledged, never delivered) | **${fmt(r.check.lost)}** |`);
  lines.push(
    `| Send answers | ${fmt(r.send.frames)} requests (${fmt(r.sendMsgs.length)} messages): 200: ${fmt(r.send.ok)}, 503: ${fmt(r.send.refused503)}, unanswered: ${fmt(r.send.unanswered)}, other: ${codes(r.send.other)}; ` +
      `WeChat errcodes in the answers: ${codes(r.sendErrcodes)}; ${fmt(sendAcked)} messages answered 200, all delivered: ${r.problems.some((p) => p.startsWith('a Send answered 200')) ? 'NO' : 'yes'} |`,
  );
  lines.push(`| TSet while the DB was cut off | ${tsetDuring500} × 500 (all answers: ${codes(r.tsetDuring)}) |`);
  lines.push(`| TSet with the DB up (after/between outages) | ${tsetAfter200} × 200 (all answers: ${codes(r.tsetOutside)}) |`);
  lines.push(
    `| template revisions delivered | ${[...r.revisionsSeen.entries()].sort().map(([k, v]) => `${k}: ${fmt(v)}`).join(', ')} (the row was edited ${r.revisions} times, each while the DB was cut off) |`,
  );
  lines.push(`| dead letters | ${fmt(r.deadLetters)} |`);
  lines.push(`| WeChat send requests / token requests | ${fmt(r.simStats.sendRequests)} / ${fmt(r.simStats.tokenRequests)}; non-zero answers: ${codes(r.check.nonZeroErrcodes)} |`);
  lines.push(
    `| dispatch holds seen by \`status\` (2 s samples) | ${r.pausedSeen.size === 0 ? 'none' : [...r.pausedSeen.entries()].map(([k, v]) => `${k}: ${v}`).join(', ')}; largest queue depth ${fmt(r.maxDepth)} |`,
  );
  lines.push(
    `| after the drain | queue depth ${r.finalStatus?.queue.depth ?? '?'}, ${r.finalStatus?.queue.segments ?? '?'} segment(s); SIGTERM exit ${r.exitCode} |`,
  );
  lines.push('');
  lines.push('Kills (s after the start: pushes and Sends in flight on the clients, calls in flight at the simulator; time until the restarted daemon listened):');
  lines.push('');
  for (const k of r.kills) {
    lines.push(
      `- ${k.atS.toFixed(1)} s: ${k.pushesInFlight} pushes, ${k.sendsInFlight} Sends, ${k.simInFlight ?? '?'} WeChat calls in flight; back after ${(k.downMs / 1000).toFixed(1)} s${k.failedStarts > 0 ? ` (${k.failedStarts} failed starts: database cut off)` : ''}`,
    );
  }
  lines.push('');
  lines.push('Outages (start, length):');
  lines.push('');
  for (const o of [...r.outages].sort((a, b) => a.atS - b.atS)) {
    const after =
      o.recoveredAfterS === undefined
        ? ''
        : o.recoveredAfterS === null
          ? '; nothing afterwards'
          : o.kind === 'api'
            ? `; first delivery ${o.recoveredAfterS.toFixed(1)} s after it was back`
            : `; first TSet answered 200 ${o.recoveredAfterS.toFixed(1)} s after it was back`;
    lines.push(`- ${o.kind === 'db' ? 'template DB' : 'WeChat API'} at ${o.atS.toFixed(1)} s for ${o.seconds.toFixed(1)} s${after}`);
  }
  if (r.startFailures.length > 0) {
    lines.push('');
    lines.push('Failed starts (first lines):');
    lines.push('');
    for (const f of r.startFailures) lines.push(`- ${f.replace(/\|/g, '\\|')}`);
  }
  if (r.tsetFailMessages.length > 0) {
    lines.push('');
    lines.push(`TSet failure messages: ${r.tsetFailMessages.map((m) => `\`${m}\``).join(', ')}`);
  }
  lines.push('');
  lines.push(r.problems.length === 0 ? 'Check: passed (nothing lost, nothing delivered twice, nothing unknown delivered, every message with its own variables).' : 'Check: FAILED');
  for (const p of r.problems) lines.push(`- ${p.replace(/\|/g, '\\|')}`);
  lines.push('');
  lines.push(`Reproduce: \`npm run chaos -- --duration-s ${r.durationS} --seed ${r.seed}${r.pushRate !== 200 ? ` --rate ${r.pushRate}` : ''}${r.sendRate !== 10 ? ` --send-rate ${r.sendRate}` : ''}\` (the fault schedule follows the seed; timings on a busy machine do not).`);
  lines.push('');
  return lines.join('\n');
}

try {
  // `--cluster`: three daemons of one service on a NATS cluster (bench/chaos-cluster.ts)
  const argv = process.argv.slice(2);
  process.exitCode = argv.includes('--cluster') ? await (await import('./chaos-cluster.js')).mainCluster(argv.filter((a) => a !== '--cluster')) : await main();
} catch (err) {
  // bad options
  process.stderr.write(`chaos: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 2;
}
