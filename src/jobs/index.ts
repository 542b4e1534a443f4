/**
 * What the daemon's parts say about a job, in a home both sides import: the queue record
 * (written by the server, read by the dispatcher and the workers) and the outcome a worker
 * reports for it. Neither knows about sockets, threads or files.
 */
export { encodeJobRecord, decodeJobRecord, ClientMsgIdGenerator, type JobRecord, type NewJob } from './record.js';
export { classifyErrcode, DaemonErrcode, OutcomeKind, type JobOutcome } from './outcome.js';
export type { JobMessage, WorkerPool, WorkerPoolEvents } from './worker-pool.js';
