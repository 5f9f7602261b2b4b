// Test-only: decode a grayscale PNG (8 or 16 bits, any filter) with node's zlib, to check the
// editor's encoder independently of it.
'use strict';

const zlib = require('zlib');

function paeth(a, b, c) {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

function decodeGrayPng(bytes) {
  const buf = Buffer.from(bytes);
  const signature = [137, 80, 78, 71, 13, 10, 26, 10];
  signature.forEach((v, i) => { if (buf[i] !== v) throw new Error('not a PNG'); });
  let offset = 8, header = null;
  const idat = [], chunks = [];
  while (offset < buf.length) {
    const length = buf.readUInt32BE(offset);
    const type = buf.toString('latin1', offset + 4, offset + 8);
    const data = buf.subarray(offset + 8, offset + 8 + length);
    chunks.push({ type, length, crc: buf.readUInt32BE(offset + 8 + length) });
    if (type === 'IHDR') {
      header = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), bitDepth: data[8], colorType: data[9], interlace: data[12] };
    } else if (type === 'IDAT') idat.push(data);
    offset += 12 + length;
  }
  if (!header || header.colorType !== 0 || header.interlace !== 0) throw new Error(`unsupported PNG ${JSON.stringify(header)}`);
  const { width, height, bitDepth } = header;
  const bpp = bitDepth === 16 ? 2 : 1;
  const stride = width * bpp;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  if (raw.length !== height * (stride + 1)) throw new Error(`inflated ${raw.length} bytes, expected ${height * (stride + 1)}`);
  const lines = new Uint8Array(height * stride);
  const filters = new Set();
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    filters.add(filter);
    for (let i = 0; i < stride; i++) {
      const x = raw[y * (stride + 1) + 1 + i];
      const a = i >= bpp ? lines[y * stride + i - bpp] : 0;
      const b = y > 0 ? lines[(y - 1) * stride + i] : 0;
      const c = i >= bpp && y > 0 ? lines[(y - 1) * stride + i - bpp] : 0;
      const predictor = [0, a, b, (a + b) >> 1, paeth(a, b, c)][filter];
      if (predictor === undefined) throw new Error(`bad filter ${filter}`);
      lines[y * stride + i] = (x + predictor) & 0xff;
    }
  }
  const values = bitDepth === 16 ? new Uint16Array(width * height) : new Uint8Array(width * height);
  for (let i = 0; i < values.length; i++) values[i] = bitDepth === 16 ? (lines[2 * i] << 8) | lines[2 * i + 1] : lines[i];
  return { ...header, values, chunks, filters: [...filters] };
}

module.exports = { decodeGrayPng };
