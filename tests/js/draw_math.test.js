// The map editor's drawing math (javascript/differential_diffusion_draw_math.js): brush
// falloff, flow, pressure, gradients, fill/invert/clear, undo/redo, resampling, decoding.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const M = require('../../javascript/differential_diffusion_draw_math.js');

const { DrawingDocument, MAX_VALUE, amountToValue, brushFalloff } = M;

function distanceToSegment(px, py, ax, ay, bx, by) {
  const dx = bx - ax, dy = by - ay, l2 = dx * dx + dy * dy;
  const t = l2 ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / l2)) : 0;
  return Math.hypot(px - ax - t * dx, py - ay - t * dy);
}

function dab(doc, x, y, params, pressure) {
  doc.beginStroke(params);
  doc.strokeTo(x, y, pressure);
  return doc.endStroke();
}

test('amounts map 0..1 onto 0..65535', () => {
  assert.equal(amountToValue(0), 0);
  assert.equal(amountToValue(1), MAX_VALUE);
  assert.equal(amountToValue(0.5), 32768);
  assert.equal(amountToValue(-3), 0);
  assert.equal(amountToValue(7), MAX_VALUE);
});

test('brush falloff: full inside, zero from the radius on, a smooth monotone feather', () => {
  assert.equal(brushFalloff(0, 10, 0.5), 1);
  assert.equal(brushFalloff(5, 10, 0.5), 1); // the feather starts at radius x (1 - softness)
  assert.equal(brushFalloff(10, 10, 0.5), 0);
  assert.equal(brushFalloff(12, 10, 0.5), 0);
  assert.ok(Math.abs(brushFalloff(7.5, 10, 0.5) - 0.5) < 1e-12, 'half way through the feather is half');
  let previous = 1;
  for (let d = 0; d <= 10; d += 0.05) {
    const a = brushFalloff(d, 10, 0.8);
    assert.ok(a <= previous + 1e-12 && a >= 0 && a <= 1, `not monotone at ${d}`);
    previous = a;
  }
  // A hard brush keeps a 1 px antialiased edge.
  assert.equal(brushFalloff(8.99, 10, 0), 1);
  assert.ok(brushFalloff(9.5, 10, 0) > 0 && brushFalloff(9.5, 10, 0) < 1);
  assert.equal(brushFalloff(1.5, 10, 1) < brushFalloff(1, 10, 1), true, 'softness 1 feathers from the centre');
});

test('a dab paints the amount inside its radius and nothing outside', () => {
  const doc = new DrawingDocument(64, 48);
  const rect = dab(doc, 30, 20, { amount: 0.6, radius: 10, softness: 0, flow: 1 });
  const target = amountToValue(0.6);
  assert.deepEqual(rect, { x0: 20, y0: 10, x1: 40, y1: 30 });
  for (let y = 0; y < 48; y++) {
    for (let x = 0; x < 64; x++) {
      const d = Math.hypot(x + 0.5 - 30, y + 0.5 - 20);
      const v = doc.valueAt(x, y);
      if (d <= 9) assert.equal(v, target, `inside at ${x},${y}`);
      else if (d >= 10) assert.equal(v, 0, `outside at ${x},${y}`);
      else assert.ok(v > 0 && v < target, `edge at ${x},${y}: ${v}`);
    }
  }
});

test('a soft dab follows the falloff exactly', () => {
  const doc = new DrawingDocument(50, 50);
  dab(doc, 25, 25, { amount: 1, radius: 16, softness: 0.75, flow: 1 });
  let checked = 0;
  for (let y = 0; y < 50; y++) {
    for (let x = 0; x < 50; x++) {
      const expected = Math.round(MAX_VALUE * brushFalloff(Math.hypot(x + 0.5 - 25, y + 0.5 - 25), 16, 0.75));
      assert.ok(Math.abs(doc.valueAt(x, y) - expected) <= 1, `${x},${y}: ${doc.valueAt(x, y)} vs ${expected}`);
      checked++;
    }
  }
  assert.equal(checked, 2500);
});

