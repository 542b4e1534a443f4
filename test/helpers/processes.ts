import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { after } from 'node:test';
import { MEGA_BIN } from './paths.js';

/**
 * Every process a test file started. A failing test must not leave a daemon behind: that
 * would keep the test file's process alive (its pipes) and leak into later tests, so the
 * file's last hook kills whatever is still running.
 */
const live = new Set<ChildProcess>();
function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.on('exit', () => live.delete(child));
  return child;
}
after(() => {
  for (const child of live) child.kill('SIGKILL');
});

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `mega ...args` to completion. */
export async function runMega(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  const child = track(
    spawn(process.execPath, [MEGA_BIN, ...args], {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** A child process that printed a line matching `ready` on stdout. */
export interface Started {
  child: ChildProcess;
  match: RegExpExecArray;
  output: () => string;
}

/** Spawns `mega ...args` and waits for a stdout line matching `ready`. */
export function spawnMega(args: string[], ready: RegExp, options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Started> {
  const child = track(
    spawn(process.execPath, [MEGA_BIN, ...args], {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`mega ${args.join(' ')} not ready within timeout; output:\n${out}`));
    }, options.timeoutMs ?? 30000);
    const onData = (d: string): void => {
      out += d;
      const match = ready.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ child, match, output: () => out });
      }
    };
    child.stdout!.setEncoding('utf8').on('data', onData);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`mega ${args.join(' ')} exited (${signal ?? code}) before ready; output:\n${out}`));
    });
  });
}

/** Sends SIGTERM (or `signal`) and waits for the exit. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  child.kill(signal);
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

export function tempDir(prefix = 'mega-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export { writeIni, type IniSections } from './ini.js';
