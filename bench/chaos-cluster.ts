/**
 * `npm run chaos -- --cluster [options]`: the chaos run (bench/chaos.ts) for a service of
 * several daemons on the JetStream backend (docs/SCALING.md).
 *
 * Three daemons of one service (`mega chaos start --foreground`, each in its own folder, each
 * on a fixed loopback port) share one stream on a 3-node nats-server cluster of their own
 * (`replicas = 3`, free ports, never the server on :4222). The load is spread over the three
 * daemons: pipelined pushers and Send clients, two pushers and one Send client per daemon, and
 * a TSet client. At moments drawn from a seeded PRNG:
 *
 * - a daemon is killed with SIGKILL and, a few seconds later, started again on the same folder
 *   (one daemon down at a time); its clients reconnect to a live daemon of the service;
 * - a NATS node is killed with SIGKILL and, some seconds later, started again on its store dir
 *   with the same arguments (one node down at a time, so the stream keeps its quorum);
 * - the WeChat API is cut off (a TcpProxy in front of the simulator, as in chaos.ts).
 *
 * Clients follow the README: a request whose connection closed before its answer has an unknown
 * fate; one with a `<msgid>` is sent again with the same msgid, on whichever daemon is live.
 *
 * Then the same checks as chaos.ts (every message acknowledged 200 delivered, a repeat only with
 * the same client_msg_id, nothing delivered that was never pushed, each message with its own
 * variables), and for the service: one token fetch per token lifetime for the whole service
 * (simulator `/_sim/stats` tokenRequests), and every daemon's `status --json` naming the same
 * live members at the end. Markdown to stdout and bench/results/chaos-cluster-<date>.md.
 * Exit 1 when a check failed, 2 when the run could not be set up.
 *
 * Options (besides those of chaos.ts that apply):
 *   --duration-s N     seconds of load and faults (default 120)
 *   --seed N           PRNG seed (default random; printed)
 *   --rate N           pushes per second in total (default 150)
 *   --send-rate N      Sends per second in total (default 6)
 *   --kills N          kill -9 of a daemon (default duration/20, at least 1)
 *   --nats-kills N     kill -9 of a NATS node (default duration/30, at least 1)
 *   --api-outages N    WeChat API outages (default duration/40, at least 1)
 *   --token-ttl N      the simulator's token lifetime in seconds (default 7200)
 *   --out FILE, --no-write, --keep
 */
import { parseArgs } from 'node:util';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
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
  MEGA_BIN,
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
const DAEMONS = 3;
const NATS_NODES = 3;
const PUSHERS_PER_DAEMON = 2;
const PUSH_WINDOW = 64;
const SEND_WINDOW = 16;
const MAX_RESENDS = 8;
const DRAIN_TIMEOUT_MS = 240_000;
const ACK_WAIT_MS = 5000;
const PUBLISH_TIMEOUT_MS = 10_000;
/** SharedTokenSource's default: a token is refreshed this long before it expires (at most half its life). */
const TOKEN_MARGIN_S = 300;
const NATS_SERVER_BIN = process.env['MEGA_TEST_NATS_SERVER'] || '/usr/sbin/nats-server';

const MYSQL = {
  host: process.env['MEGA_TEST_MYSQL_HOST'] || '127.0.0.1',
  port: Number(process.env['MEGA_TEST_MYSQL_PORT'] || 3306),
  user: process.env['MEGA_TEST_MYSQL_USER'] || 'root',
  password: process.env['MEGA_TEST_MYSQL_PASSWORD'] ?? '',
  database: process.env['MEGA_TEST_MYSQL_DATABASE'] || 'test',
};

const TEMPLATE = JSON.stringify({
  touser: '${OPENID}',
  template_id: 'tmpl-chaos',
  data: { first: { value: 'msg ${n}' }, keyword1: { value: '${pad}' }, remark: { value: 'cluster' } },
});

