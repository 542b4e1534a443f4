import { mkdirSync, openSync, writeSync, fsyncSync, closeSync, readFileSync, existsSync } from 'node:fs';
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

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
