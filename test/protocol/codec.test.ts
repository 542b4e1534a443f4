import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { FrameTooLargeError, MalformedFrameError } from '../../src/errors.js';
import { DEFAULT_PACKAGE_MAX_LENGTH, FrameDecoder, decodeFrame, encodeFrame, type Frame } from '../../src/protocol/index.js';
import { bytes, loadGoldenFrames, prng } from './helpers.js';

interface Vector {
  name: string;
  frame: Frame;
  bytes: Buffer;
}

// Every frame of golden-frames.txt, spelled out field by field.
const goldenVectors: Vector[] = [
  {
    name: 'push_simple',
    frame: { header: 'push o1 k1', opaque: 1, body: Buffer.from('{"a":"b"}') },
    bytes: bytes(
      [0, 0, 0, 31], // packLength = 4 + 10 + 4 + 4 + 9
      [0, 0, 0, 10], // headerLen
      'push o1 k1', // header
      [0, 0, 0, 1], // opaque
      [0, 0, 0, 9], // bodyLen
      '{"a":"b"}', // body
    ),
  },
  {
    name: 'push_null',
    frame: { header: 'push oABC_-123 order_paid', opaque: 7, body: Buffer.from('null') },
    bytes: bytes(
      [0, 0, 0, 41], // packLength = 4 + 25 + 4 + 4 + 4
      [0, 0, 0, 25], // headerLen
      'push oABC_-123 order_paid', // header
      [0, 0, 0, 7], // opaque
      [0, 0, 0, 4], // bodyLen
      'null', // body: no variables
    ),
  },
  {
    name: 'send_unicode',
    frame: {
      header: 'send oX tmpl',
      opaque: 0xffffffff,
      body: Buffer.from('{"product":"\\u5de7\\u514b\\u529b","price":"39.8\\u5143"}'),
    },
    bytes: bytes(
      [0, 0, 0, 77], // packLength = 4 + 12 + 4 + 4 + 53
      [0, 0, 0, 12], // headerLen
      'send oX tmpl', // header
      [0xff, 0xff, 0xff, 0xff], // opaque: the largest u32
      [0, 0, 0, 53], // bodyLen
      '{"product":"\\u5de7\\u514b\\u529b","price":"39.8\\u5143"}', // body: PHP-escaped, pure ASCII
    ),
  },
  {
    name: 'tset',
    frame: { header: 'tset order_paid', opaque: 42, body: null },
    bytes: bytes(
      [0, 0, 0, 23], // packLength = 4 + 15 + 4
      [0, 0, 0, 15], // headerLen
      'tset order_paid', // header
      [0, 0, 0, 42], // opaque; no bodyLen, no body
    ),
  },
  {
    name: 'result_ok',
    frame: { header: 'result 200', opaque: 1, body: Buffer.alloc(0) },
    bytes: bytes(
      [0, 0, 0, 22], // packLength = 4 + 10 + 4 + 4 + 0
      [0, 0, 0, 10], // headerLen
      'result 200', // header
      [0, 0, 0, 1], // opaque
      [0, 0, 0, 0], // bodyLen: no message
    ),
  },
  {
    name: 'result_err',
    frame: { header: 'result 400', opaque: 9, body: Buffer.from('template key not exists') },
    bytes: bytes(
      [0, 0, 0, 45], // packLength = 4 + 10 + 4 + 4 + 23
      [0, 0, 0, 10], // headerLen
      'result 400', // header
      [0, 0, 0, 9], // opaque
      [0, 0, 0, 23], // bodyLen
      'template key not exists', // body
    ),
  },
];

