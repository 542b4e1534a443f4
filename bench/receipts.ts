/**
 * The receipts endpoint's benchmark (issue 12): how many of WeChat's TEMPLATESENDJOBFINISH
 * callbacks a daemon answers per second, and how fast, with every receipt landing on a real
 * ledger row.
 *
 * One run = one fresh daemon (`[ledger] enabled`, `[callback] listen`, the ledger in SQLite or
 * MySQL). Messages are first Pushed through it to the simulator, so each receipt carries a msgid
 * WeChat really gave out and updates a `sent` row; the signed (and, in safe mode, encrypted)
 * requests are built before any timing starts. Then the loads: closed loop (`inflight` requests
 * in flight over as many keep-alive connections) and open loop at a fixed rate, in plaintext and
 * safe mode, each with receipts of its own. The same plaintext requests go to a bare node:http
 * server in its own process (answers `success`, checks nothing): the ceiling of this machine,
 * HTTP stack and load generator. Last, the run checks its work: every message's row must be
 * `delivered` in the database, and the endpoint must have refused nothing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import { Pool } from 'undici';
import { callbackSignature, encryptCallbackMessage, messageSignature, parseEncodingAesKey, type CallbackAesKey } from '../src/wechat/callback-crypto.js';
import { receiptXml } from '../src/simulator/receipts.js';
import { openTemplateStore } from '../src/templates/index.js';
import { mysqlTestConfig, mysqlTestDsn } from '../test/helpers/mysql.js';
import { pushBurst } from './lib/client.js';
import { Samples } from './lib/stats.js';
import {
  APP_ID,
  CpuSampler,
  TEMPLATE,
  TEMPLATE_KEY,
  daemonStatus,
  freePort,
  prepareDaemonDir,
  processCpu,
  removeDir,
  sleep,
  startDaemon,
  type Simulator,
} from './lib/procs.js';
import type { Settings } from './scenarios.js';

/** `[wechat] token` of the bench daemon (3–32 characters, as WeChat's console allows). */
const TOKEN = 'megaBenchCallbackToken';
/** A valid EncodingAESKey (43 base64 characters): the bench's own, not a secret. */
const AES_KEY_TEXT = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';
const CALLBACK_PATH = '/wechat/callback';
const ACCOUNT = 'gh_bench00000001';

export type ReceiptStore = 'sqlite' | 'mysql';
export type CallbackMode = 'plain' | 'aes';

export interface ReceiptsOptions {
  store: ReceiptStore;
  modes: CallbackMode[];
  /** Receipts per closed-loop load. */
  callbacks: number;
  /** Closed loop: requests in flight (one keep-alive connection each). */
  inflight: number;
  /** Open loop: callbacks per second, for `pacedMs`. */
  rate: number;
  pacedMs: number;
  /** Untimed receipts first (connections, JIT, the journal's first segment). */
  warmup: number;
}

export interface CallbackCpu {
  /** % of one core over the load. */
  daemonMain: number;
  daemonTotal: number;
  bench: number;
  /** The MySQL/MariaDB server process, when the ledger is there and it runs on this machine (else NaN). */
  db: number;
  /** Everything else: other processes, kernel threads, interrupts. */
  other: number;
}

export interface CallbackLoad {
  mode: CallbackMode;
  kind: 'closed' | 'paced';
  /** Paced: callbacks per second offered. */
  offered?: number;
  count: number;
  seconds: number;
  /** Answered `success` per second (count / seconds). */
  rate: number;
  p50: number;
  p99: number;
  max: number;
  errors: number;
  firstError?: string;
  cpu: CallbackCpu;
  /**
   * Longest the load generator's own event loop was late during the load, in ms: a stall of the
   * generator shows in the latencies too (paced latency counts from when a request was due), so a
   * latency spike with a small figure here is the server's.
   */
  generatorLagMax: number;
}

export interface ReceiptsCheck {
  /** Every message Pushed and accepted by the simulator (= every receipt sent). */
  expected: number;
  /** Rows by state once the ledger had written everything. */
  states: Record<string, number>;
  /** ms from the last answer until the database held every receipt. */
  applyMs: number;
  /** Random rows compared with WeChat's msgid and state. */
  sampled: number;
  sampleMismatches: number;
  /** The endpoint's own counters (`mega bench status`). */
  endpointReceipts: number;
  endpointRefused: number;
}

