/**
 * The web console's files (src/http/console/: plain HTML, CSS and ES modules, no build step),
 * read once at start and served from memory. They hold no data: every number comes from the
 * API after login, so they are served without authentication.
 */

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** Next to the sources, whether this runs from src/ (tsx) or from dist/src/ (compiled). */
export function consoleDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const inSrc = path.join(here, 'console');
  const fromDist = path.resolve(here, '..', '..', '..', 'src', 'http', 'console');
  for (const dir of [inSrc, fromDist]) {
    try {
      if (readdirSync(dir).includes('index.html')) return dir;
    } catch {
      // not this one
    }
  }
  return fromDist;
}

export interface Asset {
  type: string;
  body: Buffer;
}

/** name → file, for names like `app.js` (no folders: nothing outside the console folder can be asked for). */
export function loadConsoleAssets(dir = consoleDir()): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return assets; // a package without the console: the API still works
  }
  for (const name of names) {
    const type = TYPES[path.extname(name)];
    if (type && /^[\w.-]+$/.test(name)) assets.set(name, { type, body: readFileSync(path.join(dir, name)) });
  }
  return assets;
}
