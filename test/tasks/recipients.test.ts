import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import {
  formatFromName,
  normaliseRecipients,
  RecipientFileError,
  RecipientListReader,
  TaskStateError,
  verifyRecipientList,
  type TaskRecipient,
} from '../../src/tasks/index.js';
import { tempDir } from '../helpers/processes.js';

function file(dir: string, name: string, content: string | Buffer): string {
  const p = path.join(dir, name);
  writeFileSync(p, content);
  return p;
}

async function readAll(list: string, skip: (i: number) => boolean = () => false): Promise<TaskRecipient[]> {
  const reader = new RecipientListReader(list, skip);
  const out: TaskRecipient[] = [];
  for (let r = await reader.next(); r; r = await reader.next()) out.push(r);
  await reader.close();
  return out;
}

async function refused(p: Promise<unknown>): Promise<RecipientFileError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RecipientFileError, `expected RecipientFileError, got ${String(err)}`);
    assert.equal(err.code, 'MEGA_ERR_TASK_RECIPIENTS');
    return err;
  }
  assert.fail('expected a RecipientFileError');
}

describe('recipient files', () => {
  const dir = tempDir('mega-recipients-');

  it('picks the format from the file name', () => {
    assert.equal(formatFromName('a.csv'), 'csv');
    assert.equal(formatFromName('a.TSV'), 'csv');
    assert.equal(formatFromName('a.jsonl'), 'jsonl');
    assert.equal(formatFromName('a.ndjson'), 'jsonl');
    assert.equal(formatFromName('a.txt'), 'plain');
    assert.equal(formatFromName('openids'), 'plain');
  });

  it('plain: one openid per line, blank lines and # comments ignored, CRLF accepted', async () => {
    const src = file(dir, 'plain.txt', '# our users\r\noA1\r\n\r\n  oA2  \r\n#oSkipped\noA3');
    const out = path.join(dir, 'plain.list');
    const r = await normaliseRecipients({ source: src, out });
    assert.equal(r.total, 3);
    assert.equal(r.format, 'plain');
    assert.match(r.checksum, /^[0-9a-f]{64}$/);
    assert.deepEqual(await readAll(out), [
      { index: 0, openid: 'oA1', vars: null },
      { index: 1, openid: 'oA2', vars: null },
      { index: 2, openid: 'oA3', vars: null },
    ]);
    await verifyRecipientList(out, r.checksum, 3);
  });

  it('plain: bad lines are refused with their line numbers, and nothing is written', async () => {
    const src = file(dir, 'bad.txt', 'oOK1\noTwo Words\n' + 'o'.repeat(129) + '\noCaf\u00e9\noOK2\n');
    const out = path.join(dir, 'bad.list');
    const err = await refused(normaliseRecipients({ source: src, out }));
    assert.deepEqual(
      err.problems.map((p) => p.line),
      [2, 3, 4],
    );
    assert.match(err.message, /3 bad lines/);
    assert.match(err.message, /line 2: openid "oTwo Words" contains white space/);
    assert.match(err.message, /line 3: openid is 129 characters long/);
    assert.match(err.message, /line 4: .*printable ASCII/);
    assert.match(err.message, /--skip-invalid/);
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(out + '.tmp'), false);
  });

  it('skipInvalid leaves bad lines out and reports them', async () => {
    const src = file(dir, 'skip.txt', 'oOK1\nbad one\noOK2\n');
    const out = path.join(dir, 'skip.list');
    const r = await normaliseRecipients({ source: src, out, skipInvalid: true });
    assert.equal(r.total, 2);
    assert.equal(r.invalidCount, 1);
    assert.deepEqual(r.invalid, [{ line: 2, reason: 'openid "bad one" contains white space' }]);
  });

  it('a repeated openid is kept once (reported), unless allowDuplicates', async () => {
    const src = file(dir, 'dups.txt', 'oD1\noD2\noD1\noD1\n');
    const r1 = await normaliseRecipients({ source: src, out: path.join(dir, 'dups1.list') });
    assert.equal(r1.total, 2);
    assert.equal(r1.duplicateCount, 2);
    assert.deepEqual(r1.duplicates[0], { line: 3, reason: 'oD1 is already listed on line 1' });
    const r2 = await normaliseRecipients({ source: src, out: path.join(dir, 'dups2.list'), allowDuplicates: true });
    assert.equal(r2.total, 4);
  });

  it('csv: header row names the variables; quoting, commas, quotes and line breaks in fields; BOM ignored', async () => {
    const src = file(
      dir,
      'users.csv',
      '\uFEFFname,OpenID,price\r\n' +
        'Ann,oC1,39.8\r\n' +
        '"Lee, Bob",oC2,"say ""hi"""\r\n' +
        '"multi\nline",oC3,\r\n' +
        '\r\n' +
        '张三, oC4 ,"1,000"\r\n',
    );
    const out = path.join(dir, 'users.list');
    const r = await normaliseRecipients({ source: src, out, commonVars: { shop: 'Tea House', price: 'default' } });
    assert.equal(r.format, 'csv');
    assert.equal(r.total, 4);
    assert.deepEqual(await readAll(out), [
      { index: 0, openid: 'oC1', vars: { shop: 'Tea House', name: 'Ann', price: '39.8' } },
      { index: 1, openid: 'oC2', vars: { shop: 'Tea House', name: 'Lee, Bob', price: 'say "hi"' } },
      { index: 2, openid: 'oC3', vars: { shop: 'Tea House', name: 'multi\nline', price: '' } },
      { index: 3, openid: 'oC4', vars: { shop: 'Tea House', name: '张三', price: '1,000' } },
    ]);
  });

  it('csv: tab-separated when the header has tabs and no commas', async () => {
    const src = file(dir, 'tabs.csv', 'openid\tname\noT1\tA, B\n');
    const out = path.join(dir, 'tabs.list');
    await normaliseRecipients({ source: src, out });
    assert.deepEqual(await readAll(out), [{ index: 0, openid: 'oT1', vars: { name: 'A, B' } }]);
  });

  it('csv: bad records are reported with the line they start on', async () => {
    const src = file(
      dir,
      'badrows.csv',
      'openid,name\n' + // 1
        'oB1,Ann\n' + // 2
        'oB2\n' + // 3: too few fields
        'oB3,"two\nlines",extra\n' + // 4-5: too many
        'oB4,a"b\n' + // 6: stray quote
        ',nobody\n' + // 7: empty openid
        'oB5,"never closed\n', // 8
    );
    const err = await refused(normaliseRecipients({ source: src, out: path.join(dir, 'badrows.list') }));
    assert.deepEqual(
      err.problems.map((p) => [p.line, p.reason.replace(/ \(.*/, '')]),
      [
        [3, '1 fields, the header has 2'],
        [4, '3 fields, the header has 2'],
        [6, 'a quote inside unquoted field 2'],
        [7, 'empty openid'],
        [8, 'a quoted field is never closed'],
      ],
    );
  });

  it('csv: a header without an openid column, or with a repeated or empty name, is refused', async () => {
    let err = await refused(normaliseRecipients({ source: file(dir, 'noid.csv', 'user,name\nx,y\n'), out: path.join(dir, 'x.list') }));
    assert.match(err.message, /line 1: the header row has no "openid" column \(found: user, name\)/);
    err = await refused(normaliseRecipients({ source: file(dir, 'twice.csv', 'openid,a,a\n'), out: path.join(dir, 'x.list') }));
    assert.match(err.message, /header names "a" twice/);
    err = await refused(normaliseRecipients({ source: file(dir, 'empty-col.csv', 'openid,,b\n'), out: path.join(dir, 'x.list') }));
    assert.match(err.message, /header column 2 has no name/);
    err = await refused(normaliseRecipients({ source: file(dir, 'empty.csv', '\n\n'), out: path.join(dir, 'x.list') }));
    assert.match(err.message, /empty CSV file/);
  });

  it('jsonl: {openid, ...vars} per line; bad lines reported with line numbers', async () => {
    const good = file(dir, 'good.jsonl', '{"openid":"oJ1","name":"Ann","n":3}\n\n{"openid":"oJ2"}\n');
    const out = path.join(dir, 'good.list');
    const r = await normaliseRecipients({ source: good, out });
    assert.equal(r.format, 'jsonl');
    assert.deepEqual(await readAll(out), [
      { index: 0, openid: 'oJ1', vars: { name: 'Ann', n: 3 } },
      { index: 1, openid: 'oJ2', vars: null },
    ]);

    const bad = file(dir, 'bad.jsonl', '{"openid":"oJ1"}\n{"openid":\n[1,2]\n{"name":"x"}\n{"openid":5}\n{"openid":"o J"}\n');
    const err = await refused(normaliseRecipients({ source: bad, out: path.join(dir, 'bad.list') }));
    assert.deepEqual(
      err.problems.map((p) => p.line),
      [2, 3, 4, 5, 6],
    );
    assert.match(err.problems[0]!.reason, /^not JSON/);
    assert.match(err.problems[1]!.reason, /not a JSON object/);
    assert.equal(err.problems[2]!.reason, 'no "openid" property');
    assert.equal(err.problems[3]!.reason, '"openid" is not a string');
  });

  it('refuses a file that is not UTF-8, an empty list and a missing file', async () => {
    const latin1 = file(dir, 'latin1.csv', Buffer.concat([Buffer.from('openid,name\noL1,Jos'), Buffer.from([0xe9]), Buffer.from('\n')]));
    let err = await refused(normaliseRecipients({ source: latin1, out: path.join(dir, 'l.list') }));
    assert.match(err.message, /not valid UTF-8/);
    err = await refused(normaliseRecipients({ source: file(dir, 'none.txt', '# nobody\n\n'), out: path.join(dir, 'n.list') }));
    assert.match(err.message, /no recipients/);
    err = await refused(normaliseRecipients({ source: path.join(dir, 'missing.txt'), out: path.join(dir, 'm.list') }));
    assert.match(err.message, /cannot read/);
  });

  it('the list reader skips finished recipients; a changed list is refused', async () => {
    const src = file(dir, 'ten.txt', Array.from({ length: 10 }, (_, i) => `oR${i}`).join('\n'));
    const out = path.join(dir, 'ten.list');
    const r = await normaliseRecipients({ source: src, out });
    const finished = new Set([0, 1, 2, 5, 9]);
    const left = await readAll(out, (i) => finished.has(i));
    assert.deepEqual(
      left.map((x) => [x.index, x.openid]),
      [
        [3, 'oR3'],
        [4, 'oR4'],
        [6, 'oR6'],
        [7, 'oR7'],
        [8, 'oR8'],
      ],
    );
    writeFileSync(out, readFileSync(out, 'utf8').replace('oR7', 'oR8'));
    await assert.rejects(verifyRecipientList(out, r.checksum, 10), (e: unknown) => e instanceof TaskStateError && /changed since/.test(e.message));
    await assert.rejects(verifyRecipientList(path.join(dir, 'gone.list'), r.checksum, 10), /cannot be read/);
  });
});
