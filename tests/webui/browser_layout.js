#!/usr/bin/env node
// The panel's layout per map source, in the WebUI's img2img tab (headless system Chromium):
// open the panel, choose each map source in turn and measure the panel (its accordion's box),
// which of its controls show, and the hover hints of its controls (the `title` the page gives
// them); then paste a preprocessor run's parameters and read the panel back. Prints one JSON object on stdout; used by tests/webui/test_browser_layout.py.
//
// usage: node browser_layout.js '<json config>'
//   config: { url, chromium, playwrightCore, outDir, userDataDir, sources, controls, hinted, pasteText,
//             viewportWidth = 1280, timeoutMs = 120000, totalTimeoutMs = 300000 }
'use strict';

const path = require('path');
const fs = require('fs');
const { launchLoopbackOnly, openImg2imgTab, runAndReport, scriptConfig, stepRecorder } = require('./browser_common');

const { cfg, pw, timeout } = scriptConfig();
const P = 'differential_diffusion';

const result = {
  ok: false, steps: [], consoleErrors: [], consoleWarnings: [], pageErrors: [], failedRequests: [], blockedRequests: [],
  screenshots: {}, sources: {}, hints: {}, background: null, pasted: null, error: null,
};
const step = stepRecorder(result);

async function main() {
  fs.mkdirSync(cfg.outDir, { recursive: true });
  const { ctx, page } = await launchLoopbackOnly(pw, cfg, result, { viewport: { width: cfg.viewportWidth || 1280, height: 1000 }, timeout });
  try {
    await openImg2imgTab(page, cfg.url, timeout);
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
    // The one-click background change (shown where the host has a depth preprocessor).
    const background = page.locator(`#${P}_change_background`).first();
    await page.locator(`#${P}_source label`).filter({ hasText: /^\s*preprocessor\s*$/ }).first().click();
    await page.waitForTimeout(800);
    if (await background.isVisible().catch(() => false)) {
      await page.locator(`#${P}_source label`).filter({ hasText: /^\s*map\s*$/ }).first().click();
      await page.waitForTimeout(500);
      await page.locator(`#${P}_source label`).filter({ hasText: /^\s*preprocessor\s*$/ }).first().click();
      await background.click();
      await page.waitForTimeout(1500);
      result.background = {
        source: await page.locator(`#${P}_source input[type=radio]:checked`).first().evaluate((e) => e.value).catch(() => null),
        preprocessor: await page.locator(`#${P}_preprocessor input`).first().inputValue().catch(() => null),
        invert: await page.locator(`#${P}_invert input[type=checkbox]`).first().isChecked().catch(() => null),
      };
      step(`background button: ${JSON.stringify(result.background)}`);
    }
    // Paste parameters: a preprocessor run's infotext in the prompt, then the paste button.
    if (cfg.pasteText) {
      await page.locator('#img2img_prompt textarea').first().fill(cfg.pasteText);
      await page.locator('#tab_img2img #paste').first().click();
      await page.waitForTimeout(2000);
      result.pasted = {
        enabled: await page.locator(`#${P}_enabled-visible-checkbox, #${P}_enabled input[type=checkbox]`).first().isChecked().catch(() => null),
        source: await page.locator(`#${P}_source input[type=radio]:checked`).first().evaluate((e) => e.value).catch(() => null),
        preprocessor: await page.locator(`#${P}_preprocessor input`).first().inputValue().catch(() => null),
        invert: await page.locator(`#${P}_invert input[type=checkbox]`).first().isChecked().catch(() => null),
        groupShown: await page.locator(`#${P}_preprocessor_group`).first().isVisible().catch(() => null),
      };
      step(`pasted: ${JSON.stringify(result.pasted)}`);
    }
    result.ok = true;
  } finally {
    await ctx.close().catch(() => {});
  }
}

runAndReport(main, result, cfg.totalTimeoutMs || 300000, 'browser_layout.js');
