#!/usr/bin/env node
// Drives the system Chromium (npm playwright-core, no browser download) through one real use
// of the Differential Diffusion panel in the WebUI's img2img tab:
//   upload an init image -> open the panel -> upload a change map -> click Preview and wait for
//   the preview image -> set a small size / few steps -> Generate and wait for the result in the
//   gallery. Screenshots of the panel (with its preview) and of the result are written to outDir.
// Then the strength fan (result.fan): map source "fan" -> the fan group shows -> fan count and
//   layout -> Preview (screenshot of the preview image at its natural size: preview.png) ->
//   Generate and wait for the image and its labelled copy (2 in the gallery) -> select the copy
//   (screenshot of the results: fan.png) -> region slider -> "Apply region's strength" -> read
//   back the denoising strength, the enabled checkbox and the note.
// Prints one JSON object on stdout. Used by tests/webui/test_browser_panel.py.
//
// usage: node browser_panel.js '<json config>'
//   config: { url, chromium, playwrightCore, outDir, userDataDir, initImage, mapImage,
//             width = 128, height = 128, steps = 10, denoise = 0.75,
//             fanCount = 4, fanLayout = 'vertical bands', fanRegion = 3,
//             timeoutMs = 120000, generateTimeoutMs = 240000, totalTimeoutMs = 480000 }
// Every request that does not go to 127.0.0.1/localhost is aborted and recorded.
'use strict';

const path = require('path');
const fs = require('fs');
const { launchLoopbackOnly, openImg2imgTab, runAndReport, scriptConfig, stepRecorder } = require('./browser_common');

const { cfg, pw, timeout } = scriptConfig();
const P = 'differential_diffusion';

const result = {
  ok: false, steps: [], consoleErrors: [], consoleWarnings: [], pageErrors: [],
  failedRequests: [], blockedRequests: [], screenshots: {}, error: null,
  panelOpen: null, enabledChecked: null, preview: null, previewError: null, gallery: null, timings: {},
  mapFlowOk: false, fan: null,
};
const step = stepRecorder(result);

// Set a gradio number/slider field by its elem_id (the number box next to the slider).
async function setNumber(page, elemId, value) {
  const box = page.locator(`#${elemId} input[type=number]`).first();
  await box.fill(String(value));
  await box.press('Enter');
  await box.blur();
}

// Natural size of the first loaded <img> under a selector (0 x 0 until it has loaded).
async function imageInfo(page, selector) {
  return page.locator(selector).evaluateAll((els) => els.map((e) => ({
    src: (e.getAttribute('src') || '').slice(0, 80), w: e.naturalWidth, h: e.naturalHeight, complete: e.complete,
  })));
}

// The text of every element matching a selector, joined (an error text if it cannot be read).
function textsOf(page, selector) {
  return page.locator(selector).evaluateAll((els) => els.map((e) => e.innerText || '').join('\n')).catch((e) => `(${e})`);
}

// Click the choice of a gradio radio (its label) by the choice's text.
async function chooseRadio(page, elemId, choice) {
  const label = page.locator(`#${elemId} label`).filter({ hasText: choice }).first();
  await label.click();
  return label.locator('input[type=radio]').isChecked().catch(() => null);
}

// The gallery's images, one per result: the grid's thumbnails (the large preview and the
// preview's thumbnail strip repeat them).
const GALLERY_ITEMS = '#img2img_gallery .grid-container .thumbnail-item img';

// Fetch an image the page shows (by its src) into outDir/name; returns the path or null.
async function saveImage(page, src, name, sink) {
  if (!src) return null;
  const resp = await page.request.get(new URL(src, page.url()).toString());
  sink.push({ name, status: resp.status(), url: src.slice(0, 200) });
  if (!resp.ok()) return null;
  const file = path.join(cfg.outDir, name);
  fs.writeFileSync(file, await resp.body());
  return file;
}

