#!/usr/bin/env node
// Drives the system Chromium with the npm package playwright-core (no browser download):
// opens the WebUI, switches to img2img, looks for the extension's panel, takes screenshots,
// and prints one JSON object on stdout. Used by tests/webui/test_browser.py.
//
// usage: node browser_check.js '<json config>'
//   config: { url, chromium, playwrightCore, outDir, userDataDir,
//             panelText = "Differential Diffusion", idPrefix = "differential_diffusion",
//             extensionHints = [...strings that mark a console message as the extension's],
//             timeoutMs = 120000, expand = true }
// Every request that does not go to 127.0.0.1/localhost is aborted and recorded.
'use strict';

const path = require('path');
const fs = require('fs');
const { launchLoopbackOnly, runAndReport } = require('./browser_common');

const cfg = JSON.parse(process.argv[2] || '{}');
const pw = require(cfg.playwrightCore || 'playwright-core');
const timeout = cfg.timeoutMs || 120000;
const panelText = cfg.panelText || 'Differential Diffusion';
const idPrefix = cfg.idPrefix || 'differential_diffusion';

const result = {
  ok: false, steps: [], consoleErrors: [], consoleWarnings: [], pageErrors: [],
  failedRequests: [], blockedRequests: [], screenshots: {}, panel: null, error: null,
};
const step = (s) => { result.steps.push(`${new Date().toISOString()} ${s}`); };

async function main() {
  fs.mkdirSync(cfg.outDir, { recursive: true });
  const { ctx, page } = await launchLoopbackOnly(pw, cfg, result, { viewport: { width: 1400, height: 1000 }, timeout });
  try {
    step(`goto ${cfg.url}`);
    await page.goto(cfg.url, { waitUntil: 'domcontentloaded', timeout });
    // A1111 is ready when its top tab bar exists (gradio builds the page in JS).
    const tabButton = page.locator('#tabs > .tab-nav > button').filter({ hasText: /^\s*img2img\s*$/i });
    await tabButton.first().waitFor({ state: 'visible', timeout });
    step('ui loaded');
    await page.screenshot({ path: path.join(cfg.outDir, 'txt2img.png') });
    result.screenshots.txt2img = path.join(cfg.outDir, 'txt2img.png');

    await tabButton.first().click();
    await page.locator('#tab_img2img').waitFor({ state: 'visible', timeout });
    step('img2img tab shown');
    page.setDefaultTimeout(Math.min(timeout, 30000)); // the page is there: later steps are quick

    // The extension's panel: an element whose id starts with the prefix, else the title text,
    // inside the img2img tab (#img2img_script_container holds the scripts).
    const byId = page.locator(`#tab_img2img [id^="${idPrefix}"]`);
    const byText = page.locator('#tab_img2img').getByText(panelText, { exact: true });
    let panel = null;
    const nId = await byId.count();
    const nText = await byText.count();
    const ids = nId ? await byId.evaluateAll((els) => els.map((e) => e.id)) : [];
    result.panel = {
      foundById: nId > 0, foundByText: nText > 0, ids,
      inScriptContainer: await page.locator(`#img2img_script_container [id^="${idPrefix}"]`).count() > 0 ||
        await page.locator('#img2img_script_container').getByText(panelText, { exact: true }).count() > 0,
    };
    // Prefer the outermost visible element with the prefix that shows the title (for an
    // InputAccordion that is the accordion; its "-checkbox" twin is hidden).
    const titled = byId.filter({ hasText: panelText, visible: true });
    if (await titled.count()) panel = titled.first();
    else if (nId && await byId.filter({ visible: true }).count()) panel = byId.filter({ visible: true }).first();
    else if (nText) panel = byText.first();
    if (panel) result.panel.id = await panel.evaluate((e) => e.id || '').catch(() => '');
    if (panel) {
      await panel.scrollIntoViewIfNeeded();
      result.panel.visible = await panel.isVisible();
      result.panel.text = ((await panel.innerText().catch(() => '')) || '').slice(0, 500);
      await page.screenshot({ path: path.join(cfg.outDir, 'img2img.png'), fullPage: true });
      result.screenshots.img2img = path.join(cfg.outDir, 'img2img.png');
      if (cfg.expand !== false) {
        // InputAccordion / gr.Accordion: clicking the label row opens it.
        const label = panel.locator('.label-wrap').first();
        if (await label.count()) {
          await label.click();
          await page.waitForTimeout(1000);
          step('panel expanded');
        }
        result.panel.textExpanded = ((await panel.innerText().catch(() => '')) || '').slice(0, 2000);
        await panel.screenshot({ path: path.join(cfg.outDir, 'panel.png') }).catch((e) => step(`panel screenshot failed: ${e}`));
        if (fs.existsSync(path.join(cfg.outDir, 'panel.png'))) result.screenshots.panel = path.join(cfg.outDir, 'panel.png');
        await page.screenshot({ path: path.join(cfg.outDir, 'img2img_expanded.png'), fullPage: true });
        result.screenshots.img2img_expanded = path.join(cfg.outDir, 'img2img_expanded.png');
      }
    } else {
      await page.screenshot({ path: path.join(cfg.outDir, 'img2img.png'), fullPage: true });
      result.screenshots.img2img = path.join(cfg.outDir, 'img2img.png');
    }
    await page.waitForTimeout(1500); // late console errors
    result.ok = true;
  } finally {
    await ctx.close().catch(() => {});
  }
}

runAndReport(main, result, cfg.totalTimeoutMs || 4 * timeout, 'browser_check.js');
