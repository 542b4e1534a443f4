/** retryWhileJetStreamStarts: a daemon started while JetStream elects a leader waits; a bad option fails at once. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { retryWhileJetStreamStarts } from '../../src/server/queue-link.js';

const silent = pino({ level: 'silent' });

describe('retryWhileJetStreamStarts', () => {
  it('tries again while the open fails, and returns what the first success returns', async () => {
    let calls = 0;
    const value = await retryWhileJetStreamStarts(
      'queue',
      async () => {
        if (++calls < 3) throw Object.assign(new Error('timeout'), { name: 'TimeoutError' });
        return 'opened';
      },
      silent,
      10_000,
    );
    assert.equal(value, 'opened');
    assert.equal(calls, 3);
  });

  it('a bad option or refused credentials fail at once; a failure past the wait is thrown', async () => {
    let calls = 0;
    await assert.rejects(
      retryWhileJetStreamStarts('queue', async () => {
        calls++;
        throw new TypeError('JetStreamQueue option name is not valid');
      }, silent),
      TypeError,
    );
    await assert.rejects(
      retryWhileJetStreamStarts('queue', async () => {
        calls++;
        throw Object.assign(new Error('Authorization Violation'), { name: 'AuthorizationError' });
      }, silent),
      /Authorization/,
    );
    assert.equal(calls, 2);
    await assert.rejects(retryWhileJetStreamStarts('queue', async () => Promise.reject(new Error('timeout')), silent, 500), /timeout/);
  });
});
