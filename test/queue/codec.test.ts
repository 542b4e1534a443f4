import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { crc32c } from '../../src/queue/crc32c.js';
import { IdBitmap } from '../../src/queue/id-bitmap.js';
import {
  CHECKPOINT_SIZE,
  decodeAckLog,
  decodeCheckpoint,
  decodeRecord,
  encodeAckBatch,
  encodeCheckpoint,
  encodeRecord,
} from '../../src/queue/record.js';

/** Bit-at-a-time reference implementation. */
function crc32cRef(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('crc32c', () => {
  it('matches the standard check value', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });

  it('matches the RFC 3720 (iSCSI) test vectors', () => {
    assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c);
  });

  it('slicing-by-8 equals the bitwise reference for every length and alignment', () => {
    const data = randomBytes(300);
    for (let start = 0; start < 9; start++) {
      for (let end = start; end <= 120; end++) {
        assert.equal(crc32c(data, 0, start, end), crc32cRef(data.subarray(start, end)), `[${start}, ${end})`);
      }
    }
  });

  it('can be continued across chunks', () => {
    const a = Buffer.from('12345');
    const b = Buffer.from('6789');
    assert.equal(crc32c(b, crc32c(a)), 0xe3069283);
  });

  it('is never zero over zeroed bytes', () => {
    for (let n = 1; n <= 64; n++) assert.notEqual(crc32c(Buffer.alloc(n)), 0);
  });
});

describe('segment record', () => {
  it('encodes big-endian [len][crc][id][payload]', () => {
    const rec = encodeRecord(1, Buffer.from('hi'));
    const idAndPayload = hex('0000000000000001 6869');
    const crc = crc32c(idAndPayload);
    assert.deepEqual(
      rec,
      Buffer.concat([
        hex('00000002'), // payloadLen = 2
        hex(crc.toString(16).padStart(8, '0')), // CRC-32C over id + payload
        idAndPayload, // id = 1 (u64), payload "hi"
      ]),
    );
    assert.equal(rec.length, 16 + 2);
  });

  it('encodes ids above 2^32 as a full u64', () => {
    const id = 2 ** 40 + 5;
    const rec = encodeRecord(id, Buffer.alloc(0));
    assert.deepEqual(rec.subarray(8, 16), hex('00000100 00000005'));
    const d = decodeRecord(rec, 0);
    assert.equal(d.kind, 'record');
    assert.equal(d.kind === 'record' && d.id, id);
  });

  it('round-trips and reports the record size', () => {
    const payload = randomBytes(1000);
    const rec = encodeRecord(42, payload);
    const d = decodeRecord(Buffer.concat([rec, Buffer.from('next')]), 0);
    assert.ok(d.kind === 'record');
    assert.equal(d.id, 42);
    assert.equal(d.size, 1016);
    assert.deepEqual(d.payload, payload);
  });

  it('reports a short record as incomplete', () => {
    const rec = encodeRecord(7, Buffer.from('payload'));
    for (const n of [0, 5, 15, 16, rec.length - 1]) {
      assert.equal(decodeRecord(rec.subarray(0, n), 0).kind, 'incomplete', `${n} bytes`);
    }
  });

  it('rejects a flipped bit, a zeroed header and out-of-order ids', () => {
    const rec = encodeRecord(7, Buffer.from('payload'));
    for (const byte of [4, 9, 15, 16, rec.length - 1]) {
      const bad = Buffer.from(rec);
      bad[byte]! ^= 0x10;
      const d = decodeRecord(bad, 0);
      assert.equal(d.kind, 'corrupt', `flip in byte ${byte}`);
    }
    assert.equal(decodeRecord(Buffer.alloc(64), 0).kind, 'corrupt');
    const limits = { maxPayload: 1024, afterId: 7, beforeId: 100 };
    assert.equal(decodeRecord(rec, 0, rec.length, limits).kind, 'corrupt');
    assert.equal(decodeRecord(rec, 0, rec.length, { ...limits, afterId: 6 }).kind, 'record');
    assert.equal(decodeRecord(rec, 0, rec.length, { ...limits, afterId: 6, maxPayload: 3 }).kind, 'corrupt');
  });
});

