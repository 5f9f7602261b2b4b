#!/usr/bin/env node
// The map editor on the stand-in page (stand_in_page.js; no WebUI), in Chromium: what the
// real-host test (tests/webui/browser_draw.js) does not reach. Pen pressure and touch, the
// eraser, a shift-constrained linear gradient, Fill / Invert / Clear and undo through the
// buttons (35 steps), Escape, which keys are the editor's, "Edit uploaded map", "Download PNG",
// a new init image size and back, Generate held until the map is current (and not held for
// another map source), "nothing drawn"; then the encoders without Worker, without
// CompressionStream (8-bit canvas PNG), and the 8-bit fallback for a map too large at 16 bits.
// Prints one JSON object; PNGs it got go to outDir. Used by tests/test_draw_page.py.
//
// usage: node draw_page_check.js '<json config>'   config: { chromium, playwrightCore, outDir }
'use strict';

const fs = require('fs');
const path = require('path');
const { openStandInPage, setInitImage } = require('./stand_in_page.js');

const cfg = JSON.parse(process.argv[2] || '{}');
if (cfg.playwrightCore) process.env.PLAYWRIGHT_CORE_DIR = cfg.playwrightCore;
const pw = require(cfg.playwrightCore || 'playwright-core');

const result = { ok: false, error: null, pageErrors: [], consoleErrors: [], checks: {} };

// In-page helpers: pointer events at map coordinates, and the editor's state.
const HELPERS = () => {
  window.t = {
    editor: () => window.DifferentialDiffusionDraw.editor,
    point(x, y) {
      const e = window.t.editor(), r = e.stage.getBoundingClientRect();
      return [r.left + x * r.width / e.doc.width, r.top + y * r.height / e.doc.height];
    },
    send(type, x, y, extra) {
      const [clientX, clientY] = window.t.point(x, y);
      window.t.editor().stage.dispatchEvent(new PointerEvent(type, Object.assign({
        pointerId: 7, pointerType: 'mouse', isPrimary: true, bubbles: true, cancelable: true,
        clientX, clientY, button: 0, buttons: type === 'pointerup' ? 0 : 1,
      }, extra || {})));
    },
    async stroke(points, extra) {
      const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
      window.t.send('pointerdown', points[0][0], points[0][1], extra);
      await frame();
      for (const [x, y] of points.slice(1)) {
        window.t.send('pointermove', x, y, extra);
        await frame();
      }
      const last = points[points.length - 1];
      window.t.send('pointerup', last[0], last[1], extra);
    },
    set(setting, value) {
      const input = document.querySelector(`#differential_diffusion_draw_editor [data-setting="${setting}"]`);
      input.value = String(value);
      input.dispatchEvent(new Event('input', { bubbles: true }));
    },
    value: (x, y) => window.t.editor().doc.valueAt(x, y),
    async sent() {
      while (!window.t.editor().isSent()) await new Promise((resolve) => setTimeout(resolve, 10));
      return document.querySelector('#differential_diffusion_drawn_map textarea').value;
    },
  };
};

