/**
 * The settings of the simulator's delivery receipts (`receipts` in SimulatorOptions and in
 * `POST /_sim/config`), their defaults and their validation. Kept apart from the pusher so that
 * the simulator can check a patch before it changes anything (docs/SIMULATOR.md, "Delivery receipts").
 */
import { parseEncodingAesKey } from '../wechat/callback-crypto.js';

/** The `Status` values WeChat writes into a TEMPLATESENDJOBFINISH event, spelled exactly as WeChat does. */
export const RECEIPT_STATUSES = ['success', 'failed:user block', 'failed: system failed'] as const;
export type ReceiptStatus = (typeof RECEIPT_STATUSES)[number];

/** Receipts to openids matching `pattern` (a RegExp source) carry `status`; the first matching rule wins over the shares. */
export interface ReceiptStatusRule {
  pattern: string;
  status: ReceiptStatus;
}

/** The token a receipt is signed with when none is configured. */
export const SIMULATOR_DEFAULT_RECEIPT_TOKEN = 'simulator_token';

export interface ReceiptsConfig {
  /** The server URL receipts are POSTed to; `null` turns receipts off. @defaultValue null */
  url: string | null;
  /** The shared token of the signatures. @defaultValue {@link SIMULATOR_DEFAULT_RECEIPT_TOKEN} */
  token: string;
  /** Safe mode's EncodingAESKey (43 characters); `null` = plaintext mode. @defaultValue null */
  encodingAesKey: string | null;
  /** The account's original id, the receipts' `ToUserName`. @defaultValue 'gh_simulator' */
  toUserName: string;
  /** Wait between accepting a message and pushing its receipt, in ms. @defaultValue 0 */
  delayMs: number;
  /** Share (0..1) of receipts drawn as `failed:user block`. @defaultValue 0 */
  userBlockShare: number;
  /** Share (0..1) of receipts drawn as `failed: system failed`. @defaultValue 0 */
  systemFailedShare: number;
  /** Rules by openid, checked before the shares are drawn. @defaultValue [] */
  statusFor: ReceiptStatusRule[];
  /** Seed of the draw: the same seed and the same accepted messages give the same statuses. @defaultValue 1 */
  seed: number;
  /** How long one attempt waits for an answer before it counts as unanswered, in ms. @defaultValue 5000 */
  timeoutMs: number;
  /** Attempts in all for a receipt that gets no answer (WeChat makes 3). @defaultValue 3 */
  attempts: number;
}

export type ReceiptsPatch = Partial<ReceiptsConfig>;

export const RECEIPTS_DEFAULTS: Readonly<ReceiptsConfig> = Object.freeze({
  url: null,
  token: SIMULATOR_DEFAULT_RECEIPT_TOKEN,
  encodingAesKey: null,
  toUserName: 'gh_simulator',
  delayMs: 0,
  userBlockShare: 0,
  systemFailedShare: 0,
  statusFor: [],
  seed: 1,
  timeoutMs: 5000,
  attempts: 3,
});

const KEYS = Object.keys(RECEIPTS_DEFAULTS) as (keyof ReceiptsConfig)[];

function nonNegative(key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new TypeError(`receipts.${key} must be a non-negative number`);
  return v;
}

function share(key: string, v: unknown): number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new TypeError(`receipts.${key} must be a number from 0 to 1`);
  return v;
}

export function isReceiptStatus(v: unknown): v is ReceiptStatus {
  return (RECEIPT_STATUSES as readonly unknown[]).includes(v);
}

/** Validates the `receipts` part of a patch; throws TypeError naming the key (never echoing the token or key). */
export function validateReceiptsPatch(patch: unknown): ReceiptsPatch {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) throw new TypeError('receipts must be a JSON object');
  const p = patch as Record<string, unknown>;
  const out: ReceiptsPatch = {};
  for (const key of Object.keys(p)) {
    const v = p[key];
    switch (key as keyof ReceiptsConfig) {
      case 'url': {
        if (v === null) {
          out.url = null;
          break;
        }
        let u: URL | undefined;
        try {
          u = typeof v === 'string' ? new URL(v) : undefined;
        } catch {
          u = undefined;
        }
        if (u === undefined || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
          throw new TypeError('receipts.url must be an http(s) URL or null');
        }
        out.url = v as string;
        break;
      }
      case 'token':
        if (typeof v !== 'string' || v === '') throw new TypeError('receipts.token must be a non-empty string');
        out.token = v;
        break;
      case 'encodingAesKey':
        if (v === null) out.encodingAesKey = null;
        else if (typeof v === 'string') {
          parseEncodingAesKey(v); // its error names the length, never the text
          out.encodingAesKey = v;
        } else throw new TypeError('receipts.encodingAesKey must be a string of 43 characters or null');
        break;
      case 'toUserName':
        if (typeof v !== 'string' || v === '') throw new TypeError('receipts.toUserName must be a non-empty string');
        out.toUserName = v;
        break;
      case 'delayMs':
        out.delayMs = nonNegative('delayMs', v);
        break;
      case 'timeoutMs':
        if (nonNegative('timeoutMs', v) === 0) throw new TypeError('receipts.timeoutMs must be greater than 0');
        out.timeoutMs = v as number;
        break;
      case 'attempts':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 10) throw new TypeError('receipts.attempts must be an integer from 1 to 10');
        out.attempts = v;
        break;
      case 'userBlockShare':
        out.userBlockShare = share('userBlockShare', v);
        break;
      case 'systemFailedShare':
        out.systemFailedShare = share('systemFailedShare', v);
        break;
      case 'seed':
        if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError('receipts.seed must be an integer');
        out.seed = v;
        break;
      case 'statusFor': {
        if (!Array.isArray(v)) throw new TypeError('receipts.statusFor must be an array of {pattern, status}');
        out.statusFor = v.map((r: unknown, i) => {
          const rule = r as { pattern?: unknown; status?: unknown } | null;
          if (rule === null || typeof rule !== 'object' || typeof rule.pattern !== 'string' || !isReceiptStatus(rule.status)) {
            throw new TypeError(`receipts.statusFor[${i}] must be {pattern: string, status: ${RECEIPT_STATUSES.map((s) => JSON.stringify(s)).join(' | ')}}`);
          }
          try {
            new RegExp(rule.pattern);
          } catch {
            throw new TypeError(`receipts.statusFor[${i}].pattern is not a valid regular expression`);
          }
          return { pattern: rule.pattern, status: rule.status };
        });
        break;
      }
      default:
        throw new TypeError(`unknown receipts key ${JSON.stringify(key)} (known: ${KEYS.join(', ')})`);
    }
  }
  return out;
}

/** `base` with the patch applied, checked as a whole (the shares may not add up to more than 1). */
export function mergeReceiptsConfig(base: Readonly<ReceiptsConfig>, patch: unknown): ReceiptsConfig {
  const next: ReceiptsConfig = { ...structuredClone(base), ...validateReceiptsPatch(patch) };
  if (next.userBlockShare + next.systemFailedShare > 1 + 1e-9) {
    throw new TypeError('receipts.userBlockShare + receipts.systemFailedShare must not exceed 1');
  }
  return next;
}
