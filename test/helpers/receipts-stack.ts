/**
 * The receipts side end to end: a daemon with its ledger, its receipts endpoint on a fixed port
 * (so a restarted daemon is found again at the URL the simulator pushes to) and optionally its
 * webhook; the simulator configured to push TEMPLATESENDJOBFINISH there; and what the ledger must
 * say, derived from the simulator's own records (accepted sends and answered receipts) only.
 */
import type { MessageRecord, MessageState } from '../../src/protocol/message-record.js';
import type { ReceiptPush, ReceiptStats } from '../../src/simulator/receipts.js';
import type { DaemonStatus } from '../../src/server/control-protocol.js';
import type { IniSections } from './processes.js';
import { runMega } from './processes.js';
import { freePort } from './ports.js';
import { TEST_AES_KEY, TEST_WEBHOOK_SECRET, TEST_WECHAT_TOKEN } from './secrets.js';
import { startStack, type SimMessage, type SimulatorHandle, type Stack, type StackOptions } from './stack.js';

export const CALLBACK_PATH = '/wechat/callback';

/** The template the receipts tests send with. */
export const ORDER = { touser: '${OPENID}', template_id: 'tmpl-order', data: { product: { value: '${product}' } } };
/** The simulator refuses these openids for good: a dead Push, a rejected Send. */
export const BAD = [{ pattern: '^oBAD', errcode: 40003, errmsg: 'invalid openid' }];

/** WeChat's Status → the ledger state, spelled out here rather than taken from src/. */
export const STATE_OF_STATUS: Record<string, MessageState> = {
  success: 'delivered',
  'failed:user block': 'failed_user_block',
  'failed: system failed': 'failed_system',
};

export interface ReceiptsStackOptions extends StackOptions {
  simulator: SimulatorHandle;
  /** Safe mode: `[wechat] encoding_aes_key` set (the simulator must be configured with it too). */
  safe?: boolean;
  /** `[receipt] webhook_url`, signed with TEST_WEBHOOK_SECRET. */
  webhookUrl?: string;
  /** @defaultValue a free port */
  callbackPort?: number;
}

export interface ReceiptsStack extends Stack {
  callbackPort: number;
  callbackUrl: string;
}

/** A daemon (ledger on, `[callback] listen` on 127.0.0.1) beside the given simulator. */
export async function startReceiptsStack(o: ReceiptsStackOptions): Promise<ReceiptsStack> {
  const callbackPort = o.callbackPort ?? (await freePort());
  const extra: IniSections = {
    ledger: { enabled: 1 },
    wechat: { token: TEST_WECHAT_TOKEN, ...(o.safe ? { encoding_aes_key: TEST_AES_KEY } : {}) },
    callback: { listen: `127.0.0.1:${callbackPort}` },
    ...(o.webhookUrl ? { receipt: { webhook_url: o.webhookUrl, webhook_secret: TEST_WEBHOOK_SECRET } } : {}),
  };
  for (const [section, values] of Object.entries(o.ini ?? {})) extra[section] = { ...(extra[section] ?? {}), ...values };
  const stack = await startStack({ ...o, ini: extra });
  return { ...stack, callbackPort, callbackUrl: `http://127.0.0.1:${callbackPort}${CALLBACK_PATH}` };
}

export interface SimReceiptSettings {
  safe?: boolean;
  userBlockShare?: number;
  systemFailedShare?: number;
  seed?: number;
  delayMs?: number;
  timeoutMs?: number;
  statusFor?: Array<{ pattern: string; status: string }>;
}

/** Points the simulator's receipts at `url`, signed with the daemon's token (and key in safe mode). */
export async function configureSimReceipts(sim: SimulatorHandle, url: string, s: SimReceiptSettings = {}): Promise<void> {
  const receipts = {
    url,
    token: TEST_WECHAT_TOKEN,
    encodingAesKey: s.safe ? TEST_AES_KEY : null,
    userBlockShare: s.userBlockShare ?? 0,
    systemFailedShare: s.systemFailedShare ?? 0,
    seed: s.seed ?? 1,
    delayMs: s.delayMs ?? 0,
    statusFor: s.statusFor ?? [],
    ...(s.timeoutMs === undefined ? {} : { timeoutMs: s.timeoutMs }),
  };
  const r = await sim.post<{ error?: string }>('/_sim/config', { receipts });
  if (r.error) throw new Error(`simulator refused the receipts settings: ${r.error}`);
}

/** The simulator's whole receipt record. */
export async function simReceipts(sim: SimulatorHandle): Promise<{ receipts: ReceiptPush[]; stats: ReceiptStats }> {
  return sim.get('/_sim/receipts');
}

/** Waits until the simulator has no receipt scheduled or in flight. */
export async function receiptsIdle(sim: SimulatorHandle, timeoutMs = 30_000): Promise<void> {
  const r = await sim.post<{ idle: boolean }>('/_sim/receipts/idle', { timeoutMs });
  if (!r.idle) throw new Error(`the simulator's receipts were not idle within ${timeoutMs} ms`);
}

