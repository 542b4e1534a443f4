/**
 * The files a service's config points to, as both the daemon and the CLI open them: the CLI's
 * offline commands (`queue`, `dlq` with the daemon stopped, the count of jobs left after a stop)
 * must open the queue exactly as the daemon does, and every command asks the pid file whether
 * the daemon runs.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { MegaConfig } from './config.js';

/**
 * Room for a job record's own fields (kind, openid, key, client_msg_id, reply key, time: a few
 * hundred bytes, see src/jobs/record.ts) around the variables of one frame.
 */
const JOB_RECORD_OVERHEAD = 4096;

/** `FileQueue.open` options from `[server] queue_file_path`, `[queue]` and the largest frame. */
export function queueOptions(config: MegaConfig): { dir: string; segmentSize: number; fsync: 'always' | 'none'; maxPayloadSize: number } {
  return {
    dir: config.server.queueFilePath,
    segmentSize: config.queue.segmentSize,
    fsync: config.queue.fsync,
    // a record holds one frame's variables plus a few short fields
    maxPayloadSize: config.setting.packageMaxLength + JOB_RECORD_OVERHEAD,
  };
}

/** Where permanently failed Push jobs are recorded: beside the pid file. */
export function deadLetterFile(config: MegaConfig): string {
  return path.join(path.dirname(config.server.pidFile), `${config.name}.dead-letter.jsonl`);
}

/** The receipt webhook's outbox (events not yet acknowledged by the receiver): beside the pid file. */
export function webhookOutboxDir(config: MegaConfig): string {
  return path.join(path.dirname(config.server.pidFile), `${config.name}.webhook`);
}

/** Where bulk tasks keep their recipient lists and failure reports: `tasks/` beside the pid file. */
export function taskDir(config: MegaConfig): string {
  return path.join(path.dirname(config.server.pidFile), 'tasks');
}

/** Whether a process with this pid exists (one of another user counts: it exists, we may not signal it). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Reads a pid file; returns the pid only if that process is alive. */
export function runningPid(pidFile: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? pid : undefined;
}
