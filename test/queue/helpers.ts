/** Shared helpers for the queue tests (this module defines no tests). */

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { FileQueue, QueueJob } from '../../src/queue/index.js';

export type LogCall = { level: string; obj: unknown; msg: string | undefined };

/** A logger that records every call (enough of pino's surface for the queue). */
export function fakeLogger(): { logger: Logger; calls: LogCall[]; warns: () => LogCall[] } {
  const calls: LogCall[] = [];
  const mk =
    (level: string) =>
    (objOrMsg?: unknown, msg?: string): void => {
      if (typeof objOrMsg === 'string') calls.push({ level, obj: undefined, msg: objOrMsg });
      else calls.push({ level, obj: objOrMsg, msg });
    };
  const logger = {
    trace: mk('trace'),
    debug: mk('debug'),
    info: mk('info'),
    warn: mk('warn'),
    error: mk('error'),
    fatal: mk('fatal'),
  } as unknown as Logger;
  return { logger, calls, warns: () => calls.filter((c) => c.level === 'warn') };
}

export function tmpDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mwq-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'queue');
}

/** Read until the queue has nothing more to hand out. */
export async function drain(q: FileQueue, chunk = 1000): Promise<QueueJob[]> {
  const out: QueueJob[] = [];
  for (;;) {
    const jobs = await q.readAsync(chunk);
    if (jobs.length === 0) return out;
    out.push(...jobs);
  }
}

export function segFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.seg'))
    .sort();
}

export function lastSeg(dir: string): string {
  const segs = segFiles(dir);
  return path.join(dir, segs[segs.length - 1]!);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` every 5 ms, for at most `ms`. */
export async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for condition');
    await sleep(5);
  }
}

export const text = (jobs: QueueJob[]): string[] => jobs.map((j) => j.payload.toString());
export const ids = (jobs: QueueJob[]): number[] => jobs.map((j) => j.id);

export function errnoError(code: string, syscall = 'write'): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated failure, ${syscall}`), { code, syscall });
}
