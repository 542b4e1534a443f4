import net from 'node:net';
import { rmSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  answerControl,
  parseControlRequest,
  type AnswerOf,
  type ControlHandlers,
  type ControlReply,
  type ControlRequest,
} from './control-protocol.js';

/**
 * A local control channel for `mega <name> status|queue|dlq|resume`: a Unix socket beside the
 * pid file, one JSON request line in, one JSON answer line out (control-protocol.ts says which).
 * Only local users with access to the folder can reach it, unlike the TCP port.
 */

export class ControlServer {
  private server: net.Server | undefined;

  constructor(
    private readonly path: string,
    private readonly handlers: ControlHandlers,
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

  private async answer(line: string): Promise<ControlReply> {
    try {
      const request = parseControlRequest(JSON.parse(line));
      return { ok: true, result: await answerControl(this.handlers, request) };
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

/** Sends one control request to a running daemon; resolves with that request's answer. */
export function controlRequest<R extends ControlRequest>(path: string, request: R, timeoutMs = 5000): Promise<AnswerOf<R['cmd']>> {
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
        const answer = JSON.parse(data) as ControlReply<R['cmd']>;
        if (answer.ok) resolve(answer.result);
        else reject(new Error(answer.error || 'control request failed'));
      } catch {
        reject(new Error('malformed answer from the control socket'));
      }
    });
  });
}
