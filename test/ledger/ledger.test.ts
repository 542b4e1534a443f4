import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { Ledger, LedgerJournal, openLedgerStore, ThreadedLedgerStore, type LedgerChange, type LedgerStore } from '../../src/ledger/index.js';
import { LedgerStoreError } from '../../src/errors.js';
import { queuedLine, readJournalFile, sentLine } from '../../src/ledger/journal.js';
import { tempDir } from '../helpers/processes.js';
import type { MessageRecord } from '../../src/protocol/message-record.js';

const logger = pino({ level: 'silent' });

/** A real SQLite store that can be switched off, like a database that went away. */
class SwitchableStore implements LedgerStore {
  down = false;
  upserts = 0;
  constructor(readonly inner: LedgerStore) {}
  get kind() {
    return this.inner.kind;
  }
  get location() {
    return this.inner.location;
  }
  get table() {
    return this.inner.table;
  }
  private check(): void {
    if (this.down) throw new LedgerStoreError('database is down');
  }
  async init() {
    this.check();
    return this.inner.init();
  }
  async upsert(changes: readonly LedgerChange[]) {
    this.check();
    this.upserts++;
    return this.inner.upsert(changes);
  }
  async applyReceipts(receipts: Parameters<LedgerStore['applyReceipts']>[0]) {
    this.check();
    return this.inner.applyReceipts(receipts);
  }
  async receiptOf(wechatMsgid: string) {
    this.check();
    return this.inner.receiptOf(wechatMsgid);
  }
  async get(msgid: string) {
    this.check();
    return this.inner.get(msgid);
  }
  async list(f: Parameters<LedgerStore['list']>[0]) {
    this.check();
    return this.inner.list(f);
  }
  async purge(before: number, limit: number) {
    this.check();
    return this.inner.purge(before, limit);
  }
  close() {
    return this.inner.close();
  }
}

const ledgers: Ledger[] = [];
after(async () => {
  for (const l of ledgers) await l.close();
});

function setup(options: { dir?: string; flushIntervalMs?: number; retentionDays?: number; onFinal?: (r: MessageRecord[]) => Promise<void>; commitDelayMs?: number } = {}) {
  const dir = options.dir ?? tempDir();
  const reader = openLedgerStore({ dsn: `sqlite:${path.join(dir, 'db.sqlite')}` });
  const store = new SwitchableStore(openLedgerStore({ dsn: `sqlite:${path.join(dir, 'db.sqlite')}` }));
  const ledger = Ledger.open({
    store,
    journalDir: path.join(dir, 'journal'),
    fsync: true,
    logger,
    retentionDays: options.retentionDays ?? 7,
    flushIntervalMs: options.flushIntervalMs ?? 20,
    retryCapMs: 50,
    onFinal: options.onFinal,
    // commits at once, so a test decides when the database write comes
    commitDelayMs: options.commitDelayMs ?? 0,
  });
  ledgers.push(ledger);
  return { dir, store, reader, ledger, journal: path.join(dir, 'journal') };
}

