import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * Field names whose values are secrets. pino's redaction replaces them wherever they sit
 * in a logged object, so a stray `{ config }` or `{ err }` can never leak them.
 */
const SECRET_FIELDS = [
  'app_secret',
  'appSecret',
  'secret',
  'password',
  'access_token',
  'accessToken',
  'token',
  'auth_token',
  'authToken',
];

const REDACT_PATHS = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]);

/** Secrets can also hide inside strings: URLs with `access_token=`, or `secret=`. */
const SECRET_IN_TEXT = /((?:access_token|secret|appsecret|password)=)[^&\s"']+/gi;

export function scrubSecrets(text: string): string {
  return text.replace(SECRET_IN_TEXT, '$1[Redacted]');
}

function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const out = pino.stdSerializers.err(err);
  out.message = scrubSecrets(out.message);
  if (typeof out.stack === 'string') out.stack = scrubSecrets(out.stack);
  return out;
}

export interface LoggerOptions {
  /** Log file; its folder is created if missing. `undefined` logs to stderr. */
  file?: string;
  level: string;
  /** The `name` field of every line (the original's `log_prefix`). */
  name: string;
  /** Write synchronously (tests, and the start-up phase where the process may exit at once). */
  sync?: boolean;
}

export interface MegaLogger {
  logger: Logger;
  /** Resolves once the log file is open (flushing before that throws); rejects if it cannot be. */
  ready: Promise<void>;
  /** Reopen the log file (after logrotate moved it away). */
  reopen(): void;
  /** Flush what is buffered; call before exit. */
  flush(): void;
}

export function createLogger(options: LoggerOptions): MegaLogger {
  const destination = pino.destination({
    dest: options.file ?? 2,
    sync: options.sync ?? false,
    mkdir: true,
  });
  const logger = pino(
    {
      name: options.name,
      level: options.level,
      redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
      // Error messages and stacks come from libraries we do not control (mysql2, undici):
      // scrub anything that looks like a credential in them before it is written.
      serializers: { err: serializeError },
    },
    destination,
  );
  const ready =
    options.file === undefined
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          destination.once('ready', () => resolve());
          destination.once('error', reject);
        });
  return {
    logger,
    ready,
    reopen: () => destination.reopen(),
    flush: () => {
      try {
        destination.flushSync();
      } catch {
        // flushSync throws while the destination is still opening; nothing to flush then.
      }
    },
  };
}
