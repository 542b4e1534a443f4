/**
 * The repository stands on its own: nothing in it reads or links a path outside it, and every
 * link and doc citation names a file it has. The checker is first shown to catch planted
 * violations in a folder of its own, so a pass on the repository means something.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';
import { tempDir } from '../helpers/processes.js';
import { checkRepository, formatViolation, repositoryFiles } from './references.js';

// Spelled in pieces so that this file does not itself hold what it plants.
const UP = '..';
const SIBLING = `${UP}/${'shared'}`;
const DOCS = 'doc' + 's';

function plant(root: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text);
  }
}

const fence = '```';

/** Good and bad references side by side; the bad ones are on lines that say BAD. */
const PLANTED: Record<string, string> = {
  'package.json': '{ "name": "x", "main": "./src/a.js" }\n',
  'README.md': [
    '# X',
    `The contract is [the spec](${SIBLING}/SPEC.md). BAD`,
    `See [the protocol](${DOCS}/PROTOCOL.md), [a section](#x), [the web](https://example.com/a/../../b),`,
    '[mail](mailto:a@b.c), [a folder](src/) and [its code](src/a.ts#L1).',
    'The [seed][seed] is gone. BAD',
    '',
    `[seed]: ${UP}/seed/README.zh.md`,
    '',
    fence + 'sh',
    `cat [not a link](${UP}/${UP}/in-a-code-block.md)`,
    fence,
    `Code spans are not links: \`[x](${UP}/nowhere.md)\`.`,
    '',
  ].join('\n'),
  [`${DOCS}/PROTOCOL.md`]: [
    '# Protocol',
    'Back to the [README](../README.md) and [the root](/package.json).',
    'A [typo](PROTOKOL.md). BAD',
    `An [image](${UP}/${UP}/logo.png). BAD`,
    '<a href="missing.html">html</a> BAD',
    '',
  ].join('\n'),
  'src/a.ts': [
    "import { b } from './b.js';",
    "const pkg = new URL('../package.json', import.meta.url); // from dist/src/ as from src/",
    "const root = new URL('../../', import.meta.url); // the root, seen from dist/src/",
    `const outside = '${UP}/${UP}/${UP}/elsewhere.txt'; // BAD`,
    `const fixture = \`${SIBLING}/golden-frames.txt\`; // BAD`,
    `// the rules are in ${DOCS}/PROTOCOL.md; the guarantees in ${DOCS}/RELIABILITY.md BAD`,
    '',
  ].join('\n'),
  'src/b.ts': 'export const b = 1;\n',
  'bin/run.sh': `#!/bin/sh\nnode ./src/a.js\ncat "${UP}/${UP}/notes/todo.txt" # BAD\n`,
  '.ci/run': `#!/usr/bin/env bash\ncd "$(dirname "$0")/.."\ncat '${UP}/${UP}/x' # BAD\n`,
  // Not part of a clone: never looked at.
  'node_modules/dep/README.md': `[up](${UP}/${UP}/${UP}/x.md)\n`,
  'dist/src/a.js': `const fixture = '${SIBLING}/x';\n`,
};

const EXPECTED = [
  `.ci/run:3: ${UP}/${UP}/x points outside the repository`,
  `README.md:2: ${SIBLING} names the sibling folder shared`,
  `README.md:2: ${SIBLING}/SPEC.md points outside the repository`,
  `README.md:7: ${UP}/seed/README.zh.md points outside the repository`,
  `bin/run.sh:3: ${UP}/${UP}/notes/todo.txt points outside the repository`,
  `${DOCS}/PROTOCOL.md:3: PROTOKOL.md links a file that does not exist`,
  `${DOCS}/PROTOCOL.md:4: ${UP}/${UP}/logo.png points outside the repository`,
  `${DOCS}/PROTOCOL.md:5: missing.html links a file that does not exist`,
  `src/a.ts:4: ${UP}/${UP}/${UP}/elsewhere.txt points outside the repository`,
  `src/a.ts:5: ${SIBLING} names the sibling folder shared`,
  `src/a.ts:6: ${DOCS}/RELIABILITY.md cites a doc that does not exist`,
];

function violations(root: string): string[] {
  return checkRepository(root).map(formatViolation).sort();
}

describe('the repository stands on its own', () => {
  it('the checker finds every planted violation, and only those (folder walk)', () => {
    const root = tempDir('mega-selfcontained-');
    plant(root, PLANTED);
    assert.deepEqual(violations(root), EXPECTED);
  });

  it('the checker reads the files git would commit, not the ignored ones (git work tree)', (t) => {
    try {
      execFileSync('git', ['--version'], { stdio: 'ignore' });
    } catch {
      t.skip('git is not installed');
      return;
    }
    const root = tempDir('mega-selfcontained-git-');
    plant(root, { ...PLANTED, '.gitignore': 'generated/\nnode_modules/\ndist/\n', 'generated/notes.md': `[x](${SIBLING}/x.md)\n` });
    execFileSync('git', ['init', '-q'], { cwd: root });
    execFileSync('git', ['add', 'README.md'], { cwd: root });
    assert.ok(!repositoryFiles(root).includes('generated/notes.md'));
    assert.ok(repositoryFiles(root).includes('src/a.ts'), 'an untracked, not ignored file is checked before its commit');
    assert.deepEqual(violations(root), EXPECTED);
  });

  it('nothing in this repository reads or links a path outside it, or links a missing file', () => {
    const found = checkRepository(REPO_ROOT).map(formatViolation);
    assert.deepEqual(found, [], `\n${found.join('\n')}`);
  });
});
