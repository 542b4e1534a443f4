/**
 * The ledger store thread's CPU per message: reading journal segments back and writing them to
 * SQLite (`applyJournalFiles` → `upsert`), the way this version does it against the way it was
 * done before (JSON lines, one upsert statement per row, three secondary indexes), in the same
 * run, on the same machine, with the same messages. Not part of `npm run bench`: one process,
 * no daemon, ~30 s.
 *
 *   node dist/bench/ledger-store.js [--messages 50000] [--batch 1000] [--prefill 100000] [--rounds 3]
 *
 * Two shapes of the journal, each applied one segment per write as the ledger does every 100 ms:
 * - `split`: a message's `queued` in one segment and its `sent` in the next (delivery trails
 *   ingest, as in the end-to-end bench): every message costs a row insert and a row update;
 * - `coalesced`: both lines in the same segment: one row insert per message.
 * CPU is process.cpuUsage() (user + system) around the applies, segment files written
 * beforehand; the table holds `--prefill` rows first, so its indexes are not trivially small.
 * Each figure is the median of the rounds, old and new alternating, each on a fresh database.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { mergeChange, type LedgerChange } from '../src/ledger/change.js';
import { applyJournalFiles, parseJournal, queuedLine, sentLine } from '../src/ledger/journal.js';
import { openLedgerStore } from '../src/ledger/store.js';
import type { MessageRecord } from '../src/protocol/message-record.js';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '50000' },
    batch: { type: 'string', default: '1000' },
    prefill: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '3' },
  },
});
const MESSAGES = Number(args.messages);
const BATCH = Number(args.batch);
const PREFILL = Number(args.prefill);
const ROUNDS = Number(args.rounds);

const T0 = 1_764_680_000_000;
const msgidOf = (i: number): string => `m${(T0 * 1000 + i).toString(36)}`;
const openidOf = (i: number): string => `oBenchUser${String(i % 100_000).padStart(6, '0')}Abcdefghijklm`;

// ------------------------------------------------------------------ the way before (commit b24bd76)

const oldQueuedLine = (msgid: string, openid: string, key: string, kind: string, at: number): string =>
  `{"msgid":"${msgid}","state":"queued","openid":${JSON.stringify(openid)},"key":${JSON.stringify(key)},"kind":"${kind}","attempts":0,"queuedAt":${at},"at":${at}}`;
const oldSentLine = (msgid: string, wechatMsgid: string, attempts: number, at: number): string =>
  `{"msgid":"${msgid}","state":"sent","attempts":${attempts},"wechatMsgid":"${wechatMsgid}","errcode":0,"errmsg":"ok","sentAt":${at},"at":${at}}`;

function oldReadJournal(text: string): LedgerChange[] {
  const changes: LedgerChange[] = [];
  let start = 0;
  for (;;) {
    const end = text.indexOf('\n', start);
    if (end < 0) break;
    let line: LedgerChange | null;
    try {
      line = JSON.parse(text.slice(start, end)) as LedgerChange;
    } catch {
      break;
    }
    if (typeof line?.state !== 'string' || typeof line.msgid !== 'string') break;
    changes.push(line);
    start = end + 1;
  }
  return changes;
}

const COLUMNS = 'msgid, openid, tmpl_key, kind, state, attempts, wechat_msgid, errcode, errmsg, queued_at, sent_at, final_at, updated_at';
const KEEPS_RECEIPT = (v: (col: string) => string): string =>
  `(${v('state')} = 'sent' AND state IN ('delivered', 'failed_user_block', 'failed_system') AND wechat_msgid = ${v('wechat_msgid')})`;

/** The SQLite store as it was: three secondary indexes, one statement run per row. */
function oldStore(file: string): { upsert(changes: readonly LedgerChange[]): void; close(): void } {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  const t = 'mega_message';
  db.exec(`CREATE TABLE IF NOT EXISTS ${t} (
  msgid TEXT NOT NULL PRIMARY KEY, openid TEXT NOT NULL DEFAULT '', tmpl_key TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, wechat_msgid TEXT, errcode INTEGER, errmsg TEXT,
  queued_at INTEGER NOT NULL DEFAULT 0, sent_at INTEGER, final_at INTEGER, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ${t}_wechat_msgid ON ${t} (wechat_msgid);
CREATE INDEX IF NOT EXISTS ${t}_openid_queued ON ${t} (openid, queued_at);
CREATE INDEX IF NOT EXISTS ${t}_updated ON ${t} (updated_at);
CREATE TABLE IF NOT EXISTS mega_receipt (wechat_msgid TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL, status TEXT NOT NULL DEFAULT '', openid TEXT NOT NULL DEFAULT '', at INTEGER NOT NULL);`);
  const stmt = db.prepare(
    `INSERT INTO ${t} (${COLUMNS}) VALUES (${Array(13).fill('?').join(', ')})
ON CONFLICT(msgid) DO UPDATE SET
  openid = CASE WHEN excluded.openid = '' THEN openid ELSE excluded.openid END,
  tmpl_key = CASE WHEN excluded.tmpl_key = '' THEN tmpl_key ELSE excluded.tmpl_key END,
  kind = CASE WHEN excluded.kind = '' THEN kind ELSE excluded.kind END,
  state = CASE WHEN excluded.state = 'queued' AND excluded.attempts = 0 AND state <> 'queued' THEN state WHEN ${KEEPS_RECEIPT((c) => `excluded.${c}`)} THEN state ELSE excluded.state END,
  attempts = MAX(attempts, excluded.attempts),
  wechat_msgid = COALESCE(excluded.wechat_msgid, wechat_msgid),
  errcode = COALESCE(excluded.errcode, errcode),
  errmsg = CASE WHEN ${KEEPS_RECEIPT((c) => `excluded.${c}`)} THEN errmsg ELSE COALESCE(excluded.errmsg, errmsg) END,
  queued_at = CASE WHEN excluded.queued_at = 0 THEN queued_at ELSE excluded.queued_at END,
  sent_at = COALESCE(excluded.sent_at, sent_at),
  final_at = COALESCE(excluded.final_at, final_at),
  updated_at = MAX(updated_at, excluded.updated_at)`,
  );
  const anyReceipt = db.prepare('SELECT 1 FROM mega_receipt LIMIT 1').pluck();
  const apply = db.transaction((changes: readonly LedgerChange[]) => {
    const finals = new Set<string>();
    const receipts = anyReceipt.get() !== undefined;
    for (const c of changes) {
      stmt.run([
        c.msgid, c.openid ?? '', c.key ?? '', c.kind ?? '', c.state, c.attempts ?? 0, c.wechatMsgid ?? null, c.errcode ?? null,
        c.errmsg === undefined ? null : c.errmsg.slice(0, 512), c.queuedAt ?? 0, c.sentAt ?? null, c.finalAt ?? null, c.at,
      ]);
      if (c.state === 'rejected' || c.state === 'dead') finals.add(c.msgid);
      if (receipts) throw new Error('no receipts in this bench');
    }
  });
  return { upsert: (changes) => apply(changes), close: () => db.close() };
}

