export { FileQueue, segmentFileName } from './file-queue.js';
export type { FileQueueOptions, FsyncMode, QueueJob, QueueStats } from './file-queue.js';
export type { JobQueue, JobQueueEvents, JobQueueStats } from './job-queue.js';
export { nodeIo } from './io.js';
export type { QueueIo } from './io.js';
export { crc32c } from './crc32c.js';
export { JetStreamQueue } from './jetstream-queue.js';
export type { JetStreamAppendOptions, JetStreamQueueOptions } from './jetstream-queue.js';
