import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SendHistory } from '../../src/metrics/index.js';

describe('SendHistory', () => {
  it('counts per interval, returns every interval of the window oldest first, gaps as zeros', () => {
    let now = 1_000_000_000_000; // a multiple of 10 s
    const h = new SendHistory(10, 6, () => now);
    h.record('sent');
    h.record('sent');
    h.record('failed');
    now += 25_000; // two intervals later
    h.record('sent');
    const s = h.snapshot();
    assert.equal(s.intervalSeconds, 10);
    assert.equal(s.points.length, 6);
    assert.deepEqual(
      s.points.map((p) => [p.t - 1_000_000_000_000, p.sent, p.failed]),
      [
        [-30_000, 0, 0],
        [-20_000, 0, 0],
        [-10_000, 0, 0],
        [0, 2, 1],
        [10_000, 0, 0],
        [20_000, 1, 0],
      ],
    );
  });

  it('forgets an interval once the ring comes round to its slot again', () => {
    let now = 0;
    const h = new SendHistory(10, 3, () => now);
    h.record('sent');
    now = 30_000; // the same slot, one lap later
    assert.deepEqual(h.snapshot().points.map((p) => p.sent), [0, 0, 0], 'the old count is stale, not shown as the new interval');
    h.record('failed');
    assert.deepEqual(h.snapshot().points.map((p) => [p.sent, p.failed]), [[0, 0], [0, 0], [0, 1]]);
  });
});
