import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimiter, RateMeter } from '../../src/dispatch/rate.js';

describe('RateLimiter', () => {
  it('grants evenly: 100/s over 10 simulated seconds in 1 ms steps gives 1000 ± 5, never a burst', () => {
    const limiter = new RateLimiter(100, 0);
    let granted = 0;
    let maxPer10ms = 0;
    let window = 0;
    for (let t = 1; t <= 10000; t++) {
      const g = limiter.take(1000, t);
      granted += g;
      window += g;
      if (t % 10 === 0) {
        maxPer10ms = Math.max(maxPer10ms, window);
        window = 0;
      }
    }
    assert.ok(Math.abs(granted - 1000) <= 5, `granted ${granted}`);
    assert.ok(maxPer10ms <= 6, `at most a few permits in any 10 ms, got ${maxPer10ms}`);
  });

  it('does not save up idle time beyond its small burst', () => {
    const limiter = new RateLimiter(100, 0);
    assert.equal(limiter.take(1000, 60_000), 5, 'after a minute idle: only 50 ms worth');
    assert.equal(limiter.take(1000, 60_000), 0);
    assert.equal(limiter.waitMs(), 10);
  });

  it('0 means unlimited; a negative rate is refused', () => {
    assert.equal(new RateLimiter(0, 0).take(12345, 0), 12345);
    assert.throws(() => new RateLimiter(-1, 0), /ratePerSecond/);
  });
});

describe('RateMeter', () => {
  it('averages the last full seconds and forgets old ones', () => {
    const meter = new RateMeter(10);
    for (let s = 0; s < 10; s++) meter.record(50, 1_000_000 + s * 1000 + 500);
    assert.equal(meter.perSecond(1_000_000 + 10_000), 50);
    assert.equal(meter.perSecond(1_000_000 + 60_000), 0);
  });
});
