/**
 * How a job's final outcome is written down: the failure a job gets when its retries run out,
 * its dead-letter entry, and the Result message a waiting Send client gets.
 */

import { OutcomeKind, type JobOutcome } from '../jobs/outcome.js';
import { decodeJobRecord, type JobRecord } from '../jobs/record.js';
import type { DeadLetter } from './dead-letter.js';

/** A Retry outcome after the last allowed attempt, as the permanent failure it becomes. */
export function giveUp(outcome: JobOutcome, attempts: number): JobOutcome {
  const errcode = outcome.errcode ?? -1;
  const errmsg = outcome.errmsg ?? `gave up after ${attempts} attempts: ${outcome.reason ?? 'unknown error'}`;
  return {
    ...outcome,
    kind: OutcomeKind.Failed,
    errcode,
    errmsg,
    raw: outcome.raw ?? JSON.stringify({ errcode, errmsg }),
  };
}

/**
 * The dead-letter entry of a failed job. `payload` is the queue record; `sends` the times the
 * job was handed to a worker; `now` ms since the epoch.
 */
export function deadLetterOf(outcome: JobOutcome, payload: string, sends: number, now: number): DeadLetter {
  let record: Partial<JobRecord> = {};
  try {
    record = decodeJobRecord(payload);
  } catch {
    // an undecodable record is still recorded, with what the outcome says of it
  }
  return {
    id: outcome.id,
    openid: record.o ?? outcome.openid ?? '',
    key: record.t ?? outcome.key ?? '',
    clientMsgId: record.m,
    errcode: outcome.errcode ?? -1,
    errmsg: outcome.errmsg ?? outcome.reason ?? '',
    time: new Date(now).toISOString(),
    attempts: sends,
    job: payload,
  };
}

/** The Result message for a Send: WeChat's JSON, with the openid added when it failed. */
export function clientMessage(outcome: JobOutcome): string {
  const raw = outcome.raw ?? JSON.stringify({ errcode: outcome.errcode ?? -1, errmsg: outcome.errmsg ?? outcome.reason ?? '' });
  if (outcome.kind === OutcomeKind.Ok) return raw;
  try {
    const parsed = JSON.parse(raw) as Record<string, unknown>;
    return JSON.stringify({ ...parsed, openid: outcome.openid });
  } catch {
    return JSON.stringify({ errcode: outcome.errcode ?? -1, errmsg: raw, openid: outcome.openid });
  }
}
