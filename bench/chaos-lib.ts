/**
 * Pieces of `npm run chaos` (bench/chaos.ts): pipelined protocol clients that pace themselves,
 * reconnect after a kill and resend a request of unknown fate with the same `<msgid>`, and an
 * incremental reader of the simulator's record. Child processes (`mega simulator`, `mega <name>
 * start --foreground`) are started with the benchmark's own helpers (bench/lib/procs.ts).
 *
 * Deliberately free of test/helpers/processes.ts, which registers node:test hooks: only the
 * protocol codec of src/ and the hook-free test helpers (TcpProxy, PRNG, ini writer) are shared.
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { FrameDecoder, encodePush, encodeSend, encodeTset, parseResult, type Result } from '../src/protocol/index.js';

export {
  MEGA_BIN,
  freePort,
  isAlive,
  killChildren,
  killHard,
  sleep,
  spawnMega,
  stopChild,
  type Spawned,
} from './lib/procs.js';
export { seededRandom } from '../test/helpers/prng.js';
export { writeIni, type IniSections } from '../test/helpers/ini.js';

// ------------------------------------------------------------------ protocol connections

/**
 * One pipelined protocol connection: requests are correlated by opaque; when the connection
 * closes every pending request resolves `undefined` (no answer: its fate is unknown).
 */
