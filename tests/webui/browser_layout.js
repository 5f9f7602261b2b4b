#!/usr/bin/env node
// The panel's layout per map source, in the WebUI's img2img tab (headless system Chromium):
// open the panel, choose each map source in turn and measure the panel (its accordion's box),
// which of its controls show, and the hover hints of its controls (the `title` the page gives
// them). Prints one JSON object on stdout; used by tests/webui/test_browser_layout.py.
//
// usage: node browser_layout.js '<json config>'
//   config: { url, chromium, playwrightCore, outDir, userDataDir, sources, controls, hinted,
//             viewportWidth = 1280, timeoutMs = 120000, totalTimeoutMs = 300000 }
'use strict';

const path = require('path');
const fs = require('fs');
const { launchLoopbackOnly, runAndReport } = require('./browser_common');

const cfg = JSON.parse(process.argv[2] || '{}');
const pw = require(cfg.playwrightCore || 'playwright-core');
const timeout = cfg.timeoutMs || 120000;
const P = 'differential_diffusion';

const result = {
  ok: false, steps: [], consoleErrors: [], consoleWarnings: [], pageErrors: [], failedRequests: [], blockedRequests: [],
  screenshots: {}, sources: {}, hints: {}, error: null,
};
const t0 = Date.now();
const step = (s) => { result.steps.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`); };

async function main() {
  fs.mkdirSync(cfg.outDir, { recursive: true });
  const { ctx, page } = await launchLoopbackOnly(pw, cfg, result, { viewport: { width: cfg.viewportWidth || 1280, height: 1000 }, timeout });
  try {
    await page.goto(cfg.url, { waitUntil: 'domcontentloaded', timeout });
    const tabButton = page.locator('#tabs > .tab-nav > button').filter({ hasText: /^\s*img2img\s*$/i });
    await tabButton.first().waitFor({ state: 'visible', timeout });
    await tabButton.first().click();
    await page.locator('#tab_img2img').waitFor({ state: 'visible', timeout });
    page.setDefaultTimeout(Math.min(timeout, 30000));
    const accordion = page.locator(`#${P}_enabled`);
    await accordion.scrollIntoViewIfNeeded();
    await accordion.locator('.label-wrap').first().click();
    await page.locator(`#${P}_source`).waitFor({ state: 'visible' });
    step('panel open');
    for (const source of cfg.sources) {
      const label = page.locator(`#${P}_source label`).filter({ hasText: new RegExp(`^\\s*${source}\\s*$`) }).first();
      await label.click();
      await page.waitForTimeout(800);  // gradio applies the visibility updates
      const box = await accordion.boundingBox();
      const shown = {};
      for (const control of cfg.controls) {
        shown[control] = await page.locator(`#${P}_${control}`).first().isVisible().catch(() => false);
      }
      result.sources[source] = { height: Math.round(box.height), width: Math.round(box.width), shown };
      const file = path.join(cfg.outDir, `panel-${source.replace(/\W+/g, '_')}.png`);
      await accordion.screenshot({ path: file });
      result.screenshots[source] = file;
      step(`${source}: ${Math.round(box.width)} x ${Math.round(box.height)}`);
    }
    // Hover hints: the page's tooltip (title) on each control's label or input.
    for (const control of cfg.hinted) {
      result.hints[control] = await page.locator(`#${P}_${control}`).first().evaluate((root) => {
        const nodes = [root, ...root.querySelectorAll('*')];
        const titled = nodes.find((node) => node.title);
        return titled ? titled.title : '';
      }).catch((e) => `(${e})`);
    }
    result.ok = true;
  } finally {
    await ctx.close().catch(() => {});
  }
}

runAndReport(main, result, cfg.totalTimeoutMs || 300000, 'browser_layout.js');
