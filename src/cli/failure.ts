/** LSB exit status of `status` (and `resume`) when the service is not running. */
export const EXIT_NOT_RUNNING = 3;

/**
 * A command that cannot do what it was asked: `main` prints `mega: <message>` and exits with
 * `exitCode`. Every CLI module throws it; none of them prints and exits on its own.
 */
export class CliFailure extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}
