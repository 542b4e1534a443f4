/**
 * The `/_sim/receipts` control endpoints: the pusher's record and test controls over HTTP, for a
 * simulator running in another process than the test. Answers are computed here and written by
 * the simulator, which owns the socket. Endpoints: docs/SIMULATOR.md, "Delivery receipts".
 */
import type { ReceiptPush, ReceiptPusher } from './receipts.js';

export interface ControlAnswer {
  status: number;
  payload: unknown;
}

type PushAction = (p: ReceiptPusher, input: Record<string, unknown>) => Promise<ReceiptPush>;

/** The fields each control accepts besides `wait`; anything else is refused, so a typo is not silently ignored. */
const ACTIONS: Record<string, { fields: string[]; run: PushAction }> = {
  push: { fields: ['msgid', 'status'], run: (p, i) => p.push(i as never) },
  'bad-signature': { fields: ['msgid', 'status', 'which'], run: (p, i) => p.pushBadSignature(i) },
  replay: { fields: ['of', 'msgid', 'status', 'xml'], run: (p, i) => p.pushReplay(i) },
  duplicate: { fields: ['of'], run: (p, i) => p.pushDuplicate(i) },
  'unknown-msgid': { fields: ['msgid', 'openid', 'status'], run: (p, i) => p.pushUnknownMsgid(i) },
  raw: { fields: ['method', 'query', 'body', 'encrypt'], run: (p, i) => p.pushRaw(i) },
  'subscribe-popup': { fields: ['openid', 'list', 'popupScene'], run: (p, i) => p.pushSubscribePopup(i as never) },
  'subscribe-change': { fields: ['openid', 'list'], run: (p, i) => p.pushSubscribeChange(i as never) },
};

const INTEGER_FIELDS = new Set(['msgid', 'of']);

function parseObject(text: string | null): Record<string, unknown> {
  if (text === null) throw new TypeError('body too large');
  if (text.trim() === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new TypeError('body must be JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TypeError('body must be a JSON object');
  return v as Record<string, unknown>;
}

/** Answers `method path` under `/_sim/receipts`; `text` is the request body (null when too large). */
export async function receiptsControl(
  pusher: ReceiptPusher,
  method: string,
  path: string,
  query: URLSearchParams,
  text: string | null,
): Promise<ControlAnswer> {
  try {
    if (method === 'GET' && path === '/_sim/receipts') {
      const sinceText = query.get('since');
      const since = sinceText === null ? 0 : Number(sinceText);
      if (!Number.isInteger(since) || since < 0) throw new TypeError('since must be a non-negative integer');
      const all = pusher.receipts();
      return { status: 200, payload: { next: all.length, stats: pusher.stats(), receipts: all.slice(since) } };
    }
    const name = path.slice('/_sim/receipts/'.length);
    if (method === 'POST' && name === 'idle') {
      const input = parseObject(text);
      const timeoutMs = input['timeoutMs'] ?? 30_000;
      if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) throw new TypeError('timeoutMs must be a non-negative number');
      const idle = await pusher.idle(timeoutMs);
      return { status: 200, payload: { idle, stats: pusher.stats() } };
    }
    const action = path.startsWith('/_sim/receipts/') ? ACTIONS[name] : undefined;
    if (method !== 'POST' || action === undefined) {
      return { status: 404, payload: { error: `no control endpoint ${method} ${path}` } };
    }
    const input = parseObject(text);
    const wait = input['wait'] ?? true;
    if (typeof wait !== 'boolean') throw new TypeError('wait must be a boolean');
    delete input['wait'];
    for (const key of Object.keys(input)) {
      if (!action.fields.includes(key)) throw new TypeError(`unknown field ${JSON.stringify(key)} (known: ${[...action.fields, 'wait'].join(', ')})`);
      if (INTEGER_FIELDS.has(key) && !Number.isSafeInteger(input[key])) throw new TypeError(`${key} must be an integer`);
    }
    if (input['query'] !== undefined && (input['query'] === null || typeof input['query'] !== 'object' || Array.isArray(input['query']))) {
      throw new TypeError('query must be an object of strings');
    }
    const before = pusher.receipts().length;
    const done = action.run(pusher, input);
    if (!wait) {
      done.catch(() => {}); // its outcome is in the record
      return { status: 202, payload: { receipt: pusher.receipts(before)[0] } };
    }
    return { status: 200, payload: { receipt: await done } };
  } catch (err) {
    if (err instanceof TypeError) return { status: 400, payload: { error: err.message } };
    throw err;
  }
}
