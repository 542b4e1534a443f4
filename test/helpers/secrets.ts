/**
 * Every secret the tests hand to a daemon (app secrets, auth tokens, database passwords).
 * `npm test` (test/run.ts) fails when any of them shows up in a file the run wrote or in
 * its output: use these constants, so a new secret is scanned for too.
 */
export const TEST_APP_SECRET = 'test-secret-0123456789abcdef';
export const TEST_AUTH_TOKEN = 'tok-Very-Secret-123';
export const TEST_ENV_AUTH_TOKEN = 'env-token-42-Qx9';
export const TEST_DB_PASSWORD = 'pw-must-not-leak';
/** The receipts endpoint's [wechat] token and encoding_aes_key, and the webhook's HMAC key. */
export const [TEST_WECHAT_TOKEN, TEST_AES_KEY, TEST_WEBHOOK_SECRET] = ['cbTokSecret5150', 'MegaE2eReceiptsSafeModeKey0123456789abcdefg', 'whk-Secret-Hmac-8086'] as const;

export const KNOWN_TEST_SECRETS = [TEST_APP_SECRET, TEST_AUTH_TOKEN, TEST_ENV_AUTH_TOKEN, TEST_DB_PASSWORD, TEST_WECHAT_TOKEN, TEST_AES_KEY, TEST_WEBHOOK_SECRET];