/** applyJournalFiles as it was, for a file of changes only. */
function oldApply(store: ReturnType<typeof oldStore>, files: readonly string[]): void {
  const merged = new Map<string, LedgerChange>();
  for (const file of files) {
    for (const c of oldReadJournal(fs.readFileSync(file, 'utf8'))) {
      const old = merged.get(c.msgid);
      merged.set(c.msgid, old ? mergeChange(old, c) : c);
    }
  }
  store.upsert([...merged.values()]);
}

// ------------------------------------------------------------------ the runs

type Way = 'old' | 'new';
type Shape = 'split' | 'coalesced';

/** The segment files of `count` messages from `first`, one per write. */
function writeSegments(dir: string, way: Way, shape: Shape, first: number, count: number): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const q = (i: number): string => (way === 'old' ? oldQueuedLine : queuedLine)(msgidOf(i), openidOf(i), 'order_paid', 'push', T0 + i);
  const s = (i: number): string => (way === 'old' ? oldSentLine : sentLine)(msgidOf(i), String(3_000_000_000 + i), 1, T0 + i + 50);
  const files: string[] = [];
  const batches = Math.ceil(count / BATCH);
  for (let b = 0; b <= batches; b++) {
    const lines: string[] = [];
    const from = first + b * BATCH;
    const to = Math.min(first + count, from + BATCH);
    if (shape === 'coalesced') {
      for (let i = from; i < to; i++) lines.push(q(i), s(i));
    } else {
      // this batch's queued, and the sent of the batch before
      for (let i = from; i < to; i++) lines.push(q(i));
      for (let i = from - BATCH; i < from && b > 0; i++) lines.push(s(i));
    }
    if (lines.length === 0) continue;
    const file = path.join(dir, `${String(b).padStart(12, '0')}.jsonl`);
    fs.writeFileSync(file, lines.join('\n') + '\n');
    files.push(file);
  }
  return files;
}

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