function log(line: string): void {
  process.stderr.write(`[chaos-cluster ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

// ------------------------------------------------------------------ NATS nodes

/**
 * One nats-server of the cluster. Not test/helpers/nats.ts: that registers node:test hooks, and
 * it cannot start a killed node again on its store dir, which is the point here.
 */
class NatsProc {
  child: ChildProcess | undefined;
  private exited: Promise<unknown> = Promise.resolve();
  log = '';

  constructor(
    readonly name: string,
    readonly port: number,
    readonly storeDir: string,
    private readonly args: string[],
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get alive(): boolean {
    return this.child !== undefined && isAlive(this.child);
  }

  /** Starts (or starts again, on the same store dir and ports); resolves once it says it is ready. */
  async start(): Promise<void> {
    const child = spawn(NATS_SERVER_BIN, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir, '-n', this.name, ...this.args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    this.exited = once(child, 'exit').catch(() => undefined);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nats-server ${this.name} not ready within 20 s:\n${out.slice(-3000)}`)), 20_000);
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        this.log = (this.log + d).slice(-20_000);
        if (out.includes('Server is ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`nats-server ${this.name} exited (${signal ?? code}) before it was ready:\n${out.slice(-3000)}`));
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  async kill(): Promise<void> {
    if (this.child && isAlive(this.child)) this.child.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !isAlive(child)) return;
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.kill('SIGTERM');
    await this.exited;
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------ records

interface FaultEvent {
  kind: 'kill' | 'nats' | 'api';
  /** ms after the load started */
  at: number;
  /** outage length (api), or time until the restart (kill, nats), ms */
  durationMs: number;
  /** which daemon or node */
  target: number;
}

interface KillRecord {
  daemon: number;
  /** Load clients connected to it when it was killed. */
  clientsOn: number;
  atS: number;
  pushesInFlight: number;
  sendsInFlight: number;
  simInFlight: number | null;
  downMs: number;
  failedStarts: number;
}

interface NatsKillRecord {
  node: string;
  atS: number;
  downMs: number;
  /** 503 answers to pushes while it was down, and until 10 s after its restart. */
  refused: number;
  settled?: boolean;
}

interface OutageRecord {
  atS: number;
  seconds: number;
  upAt?: number;
  recoveredAfterS?: number | null;
}

interface DaemonSlot {
  index: number;
  dir: string;
  configDir: string;
  port: number;
  controlSocket: string;
  spawned: Spawned | undefined;
  /** Listening (between its ready line and its kill). */
  up: boolean;
  starts: number;
  /** Earlier runs' output tails (a kill replaces `spawned`). */
  pastOutput: string[];
}

// ------------------------------------------------------------------ main

export async function mainCluster(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'duration-s': { type: 'string' },
      seed: { type: 'string' },
      rate: { type: 'string' },
      'send-rate': { type: 'string' },
      kills: { type: 'string' },
      'nats-kills': { type: 'string' },
      'api-outages': { type: 'string' },
      'token-ttl': { type: 'string' },
      out: { type: 'string' },
      'no-write': { type: 'boolean' },
      keep: { type: 'boolean' },
    },
  });
  const durationS = intOpt('duration-s', values['duration-s'], 120, 10);
  const seed = intOpt('seed', values.seed, (Math.random() * 2 ** 32) >>> 0) >>> 0;
  const pushRate = intOpt('rate', values.rate, 150, 1);
  const sendRate = intOpt('send-rate', values['send-rate'], 6, 0);
  const killCount = intOpt('kills', values.kills, Math.max(1, Math.round(durationS / 20)));
  const natsKillCount = intOpt('nats-kills', values['nats-kills'], Math.max(1, Math.round(durationS / 30)));
  const apiCount = intOpt('api-outages', values['api-outages'], Math.max(1, Math.round(durationS / 40)));
  const tokenTtlS = intOpt('token-ttl', values['token-ttl'], 7200, 2);
  const reproduce = [
    '--cluster',
    `--duration-s ${durationS}`,
    `--seed ${seed}`,
    ...(['rate', 'send-rate', 'kills', 'nats-kills', 'api-outages', 'token-ttl'] as const).flatMap((k) => (values[k] !== undefined ? [`--${k} ${values[k]}`] : [])),
  ].join(' ');
  const rnd = seededRandom(seed);
  const tag = seed.toString(36);
  const startedAt = new Date();
  log(
    `seed ${seed} (replay with --cluster --seed ${seed}); ${durationS} s; ${pushRate} pushes/s, ${sendRate} sends/s; ` +
      `${killCount} daemon kills, ${natsKillCount} NATS node kills, ${apiCount} API outages; ${DAEMONS} daemons on ${NATS_NODES} NATS nodes`,
  );

  if (!existsSync(NATS_SERVER_BIN)) {
    log(`nats-server not found at ${NATS_SERVER_BIN} (MEGA_TEST_NATS_SERVER)`);
    return 2;
  }
  let db: mysql.Connection;
  try {
    db = await mysql.createConnection({ ...MYSQL, connectTimeout: 3000, charset: 'utf8mb4' });
  } catch (err) {
    log(`MariaDB not reachable at ${MYSQL.user}@${MYSQL.host}:${MYSQL.port}/${MYSQL.database}: ${(err as Error).message}`);
    return 2;
  }
  const prefix = `chaosc${process.pid.toString(36)}${tag.slice(0, 5)}_`;
  const table = `${prefix}wechat_template`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mega-chaos-cluster-'));
  let apiProxy: TcpProxy | undefined;
  let sim: Spawned | undefined;
  const nodes: NatsProc[] = [];
  const slots: DaemonSlot[] = [];
  let keepDir = values.keep === true;
  const clients: LoadClient[] = [];
  let tsetClient: TsetClient | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let sampling = false;

  const cleanup = async (): Promise<void> => {
    sampling = false;
    if (ticker) clearInterval(ticker);
    for (const c of clients) c.close();
    tsetClient?.close();
    for (const s of slots) if (s.spawned && isAlive(s.spawned.child)) await killHard(s.spawned.child);
    if (sim && isAlive(sim.child)) await stopChild(sim.child, 5000);
    await apiProxy?.down().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    try {
      await db.query(`DROP TABLE IF EXISTS \`${table}\``);
      await db.end();
    } catch (err) {
      log(`could not drop table ${table}: ${(err as Error).message}`);
    }
    killChildren();
    if (keepDir) log(`files kept in ${dir} (daemon logs: ${path.join(dir, 'd*', 'logs', `${NAME}.log`)}; NATS stores: ${path.join(dir, 'nats')})`);
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
    await db.query(`INSERT INTO \`${table}\` (tmpl_key, title, template, created_at, updated_at) VALUES (?, 'chaos', ?, UNIX_TIMESTAMP(), UNIX_TIMESTAMP())`, [KEY, TEMPLATE]);

    // ---------------------------------------------------------------- NATS cluster
    const natsPorts = await Promise.all(Array.from({ length: NATS_NODES }, () => freePort()));
    const routePorts = await Promise.all(Array.from({ length: NATS_NODES }, () => freePort()));
    const routes = routePorts.map((p) => `nats://127.0.0.1:${p}`).join(',');
    for (let i = 0; i < NATS_NODES; i++) {
      const name = `n${i + 1}`;
      nodes.push(
        new NatsProc(name, natsPorts[i]!, path.join(dir, 'nats', name), ['--cluster_name', `mega-chaos-${tag}`, '--cluster', `nats://127.0.0.1:${routePorts[i]}`, '--routes', routes]),
      );
    }
    await Promise.all(nodes.map((n) => n.start()));
    const servers = nodes.map((n) => n.url);

    // ---------------------------------------------------------------- simulator + API proxy
    sim = await spawnMega(
      [
        'simulator',
        '--port',
        '0',
        '--app-id',
        APP_ID,
        '--app-secret',
        APP_SECRET,
        '--latency-ms',
        String(SIM_LATENCY_MS),
        '--daily-limit',
        '100000000',
        '--token-ttl',
        String(tokenTtlS),
      ],
      /\{"url":"([^"]+)","port":(\d+)\}/,
      30_000,
    );
    const simCtl = new SimControl(sim.match[1]!);
    apiProxy = new TcpProxy('127.0.0.1', Number(sim.match[2]));
    await apiProxy.up();

    // ---------------------------------------------------------------- daemon folders
    for (let i = 0; i < DAEMONS; i++) {
      const d = path.join(dir, `d${i + 1}`);
      const configDir = path.join(d, 'config');
      const port = await freePort();
      const controlSocket = path.join(d, `${NAME}.sock`);
      writeIni(configDir, NAME, {
        server: {
          listen: [`127.0.0.1:${port}`],
          queue_file_path: path.join(d, 'queue'),
          pid_file: path.join(d, `${NAME}.pid`),
          control_socket: controlSocket,
          shutdown_timeout: 10,
        },
        setting: { task_worker_num: 1, task_concurrency: 16, daemonize: 0 },
        pdo: {
          dsn: `mysql:host=${MYSQL.host};port=${MYSQL.port};dbname=${MYSQL.database}`,
          username: MYSQL.user,
          ...(MYSQL.password === '' ? {} : { password: MYSQL.password }),
          table_prefix: prefix,
        },
        wechat: { app_id: APP_ID, app_secret: APP_SECRET, api_base: `http://127.0.0.1:${apiProxy.port}`, retry_base_ms: 500, retry_max: 5, timeout_ms: 5000 },
        queue: { backend: 'jetstream' },
        jetstream: { servers, replicas: NATS_NODES, ack_wait_ms: ACK_WAIT_MS, publish_timeout_ms: PUBLISH_TIMEOUT_MS },
        log: { log_file: path.join(d, 'logs', `${NAME}.log`), log_level: 'info' },
      });
      slots.push({ index: i, dir: d, configDir, port, controlSocket, spawned: undefined, up: false, starts: 0, pastOutput: [] });
    }

    let t0 = Date.now();
    const sinceStart = (): number => (Date.now() - t0) / 1000;
    const startFailures: string[] = [];
    let failedStartsTotal = 0;

    /** Starts daemon `s` on its folder; while it fails (e.g. a NATS leader being elected), tries again every 500 ms. */
    const startDaemon = async (s: DaemonSlot): Promise<number> => {
      let failed = 0;
      for (let attempt = 0; attempt < 240; attempt++) {
        try {
          s.spawned = await spawnMega([NAME, 'start', '--foreground', '--config-dir', s.configDir], /listening on [^:\s]+:(\d+)/, 60_000);
          s.starts++;
          s.up = true;
          return failed;
        } catch (err) {
          failed++;
          const lines = (err as Error).message.split('\n');
          const first = lines.find((l) => /error|fail|cannot|timeout/i.test(l)) ?? lines[0]!;
          if (startFailures.length < 10) startFailures.push(`d${s.index + 1} at ${sinceStart().toFixed(1)} s: ${first.trim().slice(0, 200)}`);
          await sleep(500);
        }
      }
      throw new Error(`daemon d${s.index + 1} did not start in 240 attempts`);
    };
    // one after the other: the first creates the stream and the service's buckets
    const firstStartAt = Date.now();
    for (const s of slots) await startDaemon(s);
    log(`daemons listening on ${slots.map((s) => `127.0.0.1:${s.port}`).join(', ')}; NATS ${servers.join(', ')}; simulator ${simCtl.url} behind proxy :${apiProxy.port}`);

    // ---------------------------------------------------------------- load
    /** Daemon `home` if it listens, else the next one that does (a client of a killed daemon moves on). */
    /** Per client: the daemon it last connected to (or tried). */
    const clientDaemon: Array<number | undefined> = [];
    /** Per client: the daemon it belongs to. */
    const homeOf: number[] = [];
    let movedHome = 0;
    const portFor = (home: number, client?: number) => (): number => {
      for (let k = 0; k < DAEMONS; k++) {
        const s = slots[(home + k) % DAEMONS]!;
        if (s.up) {
          if (client !== undefined) clientDaemon[client] = s.index;
          return s.port;
        }
      }
      return slots[home]!.port;
    };
    const msgs = new Map<string, Msg>();
    let n = 0;
    const make = (kind: 'push' | 'send') => (): Msg => {
      const i = n++;
      const openid = `oC${tag}_${i}`;
      const msgid = kind === 'send' || i % 2 === 0 ? `cc${tag}-${i}` : undefined;
      const m: Msg = { n: i, openid, kind, vars: { n: i, pad: `p${'x'.repeat(i % 61)}` }, answers: [], errcodes: [], resends: 0, ...(msgid ? { msgid } : {}) };
      msgs.set(openid, m);
      return m;
    };
    const pushCounters = emptyCounters();
    const sendCounters = emptyCounters();
    const pushClients: LoadClient[] = [];
    const sendClients: LoadClient[] = [];
    for (let d = 0; d < DAEMONS; d++) {
      for (let p = 0; p < PUSHERS_PER_DAEMON; p++) {
        homeOf.push(d);
        const c = new LoadClient({ kind: 'push', port: portFor(d, clients.length), key: KEY, rate: pushRate / (DAEMONS * PUSHERS_PER_DAEMON), window: PUSH_WINDOW, make: make('push'), counters: pushCounters, maxResends: MAX_RESENDS });
        pushClients.push(c);
        clients.push(c);
      }
      if (sendRate > 0) {
        homeOf.push(d);
        const c = new LoadClient({ kind: 'send', port: portFor(d, clients.length), key: KEY, rate: sendRate / DAEMONS, window: SEND_WINDOW, make: make('send'), counters: sendCounters, maxResends: MAX_RESENDS });
        sendClients.push(c);
        clients.push(c);
      }
    }
    let tsetHome = 0;
    tsetClient = new TsetClient(
      () => portFor(tsetHome++ % DAEMONS)(),
      KEY,
      () => false,
      () => 2000,
    );
    const tset = tsetClient;
    let last = Date.now();
    ticker = setInterval(() => {
      const now = Date.now();
      const dt = now - last;
      last = now;
      // back home once the home daemon listens again, between two requests (nothing of unknown fate)
      for (const [i, c] of clients.entries()) {
        if (clientDaemon[i] !== undefined && clientDaemon[i] !== homeOf[i] && slots[homeOf[i]!]!.up && c.inFlight === 0) {
          c.close();
          clientDaemon[i] = undefined;
          movedHome++;
        }
        c.tick(dt);
      }
      tset.tick();
    }, 10);

    // status samples of each daemon (control socket) and the simulator's record, every 2 s
    const pausedSeen = new Map<string, number>();
    let maxDepth = 0;
    const status = async (s: DaemonSlot): Promise<DaemonStatus | undefined> => {
      if (!s.up) return undefined;
      try {
        return await controlRequest(s.controlSocket, { cmd: 'status' }, 3000);
      } catch {
        return undefined;
      }
    };
    sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const s of slots) {
          const st = await status(s);
          if (!st) continue;
          maxDepth = Math.max(maxDepth, st.queue.depth);
          if (st.paused) pausedSeen.set(st.paused.reason, (pausedSeen.get(st.paused.reason) ?? 0) + 1);
        }
        await simCtl.refresh().catch(() => undefined);
        for (let i = 0; i < 20 && sampling; i++) await sleep(100);
      }
    })();

    // ---------------------------------------------------------------- fault schedule (seed only)
    const durationMs = durationS * 1000;
    const when = (i: number, count: number): number => Math.round(durationMs * (0.08 + (0.77 * (i + rnd())) / count));
    const events: FaultEvent[] = [];
    for (let i = 0; i < killCount; i++) events.push({ kind: 'kill', at: when(i, killCount), durationMs: Math.round(1500 + rnd() * 3500), target: Math.floor(rnd() * DAEMONS) });
    for (let i = 0; i < natsKillCount; i++) events.push({ kind: 'nats', at: when(i, natsKillCount), durationMs: Math.round(3000 + rnd() * 7000), target: Math.floor(rnd() * NATS_NODES) });
    for (let i = 0; i < apiCount; i++) events.push({ kind: 'api', at: when(i, apiCount), durationMs: Math.round(4000 + rnd() * 6000), target: 0 });
    events.sort((a, b) => a.at - b.at);

    const kills: KillRecord[] = [];
    const natsKills: NatsKillRecord[] = [];
    const outages: OutageRecord[] = [];
    let apiDownDepth = 0;
    let activeOutages: OutageRecord[] = [];
    const apiOutage = async (e: FaultEvent): Promise<void> => {
      const rec: OutageRecord = { atS: sinceStart(), seconds: e.durationMs / 1000 };
      outages.push(rec);
      activeOutages.push(rec);
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
        for (const r of activeOutages) r.upAt = Date.now();
        activeOutages = [];
        log('WeChat API back');
      }
    };

    // one daemon down at a time; a kill right after a restart would find no client back yet
    let killChain: Promise<void> = Promise.resolve();
    let lastRestartAt = 0;
    const killDaemon = (e: FaultEvent): Promise<void> => {
      killChain = killChain.then(async () => {
        const settle = lastRestartAt + 2000 - Date.now();
        if (settle > 0) await sleep(settle);
        const s = slots[e.target]!;
        const simStats = await simCtl.stats().catch(() => undefined);
        const rec: KillRecord = {
          daemon: s.index + 1,
          atS: sinceStart(),
          clientsOn: clients.filter((_, i) => clientDaemon[i] === s.index).length,
          pushesInFlight: pushClients.filter((c) => clientDaemon[clients.indexOf(c)] === s.index).reduce((a, c) => a + c.inFlight, 0),
          sendsInFlight: sendClients.filter((c) => clientDaemon[clients.indexOf(c)] === s.index).reduce((a, c) => a + c.inFlight, 0),
          simInFlight: simStats?.inFlight ?? null,
          downMs: 0,
          failedStarts: 0,
        };
        const downAt = Date.now();
        s.up = false;
        await killHard(s.spawned!.child);
        s.pastOutput.push(s.spawned!.output().slice(-8000));
        log(`kill -9 of daemon d${s.index + 1} (${rec.clientsOn} clients on it with ${rec.pushesInFlight} pushes and ${rec.sendsInFlight} sends in flight, ${rec.simInFlight ?? '?'} calls at WeChat)`);
        await sleep(e.durationMs);
        rec.failedStarts = await startDaemon(s);
        failedStartsTotal += rec.failedStarts;
        rec.downMs = Date.now() - downAt;
        lastRestartAt = Date.now();
        kills.push(rec);
        log(`daemon d${s.index + 1} back after ${(rec.downMs / 1000).toFixed(1)} s${rec.failedStarts > 0 ? ` (${rec.failedStarts} failed starts)` : ''}`);
      });
      return killChain;
    };

    // one NATS node down at a time, and a restarted node gets 5 s to catch up before the next kill
    let natsChain: Promise<void> = Promise.resolve();
    let lastNatsRestartAt = 0;
    const killNats = (e: FaultEvent): Promise<void> => {
      natsChain = natsChain.then(async () => {
        const settle = lastNatsRestartAt + 5000 - Date.now();
        if (settle > 0) await sleep(settle);
        const node = nodes[e.target]!;
        const refusedBefore = pushCounters.refused503;
        const rec: NatsKillRecord = { node: node.name, atS: sinceStart(), downMs: 0, refused: 0 };
        const downAt = Date.now();
        await node.kill();
        log(`kill -9 of NATS node ${node.name} (for ${(e.durationMs / 1000).toFixed(1)} s)`);
        await sleep(e.durationMs);
        for (let i = 0; ; i++) {
          try {
            await node.start();
            break;
          } catch (err) {
            if (i >= 10) throw err;
            await sleep(500);
          }
        }
        rec.downMs = Date.now() - downAt;
        lastNatsRestartAt = Date.now();
        log(`NATS node ${node.name} back after ${(rec.downMs / 1000).toFixed(1)} s`);
        natsKills.push(rec);
        rec.refused = -refusedBefore;
        // until then the report takes the count as of its writing
        void sleep(10_000).then(() => {
          rec.refused = pushCounters.refused503 - refusedBefore;
          rec.settled = true;
        });
      });
      return natsChain;
    };

    t0 = Date.now();
    const running: Array<Promise<void>> = [];
    for (const e of events) {
      const wait = t0 + e.at - Date.now();
      if (wait > 0) await sleep(wait);
      if (e.kind === 'kill') running.push(killDaemon(e));
      else if (e.kind === 'nats') running.push(killNats(e));
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
    await natsChain;
    const answersDeadline = Date.now() + 120_000;
    while (Date.now() < answersDeadline && !(clients.every((c) => c.idle) && tset.idle)) await sleep(100);
    const notIdle = clients.filter((c) => !c.idle);
    const notIdleDetail = notIdle.map((c) => `${clients.indexOf(c)}: ${c.inFlight} in flight`).join(', ');
    clearInterval(ticker);
    ticker = undefined;
    for (const c of clients) c.close();
    tset.close();

    const acknowledged = [...msgs.values()].filter((m) => m.answers.includes(200));
    log(`draining: ${acknowledged.length} messages acknowledged`);
    const drainStart = Date.now();
    let missing = acknowledged.length;
    while (Date.now() - drainStart < DRAIN_TIMEOUT_MS) {
      await simCtl.refresh();
      const delivered = deliveredOpenids(simCtl.messages);
      missing = acknowledged.filter((m) => !delivered.has(m.openid)).length;
      const depth = (await status(slots[0]!))?.queue.depth ?? -1;
      if (missing === 0 && depth === 0) break;
      await sleep(250);
    }
    // quiet: nothing more reaches the simulator for 3 s (a redelivery after ack_wait comes late)
    let lastSends = -1;
    for (let quietSince = Date.now(), end = Date.now() + 30_000; Date.now() - quietSince < 3000 && Date.now() < end; ) {
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

    // every daemon's `status --json` names the same live members (a killed daemon's entry lasts
    // until its heartbeat expires, 5 s: give them up to 30 s to agree)
    let membersCheck = await membersAgree(slots);
    for (const end = Date.now() + 30_000; !membersCheck.ok && Date.now() < end; ) {
      await sleep(1000);
      membersCheck = await membersAgree(slots);
    }
    const finalStatuses = membersCheck.statuses;
    const tokenAgeS = (Date.now() - firstStartAt) / 1000;

    const exitCodes: Array<number | null> = [];
    for (const s of slots) {
      s.up = false;
      exitCodes.push(s.spawned ? await stopChild(s.spawned.child, 30_000) : null);
    }
    const simStats = await simCtl.stats();
    let deadLetters = 0;
    for (const s of slots) {
      const f = path.join(s.dir, `${NAME}.dead-letter.jsonl`);
      if (existsSync(f)) deadLetters += readFileSync(f, 'utf8').split('\n').filter((l) => l.trim() !== '').length;
    }

    // ---------------------------------------------------------------- check
    for (const o of outages) {
      if (o.upAt === undefined) continue;
      const upAt = o.upAt;
      const first = simCtl.messages.find((m) => m.receivedAt >= upAt && m.errcode === 0);
      o.recoveredAfterS = first ? (first.receivedAt - upAt) / 1000 : null;
    }
    const check = checkRecord(msgs, simCtl.messages);
    const pushMsgs = [...msgs.values()].filter((m) => m.kind === 'push');
    const sendMsgs = [...msgs.values()].filter((m) => m.kind === 'send');
    const sendErrcodes: Record<string, number> = {};
    for (const m of sendMsgs) for (const e of m.errcodes) sendErrcodes[String(e)] = (sendErrcodes[String(e)] ?? 0) + 1;
    const sendOkUndelivered = sendMsgs.filter((m) => m.answers.includes(200) && m.errcodes.includes(0) && !check.deliveredOpenids.has(m.openid)).length;

    // one token per lifetime for the whole service: refreshed `margin` before expiry (at most
    // half its life); a token the simulator rejected (40001/42001) is fetched again
    const refreshEveryS = tokenTtlS - Math.min(TOKEN_MARGIN_S, tokenTtlS / 2);
    const rejectedToken = simCtl.messages.filter((m) => m.errcode === 40001 || m.errcode === 42001).length;
    const tokenAllowed = 1 + Math.floor(tokenAgeS / refreshEveryS) + (rejectedToken > 0 ? 1 : 0);
    const tsets = tset.records;
    const tsetCodes: Record<string, number> = {};
    for (const r of tsets) {
      const k = r.code === null ? 'unanswered' : String(r.code);
      tsetCodes[k] = (tsetCodes[k] ?? 0) + 1;
    }

    const problems = [...check.problems];
    if (missing > 0 && check.lost === 0) problems.push(`drain: ${missing} acknowledged messages still missing at the drain deadline`);
    if (simStats.tokenRequests > tokenAllowed || simStats.tokenRequests < 1) {
      problems.push(`TOKEN: ${simStats.tokenRequests} token requests for the service; at most ${tokenAllowed} expected (${tokenAgeS.toFixed(0)} s, token life ${tokenTtlS} s, ${rejectedToken} sends answered 40001/42001)`);
    }
    if (!membersCheck.ok) problems.push(`MEMBERS: ${membersCheck.detail}`);
    if (sendOkUndelivered > 0) problems.push(`${sendOkUndelivered} Send(s) answered 200 with errcode 0 have no delivery in the record`);
    // reported, not failed: a daemon's clients are not the service's promise
    const warnings: string[] = [];
    if (notIdle.length > 0) warnings.push(`${notIdle.length} client(s) still had requests in flight 120 s after the load stopped (${notIdleDetail})`);
    exitCodes.forEach((c, i) => {
      if (c !== 0) warnings.push(`the final SIGTERM stop of d${i + 1} exited ${c}`);
    });

    for (const k of natsKills) if (!k.settled) k.refused += pushCounters.refused503;
    const tsetFailMessages = [...new Set(tsets.filter((r) => r.code !== null && r.code !== 200).map((r) => `${r.code} ${r.message.replace(/[0-9a-z]+-[0-9a-z]+-[0-9a-f]{6}/g, '<member>')}`))];
    const failed = problems.length > 0;
    const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? '?'}), load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} at the end, Node ${process.version}, ${os.platform()} ${os.release()}`;
    const md = renderReport({
      date: startedAt.toISOString(),
      commit: gitDescribe(),
      machine,
      natsVersion: natsVersion(),
      reproduce,
      seed,
      durationS,
      loadSeconds,
      drainSeconds,
      pushRate,
      sendRate,
      tokenTtlS,
      kills,
      natsKills,
      failedStartsTotal,
      startFailures,
      outages,
      push: pushCounters,
      send: sendCounters,
      pushMsgs,
      sendMsgs,
      check,
      simStats,
      tokenAllowed,
      tsetCodes,
      tsetFailMessages,
      deadLetters,
      maxDepth,
      finalStatuses,
      membersDetail: membersCheck.detail,
      pausedSeen,
      exitCodes,
      sendErrcodes,
      starts: slots.map((s) => s.starts),
      movedHome,
      problems,
      warnings,
    });
    process.stdout.write(md);
    if (values['no-write'] !== true) {
      const out = values.out ?? path.join(REPO, 'bench', 'results', `chaos-cluster-${startedAt.toISOString().slice(0, 10)}.md`);
      mkdirSync(path.dirname(out), { recursive: true });
      writeFileSync(out, md);
      log(`written: ${out}`);
    }
    if (failed || warnings.length > 0) keepDir = true;
    return failed ? 1 : 0;
  } catch (err) {
    keepDir = true;
    log(`chaos run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    for (const s of slots) if (s.spawned) log(`daemon d${s.index + 1} output (tail):\n${s.spawned.output().slice(-3000)}`);
    return 2;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!interrupted) await cleanup();
  }
}

