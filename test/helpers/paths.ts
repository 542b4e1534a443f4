import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The repository root (tests run compiled from dist/test/...). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** The compiled CLI entry. */
export const MEGA_BIN = path.join(REPO_ROOT, 'dist/bin/mega.js');
