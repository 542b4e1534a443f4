/**
 * A live fuzz run: 100,000 random and mutated frames over many connections against the real
 * daemon process. Afterwards it still serves a normal Push and its memory is back near where
 * it started. A client that writes without ever reading cannot grow the daemon's memory.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { encodeFrame, encodePush } from '../../src/protocol/index.js';
import { seededRandom } from '../helpers/prng.js';
import { APP_ID, APP_SECRET, eventually, startSimulator, startStack, type SimulatorHandle, type Stack } from '../helpers/stack.js';

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

function drainOr200ms(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      socket.off('drain', done);
      resolve();
    };
    const timer = setTimeout(done, 200);
    socket.once('drain', done);
  });
}

describe('live fuzz and abusive clients', () => {
  let sim: SimulatorHandle;
  let stack: Stack;
  before(async () => {
    sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET, '--no-record-bodies']);
    stack = await startStack({
      simulator: sim,
      templates: { k: { template_id: 't', data: { v: { value: '${v}' } } } },
      ini: { setting: { package_max_length: 65536 }, log: { log_level: 'error' } },
    });
  });
  after(async () => {
    await stack?.stop();
    await sim?.stop();
  });

  it('100,000 hostile frames over many connections: the daemon survives, serves, and gives memory back', async (t) => {
    const seed = Number(process.env.MEGA_FUZZ_SEED ?? Date.now() % 1e9);
    t.diagnostic(`seed ${seed} (MEGA_FUZZ_SEED to repeat)`);
    const random = seededRandom(seed);
    const int = (n: number) => Math.floor(random() * n);
    const pid = stack.daemon.pid!;
    // warm up, then measure the baseline
    const warm = await stack.connect();
    for (let i = 0; i < 200; i++) warm.write(encodePush(i, `oWARM${i}`, 'k', { v: i }));
    await warm.waitFor(200);
    warm.close();
    const before = rssKiB(pid);

    const headers = ['push o k', 'send o k', 'tset k', 'push', 'push  o k', 'fly o k', 'result 200', 'push o missing_key', 'tset nope', 'push o k m!d', '\u00ff\u0000'];
    const frame = (): Buffer => {
      const kind = int(10);
      if (kind < 5) {
        const body = [null, '{"v":"x"}', '{', '[]', '"s"', 'null', '{"v":' + '9'.repeat(int(30)) + '}'][int(7)]!;
        return encodeFrame({ header: headers[int(headers.length)]!, opaque: int(2 ** 32), body: body === null ? null : Buffer.from(body) });
      }
      const b = Buffer.alloc(4 + int(60));
      for (let i = 0; i < b.length; i++) b[i] = int(256);
      if (kind < 8) b.writeUInt32BE(b.length - 4, 0); // plausible length, garbage inside
      if (kind === 8) b.writeUInt32BE([0, 0xffffffff, 7, 65536][int(4)]!, 0);
      return b;
    };

    const TOTAL = 100_000;
    const PER_CONNECTION = 500;
    const PARALLEL = 20;
    let sent = 0;
    let answered = 0;
    const runConnection = async (frames: Buffer[]): Promise<void> => {
      const socket = net.connect(stack.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.on('data', (d: Buffer) => (answered += d.length > 0 ? 1 : 0));
      await once(socket, 'connect').catch(() => undefined);
      socket.end(Buffer.concat(frames));
      await once(socket, 'close');
    };
    while (sent < TOTAL) {
      const batch: Promise<void>[] = [];
      for (let c = 0; c < PARALLEL && sent < TOTAL; c++) {
        const frames = Array.from({ length: Math.min(PER_CONNECTION, TOTAL - sent) }, frame);
        sent += frames.length;
        batch.push(runConnection(frames));
      }
      await Promise.all(batch);
    }
    assert.equal(sent, TOTAL);
    assert.ok(answered > 0);
    assert.equal(stack.daemon.exitCode, null, 'the daemon is still running');

    const client = await stack.connect();
    const r = await client.request(encodePush(1, 'oAFTERFUZZ', 'k', { v: 'ok' }), 1);
    assert.equal(r.code, 200);
    client.close();

    // memory comes back once the garbage is collected (V8 collects when it sees fit: allow time)
    const after = await eventually(() => {
      const now = rssKiB(pid);
      return now < before + 40 * 1024 ? now : undefined;
    }, 20000, `RSS back near ${before} KiB`);
    t.diagnostic(`RSS before ${before} KiB, after ${after} KiB`);
  });

  it('a client that writes without reading is paused: the daemon’s memory stays bounded', async (t) => {
    const pid = stack.daemon.pid!;
    const before = rssKiB(pid);
    const socket = net.connect(stack.port, '127.0.0.1');
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    socket.pause(); // never read the answers
    const chunk = Buffer.concat(Array.from({ length: 1000 }, (_, i) => encodePush(i, `oSLOW${i}`, 'no_such_key', null)));
    let written = 0;
    const deadline = Date.now() + 4000;
    // write as fast as the daemon accepts, for a few seconds
    while (Date.now() < deadline) {
      if (socket.write(chunk)) written += chunk.length;
      else await drainOr200ms(socket);
    }
    const peak = rssKiB(pid);
    t.diagnostic(`wrote ${(written / 1e6).toFixed(1)} MB without reading; daemon RSS ${before} → ${peak} KiB`);
    assert.ok(socket.writableLength > 0 || written < 400e6, 'the daemon stopped reading from this client');
    assert.ok(peak < before + 64 * 1024, `daemon RSS grew by ${peak - before} KiB`);
    socket.destroy();
    const other = await stack.connect();
    assert.equal((await other.request(encodePush(1, 'oOTHER', 'k', { v: 1 }), 1)).code, 200, 'others are served meanwhile');
    other.close();
  });
});
