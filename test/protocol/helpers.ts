/** Shared by the protocol tests: the golden frames file and byte-spelling helpers. */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder holding package.json; the compiled test runs from dist/test/protocol/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('package.json not found above the test file');
    dir = parent;
  }
  return dir;
}

/** name -> frame bytes, in file order. */
export function loadGoldenFrames(): Map<string, Buffer> {
  const file = resolve(repoRoot(), '../shared/protocol/golden-frames.txt');
  const frames = new Map<string, Buffer>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const text = line.trim();
    if (text === '' || text.startsWith('#')) continue;
    const [name, hex, ...extra] = text.split(/\s+/);
    if (name === undefined || hex === undefined || extra.length > 0 || !/^(?:[0-9a-f]{2})+$/i.test(hex)) {
      throw new Error(`unreadable golden line: ${text}`);
    }
    frames.set(name, Buffer.from(hex, 'hex'));
  }
  return frames;
}

/** Spells a frame out: number arrays are raw bytes, strings are latin1 text. */
export function bytes(...parts: Array<number[] | string>): Buffer {
  return Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part, 'latin1') : Buffer.from(part))));
}

/** Seeded PRNG so a fuzz failure reproduces. */
export { seededRandom as prng } from '../helpers/prng.js';
