import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { Connection, type ConnectionOptions, type RequestHandler } from './connection.js';
import { encodeResult, ResultCode } from '../protocol/index.js';
import type { ListenAddress } from '../config/config.js';
import { StartupError } from '../errors.js';

export interface MegaServerOptions {
  listen: ListenAddress[];
  handler: RequestHandler;
  logger: Logger;
  connection: ConnectionOptions;
  /** `[server] max_connections` */
  maxConnections: number;
  /** PEM file paths; with `ca`, clients must present a certificate signed by it. */
  tls?: { cert: string; key: string; ca?: string };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** The TCP front: one net.Server per `listen[]` address, all feeding the same handler. */
export class MegaServer {
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<Connection>();

  constructor(private readonly options: MegaServerOptions) {}

  private createServer(): net.Server {
    const t = this.options.tls;
    if (!t) return net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    let secure: tls.TlsOptions;
    try {
      secure = {
        cert: readFileSync(t.cert),
        key: readFileSync(t.key),
        ca: t.ca ? readFileSync(t.ca) : undefined,
        requestCert: Boolean(t.ca),
        rejectUnauthorized: Boolean(t.ca),
      };
    } catch (err) {
      throw new StartupError(`cannot read TLS files: ${(err as Error).message}`, { cause: err });
    }
    const server = tls.createServer({ ...secure, noDelay: true }, (socket) => this.accept(socket));
    server.on('tlsClientError', (err) => this.options.logger.debug({ err }, 'TLS handshake failed'));
    return server;
  }

  async listen(): Promise<ListenAddress[]> {
    const bound: ListenAddress[] = [];
    for (const address of this.options.listen) {
      if (!isLoopback(address.host) && !this.options.connection.authToken) {
        this.options.logger.warn(
          { host: address.host, port: address.port },
          'listening on a non-loopback address without [server] auth_token: anyone who can reach it may send messages',
        );
      }
    }
    try {
      for (const address of this.options.listen) {
        const server = this.createServer();
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: address.host, port: address.port }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        server.on('error', (err) => this.options.logger.error({ err }, 'listening socket error'));
        this.servers.push(server);
        const actual = server.address() as net.AddressInfo;
        bound.push({ host: actual.address, port: actual.port });
      }
    } catch (err) {
      this.stopListening();
      if (err instanceof StartupError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      const address = this.options.listen[this.servers.length]!;
      const reason = code === 'EADDRINUSE' ? 'address already in use' : code ?? String(err);
      throw new StartupError(`cannot listen on ${address.host}:${address.port}: ${reason}`, { cause: err });
    }
    return bound;
  }

  private accept(socket: net.Socket): void {
    // A socket destroyed in this event-loop turn only emits 'close' at the turn's end, after
    // connections accepted in the same turn: do not count it against the limit.
    for (const c of this.connections) if (c.destroyed) this.connections.delete(c);
    if (this.connections.size >= this.options.maxConnections) {
      // Refused with an answer rather than a reset, so the client can tell why.
      this.options.logger.warn({ max: this.options.maxConnections }, 'connection refused: max_connections reached');
      socket.on('error', () => undefined);
      socket.end(encodeResult(0, ResultCode.UNAVAILABLE, 'too many connections'));
      return;
    }
    const connection = new Connection(socket, this.options.handler, this.options.logger, this.options.connection);
    this.connections.add(connection);
    socket.on('close', () => this.connections.delete(connection));
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stops accepting connections; existing ones stay open. (net.Server.close only calls back
   * once every connection is gone, so it is not awaited here.)
   */
  stopListening(): void {
    for (const s of this.servers) if (s.listening) s.close();
    this.servers.length = 0;
  }

  /** Stops accepting and closes every connection once its ordered answers are out. */
  async close(): Promise<void> {
    this.stopListening();
    for (const c of this.connections) c.end();
    // Give clients a moment to read their last answers, then drop whatever is left.
    await new Promise((resolve) => setTimeout(resolve, this.connections.size > 0 ? 200 : 0));
    for (const c of this.connections) c.destroy();
  }
}
