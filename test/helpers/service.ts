/**
 * A service of several daemons on the JetStream backend, for the tests: a nats-server cluster
 * of their own (free ports), one simulator, one MariaDB template table (so a TSet reloads the
 * same row everywhere), and N daemon processes of the same service name, each in its own folder.
 */
import { openTemplateStore } from '../../src/templates/index.js';
import { dropTablesWithPrefix, mysqlTestConfig, mysqlTestConnection, mysqlTestDsn, uniqueTablePrefix } from './mysql.js';
import { startNatsCluster, type NatsCluster } from './nats.js';
import { startSimulator, startStack, APP_ID, APP_SECRET, type SimulatorHandle, type Stack } from './stack.js';
import type { IniSections } from './processes.js';

export interface Service {
  nats: NatsCluster;
  sim: SimulatorHandle;
  daemons: Stack[];
  prefix: string;
  /** Writes a template row (shared by every daemon). */
  putTemplate(key: string, template: unknown): Promise<void>;
  /** Starts one more daemon of the service. */
  startDaemon(): Promise<Stack>;
  stop(): Promise<void>;
}

export interface ServiceOptions {
  daemons: number;
  natsNodes?: number;
  /** @defaultValue natsNodes */
  replicas?: number;
  templates?: Record<string, unknown>;
  /** Extra ini keys for every daemon. */
  ini?: IniSections;
  simulatorArgs?: string[];
}

export async function startService(o: ServiceOptions): Promise<Service> {
  const nodes = o.natsNodes ?? 3;
  const nats = await startNatsCluster(nodes);
  const sim = await startSimulator(['--app-id', APP_ID, '--app-secret', APP_SECRET, ...(o.simulatorArgs ?? [])]);
  const prefix = uniqueTablePrefix();
  const putTemplate = async (key: string, template: unknown): Promise<void> => {
    const store = openTemplateStore({ dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, tablePrefix: prefix });
    await store.init();
    await store.put({ key, title: key, template: JSON.stringify(template) });
    await store.close();
  };
  for (const [k, t] of Object.entries(o.templates ?? {})) await putTemplate(k, t);
  const daemons: Stack[] = [];
  const startDaemon = async (): Promise<Stack> => {
    const extra = o.ini ?? {};
    const stack = await startStack({
      simulator: sim,
      ini: {
        ...extra,
        pdo: { dsn: mysqlTestDsn, username: mysqlTestConfig.user, password: mysqlTestConfig.password, table_prefix: prefix },
        queue: { backend: 'jetstream', ...(extra.queue ?? {}) },
        jetstream: { servers: nats.servers, replicas: o.replicas ?? nodes, ...(extra.jetstream ?? {}) },
      },
    });
    daemons.push(stack);
    return stack;
  };
  try {
    // one after the other: the first creates the stream and the buckets
    for (let i = 0; i < o.daemons; i++) await startDaemon();
  } catch (err) {
    for (const d of daemons) await d.stop().catch(() => undefined);
    await sim.stop();
    await nats.stop();
    throw err;
  }
  return {
    nats,
    sim,
    daemons,
    prefix,
    putTemplate,
    startDaemon,
    stop: async () => {
      for (const d of daemons) await d.stop().catch(() => undefined);
      await sim.stop();
      await nats.stop();
      await dropTablesWithPrefix(prefix);
    },
  };
}