// Strength fan: after the map flow, on the same page (the panel is open and enabled).
async function fanPhase(page) {
  const fan = result.fan = {
    sourceChecked: null, groupVisible: null, countValue: null, layoutChecked: null,
    preview: null, previewChanged: null, previewError: null, previewShot: null, gallery: null, selected: null,
    generationInfo: null, generationInfoSelected: null, galleryError: null, fetches: [],
    plainImage: null, labelledImage: null,
    region: null, denoisingBefore: null, denoising: null, enabledChecked: null,
    visibleChecked: null, accordionOpen: null, note: null, error: null,
  };
  const cfgCount = cfg.fanCount || 4;
  const layout = cfg.fanLayout || 'vertical bands';
  const region = cfg.fanRegion || 3;
  const accordion = page.locator(`#${P}_enabled`);

  await page.locator(`#${P}_source`).scrollIntoViewIfNeeded();
  fan.sourceChecked = await chooseRadio(page, `${P}_source`, /^\s*fan\s*$/);
  const group = page.locator(`#${P}_fan_group`);
  await group.waitFor({ state: 'visible' });
  fan.groupVisible = await group.isVisible();
  step(`fan chosen (radio checked: ${fan.sourceChecked}), fan group visible: ${fan.groupVisible}`);

  await setNumber(page, `${P}_fan_count`, cfgCount);
  fan.countValue = await page.locator(`#${P}_fan_count input[type=number]`).first().inputValue();
  fan.layoutChecked = await chooseRadio(page, `${P}_fan_layout`, layout);
  step(`fan count ${fan.countValue}, layout "${layout}" (checked: ${fan.layoutChecked})`);

  // Preview: the map flow's preview is there; wait for a new one.
  let t = Date.now();
  const previewSel = `#${P}_preview img`;
  const oldSrc = await page.locator(previewSel).first().getAttribute('src').catch(() => null);
  await page.locator(`#${P}_preview_button`).click();
  await page.waitForFunction(([sel, old]) => {
    const e = document.querySelector(sel);
    return e && e.getAttribute('src') !== old && e.complete && e.naturalWidth > 0;
  }, [previewSel, oldSrc], { timeout }).catch(() => {});
  result.timings.fan_preview_s = (Date.now() - t) / 1000;
  fan.preview = (await imageInfo(page, previewSel))[0] || null;
  fan.previewChanged = (await page.locator(previewSel).first().getAttribute('src').catch(() => null)) !== oldSrc;
  fan.previewError = ((await page.locator(`#${P}_preview_error`).innerText().catch(() => '')) || '').trim();
  step(`fan preview ${JSON.stringify(fan.preview)} (changed: ${fan.previewChanged})`);
  // The strip is wide and short: in the panel it is scaled to the panel's width. For
  // preview.png the element is shown at its natural size (at most the viewport's width) on top
  // of the page for the screenshot, then put back.
  const previewImg = page.locator(previewSel).first();
  await previewImg.scrollIntoViewIfNeeded();
  fan.previewShot = await previewImg.evaluate((e) => {
    const scale = Math.min(1, (window.innerWidth - 16) / e.naturalWidth, (window.innerHeight - 16) / e.naturalHeight);
    e.dataset.ddStyle = e.getAttribute('style') || '';
    Object.assign(e.style, {
      position: 'fixed', left: '0px', top: '0px', zIndex: '100000', maxWidth: 'none', maxHeight: 'none',
      width: `${Math.round(e.naturalWidth * scale)}px`, height: `${Math.round(e.naturalHeight * scale)}px`, objectFit: 'contain',
    });
    return { w: Math.round(e.naturalWidth * scale), h: Math.round(e.naturalHeight * scale), scale };
  });
  await page.waitForTimeout(300);
  await previewImg.screenshot({ path: path.join(cfg.outDir, 'preview.png') });
  await previewImg.evaluate((e) => { e.setAttribute('style', e.dataset.ddStyle || ''); delete e.dataset.ddStyle; });
  result.screenshots.preview = path.join(cfg.outDir, 'preview.png');

  // Generate: the image and its labelled copy.
  t = Date.now();
  const genTimeout = cfg.generateTimeoutMs || 240000;
  const before = await page.locator(GALLERY_ITEMS).evaluateAll((els) => els.map((e) => e.getAttribute('src')));
  await page.locator('#img2img_generate').click();
  step('fan generate clicked');
  await page.waitForFunction(([sel, old]) => {
    const imgs = [...document.querySelectorAll(sel)];
    return imgs.length >= 2 && imgs.every((e) => e.complete && e.naturalWidth > 0)
      && imgs.some((e) => !old.includes(e.getAttribute('src')));
  }, [GALLERY_ITEMS, before], { timeout: genTimeout }).catch(() => {});
  await page.locator('#img2img_interrupt').waitFor({ state: 'hidden', timeout: genTimeout }).catch(() => {});
  await page.waitForTimeout(500);
  result.timings.fan_generate_s = (Date.now() - t) / 1000;
  const items = await imageInfo(page, GALLERY_ITEMS);
  fan.gallery = { before: before.length, count: items.length, images: items };
  fan.generationInfo = (await textsOf(page, '[id="html_info_img2img"]')).slice(0, 2000);
  fan.galleryError = (await textsOf(page, '[id="html_log_img2img"] .error')).slice(0, 1000);
  const srcs = await page.locator(GALLERY_ITEMS).evaluateAll((els) => els.map((e) => e.getAttribute('src')));
  fan.plainImage = await saveImage(page, srcs[0], 'fan_image.png', fan.fetches);
  fan.labelledImage = await saveImage(page, srcs[1], 'fan_labelled.png', fan.fetches);
  step(`fan result: ${items.length} image(s) ${JSON.stringify(items.map((i) => [i.w, i.h, i.complete]))}`);

  // Show the labelled copy large: its thumbnail in the preview strip (or the grid's).
  if (srcs.length >= 2) {
    const strip = page.locator('#img2img_gallery .thumbnails .thumbnail-item');
    const thumb = (await strip.count()) >= 2 ? strip.nth(1) : page.locator('#img2img_gallery .grid-container .thumbnail-item').nth(1);
    await thumb.click();
    await page.waitForFunction((want) => {
      const e = document.querySelector('#img2img_gallery [data-testid="detailed-image"]');
      return e && e.getAttribute('src') === want && e.complete && e.naturalWidth > 0;
    }, srcs[1], { timeout: 30000 }).catch(() => {});
    const big = page.locator('#img2img_gallery [data-testid="detailed-image"]').first();
    fan.selected = {
      src: ((await big.getAttribute('src').catch(() => null)) || '').slice(0, 200),
      isLabelledCopy: (await big.getAttribute('src').catch(() => null)) === srcs[1],
    };
    await page.waitForTimeout(1000); // the infotext follows the selection
    fan.generationInfoSelected = (await textsOf(page, '[id="html_info_img2img"]')).slice(0, 2000);
  }
  const results = page.locator('#img2img_results');
  await results.scrollIntoViewIfNeeded();
  await page.waitForTimeout(300);
  await results.screenshot({ path: path.join(cfg.outDir, 'fan.png') });
  result.screenshots.fan = path.join(cfg.outDir, 'fan.png');
  step(`labelled copy selected ${JSON.stringify(fan.selected)}`);

  // Apply a region's strength.
  fan.denoisingBefore = await page.locator('#img2img_denoising_strength input[type=number]').first().inputValue();
  await page.locator(`#${P}_fan_region`).scrollIntoViewIfNeeded();
  await setNumber(page, `${P}_fan_region`, region);
  fan.region = await page.locator(`#${P}_fan_region input[type=number]`).first().inputValue();
  await page.locator(`#${P}_fan_apply`).click();
  step(`apply clicked (region ${fan.region})`);
  await page.waitForFunction((sel) => {
    const e = document.querySelector(sel);
    return e && (e.textContent || '').trim().length > 0;
  }, `#${P}_fan_note`, { timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(1000); // the denoising slider and the checkbox come with the note
  fan.note = ((await page.locator(`#${P}_fan_note`).first().textContent().catch(() => '')) || '').trim();
  fan.denoising = await page.locator('#img2img_denoising_strength input[type=number]').first().inputValue();
  fan.enabledChecked = await page.locator(`#${P}_enabled-checkbox input[type=checkbox]`).first().isChecked().catch(() => null);
  fan.visibleChecked = await page.locator(`#${P}_enabled-visible-checkbox`).first().isChecked().catch(() => null);
  fan.accordionOpen = await accordion.locator('.label-wrap').first().evaluate((e) => e.classList.contains('open')).catch(() => null);
  step(`applied: denoising ${fan.denoisingBefore} -> ${fan.denoising}, enabled ${fan.enabledChecked}, note "${fan.note}"`);
}

async function main() {
  fs.mkdirSync(cfg.outDir, { recursive: true });
  const { ctx, page } = await launchLoopbackOnly(pw, cfg, result, { viewport: { width: cfg.viewportWidth || 1280, height: cfg.viewportHeight || 1000 }, timeout });
  try {
    step(`goto ${cfg.url}`);
    await openImg2imgTab(page, cfg.url, timeout);
    step('img2img tab shown');
    page.setDefaultTimeout(Math.min(timeout, 30000));

    // Small, quick generation: size, steps, strength.
    await setNumber(page, 'img2img_width', cfg.width || 128);
    await setNumber(page, 'img2img_height', cfg.height || 128);
    await setNumber(page, 'img2img_steps', cfg.steps || 10);
    await setNumber(page, 'img2img_denoising_strength', cfg.denoise || 0.75);
    step('size/steps/strength set');

    // Init image: the img2img tab's own upload field.
    await page.locator('#img2img_image input[type=file]').first().setInputFiles(cfg.initImage);
    await page.locator('#img2img_image img').first().waitFor({ state: 'visible' });
    step('init image uploaded');

    // Open the panel (InputAccordion: clicking its label row opens it and ticks "enabled").
    const accordion = page.locator(`#${P}_enabled`);
    await accordion.scrollIntoViewIfNeeded();
    await accordion.locator('.label-wrap').first().click();
    const mapField = page.locator(`#${P}_map`);
    await mapField.waitFor({ state: 'visible' });
    result.panelOpen = await mapField.isVisible();
    result.enabledChecked = await page.locator(`#${P}_enabled-checkbox input[type=checkbox], #${P}_enabled input[type=checkbox]`)
      .first().isChecked().catch(() => null);
    step(`panel open (enabled checkbox: ${result.enabledChecked})`);

    await mapField.locator('input[type=file]').first().setInputFiles(cfg.mapImage);
    await mapField.locator('img').first().waitFor({ state: 'visible' });
    step('map uploaded');

    // Preview.
    let t = Date.now();
    await page.locator(`#${P}_preview_button`).click();
    const previewImg = page.locator(`#${P}_preview img`).first();
    await previewImg.waitFor({ state: 'visible', timeout });
    await page.waitForFunction((sel) => { const e = document.querySelector(sel); return e && e.complete && e.naturalWidth > 0; },
      `#${P}_preview img`, { timeout });
    result.timings.preview_s = (Date.now() - t) / 1000;
    result.preview = (await imageInfo(page, `#${P}_preview img`))[0] || null;
    result.previewError = ((await page.locator(`#${P}_preview_error`).innerText().catch(() => '')) || '').trim();
    step(`preview shown ${JSON.stringify(result.preview)}`);
    await accordion.scrollIntoViewIfNeeded();
    await page.waitForTimeout(500);
    await accordion.screenshot({ path: path.join(cfg.outDir, 'panel.png') });
    result.screenshots.panel = path.join(cfg.outDir, 'panel.png');

    // Generate.
    t = Date.now();
    const before = await page.locator('#img2img_gallery img').count();
    await page.locator('#img2img_generate').click();
    step('generate clicked');
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('#img2img_gallery img')];
      return imgs.some((e) => e.complete && e.naturalWidth > 0);
    }, null, { timeout: cfg.generateTimeoutMs || 240000 });
    // The job is over when the interrupt button hides again (the gallery may show before).
    await page.locator('#img2img_interrupt').waitFor({ state: 'hidden', timeout: cfg.generateTimeoutMs || 240000 }).catch(() => {});
    await page.waitForTimeout(500);
    result.timings.generate_s = (Date.now() - t) / 1000;
    result.gallery = { before, images: await imageInfo(page, '#img2img_gallery img') };
    result.generationInfo = (await textsOf(page, '[id="html_info_img2img"]')).slice(0, 2000);
    result.galleryLog = (await textsOf(page, '[id="html_log_img2img"]')).slice(0, 1000);
    result.galleryError = (await textsOf(page, '[id="html_log_img2img"] .error')).slice(0, 1000);
    // The result file itself (the gallery shows it through the server's file= route).
    const src = result.gallery.images.length ? await page.locator('#img2img_gallery img').first().getAttribute('src') : null;
    const fetches = [];
    result.resultImage = await saveImage(page, src, 'result_image.png', fetches);
    result.resultFetch = fetches[0] || null;
    step(`result shown ${JSON.stringify(result.gallery.images.slice(0, 2))}`);
    const results = page.locator('#img2img_results');
    await results.scrollIntoViewIfNeeded();
    await results.screenshot({ path: path.join(cfg.outDir, 'result.png') });
    result.screenshots.result = path.join(cfg.outDir, 'result.png');
    await page.screenshot({ path: path.join(cfg.outDir, 'page.png'), fullPage: true });
    result.screenshots.page = path.join(cfg.outDir, 'page.png');
    result.mapFlowOk = true;

    try {
      await fanPhase(page);
    } catch (e) {
      result.fan = result.fan || {};
      result.fan.error = String(e && (e.stack || e.message) || e);
      throw e;
    }

    await page.waitForTimeout(1000); // late console errors
    result.ok = true;
  } finally {
    await ctx.close().catch(() => {});
  }
}

runAndReport(main, result, cfg.totalTimeoutMs || 480000, 'browser_panel.js');
