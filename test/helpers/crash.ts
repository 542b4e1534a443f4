/**
 * Helpers for the crash and disk-full end-to-end tests: a seeded PRNG, daemon processes that
 * can be killed at any moment, pipelined pushers that record what was acknowledged, and a view
 * of the simulator's record grouped by openid.
 */
import net from 'node:net';
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { encodePush, FrameDecoder, parseResult, type Frame } from '../../src/protocol/index.js';
import { MEGA_BIN } from './paths.js';
import { spawnMega } from './processes.js';
import type { SimMessage, SimulatorHandle } from './stack.js';

// ------------------------------------------------------------------ PRNG

export { seededRandom } from './prng.js';

/** The seed of this run: `$MEGA_CRASH_SEED` when set (to replay a failure), else a fresh one. */
export function runSeed(): number {
  const fromEnv = process.env.MEGA_CRASH_SEED;
  if (fromEnv !== undefined && fromEnv !== '') {
    const n = Number(fromEnv);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`MEGA_CRASH_SEED must be a non-negative integer, got ${fromEnv}`);
    return n >>> 0;
  }
  return (Math.random() * 2 ** 32) >>> 0;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ daemon processes

export interface DaemonProcess {
  child: ChildProcess;
  port: number;
  output: () => string;
}

/** `mega <name> start --foreground --config-dir <dir>`; resolves once it listens. */
export async function startDaemon(configDir: string, name: string, timeoutMs = 30000): Promise<DaemonProcess> {
  const started = await spawnMega([name, 'start', '--foreground', '--config-dir', configDir], /listening on [^:\s]+:(\d+)/, { timeoutMs });
  return { child: started.child, port: Number(started.match[1]), output: started.output };
}

/**
 * Starts the daemon without waiting for anything, and SIGKILLs it `afterMs` later, wherever it
 * is (loading modules, recovering the queue, starting workers, already listening).
 * Resolves with what it printed once it is gone.
 */
