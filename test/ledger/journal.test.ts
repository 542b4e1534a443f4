import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LedgerJournal, parseJournal, queuedLine, readJournalFile, sentLine } from '../../src/ledger/journal.js';
import type { LedgerChange, LedgerReceipt } from '../../src/ledger/index.js';
import { tempDir } from '../helpers/processes.js';

/** The change without its undefined members (a compact line's change has every member). */
function known(c: LedgerChange | LedgerReceipt): Record<string, unknown> {
  return Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined));
}

function parse(text: string): { changes: LedgerChange[]; receipts: LedgerReceipt[]; torn: number } {
  const changes: LedgerChange[] = [];
  const receipts: LedgerReceipt[] = [];
  const torn = parseJournal(text, (c) => changes.push(c), (r) => receipts.push(r));
  return { changes, receipts, torn };
}

describe('journal lines', () => {
  it('queued and sent lines are compact and read back as the JSON lines of the previous version did', () => {
    const q = queuedLine('m-1_A', 'oUser~!{}"\\x', 'order_paid', 'send', 1_764_680_000_123);
    const s = sentLine('m-1_A', '18446744073709551615', 3, 1_764_680_000_456);
    assert.equal(q, 'm-1_A\tQ\t1764680000123\toUser~!{}"\\x\torder_paid\tsend');
    assert.equal(s, 'm-1_A\tS\t1764680000456\t3\t18446744073709551615');
    const previous = [
      '{"msgid":"m-1_A","state":"queued","openid":"oUser~!{}\\"\\\\x","key":"order_paid","kind":"send","attempts":0,"queuedAt":1764680000123,"at":1764680000123}',
      '{"msgid":"m-1_A","state":"sent","attempts":3,"wechatMsgid":"18446744073709551615","errcode":0,"errmsg":"ok","sentAt":1764680000456,"at":1764680000456}',
    ];
    const now = parse(`${q}\n${s}\n`);
    const before = parse(previous.join('\n') + '\n');
    assert.equal(now.torn, 0);
    assert.deepEqual(now.changes.map(known), before.changes.map(known));
    // no WeChat msgid, or one that is not digits: left out, as before
    for (const w of [undefined, '12ab']) {
      const [c] = parse(sentLine('m2', w, 1, 7) + '\n').changes;
      assert.deepEqual(known(c!), { msgid: 'm2', state: 'sent', attempts: 1, errcode: 0, errmsg: 'ok', sentAt: 7, at: 7 });
    }
  });

  it('what a compact line cannot carry is written as JSON, and reads back the same', () => {
    const odd = [
      queuedLine('m3', 'o\tTAB', 'k', 'push', 1),
      queuedLine('m4', 'o\nNL', 'k', 'push', 2),
      queuedLine('m5', 'oé', 'k\u2028', 'push', 3),
      queuedLine('m.6', 'o', 'k', 'push', 4),
      sentLine('m 7', '1', 1, 5),
    ];
    for (const line of odd) assert.equal(line[0], '{', line);
    const { changes, torn } = parse(odd.join('\n') + '\n');
    assert.equal(torn, 0);
    assert.deepEqual(
      changes.map((c) => [c.msgid, c.openid, c.key]),
      [['m3', 'o\tTAB', 'k'], ['m4', 'o\nNL', 'k'], ['m5', 'oé', 'k\u2028'], ['m.6', 'o', 'k'], ['m 7', undefined, undefined]],
    );
  });

  it('a torn tail ends the read wherever the crash cut the last line, and garbage ends it too', () => {
    const whole = [queuedLine('t1', 'oT', 'k', 'push', 10), JSON.stringify({ receipt: '99', state: 'delivered', status: 'success', at: 11 })].join('\n') + '\n';
    for (const last of [queuedLine('t2', 'oT', 'k', 'send', 12), sentLine('t2', '123456', 2, 13), JSON.stringify({ msgid: 't2', state: 'dead', at: 14 })]) {
      for (let cut = 1; cut < last.length; cut++) {
        const r = parse(whole + last.slice(0, cut));
        assert.deepEqual([r.changes.length, r.receipts.length, r.torn], [1, 1, cut], `${JSON.stringify(last)} cut at ${cut}`);
      }
      assert.deepEqual(parse(whole + last + '\n').torn, 0);
    }
    for (const garbage of ['\0\0\0\0\n', 't3\tX\t1\t2\n', 't3\tQ\t1\to\tk\tpull\n', 't3\tS\t1x\t1\t5\n', 't3\tS\t1\t1\t5z\n', '\tQ\t1\to\tk\tpush\n']) {
      const r = parse(whole + garbage + queuedLine('t4', 'oT', 'k', 'push', 15) + '\n');
      assert.deepEqual([r.changes.map((c) => c.msgid), r.torn], [['t1'], garbage.length + queuedLine('t4', 'oT', 'k', 'push', 15).length + 1], JSON.stringify(garbage));
    }
  });

  it("scan finds a message's compact and JSON lines by its whole msgid, in the order written, and scanReceipts only receipts", async () => {
    const dir = tempDir();
    const j = LedgerJournal.open(dir, false);
    j.appendLine(queuedLine('s1', 'oS', 'k', 'push', 1));
    j.appendLine(queuedLine('s10', 'oS', 'k', 'push', 2));
    j.append({ msgid: 's1', state: 'queued', attempts: 1, errcode: -1, errmsg: 'system error', at: 3 });
    j.appendReceipt({ receipt: '77', state: 'delivered', status: 'success', at: 4 });
    await j.sync();
    await j.rotate();
    j.appendLine(sentLine('s1', '77', 2, 5));
    await j.sync();
    // the write's bookkeeping settles a tick after sync() resolves (till then a line may be seen twice, harmlessly)
    await new Promise((r) => setImmediate(r));
    j.appendLine(sentLine('s10', '78', 1, 6));
    assert.deepEqual(j.scan('s1').map((c) => [c.state, c.attempts, c.at]), [['queued', 0, 1], ['queued', 1, 3], ['sent', 2, 5]]);
    assert.deepEqual(j.scan().map((c) => [c.msgid, c.at]), [['s1', 1], ['s10', 2], ['s1', 3], ['s1', 5], ['s10', 6]]);
    assert.deepEqual(j.scanReceipts().map((r) => r.receipt), ['77']);
    assert.deepEqual(j.scan('s2'), []);
    await j.close();
    // the journal's own count of what it holds, after a restart
    const again = LedgerJournal.open(dir, false);
    assert.equal(again.backlog, 5);
    assert.deepEqual(readJournalFile(path.join(dir, fs.readdirSync(dir).sort()[0]!)).changes.length, 3);
    await again.close();
  });
});
