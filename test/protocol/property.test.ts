/**
 * Property-based tests of the server's decoding path (FrameDecoder, then parseRequest) over
 * random and mutated frames: every input ends in requests, a 400 for that frame, or one of
 * the errors that make the server answer 413/500 and close. Nothing else may escape.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameDecoder, encodeFrame, parseRequest } from '../../src/protocol/index.js';
import { BadRequestError, FrameTooLargeError, MalformedFrameError, UnknownCommandError } from '../../src/errors.js';

const MAX = 64 * 1024;

type Outcome = 'request' | 400 | 413 | 500;

/** What the server does with these bytes, frame by frame, as src/server/connection.ts does. */
function serve(chunks: Buffer[]): Outcome[] {
  const decoder = new FrameDecoder({ maxLength: MAX });
  const out: Outcome[] = [];
  for (const chunk of chunks) {
    let frames;
    const fatal = (err: unknown): Outcome[] => {
      if (err instanceof FrameTooLargeError) out.push(413);
      else if (err instanceof MalformedFrameError) out.push(500);
      else throw err;
      return out; // the connection is closed
    };
    try {
      frames = decoder.push(chunk);
    } catch (err) {
      return fatal(err);
    }
    for (const frame of frames) {
      try {
        const request = parseRequest(frame);
        if (request.kind === 'push' || request.kind === 'send') assert.ok(request.data === null || typeof request.data === 'object');
        out.push('request');
      } catch (err) {
        if (err instanceof BadRequestError) out.push(400);
        else if (err instanceof UnknownCommandError) {
          out.push(500);
          return out;
        } else throw err;
      }
    }
    if (decoder.error !== undefined) return fatal(decoder.error);
  }
  return out;
}

const word = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/),
  fc.string({ maxLength: 12 }),
  fc.constantFrom('', ' ', 'é', '\u0000', '\u00ff', 'o 1'),
);
const command = fc.constantFrom('push', 'send', 'tset', 'query', 'result', 'PUSH', 'auth', 'fly', '');
const header = fc.oneof(
  fc.tuple(command, fc.array(word, { maxLength: 5 }), fc.constantFrom(' ', '  ', '')).map(([c, ws, sep]) => [c, ...ws].join(sep)),
  fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b).toString('latin1')),
);
const jsonBody = fc.oneof(
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 20 })).map((d) => JSON.stringify(d)),
  fc.constantFrom('null', '[]', '{', '"x"', '1', '{"a":"\\ud800"}', ''),
);
const body = fc.oneof(
  fc.constant(null),
  jsonBody.map((t) => Buffer.from(t)),
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), // invalid UTF-8 and binary
);
const frame = fc
  .record({ header, opaque: fc.nat({ max: 0xffffffff }), body })
  .map((f) => encodeFrame({ header: f.header.replace(/[^\u0000-\u00ff]/g, '?'), opaque: f.opaque, body: f.body }));

/** Damage a valid frame the ways a broken or hostile client would. */
const mutated = fc.tuple(frame, fc.nat(), fc.nat({ max: 255 }), fc.constantFrom('truncate', 'len0', 'lenMax', 'headerMax', 'flip', 'append'))
  .map(([f, at, byte, how]) => {
    const b = Buffer.from(f);
    switch (how) {
      case 'truncate':
        return b.subarray(0, at % b.length);
      case 'len0':
        b.writeUInt32BE(0, 0);
        return b;
      case 'lenMax':
        b.writeUInt32BE(0xffffffff, 0);
        return b;
      case 'headerMax':
        b.writeUInt32BE(0xffffffff, 4);
        return b;
      case 'flip':
        b[at % b.length] = byte;
        return b;
      default:
        return Buffer.concat([b, Buffer.from([byte, byte, byte])]);
    }
  });

/** Bytes split into random chunks, as TCP may deliver them. */
function chunked(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

describe('decoder properties', () => {
  it('random and mutated frames, in any chunking, end in a defined result or a clean close', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(frame, mutated), { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 6 }), (frames, cuts) => {
        const all = Buffer.concat(frames);
        const whole = serve([all]);
        const split = serve(chunked(all, cuts));
        assert.deepEqual(split, whole, 'chunking never changes the outcome');
        for (const o of whole) assert.ok(['request', 400, 413, 500].includes(o as never));
      }),
      { numRuns: 3000, seed: 20261126 },
    );
  });

  it('a valid frame decodes to the same request whatever follows it', () => {
    fc.assert(
      fc.property(frame, fc.uint8Array({ maxLength: 50 }), (f, tail) => {
        const alone = serve([f]);
        const followed = serve([Buffer.concat([f, Buffer.from(tail)])]);
        assert.deepEqual(followed.slice(0, alone.length), alone);
      }),
      { numRuns: 2000, seed: 7 },
    );
  });

  it('lengths of 0 and 0xFFFFFFFF, headers without spaces, huge bodies: typed outcomes', () => {
    const huge = encodeFrame({ header: 'push o k', opaque: 1, body: Buffer.alloc(MAX) });
    assert.deepEqual(serve([huge]), [413]);
    const zero = Buffer.alloc(8);
    assert.deepEqual(serve([zero]), [500]);
    assert.deepEqual(serve([encodeFrame({ header: 'pushok', opaque: 1, body: Buffer.from('{}') })]), [500]);
    assert.deepEqual(serve([encodeFrame({ header: 'push  o k', opaque: 1, body: Buffer.from('{}') })]), [400]);
    assert.deepEqual(serve([encodeFrame({ header: 'push o k', opaque: 1, body: Buffer.from('[1]') })]), [400]);
    assert.deepEqual(serve([encodeFrame({ header: 'push o k', opaque: 1, body: Buffer.from([0xc3, 0x28]) })]), [400]);
  });
});