export async function startAndKill(configDir: string, name: string, afterMs: number): Promise<{ output: string; listened: boolean }> {
  const child = spawn(process.execPath, [MEGA_BIN, name, 'start', '--foreground', '--config-dir', configDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  await sleep(afterMs);
  await killHard(child);
  return { output: out, listened: /listening on/.test(out) };
}

/** SIGKILL (kill -9) and wait until the process is gone. */
export async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** Whether the process is still running. */
export function isAlive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

// ------------------------------------------------------------------ pushes and their answers

/** One push as the test sent it, and what (if anything) the daemon answered. */
export interface PushRecord {
  openid: string;
  /** The `<msgid>` sent, if any (it must come back as client_msg_id). */
  msgid?: string;
  /** Result code, or undefined while unanswered (in flight at a kill: "unacknowledged"). */
  code?: number;
  message?: string;
  /** Which phase / daemon life it was pushed in. */
  life: number;
}

/** Every push of a test run, by openid (each openid is pushed once unless a test re-pushes it). */
export class Ledger {
  readonly pushes: PushRecord[] = [];
  readonly byOpenid = new Map<string, PushRecord[]>();

  add(p: PushRecord): PushRecord {
    this.pushes.push(p);
    const list = this.byOpenid.get(p.openid);
    if (list) list.push(p);
    else this.byOpenid.set(p.openid, [p]);
    return p;
  }

  /** Openids with at least one push answered 200. */
  acknowledgedOpenids(): Set<string> {
    const out = new Set<string>();
    for (const p of this.pushes) if (p.code === 200) out.add(p.openid);
    return out;
  }

  counts(): { total: number; ok: number; unanswered: number; other: Record<string, number> } {
    let ok = 0;
    let unanswered = 0;
    const other: Record<string, number> = {};
    for (const p of this.pushes) {
      if (p.code === undefined) unanswered++;
      else if (p.code === 200) ok++;
      else other[String(p.code)] = (other[String(p.code)] ?? 0) + 1;
    }
    return { total: this.pushes.length, ok, unanswered, other };
  }
}

export interface PusherOptions {
  port: number;
  key: string;
  /** Pushes this pusher sends at most. */
  budget: number;
  /** Pushes in flight at once on the connection (pipelining). */
  window: number;
  /** The next push: openid, optional msgid and variables. */
  next: () => { openid: string; msgid?: string; vars: Record<string, unknown> | null };
  ledger: Ledger;
  life: number;
  /** Called after each answer (e.g. to kill the daemon at a chosen count). */
  onAnswer?: () => void;
}

/**
 * One connection pushing pipelined: keeps `window` pushes in flight until its budget is spent,
 * it is stopped, or the connection ends (daemon killed). `done` resolves when nothing more will
 * be answered: every push left without an answer is unacknowledged.
 */
export class Pusher {
  sent = 0;
  answered = 0;
  private stopped = false;
  private closed = false;
  private opaque = 0;
  private readonly inFlight = new Map<number, PushRecord>();
  private readonly decoder = new FrameDecoder({ maxLength: 1 << 20 });
  private socket!: net.Socket;
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  private constructor(private readonly o: PusherOptions) {
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  static async start(o: PusherOptions): Promise<Pusher> {
    const p = new Pusher(o);
    const socket = net.connect({ port: o.port, host: '127.0.0.1' });
    socket.setNoDelay(true);
    p.socket = socket;
    socket.on('error', () => undefined);
    socket.on('close', () => p.onClose());
    socket.on('data', (chunk: Buffer) => p.onData(chunk));
    await once(socket, 'connect');
    p.fill();
    return p;
  }

  /** Pushes in flight right now (sent, not answered). */
  get pending(): number {
    return this.inFlight.size;
  }

  /** Send no more; resolve `done` once the pushes in flight are answered. */
  stop(): void {
    this.stopped = true;
    this.maybeFinish();
  }

  private fill(): void {
    while (!this.stopped && !this.closed && this.inFlight.size < this.o.window && this.sent < this.o.budget) {
      const { openid, msgid, vars } = this.o.next();
      const opaque = ++this.opaque;
      const rec = this.o.ledger.add({ openid, ...(msgid === undefined ? {} : { msgid }), life: this.o.life });
      this.inFlight.set(opaque, rec);
      this.sent++;
      this.socket.write(encodePush(opaque, openid, this.o.key, vars, msgid));
    }
    this.maybeFinish();
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch {
      this.socket.destroy();
      return;
    }
    let answers = 0;
    for (const frame of frames) {
      const r = parseResult(frame);
      const rec = this.inFlight.get(r.opaque);
      if (!rec) continue;
      this.inFlight.delete(r.opaque);
      rec.code = r.code;
      rec.message = r.message.toString('utf8');
      this.answered++;
      answers++;
    }
    this.fill();
    // after the refill: a kill decided here lands while the next pushes are on their way
    for (let i = 0; i < answers; i++) this.o.onAnswer?.();
  }

  private onClose(): void {
    this.closed = true;
    this.resolveDone();
  }

  private maybeFinish(): void {
    if (this.closed) return this.resolveDone();
    if ((this.stopped || this.sent >= this.o.budget) && this.inFlight.size === 0) {
      this.socket.end();
      this.resolveDone();
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

// ------------------------------------------------------------------ the simulator's record

/** Reads the simulator's record incrementally (`GET /_sim/messages?since=N`). */
export class SimRecord {
  readonly messages: SimMessage[] = [];

  constructor(private readonly sim: SimulatorHandle) {}

  async refresh(): Promise<SimMessage[]> {
    const r = await this.sim.get<{ next: number; messages: SimMessage[] }>(`/_sim/messages?since=${this.messages.length}`);
    for (const m of r.messages) if (m.index === this.messages.length) this.messages.push(m);
    return this.messages;
  }

  /** Openids with a real delivery (errcode 0, not a duplicate). */
  deliveredOpenids(): Set<string> {
    const out = new Set<string>();
    for (const m of this.messages) if (m.errcode === 0 && !m.duplicate && m.touser) out.add(m.touser);
    return out;
  }

  byOpenid(): Map<string, SimMessage[]> {
    const out = new Map<string, SimMessage[]>();
    for (const m of this.messages) {
      const k = m.touser ?? '';
      const list = out.get(k);
      if (list) list.push(m);
      else out.set(k, [m]);
    }
    return out;
  }
}

export interface SimStats {
  sendRequests: number;
  delivered: number;
  duplicates: number;
  inFlight: number;
  byErrcode: Record<string, number>;
}

/**
 * Checks the simulator's record against the ledger. Returns a list of problems (empty = fine)
 * and the figures:
 * - every openid acknowledged (200) at least once has a real delivery (lost = 0);
 * - no openid has more than one real delivery, and every delivery of an openid carried the
 *   same client_msg_id (so WeChat dropped each repeat), equal to the `<msgid>` sent if any;
 * - no two openids share a client_msg_id;
 * - every openid the simulator saw was pushed by the test;
 * - every send was answered errcode 0.
 */
export function checkDeliveries(ledger: Ledger, record: SimRecord): { problems: string[]; figures: Record<string, number> } {
  const problems: string[] = [];
  const note = (p: string): void => {
    if (problems.length < 30) problems.push(p);
  };
  const seen = record.byOpenid();
  const acknowledged = ledger.acknowledgedOpenids();
  let lost = 0;
  let repeatedOpenids = 0;
  let repeats = 0;
  let deliveredUnacknowledged = 0;
  const cmidOwner = new Map<string, string>();

  for (const openid of acknowledged) {
    const ms = seen.get(openid) ?? [];
    if (!ms.some((m) => m.errcode === 0 && !m.duplicate)) {
      lost++;
      note(`LOST: ${openid} was acknowledged 200 but never delivered (${ms.length} send(s) seen)`);
    }
  }
  for (const [openid, ms] of seen) {
    const pushes = ledger.byOpenid.get(openid);
    if (!pushes) {
      note(`PHANTOM: ${openid} was delivered but never pushed`);
      continue;
    }
    if (!acknowledged.has(openid)) deliveredUnacknowledged++;
    const real = ms.filter((m) => m.errcode === 0 && !m.duplicate);
    if (real.length > 1) note(`DOUBLE: ${openid} was delivered ${real.length} times (client_msg_ids ${real.map((m) => m.client_msg_id).join(', ')})`);
    const cmids = new Set(ms.map((m) => m.client_msg_id));
    if (cmids.size !== 1) note(`CMID: ${openid} was sent with different client_msg_ids: ${[...cmids].join(', ')}`);
    const cmid = ms[0]!.client_msg_id;
    if (cmid === undefined || cmid === '') note(`CMID: ${openid} was sent without client_msg_id`);
    const msgids = new Set(pushes.map((p) => p.msgid).filter((x): x is string => x !== undefined));
    if (msgids.size > 0 && !msgids.has(cmid ?? '')) note(`CMID: ${openid} was pushed with <msgid> ${[...msgids].join(',')} but sent with ${cmid}`);
    if (cmid) {
      const owner = cmidOwner.get(cmid);
      if (owner !== undefined && owner !== openid) note(`CMID: ${openid} and ${owner} share client_msg_id ${cmid}`);
      cmidOwner.set(cmid, openid);
    }
    for (const m of ms) if (m.errcode !== 0) note(`ERRCODE: a send to ${openid} was answered errcode ${m.errcode} (status ${m.status})`);
    if (ms.length > 1) {
      repeatedOpenids++;
      repeats += ms.length - 1;
      if (!ms.slice(1).every((m) => m.duplicate)) note(`REPEAT: a repeat for ${openid} was not recognised as a duplicate by its client_msg_id`);
    }
  }
  return {
    problems,
    figures: {
      acknowledged: acknowledged.size,
      sends: record.messages.length,
      delivered: record.deliveredOpenids().size,
      lost,
      repeatedOpenids,
      repeats,
      deliveredUnacknowledged,
    },
  };
}