interface Figures {
  /** µs of CPU per message: reading and parsing the segments alone. */
  parse: number;
  /** µs of CPU per message: the whole apply (read, parse, merge, SQLite). */
  apply: number;
}

async function runOnce(root: string, way: Way, shape: Shape, round: number): Promise<Figures> {
  const dir = path.join(root, `${way}-${shape}-${round}`);
  const dbFile = path.join(dir, 'ledger.db');
  const prefill = writeSegments(path.join(dir, 'prefill'), way, 'coalesced', -PREFILL, PREFILL);
  const files = writeSegments(path.join(dir, 'journal'), way, shape, 0, MESSAGES);

  let t = cpuMicros();
  for (const f of files) {
    if (way === 'old') oldReadJournal(fs.readFileSync(f, 'utf8'));
    else parseJournal(fs.readFileSync(f, 'utf8'), () => {}, () => {});
  }
  const parse = (cpuMicros() - t) / MESSAGES;

  let apply: number;
  if (way === 'old') {
    const store = oldStore(dbFile);
    for (let i = 0; i < prefill.length; i += 50) oldApply(store, prefill.slice(i, i + 50));
    t = cpuMicros();
    for (const f of files) oldApply(store, [f]);
    apply = (cpuMicros() - t) / MESSAGES;
    store.close();
  } else {
    const store = openLedgerStore({ dsn: `sqlite:${dbFile}` });
    await store.init();
    let finals: MessageRecord[] = [];
    for (let i = 0; i < prefill.length; i += 50) await applyJournalFiles(store, prefill.slice(i, i + 50));
    t = cpuMicros();
    for (const f of files) finals = finals.concat((await applyJournalFiles(store, [f])).finals);
    apply = (cpuMicros() - t) / MESSAGES;
    if (finals.length > 0) throw new Error('no message of this bench is final');
    const sample = await store.get(msgidOf(MESSAGES - 1));
    if (sample?.state !== 'sent' || sample.openid !== openidOf(MESSAGES - 1)) throw new Error(`the last message was not written whole: ${JSON.stringify(sample)}`);
    await store.close();
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return { parse, apply };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mega-ledger-store-bench-'));
  console.log(`ledger store thread, SQLite: ${MESSAGES} messages in writes of ${BATCH}, ${PREFILL} rows there first, median of ${ROUNDS} rounds`);
  console.log('µs of CPU per message (parse = reading the segments back alone; apply = all of it: read, parse, merge, SQLite)\n');
  console.log('| journal | old parse | new parse | old apply | new apply | new / old apply |');
  console.log('|---|---|---|---|---|---|');
  try {
    for (const shape of ['split', 'coalesced'] as const) {
      const got: Record<Way, Figures[]> = { old: [], new: [] };
      for (let r = 0; r < ROUNDS; r++) {
        for (const way of r % 2 === 0 ? (['old', 'new'] as const) : (['new', 'old'] as const)) got[way].push(await runOnce(root, way, shape, r));
      }
      const f = (way: Way, k: keyof Figures): number => median(got[way].map((x) => x[k]));
      console.log(
        `| ${shape} | ${f('old', 'parse').toFixed(2)} | ${f('new', 'parse').toFixed(2)} | ${f('old', 'apply').toFixed(2)} | ${f('new', 'apply').toFixed(2)} | **${(f('new', 'apply') / f('old', 'apply')).toFixed(2)}** |`,
      );
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

await main();