test('flow: each stroke moves a pixel that share of the way, strokes accumulate toward the amount', () => {
  const doc = new DrawingDocument(40, 40);
  const target = amountToValue(0.8);
  const flow = 0.25;
  for (let n = 1; n <= 12; n++) {
    dab(doc, 20, 20, { amount: 0.8, radius: 8, softness: 0, flow });
    const expected = target * (1 - Math.pow(1 - flow, n));
    assert.ok(Math.abs(doc.valueAt(20, 20) - expected) <= n, `after ${n} strokes: ${doc.valueAt(20, 20)} vs ${expected.toFixed(1)}`);
  }
  // Strokes toward a lower amount (an eraser at flow 0.5) come down the same way.
  const before = doc.valueAt(20, 20);
  dab(doc, 20, 20, { amount: 0, radius: 8, softness: 0, flow: 0.5 });
  assert.equal(doc.valueAt(20, 20), Math.round(before * 0.5));
});

test('flow: going over the same place within one stroke does not pile up', () => {
  const once = new DrawingDocument(80, 30);
  once.beginStroke({ amount: 1, radius: 6, softness: 0.5, flow: 0.3 });
  once.strokeTo(10, 15);
  once.strokeTo(70, 15);
  once.endStroke();
  const backAndForth = new DrawingDocument(80, 30);
  backAndForth.beginStroke({ amount: 1, radius: 6, softness: 0.5, flow: 0.3 });
  for (const x of [10, 70, 10, 70, 40]) backAndForth.strokeTo(x, 15);
  backAndForth.endStroke();
  assert.deepEqual(backAndForth.data, once.data);
  assert.equal(once.valueAt(40, 15), Math.round(MAX_VALUE * 0.3));
});

test('a stroke covers the capsule around its path; the eraser paints 0', () => {
  const doc = new DrawingDocument(100, 60);
  doc.fill(1);
  doc.beginStroke({ amount: 0, radius: 5, softness: 0, flow: 1 });
  doc.strokeTo(10, 10);
  doc.strokeTo(90, 50);
  doc.endStroke();
  for (let y = 0; y < 60; y++) {
    for (let x = 0; x < 100; x++) {
      const d = distanceToSegment(x + 0.5, y + 0.5, 10, 10, 90, 50);
      if (d <= 4) assert.equal(doc.valueAt(x, y), 0, `${x},${y}`);
      if (d >= 5) assert.equal(doc.valueAt(x, y), MAX_VALUE, `${x},${y}`);
    }
  }
});

test('pen pressure scales the coverage along the segment', () => {
  const doc = new DrawingDocument(120, 20);
  doc.beginStroke({ amount: 1, radius: 4, softness: 0, flow: 1 });
  doc.strokeTo(10, 10, 0.2);
  doc.strokeTo(110, 10, 1);
  doc.endStroke();
  const at = (x) => doc.valueAt(x, 10) / MAX_VALUE;
  assert.ok(Math.abs(at(10) - 0.2) < 0.01, `start ${at(10)}`);
  assert.ok(Math.abs(at(60) - 0.6) < 0.01, `middle ${at(60)}`);
  assert.ok(Math.abs(at(109) - 1) < 0.01, `end ${at(109)}`);
  assert.ok(at(30) < at(60) && at(60) < at(90));
});

test('strokes off the map, or partly off, touch only the map', () => {
  const doc = new DrawingDocument(30, 30);
  assert.equal(dab(doc, -50, -50, { amount: 1, radius: 5 }), null);
  assert.equal(doc.hasDrawing, false, 'a stroke that touched nothing is no step');
  const rect = dab(doc, 0, 29, { amount: 1, radius: 5, softness: 0 });
  assert.deepEqual(rect, { x0: 0, y0: 24, x1: 5, y1: 30 });
  assert.equal(doc.valueAt(0, 29), MAX_VALUE);
  assert.equal(doc.undoStack.length, 1);
});

test('cancelling a stroke restores what it painted', () => {
  const doc = new DrawingDocument(70, 70);
  doc.gradient('linear', 0, 0, 70, 70, 0.1, 0.9);
  const before = new Uint16Array(doc.data);
  doc.beginStroke({ amount: 1, radius: 20, softness: 0.3 });
  doc.strokeTo(10, 10);
  doc.strokeTo(60, 65);
  doc.cancelStroke();
  assert.deepEqual(doc.data, before);
  assert.equal(doc.undoStack.length, 1);
});

