import net from 'node:net';
import type { Logger } from 'pino';
import { Connection, type RequestHandler } from './connection.js';
import type { ListenAddress } from '../config/config.js';
import { StartupError } from '../errors.js';

export interface MegaServerOptions {
  listen: ListenAddress[];
  handler: RequestHandler;
  logger: Logger;
  /** `[setting] package_max_length`. */
  maxFrameLength: number;
}

/** The TCP front: one net.Server per `listen[]` address, all feeding the same handler. */
export class MegaServer {
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<Connection>();

  constructor(private readonly options: MegaServerOptions) {}

  async listen(): Promise<ListenAddress[]> {
    const bound: ListenAddress[] = [];
    try {
      for (const address of this.options.listen) {
        const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
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
      const code = (err as NodeJS.ErrnoException).code;
      const address = this.options.listen[this.servers.length]!;
      const reason = code === 'EADDRINUSE' ? 'address already in use' : code ?? String(err);
      throw new StartupError(`cannot listen on ${address.host}:${address.port}: ${reason}`, { cause: err });
    }
    return bound;
  }

  private accept(socket: net.Socket): void {
    const connection = new Connection(socket, this.options.handler, this.options.logger, this.options.maxFrameLength);
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
