/**
 * Load-generating protocol clients: pipelined Push with a window of requests in flight per
 * connection (closed loop), Push paced at a fixed rate (open loop), and one-at-a-time Send.
 *
 * Frames are encoded once with encodePush/encodeSend and copied per request with a fresh
 * opaque, so the client spends its CPU on sockets, not on JSON; answers are read with the
 * project's FrameDecoder + parseResult. Push answers come back in request order on a
 * connection, so each answer is matched with the oldest outstanding request (and its opaque
 * checked); the ACK latency of a request is from its write to its answer being read.
 */
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { FrameDecoder, encodePush, encodeSend, parseResult } from '../../src/protocol/index.js';
import { Samples } from './stats.js';
import { TEMPLATE_KEY, VARIABLES } from './procs.js';

/** A push or send frame to copy, with where its opaque lives. */
export class FrameTemplate {
  readonly bytes: Buffer;
  readonly opaqueOffset: number;
  constructor(kind: 'push' | 'send', openid: string, key = TEMPLATE_KEY, vars: Record<string, unknown> | null = VARIABLES) {
    this.bytes = (kind === 'push' ? encodePush : encodeSend)(0, openid, key, vars);
    this.opaqueOffset = 8 + this.bytes.readUInt32BE(4);
  }
  /** `n` copies with opaques first, first+1, ... in one buffer. */
  batch(first: number, n: number): Buffer {
    const len = this.bytes.length;
    const out = Buffer.allocUnsafe(len * n);
    for (let i = 0; i < n; i++) {
      this.bytes.copy(out, i * len);
      out.writeUInt32BE((first + i) >>> 0, i * len + this.opaqueOffset);
    }
    return out;
  }
}

export async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  await once(socket, 'connect');
  return socket;
}

export interface PushLoadResult {
  /** Acknowledged (200) pushes inside the measured interval, and its length in seconds. */
  acked: number;
  seconds: number;
  rate: number;
  p50: number;
  p99: number;
  max: number;
  /** Answers other than 200 (the run is invalid if any). */
  errors: number;
  firstError?: string;
  /** Requests written over the measured interval (paced mode: compare with the target). */
  sent: number;
}

interface ConnState {
  socket: net.Socket;
  decoder: FrameDecoder;
  /** Ring of write times and opaques of outstanding requests (answers come in order). */
  times: Float64Array;
  opaques: Uint32Array;
  head: number;
  tail: number;
  outstanding: number;
  nextOpaque: number;
}

export interface PushLoadOptions {
  port: number;
  connections: number;
  /** Closed loop: requests in flight per connection. */
  window?: number;
  /** Open loop: total pushes per second (spread over the connections) instead of a window. */
  rate?: number;
  /**
   * Open loop: most requests outstanding per connection; beyond it the client stops writing
   * (the offered rate is then not reached, which the result shows), so an overloaded daemon
   * is not buried under an ever-growing backlog. @defaultValue 1024
   */
  maxOutstanding?: number;
  warmupMs: number;
  measureMs: number;
  /** Called at the start and end of the measured interval (CPU sampling). */
  onMeasureStart?: () => void;
  onMeasureEnd?: () => void;
}

const RING = 1 << 16;

/**
 * Pushes as fast as the window allows (or at `rate`) for warmupMs + measureMs, then waits for
 * the outstanding answers. Only requests written inside the measured interval count for the
 * latency; only answers read inside it count for the rate.
 */