test('linear gradient: amount A before the start, B beyond the end, linear between, any direction', () => {
  const doc = new DrawingDocument(101, 7);
  const rect = doc.gradient('linear', 20.5, 3, 80.5, 3, 0.2, 1);
  assert.deepEqual(rect, { x0: 0, y0: 0, x1: 101, y1: 7 });
  for (let y = 0; y < 7; y++) {
    for (let x = 0; x < 101; x++) {
      const t = Math.max(0, Math.min(1, (x - 20) / 60));
      assert.ok(Math.abs(doc.valueAt(x, y) - MAX_VALUE * (0.2 + 0.8 * t)) <= 1, `${x},${y}`);
    }
  }
  const diagonal = new DrawingDocument(33, 21);
  diagonal.gradient('linear', 30, 2, 4, 19, 0.9, 0.05);
  for (let y = 0; y < 21; y++) {
    for (let x = 0; x < 33; x++) {
      assert.ok(Math.abs(diagonal.valueAt(x, y) - M.gradientValueAt('linear', 30, 2, 4, 19, 0.9, 0.05, x, y)) <= 1);
    }
  }
});

test('radial gradient: A at the centre, B from the radius on, by distance', () => {
  const doc = new DrawingDocument(64, 40);
  doc.gradient('radial', 32, 20, 32, 4, 1, 0); // radius 16
  for (let y = 0; y < 40; y++) {
    for (let x = 0; x < 64; x++) {
      const d = Math.hypot(x + 0.5 - 32, y + 0.5 - 20);
      const expected = Math.round(MAX_VALUE * (1 - Math.min(1, d / 16)));
      assert.ok(Math.abs(doc.valueAt(x, y) - expected) <= 1, `${x},${y}: ${doc.valueAt(x, y)} vs ${expected}`);
    }
  }
  assert.equal(doc.valueAt(0, 0), 0);
  assert.ok(doc.valueAt(31, 19) > 0.95 * MAX_VALUE);
  // Centre off the map, and a zero-length gradient (B everywhere).
  const off = new DrawingDocument(20, 20);
  off.gradient('radial', -10, 10, 5, 10, 0, 1);
  assert.equal(off.valueAt(19, 10), MAX_VALUE);
  assert.ok(off.valueAt(0, 10) < off.valueAt(3, 10));
  off.gradient('radial', 5, 5, 5, 5, 1, 0.25);
  assert.ok(off.data.every((v) => v === amountToValue(0.25)));
});

test('shift constrains the gradient direction to 45 degree steps, keeping its length', () => {
  const near = (a, b) => Math.abs(a - b) < 1e-9;
  let [dx, dy] = M.constrainAngle(10, 3, 45);
  assert.ok(near(dx, Math.hypot(10, 3)) && dy === 0);
  [dx, dy] = M.constrainAngle(-4, 30, 45);
  assert.ok(dx === 0 && near(dy, Math.hypot(4, 30)));
  [dx, dy] = M.constrainAngle(10, -9, 45);
  assert.ok(near(dx, -dy) && near(Math.hypot(dx, dy), Math.hypot(10, 9)) && dx > 0);
  assert.deepEqual(M.constrainAngle(0, 0, 45), [0, 0]);
});

test('fill, invert and clear', () => {
  const doc = new DrawingDocument(9, 5);
  doc.fill(0.25);
  assert.ok(doc.data.every((v) => v === amountToValue(0.25)));
  doc.invert();
  assert.ok(doc.data.every((v) => v === MAX_VALUE - amountToValue(0.25)));
  doc.gradient('linear', 0, 0, 9, 0, 0, 1);
  const gradient = new Uint16Array(doc.data);
  doc.invert();
  doc.invert();
  assert.deepEqual(doc.data, gradient);
  doc.clear();
  assert.ok(doc.data.every((v) => v === 0));
  assert.equal(doc.hasDrawing, true, 'a cleared map is a drawing (of "keep everything")');
});