async function until<T>(fn: () => Promise<T | undefined> | T | undefined, what: string): Promise<T> {
  const deadline = Date.now() + 10000;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sent = (msgid: string, wechat: string, attempts = 1): LedgerChange => ({ msgid, state: 'sent', attempts, wechatMsgid: wechat, sentAt: Date.now(), at: Date.now() });

describe('Ledger', () => {
  it('coalesces the changes of one message and writes them in batches; get sees what is not written yet', async () => {
    const { ledger, store, reader } = setup({ flushIntervalMs: 60_000 });
    await reader.init();
    for (let i = 0; i < 50; i++) ledger.queued(`c${i}`, `o${i}`, 'order', 'push', 1000 + i);
    await ledger.record([{ msgid: 'c1', state: 'queued', attempts: 1, errcode: -1, errmsg: 'system error', at: 2000 }]);
    await ledger.record([sent('c1', '4242', 2)]);
    // not in the database yet: memory answers, merged
    assert.equal(await reader.get('c1'), undefined);
    const mem = await ledger.get('c1');
    assert.deepEqual([mem?.state, mem?.openid, mem?.attempts, mem?.wechatMsgid, mem?.errcode], ['sent', 'o1', 2, '4242', -1]);
    assert.equal((await ledger.list({ state: 'sent' })).length, 1);
    assert.ok(await ledger.flush());
    assert.equal(store.upserts, 1, 'one write for all 52 changes');
    const row = await reader.get('c1');
    assert.deepEqual([row?.state, row?.openid, row?.attempts, row?.wechatMsgid, row?.queuedAt], ['sent', 'o1', 2, '4242', 1001]);
    assert.equal((await reader.list({ limit: 100 })).length, 50);
    assert.equal(ledger.status().backlog, 0);
  });

  it('receipts: seen by get() before they are written, applied by WeChat msgid, final states handed to onFinal, which must succeed before the journal goes', async () => {
    const handed: MessageRecord[][] = [];
    let refuse = true;
    const { ledger, reader } = setup({
      flushIntervalMs: 60_000,
      onFinal: async (records) => {
        if (refuse) throw new Error('outbox full');
        handed.push(records);
      },
    });
    await reader.init();
    ledger.queued('rc1', 'oRC', 'order', 'send', 1);
    ledger.queued('rc2', 'oRC', 'order', 'push', 2);
    await ledger.record([sent('rc1', '9001')]);
    // the receipt of rc2's send arrives before the send's own answer was noted
    ledger.receipt({ receipt: '9002', state: 'failed_user_block', status: 'failed:user block', openid: 'oRC', at: 50 });
    ledger.receipt({ receipt: '9001', state: 'delivered', status: 'success', openid: 'oRC', at: 40 });
    await ledger.commit();
    assert.equal((await ledger.get('rc1'))?.state, 'delivered');
    await ledger.record([sent('rc2', '9002')]);
    assert.deepEqual([(await ledger.get('rc2'))?.state, (await ledger.get('rc2'))?.errmsg], ['failed_user_block', 'failed:user block']);
    assert.deepEqual((await ledger.list({ openid: 'oRC' })).map((r) => r.state).sort(), ['delivered', 'failed_user_block']);
    // onFinal refuses: the write is not done, the journal stays, and it is all handed over once it accepts
    assert.equal(await ledger.flush(), false);
    assert.ok(ledger.status().backlog > 0);
    refuse = false;
    assert.equal(await ledger.flush(), true);
    assert.deepEqual(handed.flat().map((r) => [r.msgid, r.state]).sort(), [['rc1', 'delivered'], ['rc2', 'failed_user_block']]);
    assert.equal((await reader.get('rc2'))?.state, 'failed_user_block');
  });

  it('get() of a message whose send is not written yet finds its receipt written first (kept in the receipt table)', async () => {
    const { ledger, reader } = setup({ flushIntervalMs: 60_000 });
    await reader.init();
    ledger.queued('kr1', 'oKR', 'order', 'push', 1);
    ledger.receipt({ receipt: '8801', state: 'failed_system', status: 'failed: system failed', at: 70 });
    await ledger.commit();
    assert.ok(await ledger.flush());
    await ledger.record([sent('kr1', '8801')]);
    const r = await ledger.get('kr1');
    assert.deepEqual([r?.state, r?.errmsg, r?.finalAt], ['failed_system', 'failed: system failed', 70]);
  });

  it('commits within commitDelayMs share one journal write, and each resolves only once its lines are on disk', async () => {
    const { ledger, journal } = setup({ flushIntervalMs: 60_000, commitDelayMs: 20 });
    await ledger.flush(); // the write at open, out of the way: the lines stay in the journal
    const text = () => fs.readdirSync(journal).map((f) => fs.readFileSync(path.join(journal, f), 'utf8')).join('');
    ledger.queued('w1', 'oW', 'order', 'push', 1);
    const first = ledger.commit();
    ledger.queued('w2', 'oW', 'order', 'push', 2);
    const second = ledger.commit();
    assert.equal(text(), '', 'nothing written before the window ends');
    await Promise.all([first, second]);
    assert.match(text(), /w1[\s\S]*w2/);
  });

  it('record() resolves only once the changes are in the journal on disk', async () => {
    const { ledger, journal } = setup({ flushIntervalMs: 60_000 });
    ledger.queued('d1', 'oD', 'order', 'push', 1);
    await ledger.record([sent('d1', '99')]);
    const text = fs.readdirSync(journal).map((f) => fs.readFileSync(path.join(journal, f), 'utf8')).join('');
    // queued() writes a compact line, note() (what record() does) JSON
    assert.match(text, /^d1\tQ\t1\toD\torder\tpush$/m);
    assert.match(text, /^\{"msgid":"d1","state":"sent".*"wechatMsgid":"99"/m);
  });

  it('replays a journal left by a crash, torn tail and all, then deletes it', async () => {
    const dir = tempDir();
    const jdir = path.join(dir, 'journal');
    fs.mkdirSync(jdir, { recursive: true });
    const lines = [
      JSON.stringify({ msgid: 'r1', state: 'queued', openid: 'oR1', key: 'k', kind: 'send', attempts: 0, queuedAt: 5, at: 5 }),
      JSON.stringify({ msgid: 'r2', state: 'queued', openid: 'oR2', key: 'k', kind: 'push', attempts: 0, queuedAt: 6, at: 6 }),
      JSON.stringify(sent('r1', '111')),
    ];
    fs.writeFileSync(path.join(jdir, '000000000001.jsonl'), lines.join('\n') + '\n');
    // the next segment was cut short by the crash: its last change half written
    fs.writeFileSync(path.join(jdir, '000000000002.jsonl'), JSON.stringify(sent('r2', '222')) + '\n' + '{"msgid":"r3","sta');
    const { ledger, reader } = setup({ dir });
    await reader.init();
    await until(async () => (await reader.get('r2'))?.state === 'sent', 'the replay');
    assert.deepEqual(
      (await reader.list({})).map((r) => [r.msgid, r.state, r.openid, r.kind, r.wechatMsgid]),
      [
        ['r2', 'sent', 'oR2', 'push', '222'],
        ['r1', 'sent', 'oR1', 'send', '111'],
      ],
    );
    assert.equal(await reader.get('r3'), undefined);
    await until(() => ledger.status().backlog === 0, 'an empty backlog');
    // unlinked in the background once written
    await until(() => !fs.existsSync(path.join(jdir, '000000000001.jsonl')) && !fs.existsSync(path.join(jdir, '000000000002.jsonl')), 'the replayed segments deleted');
  });

  it('keeps changes in the journal while the database is down, answers get() from it, shows the backlog, and catches up', async () => {
    const { ledger, store, reader } = setup();
    await reader.init();
    store.down = true;
    for (let i = 0; i < 300; i++) ledger.queued(`u${i}`, 'oU', 'order', 'push', i + 1);
    const changes: LedgerChange[] = [];
    for (let i = 0; i < 300; i++) changes.push(sent(`u${i}`, String(1000 + i)));
    await ledger.record(changes);
    await until(() => ledger.status().error !== null, 'the error in status');
    // the database cannot answer: the journal does
    assert.deepEqual(pickRow(await ledger.get('u7')), ['sent', 'oU', 'push', 1, '1007']);
    const status = ledger.status();
    assert.equal(status.backlog, 600);
    assert.match(status.error ?? '', /database is down/);
    store.down = false;
    await until(() => ledger.status().backlog === 0 && ledger.status().error === null, 'the catch-up');
    const rows = await reader.list({ openid: 'oU', limit: 1000 });
    assert.equal(rows.length, 300);
    assert.ok(rows.every((r) => r.state === 'sent' && r.wechatMsgid === String(1000 + r.queuedAt - 1)));
  });

  it('retention deletes rows done with for longer than retention_days, in batches, never queued ones', async () => {
    const { ledger, reader } = setup({ retentionDays: 2 });
    await reader.init();
    const old = Date.now() - 3 * 86_400_000;
    const changes: LedgerChange[] = [];
    for (let i = 0; i < 1200; i++) changes.push({ msgid: `p${i}`, state: 'sent', openid: 'oP', attempts: 1, queuedAt: old, sentAt: old, at: old });
    changes.push({ msgid: 'pq', state: 'queued', openid: 'oP', attempts: 0, queuedAt: old, at: old });
    changes.push({ msgid: 'pnew', state: 'dead', openid: 'oP', attempts: 1, queuedAt: old, finalAt: Date.now(), at: Date.now() });
    await ledger.record(changes);
    assert.ok(await ledger.flush());
    assert.equal(await ledger.purge(), 1200);
    assert.deepEqual((await reader.list({ openid: 'oP' })).map((r) => r.msgid).sort(), ['pnew', 'pq']);
  });
});

describe('Ledger on the threaded store (as the daemon runs it)', () => {
  it('the store thread reads the journal back, torn tail and all, and get() sees the rows through it', async () => {
    const dir = tempDir();
    const jdir = path.join(dir, 'journal');
    fs.mkdirSync(jdir, { recursive: true });
    fs.writeFileSync(path.join(jdir, '000000000007.jsonl'), JSON.stringify({ msgid: 't0', state: 'queued', openid: 'oT0', attempts: 0, queuedAt: 3, at: 3 }) + '\n{"msgid":');
    const store = new ThreadedLedgerStore({ dsn: `sqlite:${path.join(dir, 'db.sqlite')}` });
    const ledger = Ledger.open({ store, journalDir: jdir, fsync: true, logger, retentionDays: 7, flushIntervalMs: 20 });
    ledgers.push(ledger);
    for (let i = 1; i <= 100; i++) ledger.queued(`t${i}`, `oT${i}`, 'order', 'send', 1000 + i);
    await ledger.record([sent('t5', '555', 3)]);
    assert.ok(await ledger.flush());
    assert.equal(ledger.status().backlog, 0);
    const reader = openLedgerStore({ dsn: `sqlite:${path.join(dir, 'db.sqlite')}` });
    await reader.init();
    assert.equal((await reader.list({ limit: 1000 })).length, 101);
    assert.deepEqual(pickRow(await reader.get('t5')), ['sent', 'oT5', 'send', 3, '555']);
    assert.deepEqual(pickRow(await ledger.get('t0')), ['queued', 'oT0', 'push', 0, null]);
    assert.equal((await ledger.list({ state: 'sent' }))[0]?.msgid, 't5');
    await reader.close();
    // a bad prefix is refused at once, not in the thread
    assert.throws(() => new ThreadedLedgerStore({ dsn: `sqlite:${path.join(dir, 'db.sqlite')}`, tablePrefix: 'bad-' }), /table_prefix/);
  });
});

describe('Ledger on a journal of compact lines', () => {
  it('replays compact and JSON lines (a journal left by the previous version) alike, a compact torn tail ignored', async () => {
    const dir = tempDir();
    const jdir = path.join(dir, 'journal');
    fs.mkdirSync(jdir, { recursive: true });
    // the previous version's segment: JSON only
    fs.writeFileSync(path.join(jdir, '000000000001.jsonl'), JSON.stringify({ msgid: 'c1', state: 'queued', openid: 'oC1', key: 'k', kind: 'send', attempts: 0, queuedAt: 5, at: 5 }) + '\n');
    // this version's: compact lines, a JSON change, and a sent cut short by the crash
    fs.writeFileSync(
      path.join(jdir, '000000000002.jsonl'),
      [
        sentLine('c1', '111', 2, 9),
        queuedLine('c2', 'oC2', 'k', 'push', 6),
        JSON.stringify({ msgid: 'c2', state: 'dead', attempts: 3, errcode: 40003, errmsg: 'invalid openid', finalAt: 8, at: 8 }),
        queuedLine('c3', 'oC3', 'k', 'push', 7),
      ].join('\n') + '\n' + sentLine('c3', '333', 1, 10).slice(0, 9),
    );
    const finals: MessageRecord[] = [];
    const { ledger, reader } = setup({ dir, onFinal: async (r) => void finals.push(...r) });
    await reader.init();
    await until(() => ledger.status().backlog === 0, 'the replay');
    assert.deepEqual(await reader.get('c1'), {
      msgid: 'c1', openid: 'oC1', key: 'k', kind: 'send', state: 'sent', attempts: 2,
      wechatMsgid: '111', errcode: 0, errmsg: 'ok', queuedAt: 5, sentAt: 9, finalAt: null,
    });
    assert.deepEqual(pickRow(await reader.get('c2')), ['dead', 'oC2', 'push', 3, null]);
    assert.deepEqual(pickRow(await reader.get('c3')), ['queued', 'oC3', 'push', 0, null]);
    assert.deepEqual(finals.map((r) => [r.msgid, r.state]), [['c2', 'dead']]);
  });

  it('get() and list() see compact and JSON lines not written yet, in the order written', async () => {
    const { ledger } = setup({ flushIntervalMs: 60_000 });
    ledger.queued('g1', 'oG', 'order', 'push', 100);
    ledger.queued('g10', 'oG', 'order', 'push', 101);
    ledger.note({ msgid: 'g1', state: 'queued', attempts: 1, errcode: -1, errmsg: 'system error', at: 102 });
    ledger.sent('g1', '4242', 2, 103);
    await ledger.commit();
    // g10's lines start with "g1" too: only whole msgids match
    assert.deepEqual(await ledger.get('g1'), {
      msgid: 'g1', openid: 'oG', key: 'order', kind: 'push', state: 'sent', attempts: 2,
      wechatMsgid: '4242', errcode: 0, errmsg: 'ok', queuedAt: 100, sentAt: 103, finalAt: null,
    });
    ledger.note({ msgid: 'g1', state: 'dead', attempts: 2, errcode: 40003, errmsg: 'invalid openid', finalAt: 104, at: 104 });
    // not synced yet: get() reads the buffer too
    assert.equal((await ledger.get('g1'))?.state, 'dead');
    assert.deepEqual((await ledger.list({ openid: 'oG' })).map((r) => [r.msgid, r.state]), [['g10', 'queued'], ['g1', 'dead']]);
  });
});

function pickRow(r: { state: string; openid: string; kind: string; attempts: number; wechatMsgid: string | null } | undefined): unknown[] {
  return [r?.state, r?.openid, r?.kind, r?.attempts, r?.wechatMsgid];
}

describe('LedgerJournal', () => {
  it('group-commits: many syncs at once share the writes, every line lands once, in order', async () => {
    const dir = tempDir();
    const j = LedgerJournal.open(dir, true);
    const waits: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      j.append({ msgid: `g${i}`, state: 'queued', at: i });
      waits.push(j.sync());
    }
    await Promise.all(waits);
    const sealed = await j.rotate();
    const { changes, torn } = readJournalFile(j.file(sealed[0]!));
    assert.equal(torn, 0);
    assert.deepEqual(changes.map((c) => c.msgid), Array.from({ length: 200 }, (_, i) => `g${i}`));
    await j.remove(sealed);
    assert.equal(j.backlog, 0);
    await j.close();
  });
});
