#!/usr/bin/env node
// Drives the system Chromium through the panel's map editor (map source "draw") in the real
// WebUI page, with the mouse and keyboard:
//   img2img tab: upload an init image -> open the panel -> map source "draw" -> the editor shows
//   the init image at its size -> radial gradient (drag) -> brush stroke -> brush stroke -> "]"
//   -> Ctrl+Z, Ctrl+Shift+Z, Ctrl+Z (the second stroke is undone) -> raw gray overlay on and off -> Preview
//   -> Generate. Then the test
//   route's last run (the map the server received) and the result file are saved.
//   Inpaint tab: upload an init image of another size (the drawing is stretched, with a note) ->
//   draw a mask stroke on the page's own inpaint canvas, focus the editor, press "]", Ctrl+Z and
//   "r" over that canvas (the editor must not react) -> back to the img2img tab (the drawing is
//   as it was).
// The editor's map (values and journal of edits) is read at each step. Screenshots of the
// stage after each step and of the whole editor go to outDir. Prints one JSON object.
// Used by tests/webui/test_browser_draw.py.
//
// usage: node browser_draw.js '<json config>'
//   config: { url, chromium, playwrightCore, outDir, userDataDir, initImage, inpaintImage, inpaintSize: [w, h],
//             width, height, steps, denoise, gradient: {x0, y0, x1, y1, from, to},
//             strokes: [{amount, size, points: [[x, y], ...]}, ...], overlayProbes: [[x, y], ...] (map points whose overlay
//             pixel is read), timeoutMs, generateTimeoutMs, totalTimeoutMs }
//   Coordinates are in map pixels (the init image's).
'use strict';

const path = require('path');
const fs = require('fs');
const { launchLoopbackOnly, openImg2imgTab, runAndReport, scriptConfig, stepRecorder } = require('./browser_common');

const { cfg, pw, timeout } = scriptConfig();
const P = 'differential_diffusion';
const STAGE = `#${P}_draw_editor .dd-draw-stage`;

const result = {
  ok: false, steps: [], consoleErrors: [], consoleWarnings: [], pageErrors: [],
  failedRequests: [], blockedRequests: [], screenshots: {}, error: null,
  editorShown: null, mapSizes: {}, snapshots: {}, journal: null, brushSizeKeys: null,
  generationInfo: null, galleryError: null, resultImage: null, lastRun: null, receivedMap: null,
  generateWaitMs: null, encodes: null, frames: null,
  inpaint: null,
};
const step = stepRecorder(result);

async function setNumber(page, elemId, value) {
  const box = page.locator(`#${elemId} input[type=number]`).first();
  await box.fill(String(value));
  await box.press('Enter');
  await box.blur();
}

// The editor's state: map size, values (row-major 16-bit), undo depth, note, status.
function editorState(page, withValues) {
  return page.evaluate((values) => {
    const editor = window.DifferentialDiffusionDraw && window.DifferentialDiffusionDraw.editor;
    if (!editor) return null;
    return {
      width: editor.doc.width, height: editor.doc.height, undo: editor.doc.undoStack.length, redo: editor.doc.redoStack.length,
      hasDrawing: editor.doc.hasDrawing, note: editor.note.textContent, status: editor.status.textContent,
      brushSize: editor.settings.size, tool: editor.settings.tool, edits: editor.journal.map((entry) => entry.edit), values: values ? Array.from(editor.doc.data) : undefined,
    };
  }, withValues);
}

// Client coordinates of a map point on the stage.
async function stagePoint(page, x, y) {
  const box = await page.locator(STAGE).boundingBox();
  const size = await page.evaluate(() => { const d = window.DifferentialDiffusionDraw.editor.doc; return [d.width, d.height]; });
  return [box.x + x * box.width / size[0], box.y + y * box.height / size[1]];
}

async function drag(page, points) {
  const [x0, y0] = await stagePoint(page, ...points[0]);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  for (const point of points.slice(1)) {
    const [x, y] = await stagePoint(page, ...point);
    await page.mouse.move(x, y, { steps: 6 });
  }
  await page.mouse.up();
}

async function setSlider(page, setting, value) {
  await page.locator(`#${P}_draw_editor input[data-setting="${setting}"]`).evaluate((input, v) => {
    input.value = String(v);
    input.dispatchEvent(new Event('input', { bubbles: true }));
  }, value);
}

async function shot(page, name, selector) {
  const file = path.join(cfg.outDir, `${name}.png`);
  await page.locator(selector).first().screenshot({ path: file });
  result.screenshots[name] = file;
}

