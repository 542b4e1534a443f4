/** Shared by the protocol tests: the golden frames file and byte-spelling helpers. */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
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

/** The golden frames, a fixture beside this file's source (its format is described at its top). */
export const GOLDEN_FRAMES_FILE = 'test/protocol/golden-frames.txt';

/**
 * name -> frame bytes, in file order. Each frame's `#:` field annotations must spell exactly its
 * bytes, so a wrong annotation fails every protocol test instead of misleading a reader.
 */
export function loadGoldenFrames(): Map<string, Buffer> {
  return parseGoldenFrames(readFileSync(join(repoRoot(), GOLDEN_FRAMES_FILE), 'utf8'));
}

const HEX = /^(?:[0-9a-f]{2})+$/i;

export function parseGoldenFrames(text: string): Map<string, Buffer> {
  const frames = new Map<string, Buffer>();
  let annotated = '';
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    // `#: <hex> <meaning>` annotates a field; `#:` indented further continues a meaning.
    const field = /^#: (\S+)/.exec(trimmed);
    if (field !== null) {
      if (!HEX.test(field[1]!)) throw new Error(`golden annotation does not start with the field's hex: ${trimmed}`);
      annotated += field[1]!.toLowerCase();
      continue;
    }
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const [name, hex, ...extra] = trimmed.split(/\s+/);
    if (name === undefined || hex === undefined || extra.length > 0 || !HEX.test(hex)) {
      throw new Error(`unreadable golden line: ${trimmed}`);
    }
    if (frames.has(name)) throw new Error(`golden frame ${name} appears twice`);
    if (annotated !== hex.toLowerCase()) {
      throw new Error(`the field annotations of golden frame ${name} spell ${annotated || 'nothing'}, not its bytes ${hex}`);
    }
    annotated = '';
    frames.set(name, Buffer.from(hex, 'hex'));
  }
  if (annotated !== '') throw new Error('golden field annotations after the last frame');
  return frames;
}

/** Spells a frame out: number arrays are raw bytes, strings are latin1 text. */
export function bytes(...parts: Array<number[] | string>): Buffer {
  return Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part, 'latin1') : Buffer.from(part))));
}

/** Seeded PRNG so a fuzz failure reproduces. */
export { seededRandom as prng } from '../helpers/prng.js';