export async function runPushLoad(o: PushLoadOptions): Promise<PushLoadResult> {
  const conns: ConnState[] = [];
  for (let i = 0; i < o.connections; i++) {
    conns.push({
      socket: await connect(o.port),
      decoder: new FrameDecoder({ maxLength: 1 << 20 }),
      times: new Float64Array(RING),
      opaques: new Uint32Array(RING),
      head: 0,
      tail: 0,
      outstanding: 0,
      nextOpaque: 1,
    });
  }
  const templates = conns.map((_, i) => new FrameTemplate('push', `oBenchUser${String(i).padStart(6, '0')}Abcdefghijklm`));
  const latencies = new Samples(1 << 20);
  let measuring = false;
  let stopped = false;
  let measureStart = 0;
  let measureEnd = Infinity;
  let acked = 0;
  let sent = 0;
  let errors = 0;
  let firstError: string | undefined;
  const window = o.window ?? 0;
  const maxOutstanding = o.rate !== undefined ? Math.min(RING - 1, o.maxOutstanding ?? 1024) : window;

  const write = (c: ConnState, idx: number, n: number): void => {
    if (n <= 0) return;
    const now = performance.now();
    const first = c.nextOpaque;
    c.nextOpaque = (c.nextOpaque + n) >>> 0 || 1;
    for (let k = 0; k < n; k++) {
      c.times[c.tail] = now;
      c.opaques[c.tail] = (first + k) >>> 0;
      c.tail = (c.tail + 1) & (RING - 1);
    }
    c.outstanding += n;
    if (measuring && now >= measureStart) sent += n;
    c.socket.write(templates[idx]!.batch(first, n));
  };

  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (resolveDone = r));
  const checkDone = (): void => {
    if (stopped && conns.every((c) => c.outstanding === 0)) resolveDone();
  };

  conns.forEach((c, idx) => {
    c.socket.on('data', (chunk: Buffer) => {
      const now = performance.now();
      let answered = 0;
      for (const frame of c.decoder.push(chunk)) {
        const r = parseResult(frame);
        const sentAt = c.times[c.head]!;
        const opaque = c.opaques[c.head]!;
        c.head = (c.head + 1) & (RING - 1);
        c.outstanding--;
        answered++;
        if (r.opaque !== opaque) throw new Error(`answer out of order: opaque ${r.opaque}, expected ${opaque}`);
        if (r.code !== 200) {
          errors++;
          firstError ??= `${r.code} ${r.message.toString()}`;
          continue;
        }
        if (measuring && sentAt >= measureStart && sentAt < measureEnd) latencies.push(now - sentAt);
        if (measuring && now >= measureStart && now < measureEnd) acked++;
      }
      if (!stopped && o.rate === undefined) write(c, idx, Math.min(answered, window - c.outstanding));
      if (stopped) checkDone();
    });
    c.socket.on('error', (err) => {
      errors++;
      firstError ??= err.message;
    });
  });

  const t0 = performance.now();
  measureStart = t0 + o.warmupMs;
  measureEnd = measureStart + o.measureMs;
  measuring = true;
  const startTimer = setTimeout(() => o.onMeasureStart?.(), o.warmupMs);

  let pacer: NodeJS.Timeout | undefined;
  if (o.rate === undefined) {
    conns.forEach((c, idx) => write(c, idx, window));
  } else {
    // Open loop: every millisecond, write whatever the schedule says is due on each connection.
    // The rate ramps up linearly over the warm-up (a cold daemon is not buried at once), then holds.
    const perConn = o.rate / o.connections;
    const ramp = o.warmupMs / 1000;
    const scheduled = (t: number): number => (t < ramp ? (perConn * t * t) / (2 * ramp) : perConn * (t - ramp / 2));
    const written = new Array<number>(conns.length).fill(0);
    pacer = setInterval(() => {
      const elapsed = (performance.now() - t0) / 1000;
      conns.forEach((c, idx) => {
        const due = Math.floor(scheduled(elapsed)) - written[idx]!;
        const n = Math.min(due, maxOutstanding - c.outstanding);
        if (n > 0) {
          write(c, idx, n);
          written[idx]! += n;
        }
      });
    }, 1);
  }

  await new Promise((r) => setTimeout(r, o.warmupMs + o.measureMs));
  o.onMeasureEnd?.();
  clearTimeout(startTimer);
  if (pacer) clearInterval(pacer);
  stopped = true;
  checkDone();
  await Promise.race([done, new Promise((r) => setTimeout(r, 30_000))]);
  for (const c of conns) c.socket.destroy();

  const seconds = o.measureMs / 1000;
  const [p50, p99, max] = latencies.percentiles([50, 99, 100]);
  const result: PushLoadResult = { acked, seconds, rate: acked / seconds, p50: p50!, p99: p99!, max: max!, errors, sent };
  if (firstError !== undefined) result.firstError = firstError;
  return result;
}

/**
 * Pushes `count` messages over `connections` connections as fast as the windows allow.
 * Resolves when every push was answered, with the time the last answer arrived.
 */
export async function pushBurst(port: number, count: number, connections: number, window: number): Promise<{ ackedAt: number; errors: number; firstError?: string }> {
  const sockets = await Promise.all(Array.from({ length: connections }, () => connect(port)));
  let remaining = count;
  let errors = 0;
  let firstError: string | undefined;
  let ackedAt = 0;
  await Promise.all(
    sockets.map(async (socket, idx) => {
      const t = new FrameTemplate('push', `oBenchUser${String(idx).padStart(6, '0')}Abcdefghijklm`);
      const decoder = new FrameDecoder({ maxLength: 1 << 20 });
      let outstanding = 0;
      let opaque = 1;
      const take = (n: number): number => {
        const k = Math.min(n, remaining);
        remaining -= k;
        return k;
      };
      await new Promise<void>((resolve) => {
        const send = (n: number): void => {
          const k = take(n);
          if (k <= 0) return;
          socket.write(t.batch(opaque, k));
          opaque += k;
          outstanding += k;
        };
        socket.on('data', (chunk: Buffer) => {
          let answered = 0;
          for (const frame of decoder.push(chunk)) {
            const r = parseResult(frame);
            answered++;
            outstanding--;
            if (r.code !== 200) {
              errors++;
              firstError ??= `${r.code} ${r.message.toString()}`;
            }
          }
          ackedAt = performance.now();
          send(answered);
          if (outstanding === 0) resolve();
        });
        send(window);
        if (outstanding === 0) resolve();
      });
      socket.destroy();
    }),
  );
  return firstError === undefined ? { ackedAt, errors } : { ackedAt, errors, firstError };
}

/** `count` Sends one after another on one connection; latency of each from write to answer. */
export async function sendSequential(port: number, count: number, warmup: number): Promise<{ samples: Samples; errors: number; firstError?: string }> {
  const socket = await connect(port);
  const decoder = new FrameDecoder({ maxLength: 1 << 20 });
  const t = new FrameTemplate('send', 'oBenchSendUser0000Abcdefghijklm');
  const samples = new Samples(count);
  let errors = 0;
  let firstError: string | undefined;
  let pending: ((code: number, message: string) => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk)) {
      const r = parseResult(frame);
      pending?.(r.code, r.message.toString());
    }
  });
  for (let i = 0; i < warmup + count; i++) {
    const start = performance.now();
    const answer = new Promise<[number, string]>((resolve) => (pending = (c, m) => resolve([c, m])));
    socket.write(t.batch(i + 1, 1));
    const [code, message] = await answer;
    const ms = performance.now() - start;
    if (code !== 200) {
      errors++;
      firstError ??= `${code} ${message}`;
    }
    if (i >= warmup) samples.push(ms);
  }
  socket.destroy();
  return firstError === undefined ? { samples, errors } : { samples, errors, firstError };
}
