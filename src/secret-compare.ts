import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Compares a secret someone presented with the expected one through their digests, so neither
 * the length nor the content of the expected secret leaks through timing. Used for the TCP
 * port's `auth` frame and the HTTP side's Bearer token.
 */
export function secretsMatch(expected: string, given: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}
