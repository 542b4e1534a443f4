/**
 * nats-server processes with JetStream for the tests: a single node, or a cluster with routes,
 * each on free loopback ports with its store in a temp dir. Never the server the machine may
 * already run (tests must not share state with it or with each other).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { freePort } from './ports.js';

/** @defaultValue '/usr/sbin/nats-server' (MEGA_TEST_NATS_SERVER) */
export const NATS_SERVER_BIN = process.env.MEGA_TEST_NATS_SERVER || '/usr/sbin/nats-server';

/**
 * Whether the NATS tests should run: true when the binary is there. When it is not, false
 * outside CI (skip: `t.skip(\`nats-server not found at ${NATS_SERVER_BIN}\`)`); under CI
 * (`process.env.CI` set) it throws, so the suite fails instead of passing empty.
 */
export function natsAvailable(): boolean {
  if (existsSync(NATS_SERVER_BIN)) return true;
  if (process.env.CI) throw new Error(`nats-server not found at ${NATS_SERVER_BIN} and CI is set`);
  return false;
}

export interface NatsNode {
  name: string;
  port: number;
  /** `nats://127.0.0.1:<port>` */
  url: string;
  storeDir: string;
  process: ChildProcess;
  /** SIGKILL (a crash); resolves once the process exited. */
  kill(): Promise<void>;
}

export interface NatsCluster {
  nodes: NatsNode[];
  /** Every node's URL, for the client's `servers`. */
  servers: string[];
  /** Stops every node (SIGTERM, then SIGKILL after 5 s) and removes their store dirs. Idempotent. */
  stop(): Promise<void>;
}

// A failing test must not leave a server behind: it would keep the test file's process alive.
const live = new Set<ChildProcess>();
after(() => {
  for (const child of live) child.kill('SIGKILL');
});

async function startNode(args: string[], name: string, port: number, storeDir: string): Promise<NatsNode> {
  const child = spawn(NATS_SERVER_BIN, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir, '-n', name, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  live.add(child);
  const exited = once(child, 'exit').then(() => live.delete(child));
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server ${name} not ready within 10 s:\n${log}`)), 10_000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (log.length < 20_000) log += d;
      if (log.includes('Server is ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server ${name} exited (${code}) before it was ready:\n${log}`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  return {
    name,
    port,
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    process: child,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

async function stopAll(nodes: NatsNode[], root: string): Promise<void> {
  await Promise.all(
    nodes.map(async (n) => {
      const child = n.process;
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }),
  );
  rmSync(root, { recursive: true, force: true });
}

/** One node with JetStream (file store in a temp dir). */
/** One node; `args` are added to its command line (e.g. `['--user', 'u', '--pass', 'p']`). */
export async function startNats(args: string[] = []): Promise<NatsCluster> {
  return startNatsCluster(1, args);
}

/**
 * `size` nodes with JetStream; with more than one, a cluster (routes between all of them).
 * Resolves once each process says it is ready; a cluster's JetStream meta leader may still be
 * being elected (a few seconds): clients retry.
 */
export async function startNatsCluster(size: number, args: string[] = []): Promise<NatsCluster> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'mega-nats-'));
  const ports = await Promise.all(Array.from({ length: size }, () => freePort()));
  const clusterPorts = size > 1 ? await Promise.all(Array.from({ length: size }, () => freePort())) : [];
  const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`).join(',');
  const settled = await Promise.allSettled(
    ports.map((port, i) => {
      const name = `n${i + 1}`;
      const extra = size > 1 ? ['--cluster_name', 'mega-test', '--cluster', `nats://127.0.0.1:${clusterPorts[i]}`, '--routes', routes] : [];
      return startNode([...extra, ...args], name, port, path.join(root, name));
    }),
  );
  const nodes = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(nodes.map((n) => n.kill()));
    rmSync(root, { recursive: true, force: true });
    throw failed.reason;
  }
  let stopping: Promise<void> | undefined;
  return {
    nodes,
    servers: nodes.map((n) => n.url),
    stop: () => (stopping ??= stopAll(nodes, root)),
  };
}
