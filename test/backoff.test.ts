import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay } from '../src/backoff.js';

describe('backoffDelay', () => {
  const o = { baseMs: 100, maxMs: 1000 };
  it('doubles from baseMs per attempt up to maxMs, jittered between half and all of it', () => {
    const exp = [100, 200, 400, 800, 1000, 1000];
    assert.deepEqual(exp.map((_, a) => backoffDelay(a, o, () => 0)), exp.map((e) => e / 2));
    assert.deepEqual(exp.map((_, a) => backoffDelay(a, o, () => 1)), exp);
    assert.equal(backoffDelay(2, o, () => 0.5), 300);
  });
  it('without jitter is the exponential value itself; negative and huge attempts are clamped', () => {
    assert.deepEqual([0, 1, 2, 3, 4].map((a) => backoffDelay(a, { ...o, jitter: false }, () => 0)), [100, 200, 400, 800, 1000]);
    assert.equal(backoffDelay(-3, { ...o, jitter: false }), 100);
    assert.equal(backoffDelay(1e9, { ...o, jitter: false }), 1000);
    assert.equal(backoffDelay(1e9, { baseMs: 1, maxMs: Number.MAX_SAFE_INTEGER, jitter: false }), 2 ** 30);
  });
});