const handVectors: Vector[] = [
  {
    name: 'the golden example of docs/PROTOCOL.md',
    frame: { header: 'push o1 k1', opaque: 1, body: Buffer.from('{"a":"b"}') },
    bytes: Buffer.from('0000001f 0000000a 70757368206f31206b31 00000001 00000009 7b2261223a2262227d'.replaceAll(' ', ''), 'hex'),
  },
  {
    name: 'present but empty body',
    frame: { header: 'push o1 k1', opaque: 5, body: Buffer.alloc(0) },
    bytes: bytes(
      [0, 0, 0, 22], // packLength = 4 + 10 + 4 + 4
      [0, 0, 0, 10], // headerLen
      'push o1 k1', // header
      [0, 0, 0, 5], // opaque
      [0, 0, 0, 0], // bodyLen 0: body present, empty
    ),
  },
  {
    name: 'absent body, opaque 0',
    frame: { header: 'tset k', opaque: 0, body: null },
    bytes: bytes(
      [0, 0, 0, 14], // packLength = 4 + 6 + 4
      [0, 0, 0, 6], // headerLen
      'tset k', // header
      [0, 0, 0, 0], // opaque 0; frame ends here
    ),
  },
  {
    name: 'opaque 0xFFFFFFFF with body null',
    frame: { header: 'tset k', opaque: 0xffffffff, body: null },
    bytes: bytes([0, 0, 0, 14], [0, 0, 0, 6], 'tset k', [0xff, 0xff, 0xff, 0xff]),
  },
  {
    name: 'opaque byte order',
    frame: { header: 'x', opaque: 0x01020304, body: Buffer.from([0x0a]) },
    bytes: bytes([0, 0, 0, 14], [0, 0, 0, 1], 'x', [1, 2, 3, 4], [0, 0, 0, 1], [0x0a]),
  },
  {
    name: 'empty header',
    frame: { header: '', opaque: 3, body: null },
    bytes: bytes([0, 0, 0, 8], [0, 0, 0, 0], [0, 0, 0, 3]),
  },
  {
    name: '\\uXXXX escapes stay as written',
    frame: { header: 'send o1 k1', opaque: 2, body: Buffer.from('{"k":"\\u00e9\\ud83d\\ude00\\/"}') },
    bytes: bytes(
      [0, 0, 0, 50], // packLength = 4 + 10 + 4 + 4 + 28
      [0, 0, 0, 10],
      'send o1 k1',
      [0, 0, 0, 2],
      [0, 0, 0, 28], // bodyLen: 28 ASCII bytes, not the 2 characters they stand for
      '{"k":"\\u00e9\\ud83d\\ude00\\/"}',
    ),
  },
  {
    name: 'binary body bytes are untouched',
    frame: { header: 'b', opaque: 1, body: Buffer.from([0x00, 0xff, 0xc3, 0x28, 0x0d, 0x0a]) },
    bytes: bytes([0, 0, 0, 19], [0, 0, 0, 1], 'b', [0, 0, 0, 1], [0, 0, 0, 6], [0x00, 0xff, 0xc3, 0x28, 0x0d, 0x0a]),
  },
  {
    name: 'non-ASCII header byte round-trips as latin1',
    frame: { header: 'caf\u00e9', opaque: 1, body: null },
    bytes: bytes([0, 0, 0, 12], [0, 0, 0, 4], 'caf', [0xe9], [0, 0, 0, 1]),
  },
];

function decodeAll(decoder: FrameDecoder, chunks: Buffer[]): Frame[] {
  return chunks.flatMap((chunk) => decoder.push(chunk));
}

function u32(value: number): Buffer {
  const buf = Buffer.alloc(4);
  buf.writeUInt32BE(value);
  return buf;
}

