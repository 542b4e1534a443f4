/** `--since` of `mega <name> msg list`: a time ago or an ISO time, anything else refused. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from 'commander';
import { parseSince } from '../../src/cli/msg-commands.js';

describe('msg list --since', () => {
  const now = Date.UTC(2026, 11, 2, 12, 0, 0);
  it('reads a time ago in seconds, minutes, hours or days', () => {
    assert.equal(parseSince('90s', now), now - 90_000);
    assert.equal(parseSince('30m', now), now - 1_800_000);
    assert.equal(parseSince('2h', now), now - 7_200_000);
    assert.equal(parseSince('7d', now), now - 7 * 86_400_000);
    assert.equal(parseSince('0s', now), now);
  });

  it('reads an ISO 8601 date or time', () => {
    assert.equal(parseSince('2026-12-02T08:00:00Z', now), Date.UTC(2026, 11, 2, 8));
    assert.equal(parseSince('2026-12-02T08:00:00.250+01:00', now), Date.UTC(2026, 11, 2, 7, 0, 0, 250));
    assert.equal(parseSince('2026-12-02', now), Date.UTC(2026, 11, 2));
    assert.equal(parseSince('2026-12-02T08:00', now), new Date(2026, 11, 2, 8).getTime(), 'without a zone: local time');
  });

  it('refuses anything else', () => {
    for (const text of ['', 'yesterday', '2h ago', '-2h', '1.5h', '2w', '12/02/2026', '2026-13-45', '1764662400000', 'h']) {
      assert.throws(() => parseSince(text, now), (e: unknown) => e instanceof InvalidArgumentError && /a time ago \(90s, 30m, 2h, 7d\) or an ISO time/.test((e as Error).message), text);
    }
  });
});
