/**
 * The dead letters of a service on the JetStream backend: one stream (`<jobs stream>_DLQ`,
 * subject `mega.<name>.dead`) that every daemon writes its permanent failures to, so that
 * `mega <name> dlq list|retry` on any daemon sees them all. A dead letter is stored before its job
 * is acknowledged (the dispatcher waits for this append), with `Nats-Msg-Id` = `dead-<job id>`:
 * a job dead-lettered twice (its daemon died before the ack) is stored once.
 */

import { jetstreamManager, jetstream, JetStreamApiCodes, JetStreamApiError, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

/** What this store needs of a dead letter (dispatch/dead-letter.ts's DeadLetter has more). */
export interface DeadLetterRecord {
  /** The job's id (its sequence in the jobs stream). */
  id: number;
  /** The job record, appended again by retry. */
  job: string;
}

export interface JetStreamDeadLettersOptions {
  nc: NatsConnection;
  /** NATS-safe service name: the subject is `mega.<name>.dead`. */
  name: string;
  /** The jobs stream; the dead letters go to `<stream>_DLQ`. */
  stream: string;
  /** Replicas when the stream is created. @defaultValue 1 */
  replicas?: number;
  /** How long an append waits for the stream's acknowledgement. @defaultValue 10000 */
  timeoutMs?: number;
}

const encoder = new TextEncoder();

export class JetStreamDeadLetters<T extends DeadLetterRecord> {
  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    readonly stream: string,
    private readonly subject: string,
    private readonly timeoutMs: number,
  ) {}

  /** Creates the stream if missing. */
  static async open<T extends DeadLetterRecord>(o: JetStreamDeadLettersOptions): Promise<JetStreamDeadLetters<T>> {
    const jsm = await jetstreamManager(o.nc);
    const stream = `${o.stream}_DLQ`;
    const subject = `mega.${o.name}.dead`;
    try {
      await jsm.streams.info(stream);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
      await jsm.streams.add({ name: stream, subjects: [subject], retention: RetentionPolicy.Limits, storage: StorageType.File, num_replicas: o.replicas ?? 1 });
    }
    return new JetStreamDeadLetters<T>(jetstream(o.nc), jsm, stream, subject, o.timeoutMs ?? 10_000);
  }

  /** Resolves once the stream stored every entry; rejects (nothing acknowledged then) otherwise. */
  append(entries: T[]): void | Promise<void> {
    if (entries.length === 0) return;
    return Promise.all(
      entries.map((e) => this.js.publish(this.subject, encoder.encode(JSON.stringify(e)), { msgID: `dead-${e.id}`, timeout: this.timeoutMs })),
    ).then(() => undefined);
  }

  /** Every dead letter of the service, oldest first, each with its sequence in the stream. */
  private async entries(): Promise<Array<{ seq: number; entry: T }>> {
    const { state } = await this.jsm.streams.info(this.stream);
    const out: Array<{ seq: number; entry: T }> = [];
    if (state.messages === 0) return out;
    for (let seq = state.first_seq; seq <= state.last_seq && out.length < state.messages; seq++) {
      let m;
      try {
        m = await this.jsm.streams.getMessage(this.stream, { seq });
      } catch (err) {
        // a retried (deleted) one between first and last
        if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound) continue;
        throw err;
      }
      if (!m) continue;
      try {
        out.push({ seq, entry: m.json<T>() });
      } catch {
        // not ours (written by hand?): left alone
      }
    }
    return out;
  }

  async list(): Promise<T[]> {
    return (await this.entries()).map((e) => e.entry);
  }

  /**
   * Queues the chosen dead letters again (`append` puts a job record into the jobs stream), then
   * deletes each from this stream once its job is stored. Ids not found are reported as missing.
   */
  async retry(selector: { all: true } | { ids: number[] }, append: (job: Buffer) => Promise<unknown>): Promise<{ retried: T[]; missing: number[] }> {
    const all = await this.entries();
    const wanted = 'all' in selector ? undefined : new Set(selector.ids);
    const chosen = wanted ? all.filter((e) => wanted.has(e.entry.id)) : all;
    const found = new Set(chosen.map((e) => e.entry.id));
    const missing = wanted ? [...wanted].filter((id) => !found.has(id)) : [];
    for (const { seq, entry } of chosen) {
      await append(Buffer.from(entry.job));
      await this.jsm.streams.deleteMessage(this.stream, seq, false);
    }
    return { retried: chosen.map((e) => e.entry), missing };
  }
}