describe('golden frames', () => {
  const golden = loadGoldenFrames();

  it('every golden frame has an annotated vector, and the annotation spells the same bytes', () => {
    assert.deepEqual([...golden.keys()], goldenVectors.map((v) => v.name));
    for (const vector of goldenVectors) assert.deepEqual(vector.bytes, golden.get(vector.name), vector.name);
  });

  for (const vector of goldenVectors) {
    const wire = golden.get(vector.name) ?? vector.bytes;
    it(`${vector.name}: parse`, () => {
      const frame = decodeFrame(wire);
      assert.equal(frame.header, vector.frame.header);
      assert.equal(frame.opaque, vector.frame.opaque);
      assert.deepEqual(frame.body, vector.frame.body);
    });
    it(`${vector.name}: generate`, () => {
      assert.deepEqual(encodeFrame(vector.frame), wire);
    });
    it(`${vector.name}: mirror`, () => {
      assert.deepEqual(encodeFrame(decodeFrame(wire)), wire);
    });
    it(`${vector.name}: streaming`, () => {
      assert.deepEqual(new FrameDecoder().push(wire), [vector.frame]);
    });
  }
});

describe('hand-written vectors', () => {
  for (const vector of handVectors) {
    it(vector.name, () => {
      assert.deepEqual(decodeFrame(vector.bytes), vector.frame);
      assert.deepEqual(encodeFrame(vector.frame), vector.bytes);
      assert.deepEqual(encodeFrame(decodeFrame(vector.bytes)), vector.bytes);
      assert.deepEqual(new FrameDecoder().push(vector.bytes), [vector.frame]);
    });
  }

  it('body null and empty body are different frames', () => {
    assert.equal(decodeFrame(bytes([0, 0, 0, 8], [0, 0, 0, 0], [0, 0, 0, 1])).body, null);
    assert.deepEqual(decodeFrame(bytes([0, 0, 0, 12], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0])).body, Buffer.alloc(0));
  });
});

describe('encodeFrame', () => {
  it('refuses an opaque that is not a u32', () => {
    for (const opaque of [-1, 1.5, 0x100000000, Number.NaN]) {
      assert.throws(() => encodeFrame({ header: 'x', opaque, body: null }), RangeError, String(opaque));
    }
  });

  it('refuses header characters that do not fit in one byte', () => {
    assert.throws(() => encodeFrame({ header: 'push \u5de7 k', opaque: 1, body: null }), RangeError);
  });
});

describe('decodeFrame: malformed input', () => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ['empty buffer', Buffer.alloc(0), /shorter than its length field/],
    ['3 bytes', Buffer.from([0, 0, 0]), /shorter than its length field/],
    ['packLength larger than the buffer', bytes([0, 0, 0, 9], [0, 0, 0, 0], [0, 0, 0, 1]), /packLength 9 does not match the 8 bytes/],
    ['packLength smaller than the buffer', bytes([0, 0, 0, 8], [0, 0, 0, 0], [0, 0, 0, 1], [0]), /packLength 8 does not match the 9 bytes/],
    ['packLength < 8', bytes([0, 0, 0, 4], [0, 0, 0, 0]), /packLength 4 is below the minimum of 8/],
    ['packLength 0', bytes([0, 0, 0, 0]), /packLength 0 is below/],
    ['headerLen overruns', bytes([0, 0, 0, 10], [0, 0, 0, 3], 'ab', [0, 0, 0, 1]), /headerLen 3 overruns packLength 10/],
    ['headerLen 0xFFFFFFFF', bytes([0, 0, 0, 8], [0xff, 0xff, 0xff, 0xff], [0, 0, 0, 1]), /headerLen 4294967295 overruns/],
    ['1 stray byte', bytes([0, 0, 0, 10], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0]), /1 stray bytes after opaque/],
    ['2 stray bytes', bytes([0, 0, 0, 11], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0, 0]), /2 stray bytes/],
    ['3 stray bytes', bytes([0, 0, 0, 12], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0, 0, 0]), /3 stray bytes/],
    ['bodyLen too big', bytes([0, 0, 0, 15], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0, 0, 0, 3], 'ab'), /bodyLen 3 does not match the 2 bytes/],
    ['bodyLen too small', bytes([0, 0, 0, 15], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0, 0, 0, 1], 'ab'), /bodyLen 1 does not match the 2 bytes/],
  ];
  for (const [name, buf, message] of cases) {
    it(name, () => {
      assert.throws(
        () => decodeFrame(buf),
        (err: unknown) => err instanceof MalformedFrameError && err.code === 'MEGA_ERR_MALFORMED_FRAME' && message.test(err.message),
      );
    });
  }
});

