import net from 'node:net';
import { once } from 'node:events';
import { FrameDecoder, encodeResult, type Frame } from '../../src/protocol/index.js';
export { freePort } from '../helpers/ports.js';

/**
 * A scriptable server speaking the frame format, for what a real daemon will not do on demand:
 * answer an auth frame, answer the wrong opaque, send garbage, hold answers back.
 */
export interface FakeConnection {
  socket: net.Socket;
  frames: Frame[];
  answer(opaque: number, code: number, message?: string): void;
}

export class FakeServer {
  readonly connections: FakeConnection[] = [];
  readonly frames: Frame[] = [];
  private waiters: Array<() => void> = [];

  private constructor(
    readonly server: net.Server,
    readonly port: number,
  ) {}

  /** `onFrame` decides what to do with each frame; by default push/send/tset get 200. */
  static async start(onFrame: (frame: Frame, conn: FakeConnection) => void = (f, c) => c.answer(f.opaque, 200)): Promise<FakeServer> {
    let fake: FakeServer | undefined;
    const server = net.createServer((socket) => {
      const decoder = new FrameDecoder();
      const conn: FakeConnection = {
        socket,
        frames: [],
        answer: (opaque, code, message = '') => {
          if (!socket.destroyed) socket.write(encodeResult(opaque, code, message));
        },
      };
      fake!.connections.push(conn);
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        for (const frame of decoder.push(chunk)) {
          conn.frames.push(frame);
          fake!.frames.push(frame);
          onFrame(frame, conn);
        }
        fake!.wake();
      });
      fake!.wake();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    fake = new FakeServer(server, (server.address() as net.AddressInfo).port);
    return fake;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `predicate` holds (checked on every frame and connection). */
  async until(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error('fake server: condition not reached');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

