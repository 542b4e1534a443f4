import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ClientMsgIdGenerator, decodeJobRecord, encodeJobRecord } from '../../src/jobs/record.js';
import { classifyErrcode, OutcomeKind } from '../../src/jobs/outcome.js';

describe('job records', () => {
  it('embed the client’s variables bytes untouched and decode back', () => {
    const body = Buffer.from('{"product":"\\u5de7","q":"a\\"b"}');
    const bytes = encodeJobRecord({ kind: 'send', openid: 'o"1', key: 'k1', clientMsgId: 'm-1', replyKey: 'r.1', body, at: 1700000000000 });
    assert.ok(bytes.includes(body), 'raw variable bytes are embedded as sent');
    assert.equal(
      bytes.toString(),
      '{"k":"send","o":"o\\"1","t":"k1","m":"m-1","at":1700000000000,"r":"r.1","d":{"product":"\\u5de7","q":"a\\"b"}}',
    );
    assert.deepEqual(decodeJobRecord(bytes), {
      k: 'send',
      o: 'o"1',
      t: 'k1',
      m: 'm-1',
      at: 1700000000000,
      r: 'r.1',
      d: { product: '巧', q: 'a"b' },
    });
  });

  it('a push has no reply key and may carry null variables', () => {
    const rec = decodeJobRecord(encodeJobRecord({ kind: 'push', openid: 'o', key: 'k', clientMsgId: 'm', body: Buffer.from('null'), at: 5 }));
    assert.equal(rec.r, undefined);
    assert.equal(rec.d, null);
  });

  it('assigned client_msg_ids are unique, short and WeChat-safe', () => {
    const a = new ClientMsgIdGenerator(1700000000000, () => 0.5);
    const b = new ClientMsgIdGenerator(1700000000001, () => 0.5);
    const ids = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      ids.add(a.generate());
      ids.add(b.generate());
    }
    assert.equal(ids.size, 2000);
    for (const id of ids) assert.match(id, /^[A-Za-z0-9_-]{1,32}$/);
  });
});

describe('errcode classification', () => {
  it('follows the errcode rules of docs/RELIABILITY.md', () => {
    assert.equal(classifyErrcode(0), OutcomeKind.Ok);
    for (const c of [40001, 40014, 42001]) assert.equal(classifyErrcode(c), OutcomeKind.TokenRejected);
    assert.equal(classifyErrcode(-1), OutcomeKind.Retry);
    assert.equal(classifyErrcode(43117), OutcomeKind.Retry);
    assert.equal(classifyErrcode(45009), OutcomeKind.Quota);
    for (const c of [43004, 40003, 40037, 47003, 48001, 43101, 43019, 43116, 99999]) assert.equal(classifyErrcode(c), OutcomeKind.Failed);
  });
});