describe('ack log batch', () => {
  it('encodes [8n][crc][lwm][ids] and decodes a log of batches', () => {
    const b = encodeAckBatch(5, [7, 9]);
    assert.deepEqual(b.subarray(0, 4), hex('00000010'));
    assert.deepEqual(b.subarray(8), hex('0000000000000005 0000000000000007 0000000000000009'));
    assert.equal(b.readUInt32BE(4), crc32c(b.subarray(8)));
    const log = Buffer.concat([b, encodeAckBatch(8, [12]), encodeAckBatch(6, [])]);
    const d = decodeAckLog(log);
    assert.deepEqual(d, { lowWaterMark: 8, ids: [7, 9, 12], validBytes: log.length, damagedBytes: 0 });
  });

  it('stops at garbage, a torn batch or zeroes', () => {
    const good = Buffer.concat([encodeAckBatch(1, [3]), encodeAckBatch(4, [6])]);
    for (const tail of [randomBytes(37), encodeAckBatch(9, [10, 11]).subarray(0, 20), Buffer.alloc(100)]) {
      const d = decodeAckLog(Buffer.concat([good, tail]));
      assert.deepEqual(d.ids, [3, 6]);
      assert.equal(d.lowWaterMark, 4);
      assert.equal(d.validBytes, good.length);
      assert.equal(d.damagedBytes, tail.length);
    }
  });
});

describe('checkpoint', () => {
  it('round-trips and rejects damage', () => {
    const b = encodeCheckpoint({ lowWaterMark: 17, nextId: 2 ** 35 });
    assert.equal(b.length, CHECKPOINT_SIZE);
    assert.deepEqual(b.subarray(0, 4), Buffer.from('MWQC'));
    assert.deepEqual(decodeCheckpoint(b), { lowWaterMark: 17, nextId: 2 ** 35 });
    for (let i = 0; i < b.length; i++) {
      const bad = Buffer.from(b);
      bad[i]! ^= 1;
      assert.equal(decodeCheckpoint(bad), undefined, `byte ${i}`);
    }
    assert.equal(decodeCheckpoint(Buffer.concat([b, Buffer.from('x')])), undefined);
    assert.equal(decodeCheckpoint(randomBytes(CHECKPOINT_SIZE)), undefined);
  });
});

describe('IdBitmap', () => {
  it('advances the low-water mark over out-of-order acks', () => {
    const bm = new IdBitmap(1);
    for (const id of [3, 2, 5]) bm.set(id);
    assert.equal(bm.lowWaterMark, 1);
    assert.equal(bm.setAbove, 3);
    assert.deepEqual(bm.setIds(), [2, 3, 5]);
    bm.set(1);
    assert.equal(bm.lowWaterMark, 4);
    assert.equal(bm.setAbove, 1);
    assert.equal(bm.has(2), true);
    assert.equal(bm.has(4), false);
    assert.equal(bm.set(5), false);
    assert.equal(bm.setRange(4, 10), 5);
    assert.equal(bm.lowWaterMark, 10);
    assert.equal(bm.setAbove, 0);
  });

  it('slides over a long run and stays correct', () => {
    const bm = new IdBitmap(1000);
    const n = 300_000;
    for (let id = 1000; id < 1000 + n; id += 2) bm.set(id + 1); // odd ones first
    assert.equal(bm.lowWaterMark, 1000);
    for (let id = 1000; id < 1000 + n; id += 2) bm.set(id);
    assert.equal(bm.lowWaterMark, 1000 + n);
    bm.set(1000 + n + 5);
    assert.deepEqual(bm.setIds(), [1000 + n + 5]);
    assert.equal(bm.has(1000 + n + 4), false);
    assert.equal(bm.has(500), true);
  });
});