// ------------------------------------------------------------------ members

type StatusJson = DaemonStatus & { state?: string };

/** `mega chaos status --json` of one daemon folder, as an operator would run it. */
function statusJson(configDir: string): Promise<StatusJson | undefined> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [MEGA_BIN, NAME, 'status', '--json', '--config-dir', configDir], { stdio: ['ignore', 'pipe', 'ignore'] });
    let text = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
    c.on('error', () => resolve(undefined));
    c.on('exit', (code) => {
      if (code !== 0) return resolve(undefined);
      try {
        resolve(JSON.parse(text) as StatusJson);
      } catch {
        resolve(undefined);
      }
    });
  });
}

async function membersAgree(slots: DaemonSlot[]): Promise<{ ok: boolean; detail: string; statuses: Array<StatusJson | undefined> }> {
  const statuses = await Promise.all(slots.map((s) => statusJson(s.configDir)));
  const selves = statuses.map((s) => s?.service?.self);
  const views = statuses.map((s) => (s?.service?.members ?? []).map((m) => m.id).sort());
  const expected = [...selves].filter((x): x is string => x !== undefined).sort();
  const describe = (ids: string[]): string => `[${ids.join(', ')}]`;
  const bad: string[] = [];
  statuses.forEach((s, i) => {
    if (!s) bad.push(`d${i + 1}: no status --json`);
    else if (!s.service) bad.push(`d${i + 1}: status has no service section`);
    else if (describe(views[i]!) !== describe(expected)) bad.push(`d${i + 1} (${selves[i]}) sees ${describe(views[i]!)}`);
  });
  const ok = bad.length === 0 && expected.length === slots.length;
  const detail = ok ? `all ${slots.length} daemons see ${describe(expected)}` : `expected every daemon to see ${describe(expected)}; ${bad.join('; ') || `only ${expected.length} daemons answered`}`;
  return { ok, detail, statuses };
}