export interface ReceiptsRun {
  store: ReceiptStore;
  messages: number;
  /** Seconds to Push and deliver the messages the receipts refer to (not part of any figure). */
  prepareSeconds: number;
  loads: CallbackLoad[];
  /** The same plaintext loads against the bare node:http server. */
  bare: CallbackLoad[];
  check: ReceiptsCheck;
}

interface SignedRequest {
  path: string;
  body: string;
}

interface Delivered {
  msgid: number;
  openid: string;
}

/**
 * Signed requests as WeChat sends them: one fresh nonce each (a repeated one is a retry or a
 * replay to the endpoint), the timestamp of now (it must be within 300 s when it arrives).
 */
export function signedRequests(messages: readonly Delivered[], mode: CallbackMode, key: CallbackAesKey): SignedRequest[] {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const prefix = String(randomInt(1e8, 1e9));
  return messages.map((m, i) => {
    const nonce = `${prefix}${i}`;
    const signature = callbackSignature(TOKEN, timestamp, nonce);
    const xml = receiptXml(ACCOUNT, m.openid, Number(timestamp), m.msgid, 'success');
    const query = `signature=${signature}&timestamp=${timestamp}&nonce=${nonce}&openid=${m.openid}`;
    if (mode === 'plain') return { path: `${CALLBACK_PATH}?${query}`, body: xml };
    const encrypt = encryptCallbackMessage(key, xml, APP_ID);
    const msgSignature = messageSignature(TOKEN, timestamp, nonce, encrypt);
    return {
      path: `${CALLBACK_PATH}?${query}&encrypt_type=aes&msg_signature=${msgSignature}`,
      body: `<xml><ToUserName><![CDATA[${ACCOUNT}]]></ToUserName><Encrypt><![CDATA[${encrypt}]]></Encrypt></xml>`,
    };
  });
}

const XML_HEADERS = { 'content-type': 'text/xml' };

/** One request; its latency from `from` (the write, or in open loop the time it was due) to the whole answer read. */
async function fire(pool: Pool, r: SignedRequest, from: number, samples: Samples, fail: (e: string) => void): Promise<void> {
  try {
    const res = await pool.request({ method: 'POST', path: r.path, headers: XML_HEADERS, body: r.body });
    const text = await res.body.text();
    samples.push(performance.now() - from);
    if (res.statusCode !== 200 || text !== 'success') fail(`${res.statusCode} ${text.slice(0, 200)}`);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
}

interface LoadTarget {
  origin: string;
  daemonPid?: number;
  /** The database server's process, to tell its CPU apart from the neighbours'. */
  dbPid?: number;
}

/** The pid of a mariadbd/mysqld on this machine (the first found), or undefined. */
function databaseServerPid(): number | undefined {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (/^(mariadbd|mysqld)$/.test(readFileSync(`/proc/${name}/comm`, 'utf8').trim())) return Number(name);
    } catch {
      // gone, or not ours to read
    }
  }
  return undefined;
}

