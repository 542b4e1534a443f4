import net from 'node:net';
import { rmSync } from 'node:fs';
import type { Logger } from 'pino';

/**
 * A local control channel for `mega <name> status` (and later commands): a Unix socket
 * beside the pid file, one JSON request line in, one JSON answer line out. Only local
 * users with access to the folder can reach it, unlike the TCP port.
 */
export type ControlHandler = (request: { cmd: string; [k: string]: unknown }) => Promise<unknown> | unknown;

export class ControlServer {
  private server: net.Server | undefined;

  constructor(
    private readonly path: string,
    private readonly handler: ControlHandler,
    private readonly logger: Logger,
  ) {}

  async listen(): Promise<void> {
    // A socket file left by a daemon that was killed: the pid file check already showed
    // no daemon runs, so it is stale.
    rmSync(this.path, { force: true });
    const server = net.createServer((socket) => {
      let buffered = '';
      socket.setEncoding('utf8');
      socket.on('error', () => undefined);
      socket.on('data', (chunk: string) => {
        buffered += chunk;
        if (buffered.length > 65536) return void socket.destroy();
        const nl = buffered.indexOf('\n');
        if (nl < 0) return;
        const line = buffered.slice(0, nl);
        buffered = '';
        void this.answer(line).then((out) => socket.end(JSON.stringify(out) + '\n'));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  private async answer(line: string): Promise<unknown> {
    try {
      const request = JSON.parse(line) as { cmd: string };
      if (typeof request?.cmd !== 'string') return { ok: false, error: 'missing cmd' };
      return { ok: true, result: await this.handler(request) };
    } catch (err) {
      this.logger.warn({ err }, 'control request failed');
      return { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
  }

  close(): void {
    this.server?.close();
    rmSync(this.path, { force: true });
  }
}

/** Sends one control request to a running daemon. */
export function controlRequest(path: string, request: { cmd: string; [k: string]: unknown }, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from the daemon's control socket ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify(request) + '\n'));
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        const answer = JSON.parse(data) as { ok: boolean; result?: unknown; error?: string };
        if (answer.ok) resolve(answer.result);
        else reject(new Error(answer.error ?? 'control request failed'));
      } catch {
        reject(new Error('malformed answer from the control socket'));
      }
    });
  });
}