describe('FrameDecoder', () => {
  const golden = loadGoldenFrames();
  const one = golden.get('send_unicode')!;
  const two = Buffer.concat([golden.get('push_simple')!, golden.get('tset')!]);
  const twoFrames = [decodeFrame(golden.get('push_simple')!), decodeFrame(golden.get('tset')!)];

  it('defaults maxLength to package_max_length 2465792', () => {
    assert.equal(DEFAULT_PACKAGE_MAX_LENGTH, 2465792);
    assert.equal(new FrameDecoder().maxLength, 2465792);
    assert.equal(new FrameDecoder({}).maxLength, 2465792);
    assert.equal(new FrameDecoder({ maxLength: 12 }).maxLength, 12);
  });

  it('refuses a maxLength that is not a positive integer, naming it', () => {
    for (const maxLength of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '100' as unknown as number]) {
      assert.throws(() => new FrameDecoder({ maxLength }), { name: 'RangeError', message: /^maxLength must be a positive integer/ });
    }
  });

  it('one frame split at every byte offset', () => {
    for (let i = 0; i <= one.length; i++) {
      const decoder = new FrameDecoder();
      assert.deepEqual(decodeAll(decoder, [one.subarray(0, i), one.subarray(i)]), [decodeFrame(one)], `split at ${i}`);
      assert.equal(decoder.bufferedBytes, 0);
    }
  });

  it('two concatenated frames split at every pair of offsets', () => {
    for (let i = 0; i <= two.length; i++) {
      for (let j = i; j <= two.length; j++) {
        const decoder = new FrameDecoder();
        const frames = decodeAll(decoder, [two.subarray(0, i), two.subarray(i, j), two.subarray(j)]);
        assert.deepEqual(frames, twoFrames, `split at ${i}, ${j}`);
        assert.equal(decoder.bufferedBytes, 0);
      }
    }
  });

  it('byte by byte, with bufferedBytes counting the partial frame', () => {
    const firstLength = golden.get('push_simple')!.length;
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    for (let i = 0; i < two.length; i++) {
      const out = decoder.push(two.subarray(i, i + 1));
      frames.push(...out);
      const fed = i + 1;
      const expected = fed <= firstLength ? fed % firstLength : (fed - firstLength) % (two.length - firstLength);
      assert.equal(decoder.bufferedBytes, expected, `after ${fed} bytes`);
    }
    assert.deepEqual(frames, twoFrames);
  });

  it('empty chunks change nothing', () => {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(Buffer.alloc(0)), []);
    assert.deepEqual(decoder.push(two.subarray(0, 2)), []);
    assert.deepEqual(decoder.push(Buffer.alloc(0)), []);
    assert.equal(decoder.bufferedBytes, 2);
    assert.deepEqual(decoder.push(two.subarray(2)), twoFrames);
  });

  it('1000 pipelined frames in one chunk come out in order', () => {
    const wire = Buffer.concat(
      Array.from({ length: 1000 }, (_, i) => encodeFrame({ header: `push o${i} k`, opaque: i * 7, body: Buffer.from(`{"i":${i}}`) })),
    );
    const frames = new FrameDecoder().push(wire);
    assert.equal(frames.length, 1000);
    frames.forEach((frame, i) => {
      assert.equal(frame.opaque, i * 7);
      assert.equal(frame.header, `push o${i} k`);
      assert.equal(frame.body!.toString(), `{"i":${i}}`);
    });
  });

  it('a large frame fed byte by byte stays linear', () => {
    // Quadratic buffering would copy ~5 GB here and time the test out.
    const body = Buffer.alloc(100_000, 0x61);
    const wire = encodeFrame({ header: 'push o k', opaque: 9, body });
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    for (let i = 0; i < wire.length; i++) frames.push(...decoder.push(wire.subarray(i, i + 1)));
    assert.equal(frames.length, 1);
    assert.deepEqual(frames[0]!.body, body);
  });

  it('bodies stay valid after later pushes, and chunks are never written to', () => {
    const firstLength = golden.get('push_simple')!.length;
    const chunks = [
      Buffer.from(two.subarray(0, 20)), // part of push_simple
      Buffer.from(two.subarray(20, firstLength + 3)), // the rest of it, and the start of tset
      Buffer.concat([two.subarray(firstLength + 3), one]), // the rest of tset, then a whole send_unicode
    ];
    const copies = chunks.map((chunk) => Buffer.from(chunk));
    const decoder = new FrameDecoder();
    const frames = decodeAll(decoder, chunks);
    for (let i = 0; i < one.length; i++) decodeAll(decoder, [Buffer.from(one.subarray(0, i)), Buffer.from(one.subarray(i))]);
    assert.deepEqual(frames, [...twoFrames, decodeFrame(one)]);
    assert.deepEqual(chunks, copies);
  });

  it('throws FrameTooLargeError after only the 4 length bytes', () => {
    const decoder = new FrameDecoder({ maxLength: 100 });
    assert.throws(
      () => decoder.push(u32(97)), // 97 + 4 = 101 > 100
      (err: unknown) =>
        err instanceof FrameTooLargeError &&
        err.code === 'MEGA_ERR_FRAME_TOO_LARGE' &&
        err.frameLength === 101 &&
        err.maxLength === 100,
    );
  });

  it('throws FrameTooLargeError when the length field itself arrives split', () => {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(Buffer.from([0xff, 0xff])), []);
    assert.deepEqual(decoder.push(Buffer.from([0xff])), []);
    assert.throws(
      () => decoder.push(Buffer.from([0xff])),
      (err: unknown) => err instanceof FrameTooLargeError && err.frameLength === 0xffffffff + 4 && err.maxLength === 2465792,
    );
  });

  it('returns the good frames before an oversize one in the same chunk, then reports FrameTooLargeError', () => {
    const decoder = new FrameDecoder({ maxLength: 100 });
    assert.equal(decoder.push(Buffer.concat([two, u32(200)])).length, 2);
    assert.ok(decoder.error instanceof FrameTooLargeError);
    assert.throws(() => decoder.push(Buffer.alloc(1)), FrameTooLargeError);
  });

  it('accepts a frame of exactly maxLength', () => {
    const frame: Frame = { header: 'push o k', opaque: 1, body: Buffer.alloc(100 - 4 - 4 - 8 - 4 - 4, 0x20) };
    const wire = encodeFrame(frame);
    assert.equal(wire.length, 100);
    assert.deepEqual(new FrameDecoder({ maxLength: 100 }).push(wire), [frame]);
    const split = new FrameDecoder({ maxLength: 100 });
    assert.deepEqual(decodeAll(split, [wire.subarray(0, 50), wire.subarray(50)]), [frame]);
  });

  it('throws MalformedFrameError for packLength < 8 as soon as the length is in', () => {
    assert.throws(() => new FrameDecoder().push(u32(7)), { name: 'MalformedFrameError', message: /packLength 7 is below the minimum of 8/ });
  });

  it('throws MalformedFrameError for inconsistent inner lengths', () => {
    const cases: Buffer[] = [
      bytes([0, 0, 0, 10], [0, 0, 0, 3], 'ab', [0, 0, 0, 1]), // headerLen overruns
      bytes([0, 0, 0, 10], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0]), // 1 stray byte
      bytes([0, 0, 0, 11], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0, 0]), // 2 stray bytes
      bytes([0, 0, 0, 12], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0, 0, 0]), // 3 stray bytes
      bytes([0, 0, 0, 15], [0, 0, 0, 1], 'x', [0, 0, 0, 1], [0, 0, 0, 3], 'ab'), // bodyLen mismatch
    ];
    for (const wire of cases) {
      assert.throws(() => new FrameDecoder().push(wire), MalformedFrameError);
      const split = new FrameDecoder();
      split.push(wire.subarray(0, 5));
      assert.throws(() => split.push(wire.subarray(5)), MalformedFrameError);
    }
  });

  it('returns the frames before bad bytes, then is unusable: every later push throws the same error', () => {
    const decoder = new FrameDecoder({ maxLength: 100 });
    decoder.push(two.subarray(0, 3));
    assert.equal(decoder.error, undefined);
    const frames = decoder.push(Buffer.concat([two.subarray(3), u32(500)]));
    assert.equal(frames.length, 2, 'the frames completed before the bad length are still returned');
    const thrown = decoder.error as Error | undefined; // the assert above narrowed it
    assert.ok(thrown instanceof FrameTooLargeError);
    assert.equal(decoder.bufferedBytes, 0);
    assert.throws(() => decoder.push(two), (err: unknown) => err === thrown);
    assert.throws(() => decoder.push(Buffer.alloc(0)), (err: unknown) => err === thrown);
  });
});