test('undo and redo restore every state exactly, over more than 30 steps', () => {
  const doc = new DrawingDocument(200, 150);
  const states = [new Uint16Array(doc.data)];
  const edits = [
    () => doc.gradient('radial', 100, 75, 150, 75, 1, 0),
    () => doc.fill(0.5),
    () => doc.invert(),
    () => doc.gradient('linear', 0, 0, 200, 150, 0, 1),
  ];
  for (let i = 0; i < 40; i++) {
    if (i % 5 === 4) edits[(i / 5) % edits.length | 0]();
    else {
      doc.beginStroke({ amount: (i % 7) / 6, radius: 5 + (i % 9) * 3, softness: (i % 4) / 3, flow: 0.4 + (i % 3) * 0.3 });
      doc.strokeTo((i * 37) % 200, (i * 53) % 150, 1);
      doc.strokeTo((i * 71) % 200, (i * 29) % 150, 0.5);
      doc.endStroke();
    }
    states.push(new Uint16Array(doc.data));
  }
  assert.equal(doc.undoStack.length, 40);
  for (let i = 39; i >= 0; i--) {
    assert.ok(doc.canUndo);
    doc.undo();
    assert.deepEqual(doc.data, states[i], `after undoing to step ${i}`);
  }
  assert.equal(doc.canUndo, false);
  assert.equal(doc.undo(), null);
  assert.equal(doc.hasDrawing, false, 'undoing everything is "nothing drawn"');
  for (let i = 1; i <= 40; i++) {
    doc.redo();
    assert.deepEqual(doc.data, states[i], `after redoing step ${i}`);
  }
  assert.equal(doc.canRedo, false);
  // Undo twice, then a new edit: the redo steps are gone.
  doc.undo();
  doc.undo();
  doc.fill(1);
  assert.equal(doc.canRedo, false);
  doc.undo();
  assert.deepEqual(doc.data, states[38]);
});

test('history limits: at least 30 steps whatever the budget, at most maxSteps, memory counted', () => {
  const doc = new DrawingDocument(256, 256, { byteBudget: 1, minSteps: 30, maxSteps: 100 });
  for (let i = 0; i < 45; i++) doc.gradient('linear', 0, 0, 256, i + 1, 0, 1);
  assert.equal(doc.undoStack.length, 30, 'the budget trims down to the minimum');
  assert.equal(doc.hasDrawing, true);
  for (let i = 0; i < 30; i++) doc.undo();
  assert.equal(doc.canUndo, false);
  assert.equal(doc.hasDrawing, true, 'the oldest steps were dropped: the map is not blank');
  const capped = new DrawingDocument(16, 16, { maxSteps: 100 });
  for (let i = 0; i < 130; i++) dab(capped, i % 16, 3, { amount: 1, radius: 2 });
  assert.equal(capped.undoStack.length, 100);
  // Whole-map steps of a constant map are stored as their value.
  const fills = new DrawingDocument(512, 512);
  fills.fill(0.5);
  fills.fill(0.7);
  assert.ok(fills.historyBytes < 100, `fills cost ${fills.historyBytes} bytes`);
  fills.undo();
  assert.ok(fills.data.every((v) => v === amountToValue(0.5)));
  // A stroke costs its tiles, not the whole map.
  const strokes = new DrawingDocument(1024, 1024);
  dab(strokes, 512, 512, { amount: 1, radius: 10 }); // 512 = 8 tiles of 64
  assert.equal(strokes.historyBytes, 4 * M.TILE * M.TILE * 2, 'a dab across a tile corner saves 4 tiles');
});

test('resampling stretches like the server: identity, constants, ramps, shrinking averages', () => {
  const ramp = new Uint16Array(8 * 2);
  for (let x = 0; x < 8; x++) ramp[x] = ramp[8 + x] = x * 8000;
  assert.deepEqual(M.resampleGray(ramp, 8, 2, 8, 2), ramp);
  const up = M.resampleGray(ramp, 8, 2, 32, 5);
  for (let y = 0; y < 5; y++) {
    for (let x = 1; x < 32; x++) assert.ok(up[y * 32 + x] >= up[y * 32 + x - 1], 'a ramp stays a ramp');
  }
  const constant = new Uint16Array(7 * 3).fill(12345);
  assert.ok(M.resampleGray(constant, 7, 3, 19, 11).every((v) => v === 12345));
  assert.ok(M.resampleGray(constant, 7, 3, 2, 1).every((v) => v === 12345));
  const checker = new Uint16Array(64 * 64).map((_, i) => ((i % 64) + (i >> 6)) % 2 ? MAX_VALUE : 0);
  const small = M.resampleGray(checker, 64, 64, 8, 8);
  assert.ok(small.every((v) => Math.abs(v - MAX_VALUE / 2) < 600), 'shrinking a checkerboard gives mid gray');
  const doc = new DrawingDocument(40, 40);
  dab(doc, 20, 20, { amount: 1, radius: 10 });
  const stretched = doc.resized(80, 20);
  assert.equal(stretched.width, 80);
  assert.equal(stretched.hasDrawing, true);
  assert.equal(stretched.canUndo, false);
  assert.equal(stretched.valueAt(40, 10), MAX_VALUE);
  assert.equal(new DrawingDocument(5, 5).resized(10, 10).hasDrawing, false);
});