async function open(browser, options) {
  const { page, dir } = await openStandInPage(browser, options);
  page.on('pageerror', (e) => result.pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') result.consoleErrors.push(m.text()); });
  await page.evaluate(HELPERS);
  return { page, dir };
}

async function toolsAndUndo(browser) {
  const { page } = await open(browser, { size: [300, 200] });
  const c = result.checks;
  c.pressure = await page.evaluate(async () => {
    const { t } = window;
    t.editor().setTool('brush');
    t.set('amount', 100); t.set('size', 20); t.set('softness', 0); t.set('flow', 100);
    await t.stroke([[50, 50], [100, 50], [150, 50]], { pointerType: 'pen', pressure: 0.3 });
    await t.stroke([[50, 150], [150, 150]], { pointerType: 'touch', pressure: 0.5 });
    return { pen: t.value(100, 50), touch: t.value(100, 150) };
  });
  c.eraser = await page.evaluate(async () => {
    const { t } = window;
    t.editor().setTool('eraser');
    await t.stroke([[100, 140], [100, 160]]);
    return { erased: t.value(100, 150), beside: t.value(130, 150) };
  });
  c.gradientShift = await page.evaluate(async () => {
    const { t } = window;
    t.editor().setTool('linear');
    t.set('gradientFrom', 0); t.set('gradientTo', 100);
    await t.stroke([[20, 100], [70, 115], [120, 130]], { shiftKey: true });
    await t.sent(); // the released gradient is computed over the next frames
    const entry = t.editor().journal[t.editor().journal.length - 1];
    return { entry, left: t.value(10, 10), right: t.value(290, 190), middle: t.value(72, 5) };
  });
  c.buttons = await page.evaluate(async () => {
    const { t } = window, e = t.editor();
    const before = Array.from(e.doc.data);
    const click = (action) => document.querySelector(`#differential_diffusion_draw_editor [data-action="${action}"]`).click();
    e.setTool('brush');
    t.set('amount', 40);
    click('fill');
    const fill = t.value(5, 5);
    click('invert');
    const inverted = t.value(5, 5);
    click('clear');
    const cleared = t.value(5, 5);
    click('undo'); click('undo'); click('undo');
    const restored = Array.from(e.doc.data).every((v, i) => v === before[i]);
    // Escape drops a stroke in progress.
    const depth = e.doc.undoStack.length;
    t.send('pointerdown', 200, 20);
    await new Promise((resolve) => requestAnimationFrame(resolve));
    t.send('pointermove', 250, 40);
    await new Promise((resolve) => requestAnimationFrame(resolve));
    document.activeElement.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    t.send('pointerup', 250, 40);
    const escaped = { depth: e.doc.undoStack.length, depthBefore: depth, same: Array.from(e.doc.data).every((v, i) => v === before[i]) };
    // 35 small strokes, undone and redone with the buttons.
    const states = [Array.from(e.doc.data)];
    t.set('size', 6);
    for (let i = 0; i < 35; i++) {
      t.set('amount', 10 + i * 2);
      await t.stroke([[10 + i * 8, 180], [12 + i * 8, 190]]);
      states.push(Array.from(e.doc.data));
    }
    let undoneOk = true;
    for (let i = 34; i >= 0; i--) {
      click('undo');
      undoneOk = undoneOk && Array.from(e.doc.data).every((v, k) => v === states[i][k]);
    }
    for (let i = 0; i < 35; i++) click('redo');
    const redoneOk = Array.from(e.doc.data).every((v, k) => v === states[35][k]);
    return { fill, inverted, cleared, restored, escaped, undoneOk, redoneOk, undoDisabledAtEnd: document.querySelector('[data-action="redo"]').disabled };
  });
  c.keys = await page.evaluate(async () => {
    const { t } = window, e = t.editor();
    const press = (key, extra) => document.activeElement.dispatchEvent(new KeyboardEvent('keydown', Object.assign({ key, bubbles: true, cancelable: true }, extra || {})));
    // Elsewhere: focus in a text field outside, pointer outside.
    e.element.dispatchEvent(new PointerEvent('pointerleave'));
    document.getElementById('elsewhere').focus();
    const size0 = e.settings.size, depth0 = e.doc.undoStack.length;
    press(']');
    press('z', { ctrlKey: true });
    const elsewhere = { size: e.settings.size, size0, depth: e.doc.undoStack.length, depth0 };
    // Focus in the editor (pointer still outside): its keys.
    e.stage.focus();
    press(']');
    const grown = e.settings.size;
    press('[');
    press('z', { ctrlKey: true });
    const afterUndo = e.doc.undoStack.length;
    press('Z', { ctrlKey: true, shiftKey: true });
    press('r');
    return { elsewhere, focused: { size0, grown, shrunk: e.settings.size, afterUndo, afterRedo: e.doc.undoStack.length, depth0, tool: e.settings.tool } };
  });
  c.loadUploaded = await page.evaluate(async () => {
    const { t } = window, e = t.editor();
    const c = document.createElement('canvas');
    c.width = 60; c.height = 40;
    const g = c.getContext('2d');
    for (let x = 0; x < 60; x++) {
      const v = Math.round(x * 255 / 59);
      g.fillStyle = `rgb(${v},${v},${v})`;
      g.fillRect(x, 0, 1, 40);
    }
    const img = document.createElement('img');
    img.src = c.toDataURL('image/png');
    await img.decode();
    document.getElementById('differential_diffusion_map').appendChild(img);
    document.querySelector('#differential_diffusion_draw_editor [data-action="load"]').click();
    const depth = e.doc.undoStack.length;
    while (e.doc.undoStack.length === depth) await new Promise((resolve) => setTimeout(resolve, 10));
    const row = Array.from({ length: 300 }, (_, x) => t.value(x, 77));
    const rowsEqual = Array.from({ length: 200 }, (_, y) => t.value(150, y)).every((v) => v === t.value(150, 0));
    return { first: row[0], last: row[299], middle: row[150], monotone: row.every((v, i) => i === 0 || v >= row[i - 1]), rowsEqual, note: e.note.textContent };
  });
  // Download PNG: the file is the map at 16 bits.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('#differential_diffusion_draw_editor [data-action="download"]').click(),
  ]);
  c.download = { file: path.join(cfg.outDir, 'download.png'), suggested: download.suggestedFilename() };
  await download.saveAs(c.download.file);
  c.download.values = await page.evaluate(() => Array.from(window.t.editor().doc.data));
  c.download.size = await page.evaluate(() => [window.t.editor().doc.width, window.t.editor().doc.height]);

  // A new init image size stretches the drawing; back to the old size before any edit: as it was.
  c.initSize = await (async () => {
    const before = await page.evaluate(() => ({ values: Array.from(window.t.editor().doc.data), depth: window.t.editor().doc.undoStack.length }));
    await setInitImage(page, 150, 100);
    await page.waitForFunction(() => window.t.editor().doc.width === 150);
    const stretched = await page.evaluate(() => ({ size: [window.t.editor().doc.width, window.t.editor().doc.height], note: window.t.editor().note.textContent, depth: window.t.editor().doc.undoStack.length }));
    await setInitImage(page, 300, 200);
    await page.waitForFunction(() => window.t.editor().doc.width === 300);
    const back = await page.evaluate((old) => ({ same: Array.from(window.t.editor().doc.data).every((v, i) => v === old[i]), depth: window.t.editor().doc.undoStack.length, note: window.t.editor().note.textContent }), before.values);
    // Edited at the new size: the stretched drawing is the drawing from then on.
    await setInitImage(page, 150, 100);
    await page.waitForFunction(() => window.t.editor().doc.width === 150);
    await page.evaluate(() => window.t.stroke([[10, 10], [20, 20]]));
    await setInitImage(page, 300, 200);
    await page.waitForFunction(() => window.t.editor().doc.width === 300);
    const restretched = await page.evaluate(() => window.t.editor().note.textContent);
    return { depthBefore: before.depth, stretched, back, restretched };
  })();

  // Generate right after a stroke waits for the map; with another map source it does not wait.
  c.generate = await page.evaluate(async () => {
    const { t } = window, e = t.editor();
    t.editor().setTool('brush');
    await t.stroke([[30, 30], [90, 60]]);
    const n = window.generated.length;
    document.getElementById('img2img_generate').click();
    const heldAtClick = window.generated.length === n;
    while (window.generated.length === n) await new Promise((resolve) => setTimeout(resolve, 5));
    const sent = window.generated[window.generated.length - 1].value;
    const current = sent === e.encoded.url && e.encoded.doc === e.doc && e.encoded.revision === e.doc.revision;
    document.querySelector('#differential_diffusion_source input[value="map"]').checked = true;
    await t.stroke([[30, 90], [90, 120]]);
    const m = window.generated.length;
    document.getElementById('img2img_generate').click();
    const notHeld = window.generated.length === m + 1;
    document.querySelector('#differential_diffusion_source input[value="draw"]').checked = true;
    return { heldAtClick, current, notHeld, sentPrefix: sent.slice(0, 22) };
  });
  c.generate.values = await page.evaluate(() => Array.from(window.t.editor().doc.data));
  c.generate.sent = await page.evaluate(() => window.generated[window.generated.length - 2].value);
  await page.close();

  // Nothing drawn: an empty textbox; back to empty after undoing everything.
  const fresh = (await open(browser, { size: [64, 64] })).page;
  c.nothingDrawn = await fresh.evaluate(async () => {
    const { t } = window;
    const textarea = document.querySelector('#differential_diffusion_drawn_map textarea');
    const initially = textarea.value;
    await t.stroke([[10, 10], [30, 30]]);
    const drawn = (await t.sent()).slice(0, 22);
    document.querySelector('#differential_diffusion_draw_editor [data-action="undo"]').click();
    const afterUndo = await t.sent();
    return { initially, drawn, afterUndo, status: t.editor().status.textContent };
  });
  await fresh.close();
}