describe('fuzz', () => {
  it('20,000 random and mutated buffers give frames or typed errors only', (t) => {
    const random = prng(0x5eed);
    const int = (n: number): number => Math.floor(random() * n);
    const randomBytes = (n: number): Buffer => {
      const buf = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) buf[i] = int(256);
      return buf;
    };
    const golden = [...loadGoldenFrames().values()];
    const maxLength = 256;
    let decoded = 0;
    // Capturing ~30,000 stack traces would be most of this test's time; the fuzz checks error classes only.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    t.after(() => {
      Error.stackTraceLimit = stackTraceLimit;
    });

    for (let round = 0; round < 20_000; round++) {
      let wire: Buffer;
      const shape = round % 4;
      if (shape === 0) {
        wire = randomBytes(int(48));
      } else {
        // Mostly valid frames, so the fuzz reaches past the length checks.
        const base = Buffer.from(golden[int(golden.length)]!);
        if (shape === 1) base[int(base.length)] = int(256);
        if (shape === 2) base.writeUInt32BE(int(base.length + 4), int(2) * 4);
        wire = shape === 3 ? Buffer.concat([base.subarray(0, int(base.length + 1)), randomBytes(int(8))]) : base;
      }
      const context = `round ${round}`;

      let one: Frame | undefined;
      try {
        one = decodeFrame(wire);
      } catch (err) {
        assert.ok(err instanceof MalformedFrameError, `${context}: decodeFrame threw ${String(err)}`);
      }
      if (one !== undefined) {
        decoded++;
        assert.deepEqual(encodeFrame(one), wire, `${context}: mirror`);
      }

      const decoder = new FrameDecoder({ maxLength });
      const cut = int(wire.length + 1);
      try {
        const frames = decodeAll(decoder, [wire.subarray(0, cut), wire.subarray(cut)]);
        if (decoder.error !== undefined) throw decoder.error;
        if (one !== undefined) assert.equal(frames.length, 1, `${context}: stream agrees with decodeFrame`);
        // Whatever the stream yields must be exactly the bytes it consumed.
        const consumed = Buffer.concat(frames.map(encodeFrame));
        assert.ok(consumed.equals(wire.subarray(0, consumed.length)), `${context}: stream mirror`);
        assert.equal(consumed.length + decoder.bufferedBytes, wire.length, `${context}: bytes accounted for`);
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
        assert.ok(err instanceof MalformedFrameError || err instanceof FrameTooLargeError, `${context}: push threw ${String(err)}`);
        assert.equal(one, undefined, `${context}: stream refused what decodeFrame accepted`);
      }
    }
    // The mutations must leave enough valid frames for the checks above to mean something.
    assert.ok(decoded > 3000, `only ${decoded} buffers decoded`);
  });
});
