// What the browser scripts (browser_check.js, browser_panel.js) share: a headless system
// Chromium (npm playwright-core, no browser download) that may reach 127.0.0.1/localhost only,
// recording console errors, page errors and failed or blocked requests into `result`; and the
// run wrapper that prints `result` as one JSON line whatever happens.
'use strict';

function isLoopback(u) {
  try {
    const { protocol, hostname } = new URL(u);
    if (protocol === 'data:' || protocol === 'blob:' || protocol === 'about:') return true;
    return ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(hostname);
  } catch (e) { return false; }
}

// -> { ctx, page }. Every request that does not go to loopback is aborted and recorded.
async function launchLoopbackOnly(pw, cfg, result, { viewport, timeout }) {
  const ctx = await pw.chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    viewport,
    timeout,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', '--disable-features=Translate,OptimizationHints,MediaRouter',
      // name resolution for anything but loopback fails inside the browser
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  });
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
  return { ctx, page };
}

// The script's JSON config (first argument), playwright-core and the default timeout.
function scriptConfig() {
  const cfg = JSON.parse(process.argv[2] || '{}');
  return { cfg, pw: require(cfg.playwrightCore || 'playwright-core'), timeout: cfg.timeoutMs || 120000 };
}

// step(text): appends "<seconds since start>s text" to result.steps.
function stepRecorder(result) {
  const t0 = Date.now();
  return (s) => { result.steps.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`); };
}

// Load the WebUI page and switch to its img2img tab.
async function openImg2imgTab(page, url, timeout) {
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout });
  const tabButton = page.locator('#tabs > .tab-nav > button').filter({ hasText: /^\s*img2img\s*$/i });
  await tabButton.first().waitFor({ state: 'visible', timeout });
  await tabButton.first().click();
  await page.locator('#tab_img2img').waitFor({ state: 'visible', timeout });
}

// Runs main(), then prints result as one JSON line and exits: 0 ok, 2 failed, 3 overall timeout.
// The exit waits for the write: node writes to a pipe asynchronously, and exiting at once cut
// a large result short (seen at 128 KiB).
function runAndReport(main, result, totalTimeoutMs, name) {
  const report = (code) => process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code));
  const killer = setTimeout(() => {
    result.error = result.error || `${name} overall timeout`;
    report(3);
  }, totalTimeoutMs);
  main().catch((e) => { result.error = String(e && (e.stack || e.message) || e); })
    .finally(() => {
      clearTimeout(killer);
      report(result.ok ? 0 : 2);
    });
}

module.exports = { isLoopback, launchLoopbackOnly, openImg2imgTab, runAndReport, scriptConfig, stepRecorder };