/** Closed loop (`rate` undefined: `inflight` loops, one request in flight each) or open loop at `rate`/s. */
async function load(t: LoadTarget, requests: SignedRequest[], o: { inflight: number; rate?: number }): Promise<Omit<CallbackLoad, 'mode' | 'kind'>> {
  const pool = new Pool(t.origin, { connections: o.inflight, pipelining: 1, keepAliveTimeout: 60_000 });
  const samples = new Samples(requests.length);
  let errors = 0;
  let firstError: string | undefined;
  const fail = (e: string): void => {
    errors++;
    firstError ??= e;
  };
  try {
    // every connection opened before the clock starts, as WeChat's are after the first seconds
    await Promise.all(Array.from({ length: o.inflight }, () => pool.request({ method: 'GET', path: '/' }).then((r) => r.body.dump())));
    const lag = monitorEventLoopDelay({ resolution: 1 });
    const sampler = new CpuSampler(t.daemonPid, 0, undefined);
    const daemonBefore = t.daemonPid ? processCpu(t.daemonPid) : 0;
    const dbBefore = t.dbPid ? processCpu(t.dbPid) : NaN;
    sampler.start();
    lag.enable();
    const t0 = performance.now();
    if (o.rate === undefined) {
      let next = 0;
      const loop = async (): Promise<void> => {
        while (next < requests.length) {
          const r = requests[next++]!;
          await fire(pool, r, performance.now(), samples, fail);
        }
      };
      await Promise.all(Array.from({ length: o.inflight }, loop));
    } else {
      // Every ms, what the schedule says is due; latency counts from when it was due, so a
      // generator or daemon that falls behind shows in the figure instead of hiding it.
      const interval = 1000 / o.rate;
      const pending: Array<Promise<void>> = [];
      let sent = 0;
      while (sent < requests.length) {
        const due = Math.min(requests.length, Math.floor((performance.now() - t0) / interval) + 1);
        for (; sent < due; sent++) pending.push(fire(pool, requests[sent]!, t0 + sent * interval, samples, fail));
        await sleep(1);
      }
      await Promise.all(pending);
    }
    const seconds = (performance.now() - t0) / 1000;
    lag.disable();
    const c = sampler.stop();
    const daemonTotal = t.daemonPid ? (100 * (processCpu(t.daemonPid) - daemonBefore)) / c.seconds : NaN;
    const db = t.dbPid ? (100 * (processCpu(t.dbPid) - dbBefore)) / c.seconds : NaN;
    const [p50, p99, max] = samples.percentiles([50, 99, 100]);
    const out: Omit<CallbackLoad, 'mode' | 'kind'> = {
      count: requests.length,
      seconds,
      rate: (requests.length - errors) / seconds,
      p50: p50!,
      p99: p99!,
      max: max!,
      errors,
      generatorLagMax: lag.max / 1e6,
      cpu: { daemonMain: c.daemon?.main ?? NaN, daemonTotal, bench: c.bench, db, other: Number.isFinite(db) ? Math.max(0, c.other - db) : c.other },
    };
    if (o.rate !== undefined) out.offered = o.rate;
    if (firstError !== undefined) out.firstError = firstError;
    return out;
  } finally {
    await pool.close();
  }
}

// ------------------------------------------------------------------ the bare server

/** node:http answering `success` to anything once its body is read: no signature, no ledger. */
const BARE_SERVER = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': 7 }); res.end('success'); });
});
server.keepAliveTimeout = 65000;
server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
// gone with the bench: its stdin closes when the bench process ends, however it ends
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
`;

export interface BareServer {
  origin: string;
  pid: number;
  stop(): Promise<void>;
}

export async function startBareServer(): Promise<BareServer> {
  const child: ChildProcess = spawn(process.execPath, ['-e', BARE_SERVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`bare server exited (${code}) before listening`)));
  });
  return {
    origin: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// ------------------------------------------------------------------ the ledger's database

/** Reads the message table of the daemon's `[pdo]` store, SQLite or MySQL. */
interface LedgerDb {
  states(): Promise<Record<string, number>>;
  rows(msgids: string[]): Promise<Array<{ wechat_msgid: string; state: string }>>;
  close(): Promise<void>;
}

function sqliteLedger(file: string, table: string): LedgerDb {
  const db = new Database(file, { readonly: true, fileMustExist: true, timeout: 5000 });
  return {
    states: async () => Object.fromEntries((db.prepare(`SELECT state, COUNT(*) AS n FROM ${table} GROUP BY state`).all() as Array<{ state: string; n: number }>).map((r) => [r.state, r.n])),
    rows: async (ids) => db.prepare(`SELECT wechat_msgid, state FROM ${table} WHERE wechat_msgid IN (${ids.map(() => '?').join(',')})`).all(...ids) as Array<{ wechat_msgid: string; state: string }>,
    close: async () => void db.close(),
  };
}

async function mysqlLedger(table: string): Promise<LedgerDb> {
  const conn = await mysql.createConnection({ ...mysqlTestConfig, connectTimeout: 2000 });
  return {
    states: async () => {
      const [rows] = await conn.query(`SELECT state, COUNT(*) AS n FROM ${table} GROUP BY state`);
      return Object.fromEntries((rows as Array<{ state: string; n: number }>).map((r) => [r.state, Number(r.n)]));
    },
    rows: async (ids) => {
      const [rows] = await conn.query(`SELECT wechat_msgid, state FROM ${table} WHERE wechat_msgid IN (?)`, [ids]);
      return rows as Array<{ wechat_msgid: string; state: string }>;
    },
    close: () => conn.end(),
  };
}

/** Drops every table whose name starts with the run's unique prefix. */
async function dropMysqlTables(prefix: string): Promise<void> {
  const conn = await mysql.createConnection({ ...mysqlTestConfig, connectTimeout: 2000 });
  try {
    const [rows] = await conn.query('SHOW TABLES');
    for (const r of rows as Array<Record<string, string>>) {
      const name = Object.values(r)[0]!;
      if (name.startsWith(prefix)) await conn.query(`DROP TABLE IF EXISTS \`${name}\``);
    }
  } finally {
    await conn.end();
  }
}