async function waitSent(page) {
  await page.waitForFunction(() => window.DifferentialDiffusionDraw.editor.isSent(), null, { timeout: 30000 });
}

// The page's inpaint canvas: gradio 3's sketch (drawn on its "interface" canvas, the mask kept in
// its "mask" canvas) or a ForgeCanvas (gradio 4 Forge: one drawing canvas holds the strokes).
const MASK_CANVAS = '#img2maskimg canvas[key="interface"], #img2maskimg canvas.forge-drawing-canvas';
const MASK_DATA = '#img2maskimg canvas[key="mask"], #img2maskimg canvas.forge-drawing-canvas';

// How many pixels of the page's inpaint mask are painted.
function paintedPixels(page) {
  return page.evaluate((selector) => {
    const mask = document.querySelector(selector);
    const data = mask.getContext('2d').getImageData(0, 0, mask.width, mask.height).data;
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) painted += data[i] > 0 ? 1 : 0;
    return { painted, total: mask.width * mask.height };
  }, MASK_DATA);
}

async function inpaintPhase(page) {
  const inpaint = result.inpaint = {
    mapBefore: null, mapStretched: null, maskPixels: null, maskPixelsAfterKeys: null, editorAfterKeys: null, mapBack: null, backEqual: null, error: null,
  };
  const before = await editorState(page, true);
  inpaint.mapBefore = { width: before.width, height: before.height };
  await page.locator('#mode_img2img .tab-nav button').filter({ hasText: /^\s*Inpaint\s*$/ }).first().click();
  await page.locator('#img2maskimg input[type=file]').first().setInputFiles(cfg.inpaintImage);
  await page.locator(MASK_CANVAS).first().waitFor({ state: 'visible' });
  await page.waitForFunction(([w, h]) => {
    const d = window.DifferentialDiffusionDraw.editor.doc;
    return d.width === w && d.height === h;
  }, cfg.inpaintSize, { timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(500);
  const stretched = await editorState(page, false);
  inpaint.mapStretched = { width: stretched.width, height: stretched.height, note: stretched.note, hasDrawing: stretched.hasDrawing };
  step(`inpaint image: map ${stretched.width}x${stretched.height}, note "${stretched.note}"`);
  await shot(page, 'inpaint_editor', `#${P}_draw_editor .dd-draw`);

  // The page's own inpaint brush still paints its mask; keys over it are not the editor's.
  const canvas = page.locator(MASK_CANVAS).first();
  await canvas.scrollIntoViewIfNeeded();
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.6, { steps: 12 });
  await page.mouse.up();
  await page.waitForTimeout(300);
  // Counted before the keys below: a ForgeCanvas takes Ctrl+Z as its own undo (the keys are the page's).
  inpaint.maskPixels = await paintedPixels(page);
  // The editor may keep the focus (clicking the page's canvas does not take it); keys over the
  // page's canvas stay the page's all the same.
  const stateBefore = await editorState(page, false);
  const sizeBefore = stateBefore.brushSize;
  const focusInEditor = await page.evaluate(() => {
    const editor = window.DifferentialDiffusionDraw.editor;
    editor.stage.focus({ preventScroll: true });
    return editor.element.contains(document.activeElement);
  });
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 3 });
  await page.keyboard.press(']');
  await page.keyboard.press('Control+z');
  await page.keyboard.press('r');
  await page.waitForTimeout(500);
  inpaint.maskPixelsAfterKeys = await paintedPixels(page);
  const afterKeys = await editorState(page, false);
  inpaint.editorAfterKeys = {
    focusInEditor, brushSizeBefore: sizeBefore, brushSize: afterKeys.brushSize, undo: afterKeys.undo, undoBefore: stretched.undo,
    toolBefore: stateBefore.tool, tool: afterKeys.tool,
  };
  step(`inpaint mask stroke: ${JSON.stringify(inpaint.maskPixels)} (after the keys: ${JSON.stringify(inpaint.maskPixelsAfterKeys)}); editor after "]"/Ctrl+Z over it: ${JSON.stringify(inpaint.editorAfterKeys)}`);
  await shot(page, 'inpaint_canvas', '#img2maskimg');

  // Back to the img2img sub-tab: its init image's size again, the drawing as it was.
  await page.locator('#mode_img2img .tab-nav button').filter({ hasText: /^\s*img2img\s*$/i }).first().click();
  await page.waitForFunction((w) => window.DifferentialDiffusionDraw.editor.doc.width === w, before.width, { timeout: 30000 }).catch(() => {});
  const back = await editorState(page, true);
  inpaint.mapBack = { width: back.width, height: back.height, undo: back.undo };
  inpaint.backEqual = back.values.length === before.values.length && back.values.every((v, i) => v === before.values[i]);
  step(`back in img2img: map ${back.width}x${back.height}, same drawing: ${inpaint.backEqual}`);
}

