import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { TaskStateError } from '../errors.js';
import { normaliseRecipients, readCommonVars, type NormaliseResult, type RecipientFormat } from './recipients.js';
import { createReport } from './report.js';
import type { TaskRow, TaskStore } from './store.js';

/** The template key as the protocol accepts it (a header word of 1-32 printable ASCII characters). */
const KEY_PATTERN = /^[\x21-\x7e]{1,32}$/;
const NONCE_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';

export interface CreateTaskOptions {
  store: TaskStore;
  /** Template key. */
  key: string;
  /** Recipients file (plain, CSV or JSONL). */
  source: string;
  /** JSON object file: variables for everyone (a recipient's own win). */
  varsFile?: string;
  /** @defaultValue the source file's name */
  name?: string;
  /** @defaultValue from the source file's extension */
  format?: RecipientFormat;
  skipInvalid?: boolean;
  allowDuplicates?: boolean;
  /** Folder for the normalised list and the failure report (created if missing). */
  dir: string;
}

function nonce(): string {
  const bytes = randomBytes(8);
  let out = '';
  for (const b of bytes) out += NONCE_CHARS[b % NONCE_CHARS.length];
  return out;
}

/**
 * `task create`: normalises the recipients into `<dir>/task-<nonce>.recipients.jsonl`, creates
 * the empty report `<dir>/task-<nonce>.failures.csv`, and records the task (status `pending`).
 * @throws RecipientFileError for a bad recipients or vars file (nothing is created).
 */
export async function createTask(o: CreateTaskOptions): Promise<{ task: TaskRow; recipients: NormaliseResult }> {
  if (typeof o.key !== 'string' || !KEY_PATTERN.test(o.key)) {
    throw new RangeError(`template key must be 1-32 printable ASCII characters without spaces, got ${JSON.stringify(String(o.key).slice(0, 40))}`);
  }
  const commonVars = o.varsFile === undefined ? null : readCommonVars(o.varsFile);
  mkdirSync(o.dir, { recursive: true });
  const n = nonce();
  const file = path.resolve(o.dir, `task-${n}.recipients.jsonl`);
  const report = path.resolve(o.dir, `task-${n}.failures.csv`);
  const recipients = await normaliseRecipients({
    source: o.source,
    format: o.format,
    commonVars,
    out: file,
    skipInvalid: o.skipInvalid,
    allowDuplicates: o.allowDuplicates,
  });
  try {
    const reportSize = createReport(report);
    const task = await o.store.create({
      key: o.key,
      name: o.name ?? path.basename(o.source),
      file,
      source: path.resolve(o.source),
      checksum: recipients.checksum,
      nonce: n,
      total: recipients.total,
      report,
      reportSize,
    });
    return { task, recipients };
  } catch (err) {
    rmSync(file, { force: true });
    rmSync(report, { force: true });
    throw err;
  }
}

/**
 * `task pause`: a running task is marked `paused` (its runner notices within a second, lets the
 * answers in flight come back, saves and exits); a task not running is paused at once.
 * @returns the task before and after.
 * @throws TaskStateError for an unknown or finished task.
 */
export async function pauseTask(store: TaskStore, id: number, message: string): Promise<{ before: TaskRow; after: TaskRow }> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const before = await store.get(id);
    if (!before) throw new TaskStateError(`there is no task ${id}`);
    if (before.status === 'done') throw new TaskStateError(`task ${id} is done; there is nothing to pause`);
    if (before.status === 'paused') return { before, after: before };
    const ok = await store.transition(id, { status: before.status, owner: before.owner }, { status: 'paused', message });
    if (ok) return { before, after: (await store.get(id)) ?? before };
  }
  throw new TaskStateError(`task ${id} kept changing; try again`);
}
