// A stand-in for the WebUI page around the map editor, for the browser checks and benchmarks
// that need no WebUI: the pieces the editor talks to, with the WebUI's element ids (gradio
// 3.41): the img2img init image, the img2img size fields, the map source radio ("draw"
// chosen), the map upload field, the mount point, the hidden drawn_map textbox and Generate,
// plus the page helpers the editor uses (onUiLoaded, gradioApp, updateInput). Generate's own
// handler records the textbox value it would send (window.generated).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><style>body{font-family:sans-serif;width:700px}</style></head><body>
<div id="mode_img2img"><div id="img2img_image"><img id="init" alt=""></div></div>
<div id="img2img_width"><input type="number" value="512"></div><div id="img2img_height"><input type="number" value="512"></div>
<div id="differential_diffusion_source"><label><input type="radio" name="s" value="map">map</label><label><input type="radio" name="s" value="draw" checked>draw</label></div>
<div id="differential_diffusion_map"></div>
<div id="differential_diffusion_draw_editor" style="width:640px"></div>
<div id="differential_diffusion_drawn_map" style="display:none"><textarea></textarea></div>
<button id="img2img_generate">Generate</button>
<input id="elsewhere" type="text">
<script>
  var uiLoaded = [];
  function onUiLoaded(callback) { uiLoaded.push(callback); }
  function gradioApp() { return document; }
  function updateInput(target) { target.dispatchEvent(new Event('input', {bubbles: true})); }
  window.generated = [];
  document.getElementById('img2img_generate').addEventListener('click', function() {
    window.generated.push({at: performance.now(), value: document.querySelector('#differential_diffusion_drawn_map textarea').value});
  });
</script></body></html>`;

function playwrightCore() {
  const local = path.join(ROOT, 'tests', 'browser', 'node_modules', 'playwright-core');
  return require(process.env.PLAYWRIGHT_CORE_DIR || (fs.existsSync(local) ? local : 'playwright-core'));
}

// A gray init image of width x height, made in the page, as the img2img tab's image.
async function setInitImage(page, width, height) {
  await page.evaluate(async ([w, h]) => {
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const g = c.getContext('2d');
    const gradient = g.createLinearGradient(0, 0, w, h);
    gradient.addColorStop(0, '#333');
    gradient.addColorStop(1, '#ccc');
    g.fillStyle = gradient;
    g.fillRect(0, 0, w, h);
    const img = document.getElementById('init');
    img.src = c.toDataURL('image/jpeg', 0.8);
    await img.decode();
  }, [width, height]);
}

/**
 * Open the stand-in page with an init image of `size` (or [w, h]) and mount the editor.
 * `before` (a function run in the page before the editor's scripts) can take browser features
 * away, e.g. CompressionStream or Worker. -> {page, dir}
 */
async function openStandInPage(browser, { size = 512, before = null, viewport = { width: 800, height: 1000 } } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dd-draw-page-'));
  fs.writeFileSync(path.join(dir, 'page.html'), PAGE);
  const page = await browser.newPage({ viewport, acceptDownloads: true });
  await page.goto('file://' + path.join(dir, 'page.html'));
  const [width, height] = Array.isArray(size) ? size : [size, size];
  await setInitImage(page, width, height);
  if (before) await page.evaluate(before);
  // The WebUI loads an extension's scripts in file-name order.
  await page.addScriptTag({ path: path.join(ROOT, 'javascript', 'differential_diffusion_draw.js') });
  await page.addScriptTag({ path: path.join(ROOT, 'javascript', 'differential_diffusion_draw_math.js') });
  await page.addStyleTag({ path: path.join(ROOT, 'style.css') });
  await page.evaluate(() => uiLoaded.forEach((f) => f()));
  await page.waitForFunction(() => window.DifferentialDiffusionDraw.editor && window.DifferentialDiffusionDraw.editor.layoutBox);
  return { page, dir };
}

module.exports = { ROOT, PAGE, playwrightCore, setInitImage, openStandInPage };