/** A control push (`push`, `bad-signature`, `replay`, `duplicate`, `unknown-msgid`, `raw`), waited for. */
export async function control(sim: SimulatorHandle, name: string, input: Record<string, unknown> = {}): Promise<ReceiptPush> {
  const r = await sim.post<{ receipt?: ReceiptPush; error?: string }>(`/_sim/receipts/${name}`, input);
  if (!r.receipt) throw new Error(`control ${name} refused: ${r.error}`);
  return r.receipt;
}

/** What the ledger must hold for one message WeChat accepted. */
export interface Expected {
  wechatMsgid: string;
  /** `sent` until a receipt for it was answered, then the state of the last one answered. */
  state: MessageState;
  /** The Status of that receipt. */
  status: string | null;
}

type SimAccepted = SimMessage & { msgid?: number };

/** client_msg_id → what the ledger must say, from the simulator's two records only. */
export async function expectedFromSimulator(sim: SimulatorHandle): Promise<Map<string, Expected>> {
  const out = new Map<string, Expected>();
  const byWechat = new Map<number, Expected>();
  for (const m of (await sim.messages()) as SimAccepted[]) {
    if (m.errcode !== 0 || m.duplicate || !m.client_msg_id || m.msgid === undefined) continue;
    const e: Expected = { wechatMsgid: String(m.msgid), state: 'sent', status: null };
    out.set(m.client_msg_id, e);
    byWechat.set(m.msgid, e);
  }
  for (const p of (await simReceipts(sim)).receipts) {
    if ((p.kind !== 'receipt' && p.kind !== 'duplicate') || p.outcome !== 'answered' || p.msgid === null || p.status === null) continue;
    const e = byWechat.get(p.msgid);
    if (!e) continue;
    e.state = STATE_OF_STATUS[p.status]!;
    e.status = p.status;
  }
  return out;
}

/**
 * Every difference between the ledger's rows and `expected`: a message WeChat accepted without
 * its row, state, WeChat msgid or failure Status; a row in a receipt state the simulator never
 * answered a receipt for. Empty when they agree exactly.
 */
export function ledgerProblems(rows: readonly MessageRecord[], expected: ReadonlyMap<string, Expected>): string[] {
  const problems: string[] = [];
  const byMsgid = new Map(rows.map((r) => [r.msgid, r]));
  for (const [msgid, e] of expected) {
    const r = byMsgid.get(msgid);
    if (!r) problems.push(`${msgid}: no row (WeChat: ${e.wechatMsgid} ${e.state})`);
    else if (r.state !== e.state || r.wechatMsgid !== e.wechatMsgid) problems.push(`${msgid}: ${r.state} ${r.wechatMsgid} (WeChat: ${e.state} ${e.wechatMsgid})`);
    else if (e.state.startsWith('failed_') && r.errmsg !== e.status) problems.push(`${msgid}: errmsg ${r.errmsg} (Status ${e.status})`);
    else if (e.state !== 'sent' && r.finalAt === null) problems.push(`${msgid}: ${r.state} without finalAt`);
  }
  for (const r of rows) {
    if (!expected.has(r.msgid) && Object.values(STATE_OF_STATUS).includes(r.state)) problems.push(`${r.msgid}: ${r.state} without a receipt`);
  }
  return problems;
}

/** How many expected messages are in each state. */
export function countStates(expected: ReadonlyMap<string, Expected>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of expected.values()) out[e.state] = (out[e.state] ?? 0) + 1;
  return out;
}

/** `mega <name> status --json`. */
export async function daemonStatus(configDir: string, name = 'wechat'): Promise<DaemonStatus> {
  const r = await runMega([name, 'status', '--json', '--config-dir', configDir]);
  if (r.code !== 0) throw new Error(`status exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as DaemonStatus;
}

/** The webhook id of a final row, as the daemon names the fact. */
export function factId(r: MessageRecord): string {
  return `${r.msgid}:${r.state}:${String(r.finalAt)}`;
}

export const FINAL: readonly MessageState[] = ['delivered', 'failed_user_block', 'failed_system', 'rejected', 'dead'];

/**
 * What WeChat does for a receipt that got no answer (it tries again later): every accepted
 * message whose receipts all went unanswered (the daemon was down) gets one more, with the
 * Status first drawn for it. Returns how many were pushed.
 */
export async function repushUnanswered(sim: SimulatorHandle): Promise<number> {
  const { receipts } = await simReceipts(sim);
  const answered = new Set(receipts.filter((p) => p.outcome === 'answered').map((p) => p.msgid));
  const first = new Map<number, ReceiptPush>();
  for (const p of receipts) if (p.kind === 'receipt' && p.msgid !== null && !first.has(p.msgid)) first.set(p.msgid, p);
  let n = 0;
  for (const [msgid, p] of first) {
    if (answered.has(msgid)) continue;
    const again = await control(sim, 'push', { msgid, status: p.status });
    if (again.outcome !== 'answered') throw new Error(`receipt for ${msgid} pushed again and not answered: ${again.httpStatus} ${again.error}`);
    n++;
  }
  return n;
}
