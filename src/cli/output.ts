/** What every command prints: one line to standard output, and an error's text without its stack. */
export function say(line: string): void {
  process.stdout.write(line + '\n');
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
