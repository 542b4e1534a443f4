/**
 * The README's quick start is run by every newcomer: each push/send line in it must give every
 * variable the sample template uses, or the message arrives with `${price}` in it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { SAMPLE_TEMPLATE, SAMPLE_TEMPLATE_KEY } from '../../src/cli/demo.js';
import { compileTemplate, missingVariables } from '../../src/templates/index.js';
import { repoRoot } from '../protocol/helpers.js';

describe('README quick start', () => {
  it('every push/send of the sample template gives all of its variables', () => {
    const readme = readFileSync(path.join(repoRoot(), 'README.md'), 'utf8');
    const sample = compileTemplate(SAMPLE_TEMPLATE_KEY, JSON.stringify(SAMPLE_TEMPLATE));
    const line = new RegExp(`mega wechat (?:push|send) \\S+ ${SAMPLE_TEMPLATE_KEY}(?: --data '([^']*)')?`, 'g');
    const calls = [...readme.matchAll(line)];
    assert.ok(calls.length >= 2, 'the quick start pushes and sends the sample template');
    for (const [text, data] of calls) {
      const vars = data === undefined ? null : (JSON.parse(data) as Record<string, unknown>);
      assert.deepEqual(missingVariables(sample, vars), [], text);
    }
  });
});