async function encoders(browser) {
  const c = result.checks;
  const variants = {
    noWorker: () => { delete window.Worker; },
    noCompressionStream: () => { delete window.CompressionStream; },
  };
  for (const [name, before] of Object.entries(variants)) {
    const { page } = await open(browser, { size: [90, 70], before });
    c[name] = await page.evaluate(async () => {
      const { t } = window;
      t.set('softness', 60);
      await t.stroke([[10, 10], [60, 50], [80, 20]]);
      const url = await t.sent();
      const e = t.editor();
      return { url, encode: e.stats.encodes[e.stats.encodes.length - 1], values: Array.from(e.doc.data) };
    });
    await page.close();
  }
  // Noise does not compress: at 2048^2 its 16-bit PNG passes the size limit, so 8 bits are sent.
  const { page } = await open(browser, { size: 2048 });
  c.tooLargeFor16Bit = await page.evaluate(async () => {
    const { t } = window, e = t.editor();
    let s = 1;
    const noise = new Uint16Array(e.doc.width * e.doc.height).map(() => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 16);
    e.apply(() => e.doc.load(noise), { edit: 'load' });
    const url = await t.sent();
    return { urlLength: url.length, encode: e.stats.encodes[e.stats.encodes.length - 1] };
  });
  await page.close();
}

async function main() {
  fs.mkdirSync(cfg.outDir, { recursive: true });
  const browser = await pw.chromium.launch({ executablePath: cfg.chromium, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  try {
    await toolsAndUndo(browser);
    await encoders(browser);
    result.ok = true;
  } finally {
    await browser.close();
  }
}

// Exit once the result is written: a pipe takes large writes asynchronously.
const report = (code) => process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code));
const killer = setTimeout(() => {
  result.error = 'draw_page_check.js overall timeout';
  report(3);
}, cfg.totalTimeoutMs || 240000);
main().catch((e) => { result.error = String(e && (e.stack || e.message) || e); }).finally(() => {
  clearTimeout(killer);
  report(result.ok ? 0 : 2);
});