async function main() {
  fs.mkdirSync(cfg.outDir, { recursive: true });
  const { ctx, page } = await launchLoopbackOnly(pw, cfg, result, { viewport: { width: 1280, height: 1100 }, timeout });
  try {
    step(`goto ${cfg.url}`);
    await openImg2imgTab(page, cfg.url, timeout);
    page.setDefaultTimeout(Math.min(timeout, 30000));
    await setNumber(page, 'img2img_width', cfg.width);
    await setNumber(page, 'img2img_height', cfg.height);
    await setNumber(page, 'img2img_steps', cfg.steps);
    await setNumber(page, 'img2img_denoising_strength', cfg.denoise);
    await page.locator('#img2img_image input[type=file]').first().setInputFiles(cfg.initImage);
    await page.locator('#img2img_image img').first().waitFor({ state: 'visible' });
    step('init image uploaded');

    const accordion = page.locator(`#${P}_enabled`);
    await accordion.scrollIntoViewIfNeeded();
    await accordion.locator('.label-wrap').first().click();
    await page.locator(`#${P}_source label`).filter({ hasText: /^\s*draw\s*$/ }).first().click();
    await page.locator(STAGE).waitFor({ state: 'visible' });
    await page.waitForFunction(([w, h]) => {
      const e = window.DifferentialDiffusionDraw.editor;
      return e && e.doc.width === w && e.doc.height === h && e.layoutBox;
    }, [cfg.width, cfg.height], { timeout: 30000 }).catch(() => {});
    const initial = await editorState(page, false);
    result.editorShown = await page.locator(STAGE).isVisible();
    result.mapSizes.initial = { width: initial.width, height: initial.height, hasDrawing: initial.hasDrawing };
    result.textboxInitially = await page.locator(`#${P}_drawn_map textarea`).inputValue();
    step(`editor shown (${result.editorShown}), map ${initial.width}x${initial.height}`);
    await page.locator(STAGE).scrollIntoViewIfNeeded();

    // 1. Radial gradient.
    const g = cfg.gradient;
    await page.locator(`#${P}_draw_editor button[data-tool="radial"]`).click();
    await setSlider(page, 'gradientFrom', g.from);
    await setSlider(page, 'gradientTo', g.to);
    await drag(page, [[g.x0, g.y0], [g.x1, g.y1]]);
    await waitSent(page);
    result.snapshots.gradient = await editorState(page, false);
    await shot(page, 'step1_gradient', STAGE);
    step('radial gradient drawn');

    // 2., 3. Brush strokes (hard edge, full flow).
    await page.locator(`#${P}_draw_editor button[data-tool="brush"]`).click();
    await setSlider(page, 'softness', 0);
    await setSlider(page, 'flow', 100);
    for (const [i, stroke] of cfg.strokes.entries()) {
      await setSlider(page, 'amount', stroke.amount);
      await setSlider(page, 'size', stroke.size);
      await drag(page, stroke.points);
      await waitSent(page);
      await shot(page, `step${i + 2}_stroke`, STAGE);
      step(`stroke ${i + 1} drawn`);
    }

    // Keys over the editor: "]" enlarges the brush, Ctrl+Z / Ctrl+Shift+Z undo and redo.
    const [cx, cy] = await stagePoint(page, cfg.width / 2, cfg.height / 2);
    await page.mouse.move(cx, cy);
    const sizeBefore = (await editorState(page, false)).brushSize;
    await page.keyboard.press(']');
    const sizeAfter = (await editorState(page, false)).brushSize;
    await page.keyboard.press('[');
    result.brushSizeKeys = { before: sizeBefore, afterBracket: sizeAfter, afterBoth: (await editorState(page, false)).brushSize };
    await page.keyboard.press('Control+z');
    result.snapshots.undo1 = await editorState(page, false);
    await page.keyboard.press('Control+Shift+z');
    result.snapshots.redo = await editorState(page, false);
    await page.keyboard.press('Control+z');
    await waitSent(page);
    const drawn = await editorState(page, true);
    result.snapshots.final = Object.assign({}, drawn, { values: undefined });
    result.drawnValues = drawn.values;
    result.journal = await page.evaluate(() => window.DifferentialDiffusionDraw.editor.journal);
    result.textboxFinal = (await page.locator(`#${P}_drawn_map textarea`).inputValue()).slice(0, 40);
    await shot(page, 'step4_undo', STAGE);

    // The overlay: heat colours leave 0 clear; the raw gray map shows the values themselves.
    const overlayAt = () => page.evaluate(([points]) => {
      const editor = window.DifferentialDiffusionDraw.editor;
      const canvas = editor.canvas, d = editor.doc;
      const context = canvas.getContext('2d');
      return points.map(([x, y]) => Array.from(context.getImageData(Math.floor((x + 0.5) * canvas.width / d.width), Math.floor((y + 0.5) * canvas.height / d.height), 1, 1).data));
    }, [cfg.overlayProbes]);
    result.overlay = { heat: await overlayAt() };
    await page.locator(`#${P}_draw_editor input[data-setting="rawGray"]`).check();
    result.overlay.gray = await overlayAt();
    await shot(page, 'step5_gray', STAGE);
    await page.locator(`#${P}_draw_editor input[data-setting="rawGray"]`).uncheck();
    await shot(page, 'editor', `#${P}_draw_editor .dd-draw`);
    step(`undo/redo/undo: ${JSON.stringify([result.snapshots.undo1.undo, result.snapshots.redo.undo, drawn.undo])}`);

    // The panel's Preview works on the drawn map.
    await page.locator(`#${P}_preview_button`).click();
    await page.waitForFunction((sel) => { const e = document.querySelector(sel); return e && e.complete && e.naturalWidth > 0; },
      `#${P}_preview img`, { timeout }).catch(() => {});
    result.preview = await page.locator(`#${P}_preview img`).evaluateAll((els) => els.map((e) => ({ w: e.naturalWidth, h: e.naturalHeight })));
    result.previewError = ((await page.locator(`#${P}_preview_error`).innerText().catch(() => '')) || '').trim();
    step(`preview ${JSON.stringify(result.preview)} ${result.previewError}`);

    // Generate, then what the server received and the result.
    const genTimeout = cfg.generateTimeoutMs || 240000;
    await page.locator('#img2img_generate').click();
    step('generate clicked');
    await page.waitForFunction(() => [...document.querySelectorAll('#img2img_gallery img')].some((e) => e.complete && e.naturalWidth > 0), null, { timeout: genTimeout });
    await page.locator('#img2img_interrupt').waitFor({ state: 'hidden', timeout: genTimeout }).catch(() => {});
    await page.waitForTimeout(500);
    result.generationInfo = await page.locator('[id="html_info_img2img"]').evaluateAll((els) => els.map((e) => e.innerText).join('\n')).catch(() => '');
    result.galleryError = await page.locator('[id="html_log_img2img"] .error').evaluateAll((els) => els.map((e) => e.innerText).join('\n')).catch(() => '');
    const src = await page.locator('#img2img_gallery img').first().getAttribute('src');
    const image = await page.request.get(new URL(src, page.url()).toString());
    if (image.ok()) {
      result.resultImage = path.join(cfg.outDir, 'result_image.png');
      fs.writeFileSync(result.resultImage, await image.body());
    }
    await shot(page, 'result', '#img2img_results');
    const lastRun = await page.request.get(new URL('/differential-diffusion/v1/test/last-run', cfg.url).toString());
    const report = lastRun.ok() ? await lastRun.json() : null;
    result.lastRun = report ? { status: lastRun.status(), map_source: report.map_source, hasReceivedMap: Boolean(report.received_map) } : { status: lastRun.status() };
    if (report && report.received_map) {
      result.receivedMap = path.join(cfg.outDir, 'received_map.png');
      fs.writeFileSync(result.receivedMap, Buffer.from(report.received_map, 'base64'));
    }
    const stats = await page.evaluate(() => window.DifferentialDiffusionDraw.editor.report());
    result.generateWaitMs = stats.generateWaits;
    result.encodes = stats.encodes;
    result.frames = { work: stats.frameWork, interval: stats.frameInterval };
    step(`generated; last run ${JSON.stringify(result.lastRun)}`);
    result.mainFlowOk = true;

    try {
      await inpaintPhase(page);
    } catch (e) {
      result.inpaint = result.inpaint || {};
      result.inpaint.error = String(e && (e.stack || e.message) || e);
      throw e;
    }
    await page.waitForTimeout(1000); // late console errors
    result.ok = true;
  } finally {
    await ctx.close().catch(() => {});
  }
}

runAndReport(main, result, cfg.totalTimeoutMs || 600000, 'browser_draw.js');