// ------------------------------------------------------------------ one run

/** Polls until the simulator delivered `target` messages. */
async function waitDelivered(sim: Simulator, target: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const st = await sim.stats();
    if (st.delivered >= target) return;
    const bad = Object.entries(st.byErrcode).filter(([code]) => code !== '0');
    if (bad.length > 0) throw new Error(`simulator answered errors: ${JSON.stringify(st.byErrcode)}`);
    if (performance.now() > deadline) throw new Error(`only ${st.delivered} of ${target} delivered within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** One fresh daemon on the chosen store: every load of `o`, the bare server's, then the check. */
export async function receiptsRun(sim: Simulator, s: Settings, o: ReceiptsOptions): Promise<ReceiptsRun> {
  const paced = Math.max(1, Math.round((o.rate * o.pacedMs) / 1000));
  const plan: Array<{ mode: CallbackMode; kind: 'closed' | 'paced'; count: number }> = o.modes.flatMap((mode) => [
    { mode, kind: 'closed' as const, count: o.callbacks },
    { mode, kind: 'paced' as const, count: paced },
  ]);
  const messages = o.warmup + plan.reduce((a, p) => a + p.count, 0);
  const prefix = `mwbench${randomInt(1e9).toString(36)}_`;
  const tablePrefix = o.store === 'mysql' ? prefix : 'mega_';
  const port = await freePort();
  const extra: Record<string, Record<string, string | number>> = {
    ledger: { enabled: 1 },
    wechat: { token: TOKEN, encoding_aes_key: AES_KEY_TEXT },
    callback: { listen: `127.0.0.1:${port}`, path: CALLBACK_PATH },
  };
  if (o.store === 'mysql') {
    const pdo: Record<string, string> = { dsn: mysqlTestDsn, username: mysqlTestConfig.user, table_prefix: prefix };
    if (mysqlTestConfig.password) pdo['password'] = mysqlTestConfig.password;
    extra['pdo'] = pdo;
    const store = openTemplateStore({ dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, tablePrefix: prefix });
    await store.init();
    await store.put({ key: TEMPLATE_KEY, title: 'order paid', template: JSON.stringify(TEMPLATE) });
    await store.close();
  }
  await sim.prepare(0);
  const dir = await prepareDaemonDir({ simUrl: sim.url, fsync: 'always', taskWorkerNum: s.workers, taskConcurrency: s.concurrency, extra });
  const daemon = await startDaemon(dir);
  const bare = await startBareServer();
  let db: LedgerDb | undefined;
  try {
    // The messages the receipts are about: WeChat's msgids as the simulator gave them out.
    const tp = performance.now();
    const burst = await pushBurst(daemon.port, messages, 16, 256);
    if (burst.errors > 0) throw new Error(`${burst.errors} pushes refused: ${burst.firstError}`);
    await waitDelivered(sim, messages, 300_000);
    const record = await sim.get<{ messages: Array<{ errcode: number | null; msgid?: number; touser?: string }> }>('/_sim/messages');
    const delivered: Delivered[] = record.messages
      .filter((m) => m.errcode === 0 && m.msgid !== undefined)
      .map((m) => ({ msgid: m.msgid!, openid: m.touser ?? '' }));
    if (delivered.length !== messages) throw new Error(`the simulator accepted ${delivered.length} messages, expected ${messages}`);
    const prepareSeconds = (performance.now() - tp) / 1000;
    await sleep(300); // the ledger writes its `sent` rows (every 100 ms)

    const key = parseEncodingAesKey(AES_KEY_TEXT);
    const target: LoadTarget = { origin: `http://127.0.0.1:${port}`, daemonPid: daemon.pid };
    const dbPid = o.store === 'mysql' ? databaseServerPid() : undefined;
    if (dbPid !== undefined) target.dbPid = dbPid;
    let at = 0;
    const take = (n: number): Delivered[] => delivered.slice(at, (at += n));
    if (o.warmup > 0) {
      const warm = signedRequests(take(o.warmup), 'plain', key);
      const w = await load(target, warm, { inflight: o.inflight });
      if (w.errors > 0) throw new Error(`warm-up: ${w.errors} callbacks not answered success: ${w.firstError}`);
      // the same warm-up for the bare server: compiled code on both sides, or the ceiling is low
      await load({ origin: bare.origin }, warm, { inflight: o.inflight });
    }
    const loads: CallbackLoad[] = [];
    const bareLoads: CallbackLoad[] = [];
    let lastAnswer = 0;
    for (const p of plan) {
      // built just before their load: the timestamp must still be fresh when they arrive
      const requests = signedRequests(take(p.count), p.mode, key);
      const rate = p.kind === 'paced' ? o.rate : undefined;
      const opts = rate === undefined ? { inflight: o.inflight } : { inflight: o.inflight, rate };
      const r = await load(target, requests, opts);
      lastAnswer = performance.now();
      if (r.errors > 0) throw new Error(`${p.mode} ${p.kind}: ${r.errors} callbacks not answered success: ${r.firstError}`);
      loads.push({ mode: p.mode, kind: p.kind, ...r });
      s.log(describe(o.store, p.mode, p.kind, r));
      if (p.mode === 'plain') {
        const b = await load({ origin: bare.origin, daemonPid: bare.pid }, requests, opts);
        bareLoads.push({ mode: p.mode, kind: p.kind, ...b });
        s.log(describe('bare node:http', p.mode, p.kind, b));
      }
    }

    // The check: the database holds every receipt (each message's row `delivered`).
    db = o.store === 'sqlite' ? sqliteLedger(dir.dbFile, `${tablePrefix}message`) : await mysqlLedger(`${tablePrefix}message`);
    let states: Record<string, number> = {};
    const deadline = performance.now() + 60_000;
    while ((states['delivered'] ?? 0) < messages && performance.now() < deadline) {
      states = await db.states();
      if ((states['delivered'] ?? 0) < messages) await sleep(20);
    }
    const applyMs = performance.now() - lastAnswer;
    const sample = Array.from({ length: Math.min(200, messages) }, () => delivered[randomInt(messages)]!);
    const rows = await db.rows([...new Set(sample.map((m) => String(m.msgid)))]);
    const byWechat = new Map(rows.map((r) => [String(r.wechat_msgid), r.state]));
    const sampleMismatches = sample.filter((m) => byWechat.get(String(m.msgid)) !== 'delivered').length;
    const st = await daemonStatus(dir);
    const refused = st.callback ? Object.values(st.callback.refused).reduce((a, n) => a + n, 0) : NaN;
    const check: ReceiptsCheck = {
      expected: messages,
      states,
      applyMs,
      sampled: sample.length,
      sampleMismatches,
      endpointReceipts: st.callback?.receipts ?? NaN,
      endpointRefused: refused,
    };
    const total = Object.values(states).reduce((a, n) => a + n, 0);
    if (states['delivered'] !== messages || total !== messages || sampleMismatches > 0 || check.endpointReceipts !== messages || refused !== 0) {
      throw new Error(`receipts check failed on ${o.store}: ${JSON.stringify(check)}`);
    }
    s.log(`${o.store}: every receipt applied: ${messages} rows delivered, ${Math.round(applyMs)} ms after the last answer; ${sample.length} sampled rows match WeChat's msgids`);
    return { store: o.store, messages, prepareSeconds, loads, bare: bareLoads, check };
  } finally {
    await db?.close().catch(() => {});
    await bare.stop();
    await daemon.stop();
    removeDir(dir.dir);
    if (o.store === 'mysql') await dropMysqlTables(prefix);
  }
}

function describe(who: string, mode: CallbackMode, kind: 'closed' | 'paced', r: Omit<CallbackLoad, 'mode' | 'kind'>): string {
  const how = kind === 'closed' ? 'closed loop' : `paced ${r.offered}/s`;
  const cpu = Number.isFinite(r.cpu.daemonTotal) ? `; CPU daemon ${r.cpu.daemonTotal.toFixed(0)}% (main ${r.cpu.daemonMain.toFixed(0)}%)` : '';
  const db = Number.isFinite(r.cpu.db) ? `, MySQL server ${r.cpu.db.toFixed(0)}%` : '';
  return `receipts ${who} ${mode} ${how}: ${Math.round(r.rate)} callbacks/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms (generator late ≤ ${r.generatorLagMax.toFixed(1)} ms)${cpu}, bench ${r.cpu.bench.toFixed(0)}%${db}, rest ${r.cpu.other.toFixed(0)}%`;
}
