import { mkdirSync, openSync, writeSync, fsyncSync, closeSync, readFileSync, existsSync, renameSync } from 'node:fs';
import path from 'node:path';

/** One Push job that failed for good, as kept in the dead-letter log. */
export interface DeadLetter {
  /** queue job id */
  id: number;
  openid: string;
  key: string;
  clientMsgId?: string;
  errcode: number;
  errmsg: string;
  /** ISO time of the final failure */
  time: string;
  attempts: number;
  /** the job record, so it can be queued again */
  job: string;
}

/**
 * Append-only JSON-lines file of permanently failed Push jobs. A job is acknowledged in the
 * queue only after its line is fsynced here, so a permanent failure is never lost either.
 */
export class DeadLetterLog {
  private fd: number | undefined;

  constructor(readonly file: string) {}

  private open(): number {
    if (this.fd === undefined) {
      mkdirSync(path.dirname(this.file), { recursive: true });
      this.fd = openSync(this.file, 'a');
    }
    return this.fd;
  }

  append(entries: DeadLetter[]): void {
    if (entries.length === 0) return;
    const fd = this.open();
    writeSync(fd, entries.map((e) => JSON.stringify(e) + '\n').join(''));
    fsyncSync(fd);
  }

  /** Every entry; a torn last line (crash mid-write) is skipped. */
  list(): DeadLetter[] {
    if (!existsSync(this.file)) return [];
    const out: DeadLetter[] = [];
    for (const line of readFileSync(this.file, 'utf8').split('\n')) {
      if (!line) continue;
      try {
        out.push(JSON.parse(line) as DeadLetter);
      } catch {
        // torn tail of an interrupted append: the job is still in the queue, not lost
      }
    }
    return out;
  }

  /**
   * Replaces the log with `keep` (write a temporary file, fsync, rename), so a crash leaves
   * either the old or the new list, never half of one.
   */
  rewrite(keep: DeadLetter[]): void {
    this.close();
    mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, keep.map((e) => JSON.stringify(e) + '\n').join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
  }

  /** See retryDeadLetters. */
  retry(selector: DeadLetterSelector, append: (payload: Buffer) => Promise<unknown>): Promise<{ retried: DeadLetter[]; missing: number[] }> {
    return retryDeadLetters(this, append, selector);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/**
 * Where a daemon keeps its dead letters: the file log (DeadLetterLog), or with the JetStream
 * backend the service's dead-letter stream (cluster/dead-letters.ts), shared by every daemon.
 */
export interface DeadLetterStore {
  append(entries: DeadLetter[]): void | Promise<void>;
  list(): DeadLetter[] | Promise<DeadLetter[]>;
  retry(selector: DeadLetterSelector, append: (payload: Buffer) => Promise<unknown>): Promise<{ retried: DeadLetter[]; missing: number[] }>;
}

/** Which dead letters `retry` takes: all of them, or those with the given queue job ids. */
export type DeadLetterSelector = { all: true } | { ids: number[] };

/**
 * Puts dead letters back into the queue (each as a new job with its original record, so the
 * same client_msg_id) and removes them from the log once the queue has them durably.
 * Returns the entries queued again; ids that are not in the log are reported as missing.
 */
export async function retryDeadLetters(
  log: DeadLetterLog,
  append: (payload: Buffer) => Promise<unknown>,
  selector: DeadLetterSelector,
): Promise<{ retried: DeadLetter[]; missing: number[] }> {
  const entries = log.list();
  const wanted = 'all' in selector ? undefined : new Set(selector.ids);
  const chosen = wanted ? entries.filter((e) => wanted.has(e.id)) : entries;
  const found = new Set(chosen.map((e) => e.id));
  const missing = wanted ? [...wanted].filter((id) => !found.has(id)) : [];
  for (const entry of chosen) await append(Buffer.from(entry.job));
  if (chosen.length > 0) log.rewrite(entries.filter((e) => !found.has(e.id)));
  return { retried: chosen, missing };
}
