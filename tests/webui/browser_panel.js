#!/usr/bin/env node
// Drives the system Chromium (npm playwright-core, no browser download) through one real use
// of the Differential Diffusion panel in the WebUI's img2img tab:
//   upload an init image -> open the panel -> upload a change map -> click Preview and wait for
//   the preview image -> set a small size / few steps -> Generate and wait for the result in the
//   gallery. Screenshots of the panel (with its preview) and of the result are written to outDir.
// Prints one JSON object on stdout. Used by tests/webui/test_browser_panel.py.
//
// usage: node browser_panel.js '<json config>'
//   config: { url, chromium, playwrightCore, outDir, userDataDir, initImage, mapImage,
//             width = 128, height = 128, steps = 10, denoise = 0.75,
//             timeoutMs = 120000, generateTimeoutMs = 240000, totalTimeoutMs = 480000 }
// Every request that does not go to 127.0.0.1/localhost is aborted and recorded.
'use strict';

const path = require('path');
const fs = require('fs');

const cfg = JSON.parse(process.argv[2] || '{}');
const pw = require(cfg.playwrightCore || 'playwright-core');
const timeout = cfg.timeoutMs || 120000;
const P = 'differential_diffusion';

const result = {
  ok: false, steps: [], consoleErrors: [], consoleWarnings: [], pageErrors: [],
  failedRequests: [], blockedRequests: [], screenshots: {}, error: null,
  panelOpen: null, enabledChecked: null, preview: null, previewError: null, gallery: null, timings: {},
};
const t0 = Date.now();
const step = (s) => { result.steps.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`); };

function isLoopback(u) {
  try {
    const { protocol, hostname } = new URL(u);
    if (protocol === 'data:' || protocol === 'blob:' || protocol === 'about:') return true;
    return ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(hostname);
  } catch (e) { return false; }
}

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

async function main() {
  fs.mkdirSync(cfg.outDir, { recursive: true });
  const ctx = await pw.chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    viewport: { width: cfg.viewportWidth || 1280, height: cfg.viewportHeight || 1000 },
    timeout,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', '--disable-features=Translate,OptimizationHints,MediaRouter',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  });
  try {
    await ctx.route('**/*', (route) => {
      const u = route.request().url();
      if (isLoopback(u)) return route.continue();
      result.blockedRequests.push(u);
      return route.abort('blockedbyclient');
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(timeout);
    page.on('console', (m) => {
      const loc = m.location ? m.location() : {};
      const entry = { type: m.type(), text: m.text(), url: (loc && loc.url) || '' };
      if (m.type() === 'error') result.consoleErrors.push(entry);
      else if (m.type() === 'warning') result.consoleWarnings.push(entry);
    });
    page.on('pageerror', (e) => result.pageErrors.push({ text: String(e && (e.stack || e.message) || e) }));
    page.on('requestfailed', (r) => {
      if (isLoopback(r.url())) result.failedRequests.push({ url: r.url(), error: (r.failure() || {}).errorText });
    });
    page.on('response', (r) => {
      if (r.status() >= 400) result.failedRequests.push({ url: r.url(), status: r.status() });
    });

    step(`goto ${cfg.url}`);
    await page.goto(cfg.url, { waitUntil: 'domcontentloaded', timeout });
    const tabButton = page.locator('#tabs > .tab-nav > button').filter({ hasText: /^\s*img2img\s*$/ });
    await tabButton.first().waitFor({ state: 'visible', timeout });
    await tabButton.first().click();
    await page.locator('#tab_img2img').waitFor({ state: 'visible', timeout });
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
    const texts = (sel) => page.locator(sel).evaluateAll((els) => els.map((e) => e.innerText || '').join('\n')).catch((e) => `(${e})`);
    result.generationInfo = (await texts('[id="html_info_img2img"]')).slice(0, 2000);
    result.galleryLog = (await texts('[id="html_log_img2img"]')).slice(0, 1000);
    result.galleryError = (await texts('[id="html_log_img2img"] .error')).slice(0, 1000);
    // The result file itself (the gallery shows it through the server's file= route).
    const src = result.gallery.images.length ? await page.locator('#img2img_gallery img').first().getAttribute('src') : null;
    if (src) {
      const resp = await page.request.get(new URL(src, page.url()).toString());
      result.resultFetch = { status: resp.status(), url: src.slice(0, 200) };
      if (resp.ok()) {
        fs.writeFileSync(path.join(cfg.outDir, 'result_image.png'), await resp.body());
        result.resultImage = path.join(cfg.outDir, 'result_image.png');
      }
    }
    step(`result shown ${JSON.stringify(result.gallery.images.slice(0, 2))}`);
    const results = page.locator('#img2img_results');
    await results.scrollIntoViewIfNeeded();
    await results.screenshot({ path: path.join(cfg.outDir, 'result.png') });
    result.screenshots.result = path.join(cfg.outDir, 'result.png');
    await page.screenshot({ path: path.join(cfg.outDir, 'page.png'), fullPage: true });
    result.screenshots.page = path.join(cfg.outDir, 'page.png');

    await page.waitForTimeout(1000); // late console errors
    result.ok = true;
  } finally {
    await ctx.close().catch(() => {});
  }
}

const killer = setTimeout(() => {
  result.error = result.error || 'browser_panel.js overall timeout';
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(3);
}, (cfg.totalTimeoutMs || 480000));

main().catch((e) => { result.error = String(e && (e.stack || e.message) || e); })
  .finally(() => {
    clearTimeout(killer);
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(result.ok ? 0 : 2);
  });
