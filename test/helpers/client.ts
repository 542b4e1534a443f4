import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { FrameDecoder, parseResult, type Result } from '../../src/protocol/index.js';

/**
 * A bare protocol client for tests: writes whatever bytes a test gives it and collects
 * every Result the server sends, so tests can check order, codes and closes exactly.
 */
export class RawClient {
  readonly results: Result[] = [];
  closed = false;
  private readonly decoder = new FrameDecoder({ maxLength: 64 * 1024 * 1024 });
  private waiters: Array<() => void> = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const frame of this.decoder.push(chunk)) this.results.push(parseResult(frame));
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    const socket = net.connect({ port, host });
    await once(socket, 'connect');
    return new RawClient(socket);
  }

  static async connectTls(port: number, options: tls.ConnectionOptions): Promise<RawClient> {
    const socket = tls.connect({ port, host: '127.0.0.1', ...options });
    await once(socket, 'secureConnect');
    return new RawClient(socket);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Waits until `n` results arrived in total (or the socket closed, or the timeout). */
  async waitFor(n: number, timeoutMs = 15000): Promise<Result[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.results.length < n && !this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`expected ${n} results, got ${this.results.length}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.results;
  }

  /** Sends one frame and waits for the result with the same opaque. */
  async request(bytes: Buffer, opaque: number, timeoutMs = 15000): Promise<Result> {
    this.write(bytes);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.results.find((r) => r.opaque === opaque);
      if (found) return found;
      if (this.closed) throw new Error(`connection closed before result for opaque ${opaque}`);
      if (Date.now() > deadline) throw new Error(`no result for opaque ${opaque}`);
      await this.waitFor(this.results.length + 1, deadline - Date.now()).catch(() => undefined);
    }
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    if (this.closed) return;
    await Promise.race([once(this.socket, 'close'), new Promise((_, rej) => setTimeout(() => rej(new Error('socket not closed')), timeoutMs))]);
  }

  close(): void {
    this.socket.destroy();
  }
}
