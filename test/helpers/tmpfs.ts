/**
 * A small tmpfs for tests that need a disk that really fills up (ENOSPC from the kernel, not
 * from a hook). Needs root (or CAP_SYS_ADMIN); tests skip with a notice when mounting fails,
 * except under CI (`process.env.CI` set), where they must run.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, statfsSync } from 'node:fs';

export type MountResult = { ok: true; dir: string } | { ok: false; reason: string };

/** Mounts a tmpfs of `size` (e.g. '2m') on `dir` (created if missing). */
export function mountTmpfs(dir: string, size: string): MountResult {
  try {
    mkdirSync(dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    return { ok: true, dir };
  } catch (err) {
    const e = err as { stderr?: Buffer; message?: string };
    const reason = (e.stderr?.toString().trim() || e.message || String(err)).split('\n')[0]!;
    return { ok: false, reason };
  }
}

/** Unmounts `dir`; lazily (`umount -l`) when it is still busy. Never throws. */
export function unmountTmpfs(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'ignore' });
  } catch {
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
    } catch {
      // not mounted (any more)
    }
  }
}

/** Free bytes on the file system holding `dir` (for unprivileged users). */
export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}
