#!/usr/bin/env node
// The map editor's speed in Chromium, on a stand-in page (tests/browser/stand_in_page.js; no
// WebUI needed). A 2048x2048 init image makes a 2048x2048 map; 200 scripted operations (150
// brush/eraser strokes of 24 moves with sizes 16-400 px and 50 linear/radial gradient drags of
// 12 moves, one move per animation frame as from a 60 Hz pointer, 0.1 s between operations) are
// drawn with pointer events; then Generate is clicked (a) right after a stroke, so the map must
// be encoded first, and (b) after a pause, when the background encoding has put it in place.
//
// Prints one JSON line: the editor's work per animation frame (pointer moves, the commit at
// pointer-up, the frames computing a released gradient) p50/p95/max, overall and by kind;
// animation-frame intervals while drawing; the encode times and the Generate waits.
//
// usage: node benchmarks/draw_frame_time.js [--size 2048] [--ops 200] [--encode-delay MS] [--chromium PATH]
// needs: Debian's chromium and npm playwright-core (bash tests/browser/install.sh).
'use strict';

const fs = require('fs');
const os = require('os');
const { execFileSync } = require('child_process');

const { openStandInPage, playwrightCore } = require('../tests/browser/stand_in_page.js');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const SIZE = Number(option('size', 2048));
const OPS = Number(option('ops', 200));
const ENCODE_DELAY = option('encode-delay', null); // ms; default: the editor's

function findChromium() {
  const explicit = option('chromium', process.env.CHROMIUM_PATH);
  if (explicit) return explicit;
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('which', [name], { encoding: 'utf8' }).trim();
    } catch (e) { /* next */ }
  }
  throw new Error('chromium not found (bash tests/browser/install.sh, or --chromium PATH)');
}

async function main() {
  const browser = await playwrightCore().chromium.launch({ executablePath: findChromium(), args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const result = { size: SIZE, ops: OPS, cpus: os.cpus().length };
  let dir = null;
  try {
    const opened = await openStandInPage(browser, { size: SIZE });
    const page = opened.page;
    dir = opened.dir;
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

    const run = await page.evaluate(async ([ops, encodeDelay]) => {
      const editor = window.DifferentialDiffusionDraw.editor;
      const stage = editor.stage;
      const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
      const PAUSE_FRAMES = 6; // between operations, as a hand moving on: 0.1 s
      const r = stage.getBoundingClientRect();
      let seed = 12345;
      const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
      const send = (type, x, y, extra) => stage.dispatchEvent(new PointerEvent(type, Object.assign({
        pointerId: 1, pointerType: 'mouse', isPrimary: true, bubbles: true, cancelable: true,
        clientX: r.left + x, clientY: r.top + y, button: 0, buttons: type === 'pointerup' ? 0 : 1,
      }, extra || {})));
      const slider = (id, value) => { const s = editor.sliders[id].input; s.value = String(value); s.dispatchEvent(new Event('input')); };
      if (encodeDelay !== null) editor.encodeDelayMs = Number(encodeDelay);
      editor.stats.frameWorkMs.length = 0;
      editor.stats.frameIntervalMs.length = 0;
      editor.stats.frameKinds.length = 0;
      const started = performance.now();
      for (let i = 0; i < ops; i++) {
        const gradient = i % 4 === 3;
        if (gradient) {
          editor.setTool(i % 8 === 3 ? 'linear' : 'radial');
          slider('gradientFrom', Math.round(random() * 100));
          slider('gradientTo', Math.round(random() * 100));
        } else {
          editor.setTool(i % 5 === 4 ? 'eraser' : 'brush');
          slider('size', 16 + Math.round(random() * 384));
          slider('softness', Math.round(random() * 100));
          slider('flow', 20 + Math.round(random() * 80));
          slider('amount', Math.round(random() * 100));
        }
        let x = random() * r.width, y = random() * r.height;
        const angle = random() * Math.PI * 2;
        const moves = gradient ? 12 : 24;
        const step = gradient ? 10 : 8;
        send('pointerdown', x, y);
        await frame();
        for (let k = 0; k < moves; k++) {
          x = Math.max(0, Math.min(r.width - 1, x + Math.cos(angle + k * 0.08) * step));
          y = Math.max(0, Math.min(r.height - 1, y + Math.sin(angle + k * 0.08) * step));
          send('pointermove', x, y, { shiftKey: gradient && k % 2 === 0 });
          await frame();
        }
        send('pointerup', x, y);
        for (let k = 0; k < PAUSE_FRAMES; k++) await frame();
      }
      const drawingSeconds = (performance.now() - started) / 1000;
      const report = editor.report();

      // Generate right after a stroke: the click waits for the encoding.
      editor.setTool('brush');
      send('pointerdown', 100, 100);
      send('pointermove', 200, 150);
      send('pointerup', 200, 150);
      let before = window.generated.length;
      let clicked = performance.now();
      document.getElementById('img2img_generate').click();
      while (window.generated.length === before) await new Promise((resolve) => setTimeout(resolve, 1));
      const cold = window.generated[window.generated.length - 1];
      const coldMs = cold.at - clicked;
      const coldOk = cold.value === editor.encoded.url && cold.value.startsWith('data:image/png;base64,');

      // Generate after a pause: the idle encoding is done, nothing to wait for.
      send('pointerdown', 300, 300);
      send('pointermove', 320, 380);
      send('pointerup', 320, 380);
      const idleStarted = performance.now();
      while (!editor.isSent()) await new Promise((resolve) => setTimeout(resolve, 5));
      const idleEncodeDoneMs = performance.now() - idleStarted;
      before = window.generated.length;
      clicked = performance.now();
      document.getElementById('img2img_generate').click();
      const warm = window.generated[window.generated.length - 1];
      const warmMs = warm.at - clicked;
      const warmOk = window.generated.length === before + 1 && warm.value === editor.encoded.url;

      const encodes = editor.stats.encodes;
      return {
        map: `${editor.doc.width}x${editor.doc.height}`,
        display: `${editor.layoutBox.canvasWidth}x${editor.layoutBox.canvasHeight}`,
        drawingSeconds,
        frames: report.frames,
        frameWorkMs: report.frameWork,
        frameWorkMsByKind: report.frameWorkByKind,
        frameIntervalMs: report.frameInterval,
        undoSteps: editor.doc.undoStack.length,
        historyMB: editor.doc.historyBytes / 1048576,
        generateAfterStrokeMs: coldMs,
        generateAfterStrokeSentCurrentMap: coldOk,
        generateAfterPauseMs: warmMs,
        generateAfterPauseSentCurrentMap: warmOk,
        idleEncodeDoneAfterMs: idleEncodeDoneMs,
        encodes: encodes.slice(-4).map((e) => ({ ms: Math.round(e.ms * 10) / 10, background: e.background, worker: e.worker, bitDepth: e.bitDepth, kB: Math.round(e.bytes / 1024) })),
      };
    }, [OPS, ENCODE_DELAY]);
    Object.assign(result, run, { pageErrors: errors });
    result.ok = errors.length === 0 && run.generateAfterStrokeSentCurrentMap && run.generateAfterPauseSentCurrentMap;
  } finally {
    await browser.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e) }) + '\n');
  process.exit(2);
});
