// Binary arguments: Buffers become placeholders and attachments, and back.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeArgs, encodeArgs } from '../src/index.js';

describe('binary arguments', () => {
  it('replaces Buffers, typed arrays and ArrayBuffers with placeholders, in order', () => {
    const { args_json, attachments } = encodeArgs([
      'x',
      { a: Buffer.from([1, 2]), list: [new Uint8Array([3]), 4] },
      new Uint8Array([5, 6]).buffer,
    ]);
    assert.deepEqual(JSON.parse(args_json), [
      'x',
      { a: { _placeholder: true, num: 0 }, list: [{ _placeholder: true, num: 1 }, 4] },
      { _placeholder: true, num: 2 },
    ]);
    assert.deepEqual(attachments.map((b) => [...b]), [[1, 2], [3], [5, 6]]);
  });

  it('round-trips', () => {
    const { args_json, attachments } = encodeArgs([{ file: Buffer.from('hello') }, 7]);
    const [first, second] = decodeArgs(args_json, attachments);
    assert.ok(Buffer.isBuffer(first.file));
    assert.equal(first.file.toString(), 'hello');
    assert.equal(second, 7);
  });

  it('no arguments is an empty args_json', () => {
    assert.deepEqual(encodeArgs([]), { args_json: '', attachments: [] });
    assert.deepEqual(decodeArgs(''), []);
  });

  it('a placeholder with no attachment behind it stays as it is', () => {
    const [value] = decodeArgs('[{"_placeholder":true,"num":3}]', []);
    assert.deepEqual(value, { _placeholder: true, num: 3 });
  });
});
