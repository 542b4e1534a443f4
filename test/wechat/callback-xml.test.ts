import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseCallbackXml, textField } from '../../src/wechat/callback-xml.js';
import { CallbackXmlError } from '../../src/errors.js';

// WeChat's documented TEMPLATESENDJOBFINISH event, as its docs show it (with their indentation)
const RECEIPT = `<xml>
  <ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>
  <FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName>
  <CreateTime>1395658920</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>
  <MsgID>200163836</MsgID>
  <Status><![CDATA[failed:user block]]></Status>
</xml>`;

describe('parseCallbackXml', () => {
  it("reads WeChat's receipt: CDATA and plain text fields", () => {
    const f = parseCallbackXml(RECEIPT);
    assert.deepEqual(f, {
      ToUserName: 'gh_7f083739789a',
      FromUserName: 'oia2TjuEGTNoeX76QEjQNrcURxG8',
      CreateTime: '1395658920',
      MsgType: 'event',
      Event: 'TEMPLATESENDJOBFINISH',
      MsgID: '200163836',
      Status: 'failed:user block',
    });
    assert.equal(textField(f, 'Status'), 'failed:user block');
    assert.equal(textField(f, 'Nope'), undefined);
  });

  it('reads nested events, a declaration, comments, entities and character references', () => {
    const f = parseCallbackXml(
      `\ufeff<?xml version="1.0" encoding="utf-8"?><!-- hi --><xml><MsgType>event</MsgType><Content>a &lt;b&gt; &amp; &#20320;&#x597D;</Content>` +
        `<ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo><Empty/><Attr a="1" b='2'>x</Attr></xml>`,
    );
    assert.equal(f.Content, 'a <b> & 你好');
    assert.deepEqual(f.ScanCodeInfo, { ScanType: 'qrcode', ScanResult: '1' });
    assert.equal(textField(f, 'ScanCodeInfo'), undefined, 'a nested element is not a text field');
    assert.equal(f.Empty, '');
    assert.equal(f.Attr, 'x');
  });

  const bad: Array<[string, string]> = [
    ['', 'empty'],
    ['not xml', 'text'],
    ['<xml><A>1</B></xml>', 'mismatched close'],
    ['<xml><A>1</A>', 'unclosed root'],
    ['<root><A>1</A></root>', 'another root'],
    ['<xml><A><![CDATA[x</A></xml>', 'unterminated CDATA'],
    ['<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><A>&e;</A></xml>', 'a DOCTYPE (XXE)'],
    ['<xml><A>&e;</A></xml>', 'an unknown entity'],
    ['<xml><A>a & b</A></xml>', 'a bare &'],
    ['<xml><A>1</A></xml><xml/>', 'two roots'],
    ['<xml><A>text<B>1</B></A></xml>', 'mixed content'],
    ['<xml>' + '<a>'.repeat(20) + '</a>'.repeat(20) + '</xml>', 'too deep'],
    ['<xml><A b=1>x</A></xml>', 'unquoted attribute'],
  ];
  for (const [text, what] of bad) {
    it(`refuses ${what} with CallbackXmlError`, () => {
      assert.throws(() => parseCallbackXml(text), (err: unknown) => err instanceof CallbackXmlError && err.code === 'MEGA_ERR_CALLBACK_XML');
    });
  }

  it('fuzz: any string either parses or throws CallbackXmlError, never anything else', () => {
    const pieces = fc.constantFrom('<xml>', '</xml>', '<A>', '</A>', '<![CDATA[', ']]>', '&amp;', '&#x41;', '&', '<', '>', '<!--', '-->', '<?xml ?>', '<B/>', 'text', ' ', '"', "'", '=');
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.array(pieces, { maxLength: 40 }).map((a) => a.join(''))), (text) => {
        try {
          const f = parseCallbackXml(text);
          assert.equal(typeof f, 'object');
        } catch (err) {
          assert.ok(err instanceof CallbackXmlError, `unexpected ${String(err)}`);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
