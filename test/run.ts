/**
 * `npm test`: runs every compiled test file with Node's test runner, with TMPDIR pointing at
 * a fresh folder, then scans everything the run wrote there (daemon logs, queue files, config
 * folders) and everything it printed for the secrets the tests use. A leak fails the run.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KNOWN_TEST_SECRETS } from './helpers/secrets.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function find(dir: string, test: (file: string) => boolean, out: string[] = []): string[] {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) find(full, test, out);
    else if (entry.isFile() && test(full)) out.push(full);
  }
  return out;
}

/** An access token in clear text: `access_token=...` or `"access_token":"..."` not redacted. */
const TOKEN_IN_CLEAR = /access_token(?:=|"\s*:\s*")(?!\[Redacted\])[A-Za-z0-9_-]{20,}/;

function leaksIn(text: string): string[] {
  const found = KNOWN_TEST_SECRETS.filter((s) => text.includes(s));
  if (TOKEN_IN_CLEAR.test(text)) found.push('an access token');
  return found;
}

const files = find(here, (f) => f.endsWith('.test.js')).sort();
const only = process.argv.slice(2);
const selected = only.length > 0 ? files.filter((f) => only.some((o) => f.includes(o))) : files;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mega-test-run-'));

const child = spawn(process.execPath, ['--test', '--test-concurrency=2', ...selected], {
  env: { ...process.env, TMPDIR: tmp },
  stdio: ['ignore', 'pipe', 'pipe'],
});
const printed: Buffer[] = [];
child.stdout!.on('data', (d: Buffer) => {
  printed.push(d);
  process.stdout.write(d);
});
child.stderr!.on('data', (d: Buffer) => {
  printed.push(d);
  process.stderr.write(d);
});
const code: number = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)));

const leaks: string[] = [];
for (const s of leaksIn(Buffer.concat(printed).toString('utf8'))) leaks.push(`test output: ${s}`);
let scanned = 0;
for (const file of find(tmp, () => true)) {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    continue; // removed while we looked
  }
  if (size > 64 * 1024 * 1024 || file.endsWith('.ini')) continue; // the ini files hold the secrets on purpose
  scanned++;
  for (const s of leaksIn(readFileSync(file, 'utf8'))) leaks.push(`${path.relative(tmp, file)}: ${s}`);
}
if (leaks.length > 0) {
  process.stderr.write(`\nsecret scan: ${leaks.length} leak(s) in ${scanned} files and the test output (kept in ${tmp}):\n  ${leaks.join('\n  ')}\n`);
  process.exit(1);
}
process.stdout.write(`\nsecret scan: no secret in ${scanned} files written by the tests nor in their output\n`);
rmSync(tmp, { recursive: true, force: true, maxRetries: 2 });
process.exit(code);
