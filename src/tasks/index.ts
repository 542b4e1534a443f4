/** Bulk tasks: one template sent to a list of recipients with Send, resumable and exact. */

export { RecipientFileError, TaskStateError, TaskStoreError, type RecipientProblem } from '../errors.js';
export {
  formatFromName,
  describeProblems,
  normaliseRecipients,
  readSource,
  readCommonVars,
  verifyRecipientList,
  RecipientListReader,
  RECIPIENT_FORMATS,
  type RecipientFormat,
  type NormaliseOptions,
  type NormaliseResult,
  type SourceRecipient,
  type TaskRecipient,
} from './recipients.js';
export {
  openTaskStore,
  TASK_STATUSES,
  type TaskStore,
  type TaskStoreOptions,
  type TaskRow,
  type TaskStatus,
  type TaskProgress,
  type NewTask,
} from './store.js';
export { ProgressTracker } from './progress.js';
export { ReportWriter, createReport, reportLine, REPORT_HEADER } from './report.js';
export {
  TaskRunner,
  taskMsgid,
  ownerAlive,
  thisOwner,
  STALE_OWNER_MS,
  type TaskClient,
  type TaskRunnerOptions,
  type RunOutcome,
  type RunEnd,
  type ProgressInfo,
} from './runner.js';
export { createTask, pauseTask, type CreateTaskOptions } from './tasks.js';
export { createProgressDisplay, progressLine, formatDuration, type ProgressDisplay } from './display.js';