export class ProtoConn {
  private readonly pending = new Map<number, (r: Result | undefined) => void>();
  private readonly decoder = new FrameDecoder({ maxLength: 1 << 20 });
  private nextOpaque = 1;
  closed = false;
  onClose: (() => void) | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      let results: Result[];
      try {
        results = this.decoder.push(chunk).map(parseResult);
      } catch {
        socket.destroy();
        return;
      }
      for (const r of results) {
        const cb = this.pending.get(r.opaque);
        if (!cb) continue;
        this.pending.delete(r.opaque);
        cb(r);
      }
    });
    socket.on('close', () => {
      this.closed = true;
      const cbs = [...this.pending.values()];
      this.pending.clear();
      for (const cb of cbs) cb(undefined);
      this.onClose?.();
    });
  }

  static connect(port: number, timeoutMs = 2000): Promise<ProtoConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: '127.0.0.1' });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('connect timeout'));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new ProtoConn(socket));
      });
    });
  }

  get inFlight(): number {
    return this.pending.size;
  }

  request(encode: (opaque: number) => Buffer): Promise<Result | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const opaque = this.nextOpaque;
    this.nextOpaque = this.nextOpaque >= 0xfffffff0 ? 1 : this.nextOpaque + 1;
    return new Promise((resolve) => {
      this.pending.set(opaque, resolve);
      this.socket.write(encode(opaque));
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// ------------------------------------------------------------------ load clients

/** One logical message (one openid), and every answer its requests got. */
export interface Msg {
  n: number;
  openid: string;
  msgid?: string;
  kind: 'push' | 'send';
  vars: Record<string, unknown>;
  /** One entry per request sent: the result code, or null when the connection closed first. */
  answers: Array<number | null>;
  /** For Sends: WeChat's errcode in each 200/400 answer. */
  errcodes: number[];
  /** Times it was sent again after an answer that never came. */
  resends: number;
}

export interface ClientCounters {
  frames: number;
  ok: number;
  refused503: number;
  unanswered: number;
  other: Record<string, number>;
  resent: number;
  connectFailures: number;
  reconnects: number;
}

export function emptyCounters(): ClientCounters {
  return { frames: 0, ok: 0, refused503: 0, unanswered: 0, other: {}, resent: 0, connectFailures: 0, reconnects: 0 };
}

export interface LoadClientOptions {
  kind: 'push' | 'send';
  /** Current daemon port. */
  port: () => number;
  key: string;
  /** New requests per second (paced; credit does not pile up beyond `window`). */
  rate: number;
  /** Requests in flight at most on the connection. */
  window: number;
  /** A new logical message. */
  make: () => Msg;
  counters: ClientCounters;
  /** Resend a request of unknown fate (with the same msgid) at most this often. */
  maxResends: number;
}

/**
 * A pipelined client at a steady rate. When the daemon dies, its requests in flight get no
 * answer; those with a `<msgid>` are sent again, with the same msgid, once it is back (what a
 * careful client does with "fate unknown"). Reconnects every 200 ms while it cannot connect.
 */
export class LoadClient {
  private conn: ProtoConn | undefined;
  private connecting = false;
  private nextConnectAt = 0;
  private credit = 0;
  private stopping = false;
  private readonly resend: Msg[] = [];
  private everConnected = false;

  constructor(private readonly o: LoadClientOptions) {}

  /** Called every few ms by the driver. */
  tick(dtMs: number): void {
    const conn = this.conn;
    if (!conn || conn.closed) {
      this.conn = undefined;
      this.maybeConnect();
      return;
    }
    if (!this.stopping) this.credit = Math.min(this.o.window, this.credit + (this.o.rate * dtMs) / 1000);
    while (conn.inFlight < this.o.window) {
      const again = this.resend.shift();
      if (again) {
        again.resends++;
        this.o.counters.resent++;
        this.sendOn(conn, again);
      } else if (!this.stopping && this.credit >= 1) {
        this.credit--;
        this.sendOn(conn, this.o.make());
      } else break;
    }
  }

  /** No new messages; requests of unknown fate are still sent again. */
  stop(): void {
    this.stopping = true;
  }

  get inFlight(): number {
    return this.conn?.inFlight ?? 0;
  }

  /** Nothing in flight and nothing left to resend. */
  get idle(): boolean {
    return this.inFlight === 0 && this.resend.length === 0;
  }

  close(): void {
    this.conn?.destroy();
    this.conn = undefined;
  }

  private maybeConnect(): void {
    if (this.connecting || Date.now() < this.nextConnectAt) return;
    this.connecting = true;
    ProtoConn.connect(this.o.port()).then(
      (c) => {
        this.connecting = false;
        if (this.everConnected) this.o.counters.reconnects++;
        this.everConnected = true;
        this.conn = c;
      },
      () => {
        this.connecting = false;
        this.o.counters.connectFailures++;
        this.nextConnectAt = Date.now() + 200;
      },
    );
  }

  private sendOn(conn: ProtoConn, m: Msg): void {
    const c = this.o.counters;
    c.frames++;
    const encode = this.o.kind === 'push' ? encodePush : encodeSend;
    void conn.request((op) => encode(op, m.openid, this.o.key, m.vars, m.msgid)).then((r) => {
      if (!r) {
        m.answers.push(null);
        c.unanswered++;
        if (m.msgid !== undefined && m.resends < this.o.maxResends) this.resend.push(m);
        return;
      }
      m.answers.push(r.code);
      if (r.code === 200) c.ok++;
      else if (r.code === 503) c.refused503++;
      else c.other[String(r.code)] = (c.other[String(r.code)] ?? 0) + 1;
      if (m.kind === 'send' && (r.code === 200 || r.code === 400)) {
        try {
          const j = JSON.parse(r.message.toString('utf8')) as { errcode?: unknown };
          if (typeof j.errcode === 'number') m.errcodes.push(j.errcode);
        } catch {
          m.errcodes.push(Number.NaN);
        }
      }
    });
  }
}

/** One TSet and what became of it. */
export interface TsetRecord {
  at: number;
  /** The template database was cut off when the TSet was issued. */
  duringOutage: boolean;
  code: number | null;
  message: string;
  /** When the answer came (ms since the epoch). */
  answeredAt?: number;
}

/**
 * Issues `tset <key>` on its own connection (TSet answers are ordered with Push answers on a
 * connection, so it must not share the pushers'), one at a time, every `intervalMs()`.
 */
export class TsetClient {
  private conn: ProtoConn | undefined;
  private connecting = false;
  private busy = false;
  private nextAt = 0;
  private stopped = false;
  readonly records: TsetRecord[] = [];

  constructor(
    private readonly port: () => number,
    private readonly key: string,
    private readonly dbDown: () => boolean,
    private readonly intervalMs: () => number,
  ) {}

  tick(): void {
    if (this.stopped || this.busy || Date.now() < this.nextAt) return;
    const conn = this.conn;
    if (!conn || conn.closed) {
      this.conn = undefined;
      if (this.connecting) return;
      this.connecting = true;
      ProtoConn.connect(this.port()).then(
        (c) => {
          this.connecting = false;
          this.conn = c;
        },
        () => {
          this.connecting = false;
          this.nextAt = Date.now() + 200;
        },
      );
      return;
    }
    this.busy = true;
    const rec: TsetRecord = { at: Date.now(), duringOutage: this.dbDown(), code: null, message: '' };
    this.records.push(rec);
    void conn.request((op) => encodeTset(op, this.key)).then((r) => {
      this.busy = false;
      this.nextAt = Date.now() + this.intervalMs();
      if (r) {
        rec.answeredAt = Date.now();
        rec.code = r.code;
        rec.message = r.message.toString('utf8');
      }
    });
  }

  stop(): void {
    this.stopped = true;
  }

  get idle(): boolean {
    return !this.busy;
  }

  close(): void {
    this.conn?.destroy();
  }
}

// ------------------------------------------------------------------ the simulator's record

/** One entry of `GET /_sim/messages` (see ReceivedMessage in src/simulator/simulator.ts). */
export interface SimMessage {
  index: number;
  receivedAt: number;
  touser?: string;
  client_msg_id?: string;
  data?: Record<string, { value?: string }>;
  status: number;
  errcode: number | null;
  duplicate: boolean;
}

export interface SimStats {
  tokenRequests: number;
  sendRequests: number;
  delivered: number;
  duplicates: number;
  byErrcode: Record<string, number>;
  http5xx: number;
  inFlight: number;
  maxInFlight: number;
}

/** The simulator's control API, straight to its port (never through the fault proxy). */
export class SimControl {
  readonly messages: SimMessage[] = [];

  constructor(readonly url: string) {}

  async get<T>(p: string): Promise<T> {
    const res = await fetch(this.url + p, { signal: AbortSignal.timeout(30_000) });
    return (await res.json()) as T;
  }

  async post<T>(p: string, body: unknown): Promise<T> {
    const res = await fetch(this.url + p, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    return (await res.json()) as T;
  }

  stats(): Promise<SimStats> {
    return this.get<SimStats>('/_sim/stats');
  }

  /** Appends what the simulator recorded since the last call. */
  async refresh(): Promise<void> {
    const r = await this.get<{ next: number; messages: SimMessage[] }>(`/_sim/messages?since=${this.messages.length}`);
    for (const m of r.messages) if (m.index === this.messages.length) this.messages.push(m);
  }
}

/** The simulator's record against every answer the clients got (chaos.ts and chaos-cluster.ts). */
export function deliveredOpenids(record: SimMessage[]): Set<string> {
  const out = new Set<string>();
  for (const m of record) if (m.errcode === 0 && !m.duplicate && m.touser) out.add(m.touser);
  return out;
}

export interface CheckResult {
  lost: number;
  /** openids with more than one real delivery */
  doubles: number;
  phantoms: number;
  contentMismatches: number;
  cmidProblems: number;
  deliveredUnacknowledged: number;
  /** openids whose record shows more than one send (a repeat dropped by client_msg_id) */
  repeatedOpenids: number;
  duplicates: number;
  nonZeroErrcodes: Record<string, number>;
  deliveredOpenids: Set<string>;
  problems: string[];
}

export function checkRecord(msgs: Map<string, Msg>, record: SimMessage[]): CheckResult {
  const problems: string[] = [];
  const note = (p: string): void => {
    if (problems.length < 30) problems.push(p);
  };
  const byOpenid = new Map<string, SimMessage[]>();
  for (const m of record) {
    const k = m.touser ?? '';
    const list = byOpenid.get(k);
    if (list) list.push(m);
    else byOpenid.set(k, [m]);
  }
  const r: CheckResult = {
    lost: 0,
    doubles: 0,
    phantoms: 0,
    contentMismatches: 0,
    cmidProblems: 0,
    deliveredUnacknowledged: 0,
    repeatedOpenids: 0,
    duplicates: 0,
    nonZeroErrcodes: {},
    deliveredOpenids: deliveredOpenids(record),
    problems,
  };
  for (const m of record) {
    if (m.duplicate) r.duplicates++;
    if (m.errcode !== 0) {
      const k = m.errcode === null ? `HTTP ${m.status}` : String(m.errcode);
      r.nonZeroErrcodes[k] = (r.nonZeroErrcodes[k] ?? 0) + 1;
    }
  }
  for (const msg of msgs.values()) {
    const seen = byOpenid.get(msg.openid) ?? [];
    const real = seen.filter((m) => m.errcode === 0 && !m.duplicate);
    const acked = msg.answers.includes(200);
    if (acked && real.length === 0) {
      r.lost++;
      note(`LOST: ${msg.kind} ${msg.openid} (msgid ${msg.msgid ?? '-'}) answered ${JSON.stringify(msg.answers)} but never delivered (${seen.length} send(s) seen)`);
    }
    if (!acked && real.length > 0) r.deliveredUnacknowledged++;
    if (real.length > 1) {
      r.doubles++;
      note(`DOUBLE: ${msg.openid} delivered ${real.length} times (client_msg_ids ${real.map((m) => m.client_msg_id).join(', ')})`);
    }
    if (seen.length > 1) r.repeatedOpenids++;
    if (seen.length > 0) {
      const cmids = new Set(seen.map((m) => m.client_msg_id));
      const cmid = seen[0]!.client_msg_id;
      if (cmids.size !== 1 || !cmid || (msg.msgid !== undefined && cmid !== msg.msgid)) {
        r.cmidProblems++;
        note(`CMID: ${msg.openid} (msgid ${msg.msgid ?? '-'}) was sent with client_msg_id(s) ${[...cmids].join(', ')}`);
      }
      for (const m of real) {
        const first = m.data?.['first']?.value;
        const pad = m.data?.['keyword1']?.value;
        if (first !== `msg ${msg.n}` || pad !== msg.vars['pad']) {
          r.contentMismatches++;
          note(`CONTENT: ${msg.openid} arrived as ${JSON.stringify({ first, pad })}`);
        }
      }
    }
  }
  for (const openid of byOpenid.keys()) {
    if (!msgs.has(openid)) {
      r.phantoms++;
      note(`PHANTOM: ${openid || '(no touser)'} was sent to WeChat but never pushed`);
    }
  }
  return r;
}

/** The repository (this file is dist/bench/chaos-lib.js once built). */
const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));

/** The commit the run measured, and whether src/ or bin/ had changes. */
export function gitDescribe(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_DIR, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin'], { cwd: REPO_DIR, encoding: 'utf8' }).trim();
    return dirty ? `${head} (src/ modified)` : head;
  } catch {
    return 'unknown';
  }
}

/** A whole-number command-line option, at least `min`. */
export function intOpt(name: string, v: string | undefined, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}
