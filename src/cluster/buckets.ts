/**
 * The key-value buckets through which the daemons of one service share state (docs/SCALING.md):
 * `state` holds what is one for the service (the access token, the pause), `members` holds one
 * entry per live daemon. Both are created on first use with the stream's replicas, so they are
 * as available as the queue itself.
 */

import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import { JetStreamApiError } from '@nats-io/jetstream';

export interface ServiceBuckets {
  /** Keys `token` (shared-token.ts) and `pause` (shared-pause.ts). History 1: only the current value matters. */
  state: KV;
  /**
   * One key per live daemon, rewritten every heartbeat. The bucket's max age drops the entries of a
   * daemon that stopped heartbeating (nats-server 2.9 has no per-key TTL; a whole-bucket max age works).
   */
  members: KV;
}

export interface ServiceBucketsOptions {
  /** The service name (`[server] name`); letters, digits, `_` and `-`. */
  name: string;
  /** Replicas of both buckets when they are created. @defaultValue 1 */
  replicas?: number;
  /** Max age of a member entry, in ms: a daemon silent this long is no longer a member. @defaultValue 5000 */
  memberTtlMs?: number;
}

/** `mega_<name>_state` / `mega_<name>_members`: KV bucket names allow letters, digits, `_` and `-`. */
export function bucketNames(name: string): { state: string; members: string } {
  return { state: `mega_${name}_state`, members: `mega_${name}_members` };
}

/** Opens (creating if missing) the two buckets of the service on `nc`. */
export async function openServiceBuckets(nc: NatsConnection, options: ServiceBucketsOptions): Promise<ServiceBuckets> {
  const kvm = new Kvm(nc);
  const names = bucketNames(options.name);
  const replicas = options.replicas ?? 1;
  const state = await createBucket(kvm, names.state, { history: 1, replicas });
  const members = await createBucket(kvm, names.members, { history: 1, replicas, ttl: options.memberTtlMs ?? 5000 });
  return { state, members };
}

/**
 * kvm.create, tried again when another daemon of the service creates the same bucket at the same
 * moment: nats-server 2.9 can answer the second creator "subjects overlap with an existing stream"
 * (10065) for a stream that did not exist when it checked. A second try finds it and succeeds.
 */
async function createBucket(kvm: Kvm, name: string, opts: Parameters<Kvm['create']>[1]): Promise<KV> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await kvm.create(name, opts);
    } catch (err) {
      if (attempt >= 4 || !(err instanceof JetStreamApiError && err.code === 10065)) throw err;
      await new Promise((r) => setTimeout(r, 50 * (attempt + 1)));
    }
  }
}