test('RGBA pixels decode as the server reads a map: luminance times alpha', () => {
  const rgba = new Uint8ClampedArray([255, 255, 255, 255, 0, 0, 0, 255, 255, 0, 0, 255, 255, 255, 255, 0, 128, 128, 128, 128]);
  const gray = M.grayFromRGBA(rgba, 5, 1);
  assert.deepEqual([...gray], [MAX_VALUE, 0, Math.round(0.299 * 255 * 257), 0, Math.round(128 * 128 / 255 * 257)]);
  const doc = new DrawingDocument(5, 1);
  doc.load(gray);
  assert.deepEqual(doc.data, gray);
  doc.undo();
  assert.ok(doc.data.every((v) => v === 0));
});

test('revision counts changes, so an encoded map can be cached', () => {
  const doc = new DrawingDocument(10, 10);
  const r0 = doc.revision;
  doc.beginStroke({ amount: 1, radius: 2 });
  doc.strokeTo(5, 5);
  const r1 = doc.revision;
  assert.ok(r1 > r0);
  doc.endStroke();
  doc.undo();
  assert.ok(doc.revision > r1);
});

test('reused whole-map buffers never alias a state in the history', () => {
  const doc = new DrawingDocument(64, 48, { maxSteps: 5, minSteps: 2 });
  const states = [new Uint16Array(doc.data)];
  const edit = (i) => {
    if (i % 3 === 0) doc.fill((i % 10) / 10);
    else if (i % 3 === 1) doc.gradient('radial', i * 3, 20, i * 3 + 20, 30, 1, i / 20);
    else dab(doc, i * 4, 24, { amount: 0.5, radius: 9 });
    states.push(new Uint16Array(doc.data));
  };
  for (let i = 0; i < 14; i++) edit(i);
  for (let k = 1; k <= 5; k++) {
    doc.undo();
    assert.deepEqual(doc.data, states[states.length - 1 - k], `undo ${k}`);
  }
  assert.equal(doc.canUndo, false);
  doc.redo();
  doc.redo();
  assert.deepEqual(doc.data, states[states.length - 4]);
  // A new edit drops the redo steps (their buffers go to reuse); the history stays right.
  const kept = states.slice(0, states.length - 3);
  doc.gradient('linear', 0, 0, 64, 0, 0, 1);
  kept.push(new Uint16Array(doc.data));
  doc.fill(0.3);
  kept.push(new Uint16Array(doc.data));
  doc.gradient('radial', 32, 24, 50, 24, 0, 1);
  kept.push(new Uint16Array(doc.data));
  for (let k = 1; k <= 4; k++) {
    doc.undo();
    assert.deepEqual(doc.data, kept[kept.length - 1 - k], `undo ${k} after new edits`);
  }
});

test('a gradient computed band by band equals the whole one, and the map waits for the commit', () => {
  for (const kind of ['linear', 'radial']) {
    const whole = new DrawingDocument(97, 61);
    whole.gradient(kind, 30, 20, 80, 50, 0.9, 0.1);
    const banded = new DrawingDocument(97, 61);
    dab(banded, 10, 10, { amount: 1, radius: 4 });
    const before = new Uint16Array(banded.data);
    const job = banded.gradientJob(kind, 30, 20, 80, 50, 0.9, 0.1);
    let steps = 0;
    while (!job.step(7)) steps++;
    assert.equal(steps, 8, '61 rows in bands of 7');
    assert.deepEqual(banded.data, before, 'the map is unchanged before the commit');
    assert.equal(banded.undoStack.length, 1, 'the gradient is no undo step before its commit');
    assert.deepEqual(job.commit(), { x0: 0, y0: 0, x1: 97, y1: 61 });
    assert.deepEqual(banded.data, whole.data, kind);
    assert.throws(() => job.commit(), /already committed/);
    banded.undo();
    assert.deepEqual(banded.data, before);
  }
});
