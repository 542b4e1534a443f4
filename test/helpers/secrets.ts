/**
 * Every secret the tests hand to a daemon (app secrets, auth tokens, database passwords).
 * `npm test` (test/run.ts) fails when any of them shows up in a file the run wrote or in
 * its output: use these constants, so a new secret is scanned for too.
 */
export const TEST_APP_SECRET = 'test-secret-0123456789abcdef';
export const TEST_AUTH_TOKEN = 'tok-Very-Secret-123';
export const TEST_ENV_AUTH_TOKEN = 'env-token-42-Qx9';
export const TEST_DB_PASSWORD = 'pw-must-not-leak';

export const KNOWN_TEST_SECRETS = [TEST_APP_SECRET, TEST_AUTH_TOKEN, TEST_ENV_AUTH_TOKEN, TEST_DB_PASSWORD];
