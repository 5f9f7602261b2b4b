// The editor's PNG encoder (javascript/differential_diffusion_draw_math.js): grayscale,
// 16 and 8 bits, decoded independently (node's zlib) for the round trip.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const zlib = require('zlib');
const M = require('../../javascript/differential_diffusion_draw_math.js');
const { decodeGrayPng } = require('./png_decode.js');

function randomValues(n, seed) {
  let s = seed >>> 0;
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 16;
  }
  return out;
}

const zlibDeflate = async (parts) => {
  const chunks = [];
  for await (const part of parts) chunks.push(Buffer.from(part));
  return new Uint8Array(zlib.deflateSync(Buffer.concat(chunks)));
};

test('crc32 is the PNG one', () => {
  assert.equal((M.crc32(Buffer.from('IEND')) ^ 0xffffffff) >>> 0, 0xae426082);
  assert.equal((M.crc32(Buffer.from('123456789')) ^ 0xffffffff) >>> 0, 0xcbf43926);
});

test('16-bit round trip: every value comes back exactly (CompressionStream deflate)', async () => {
  assert.ok(M.canEncode16Bit(), 'node has CompressionStream');
  const width = 37, height = 23;
  const values = randomValues(width * height, 7);
  values[0] = 0;
  values[1] = M.MAX_VALUE;
  values[2] = 256;
  values[3] = 255;
  const png = await M.encodeGrayPng(values, width, height, { bitDepth: 16, rowsPerBand: 5 });
  const decoded = decodeGrayPng(png);
  assert.equal(decoded.width, width);
  assert.equal(decoded.height, height);
  assert.equal(decoded.bitDepth, 16);
  assert.equal(decoded.colorType, 0);
  assert.deepEqual(decoded.chunks.map((c) => c.type), ['IHDR', 'IDAT', 'IEND']);
  assert.deepEqual(decoded.values, values);
  assert.deepEqual(decoded.filters, [1]);
});

test('8-bit: value / 257, rounded', async () => {
  const values = new Uint16Array([0, 128, 129, 257, 385, 386, 32768, 65535, 65407, 65408]);
  const png = await M.encodeGrayPng(values, 5, 2, { bitDepth: 8 });
  const decoded = decodeGrayPng(png);
  assert.equal(decoded.bitDepth, 8);
  assert.deepEqual([...decoded.values], [...values].map((v) => Math.round(v / 257)));
});

test('odd sizes and bands give the same image; a smooth map compresses', async () => {
  for (const [w, h] of [[1, 1], [3, 5], [130, 1], [1, 130], [65, 67]]) {
    const values = randomValues(w * h, w * 31 + h);
    const reference = decodeGrayPng(await M.encodeGrayPng(values, w, h, { deflate: zlibDeflate, rowsPerBand: 1000 })).values;
    assert.deepEqual(reference, values, `${w}x${h}`);
    for (const rowsPerBand of [1, 2, 64]) {
      const png = await M.encodeGrayPng(values, w, h, { rowsPerBand });
      assert.deepEqual(decodeGrayPng(png).values, values, `${w}x${h} bands of ${rowsPerBand}`);
    }
  }
  const doc = new M.DrawingDocument(512, 512);
  doc.gradient('radial', 256, 256, 400, 256, 1, 0);
  const png = await M.encodeGrayPng(doc.data, 512, 512);
  assert.deepEqual(decodeGrayPng(png).values, doc.data);
  assert.ok(png.length < 512 * 512 * 2 / 4, `a smooth 16-bit map should compress at least 4x, got ${png.length} bytes`);
});

test('pause runs between bands and can abandon the encoding', async () => {
  let pauses = 0;
  await M.encodeGrayPng(new Uint16Array(10 * 10), 10, 10, { rowsPerBand: 3, pause: async () => { pauses++; } });
  assert.equal(pauses, 3, '4 bands, a pause before each but the first');
  await assert.rejects(
    M.encodeGrayPng(new Uint16Array(10 * 10), 10, 10, { rowsPerBand: 3, pause: async () => { throw new Error('map changed'); } }),
    /map changed/,
  );
});

test('stored (uncompressed) deflate: zlib reads it, and the PNG round trip is exact', async () => {
  const width = 301, height = 233; // more than one 65535-byte block at 16 bits
  const values = randomValues(width * height, 11);
  const png = await M.encodeGrayPng(values, width, height, { bitDepth: 16, rowsPerBand: 17, deflate: M.storedDeflate });
  const decoded = decodeGrayPng(png);
  assert.deepEqual(decoded.values, values);
  const raw = Buffer.concat([Buffer.from([1, 2, 3]), Buffer.alloc(70000, 7)]);
  async function* parts() { yield raw.subarray(0, 5); yield raw.subarray(5); }
  assert.deepEqual(Buffer.from(zlib.inflateSync(Buffer.from(await M.storedDeflate(parts())))), raw);
  async function* nothing() {}
  assert.equal(zlib.inflateSync(Buffer.from(await M.storedDeflate(nothing()))).length, 0);
});