// ------------------------------------------------------------------ the record against the answers

function natsVersion(): string {
  try {
    return execFileSync(NATS_SERVER_BIN, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'nats-server ?';
  }
}

// ------------------------------------------------------------------ report

interface ReportInput {
  date: string;
  commit: string;
  machine: string;
  natsVersion: string;
  /** The options that replay this run's schedule. */
  reproduce: string;
  seed: number;
  durationS: number;
  loadSeconds: number;
  drainSeconds: number;
  pushRate: number;
  sendRate: number;
  tokenTtlS: number;
  kills: KillRecord[];
  natsKills: NatsKillRecord[];
  failedStartsTotal: number;
  startFailures: string[];
  outages: OutageRecord[];
  push: ClientCounters;
  send: ClientCounters;
  pushMsgs: Msg[];
  sendMsgs: Msg[];
  check: CheckResult;
  simStats: { sendRequests: number; delivered: number; duplicates: number; tokenRequests: number; maxInFlight: number };
  tokenAllowed: number;
  tsetCodes: Record<string, number>;
  tsetFailMessages: string[];
  deadLetters: number;
  maxDepth: number;
  finalStatuses: Array<StatusJson | undefined>;
  membersDetail: string;
  pausedSeen: Map<string, number>;
  exitCodes: Array<number | null>;
  sendErrcodes: Record<string, number>;
  starts: number[];
  /** Clients that went back to their own daemon once it was up again. */
  movedHome: number;
  problems: string[];
  warnings: string[];
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
  const pushAcked = r.pushMsgs.filter((m) => m.answers.includes(200)).length;
  const sendAcked = r.sendMsgs.filter((m) => m.answers.includes(200)).length;
  const apiSeconds = r.outages.reduce((s, o) => s + o.seconds, 0).toFixed(1);
  const lines: string[] = [];
  lines.push(`# Chaos run, cluster mode, ${r.date.slice(0, 19).replace('T', ' ')} UTC`);
  lines.push('');
  lines.push(`Commit ${r.commit}. ${r.machine}. ${r.natsVersion}.`);
  lines.push(
    `Service: ${DAEMONS} daemons of one name, \`[queue] backend = jetstream\` on a ${NATS_NODES}-node NATS cluster (\`replicas = ${NATS_NODES}\`, \`ack_wait_ms = ${ACK_WAIT_MS}\`, \`publish_timeout_ms = ${PUBLISH_TIMEOUT_MS}\`); ` +
      `each daemon 1 task worker × 16 calls, \`retry_base_ms = 500\`, \`retry_max = 5\`, \`timeout_ms = 5000\`; templates in MariaDB; simulator latency ${SIM_LATENCY_MS} ms, token life ${r.tokenTtlS} s. ` +
      `${DAEMONS * PUSHERS_PER_DAEMON} pushers (window ${PUSH_WINDOW}, ${PUSHERS_PER_DAEMON} per daemon) at ${r.pushRate}/s in total, ` +
      `${r.sendRate > 0 ? `${DAEMONS} Send clients (window ${SEND_WINDOW}, one per daemon) at ${r.sendRate}/s` : 'no Send clients'}, one TSet client every 2 s (on each daemon in turn). ` +
      `A client whose daemon was killed reconnects to the next live one. Half of the pushes and every Send carry a \`<msgid>\`; one left without an answer is sent again with it.`,
  );
  lines.push('');
  lines.push('| figure | value |');
  lines.push('|---|---|');
  lines.push(`| duration (load and faults) | ${r.loadSeconds.toFixed(0)} s (then ${r.drainSeconds.toFixed(0)} s to drain) |`);
  lines.push(`| seed | ${r.seed} |`);
  lines.push(`| kill -9 of a daemon (each restarted on its folder) | ${r.kills.length}${r.failedStartsTotal > 0 ? ` (${r.failedStartsTotal} start attempts failed, retried)` : ''}; starts per daemon: ${r.starts.join(', ')} |`);
  lines.push(`| kill -9 of a NATS node (each restarted on its store dir) | ${r.natsKills.length} (${(r.natsKills.reduce((s, k) => s + k.downMs, 0) / 1000).toFixed(1)} s down in total) |`);
  lines.push(`| WeChat API outages | ${r.outages.length} (${apiSeconds} s in total) |`);
  lines.push(`| pushes sent (requests, resends included) | ${fmt(r.push.frames)} (${fmt(r.pushMsgs.length)} messages, ${fmt(r.push.resent)} resends with the same msgid) |`);
  lines.push(`| client connections | ${fmt(r.push.reconnects + r.send.reconnects)} reconnects (${fmt(r.movedHome)} of them back to the client's own daemon once it was up again, between two requests) |`);
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
      `WeChat errcodes in the answers: ${codes(r.sendErrcodes)}; ${fmt(sendAcked)} messages answered 200 |`,
  );
  lines.push(`| TSet answers | ${codes(r.tsetCodes)} |`);
  lines.push(`| dead letters (all daemons) | ${fmt(r.deadLetters)} |`);
  lines.push(`| WeChat send requests | ${fmt(r.simStats.sendRequests)}; non-zero answers: ${codes(r.check.nonZeroErrcodes)} |`);
  lines.push(`| **token requests (whole service)** | **${fmt(r.simStats.tokenRequests)}** (at most ${r.tokenAllowed} allowed: one per token life) |`);
  lines.push(
    `| dispatch holds seen by \`status\` (2 s samples, all daemons) | ${r.pausedSeen.size === 0 ? 'none' : [...r.pausedSeen.entries()].map(([k, v]) => `${k}: ${v}`).join(', ')}; largest stream depth ${fmt(r.maxDepth)} |`,
  );
  lines.push(`| members at the end (\`status --json\` of each daemon) | ${r.membersDetail} |`);
  const depths = r.finalStatuses.map((s) => s?.queue.depth ?? '?').join(', ');
  lines.push(`| after the drain | stream depth per daemon's status ${depths}; SIGTERM exits ${r.exitCodes.join(', ')} |`);
  lines.push('');
  lines.push("Daemon kills (s after the start: the load clients connected to it and their pushes and Sends in flight, the service's calls in flight at the simulator; time until the restarted daemon listened):");
  lines.push('');
  for (const k of r.kills) {
    lines.push(
      `- d${k.daemon} at ${k.atS.toFixed(1)} s: ${k.clientsOn} clients with ${k.pushesInFlight} pushes and ${k.sendsInFlight} Sends in flight, ${k.simInFlight ?? '?'} WeChat calls in flight; back after ${(k.downMs / 1000).toFixed(1)} s${k.failedStarts > 0 ? ` (${k.failedStarts} failed starts)` : ''}`,
    );
  }
  lines.push('');
  lines.push('NATS node kills (s after the start; down for; pushes answered 503 from the kill to 10 s after the restart, all daemons):');
  lines.push('');
  for (const k of r.natsKills) lines.push(`- ${k.node} at ${k.atS.toFixed(1)} s, down ${(k.downMs / 1000).toFixed(1)} s; ${k.refused} × 503`);
  lines.push('');
  lines.push('WeChat API outages (start, length):');
  lines.push('');
  for (const o of r.outages) {
    const after = o.recoveredAfterS === undefined ? '' : o.recoveredAfterS === null ? '; nothing afterwards' : `; first delivery ${o.recoveredAfterS.toFixed(1)} s after it was back`;
    lines.push(`- at ${o.atS.toFixed(1)} s for ${o.seconds.toFixed(1)} s${after}`);
  }
  if (r.startFailures.length > 0) {
    lines.push('');
    lines.push('Failed starts (first lines):');
    lines.push('');
    for (const f of r.startFailures) lines.push(`- ${f.replace(/\|/g, '\\|')}`);
  }
  if (r.tsetFailMessages.length > 0) {
    lines.push('');
    lines.push(`TSet failure messages (a daemon just killed is a member until its heartbeat expires): ${r.tsetFailMessages.map((m) => `\`${m}\``).join(', ')}`);
  }
  if (r.warnings.length > 0) {
    lines.push('');
    lines.push('Notes:');
    lines.push('');
    for (const w of r.warnings) lines.push(`- ${w.replace(/\|/g, '\\|')}`);
  }
  lines.push('');
  lines.push(
    r.problems.length === 0
      ? 'Check: passed (nothing lost, nothing delivered twice, nothing unknown delivered, every message with its own variables, one token per token life for the service, every daemon sees the same members).'
      : 'Check: FAILED',
  );
  for (const p of r.problems) lines.push(`- ${p.replace(/\|/g, '\\|')}`);
  lines.push('');
  lines.push(
    `Reproduce: \`npm run chaos -- ${r.reproduce}\` (the fault schedule follows the seed; timings on a busy machine do not).`,
  );
  lines.push('');
  return lines.join('\n');
}
