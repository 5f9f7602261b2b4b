// Differential Diffusion: the panel's map editor (map source "draw"). A canvas over the init
// image shows the change map as a translucent overlay; brush, eraser, linear and radial
// gradients, fill, invert, clear, undo/redo. The map is kept at the init image's resolution
// and sent, as a grayscale PNG data URL, through the hidden textbox the server reads
// (#differential_diffusion_drawn_map). The drawing math is differential_diffusion_draw_math.js.
(function() {
    "use strict";

    const PREFIX = "differential_diffusion";
    const IDS = {
        mount: `${PREFIX}_draw_editor`,
        drawnMap: `${PREFIX}_drawn_map`,
        source: `${PREFIX}_source`,
        mapUpload: `${PREFIX}_map`,
        generate: "img2img_generate",
        width: "img2img_width",
        height: "img2img_height",
    };
    // The init image of each img2img sub-tab that has one (the visible one is current).
    const INIT_IMAGE_FIELDS = ["img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base"];
    const STAGE_MAX_HEIGHT = 512;
    // After an edit the map is encoded in the background at once (in a worker; else here, in
    // bands that yield to the page), given up at the next edit, so it is usually in the textbox
    // before the pointer reaches Generate.
    const ENCODE_DELAY_MS = 30;
    const ENCODE_ROWS_PER_BAND = 32;
    // Gradio sends the request over a websocket (16 MiB messages at most, init image included):
    // a 16-bit map beyond this falls back to 8 bits.
    const MAX_16_BIT_DATA_URL = 8 * 1024 * 1024;
    const MAX_FRAME_SAMPLES = 20000;
    // A released gradient is computed over the next frames, this long per frame at most, in
    // bands of rows (a 2048² map would otherwise stall one frame for tens of ms).
    const GRADIENT_FRAME_BUDGET_MS = 6;
    const GRADIENT_ROWS_PER_STEP = 32;
    const MAX_JOURNAL = 200; // the last edits with their parameters (tests rebuild the map from them)
    const HEAT_STOPS = [[0, [24, 28, 120]], [0.25, [0, 120, 255]], [0.5, [0, 200, 90]], [0.75, [255, 210, 0]], [1, [235, 30, 20]]];

    const TOOLS = [
        {id: "brush", label: "Brush", title: "Paint the change amount (B)"},
        {id: "eraser", label: "Eraser", title: "Paint 0 % change: keep the input (E)"},
        {id: "linear", label: "Linear", title: "Linear gradient: drag from the start (amount A) to the end (amount B); Shift: 45° steps (G)"},
        {id: "radial", label: "Radial", title: "Radial gradient: drag from the centre (amount A) out to the radius (amount B); Shift: 45° steps (R)"},
    ];
    const TOOL_KEYS = {b: "brush", e: "eraser", g: "linear", r: "radial"};

    function math() {
        return window.DifferentialDiffusionDrawMath;
    }

    function root() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function byId(id) {
        const r = root();
        return (r.getElementById ? r.getElementById(id) : null) || document.getElementById(id);
    }

    function isShown(el) {
        return Boolean(el && el.getClientRects().length > 0);
    }

    function notify(textarea) {
        if (typeof updateInput === "function") {
            updateInput(textarea);
        } else {
            textarea.dispatchEvent(new Event("input", {bubbles: true}));
        }
    }

    // Overlay colours by change amount, indexed by (value + 255) >> 8: index 0 is exactly 0 (kept
    // pixel for pixel with Preserve), 1..256 the amount in 256ths. Heat: exactly 0 is clear, the
    // rest runs blue -> red, more opaque with more change; gray: the map's own gray values.
    function overlayLut(gray) {
        const lut = new Uint32Array(257);
        const bytes = new Uint8Array(lut.buffer);
        for (let i = 0; i < 257; i++) {
            const t = Math.max(0, i - 1) / 255;
            if (gray) {
                const v = Math.round(t * 255);
                bytes.set([v, v, v, 255], i * 4);
                continue;
            }
            if (i === 0) continue; // transparent
            let k = 1;
            while (k < HEAT_STOPS.length - 1 && HEAT_STOPS[k][0] < t) k++;
            const [t0, c0] = HEAT_STOPS[k - 1], [t1, c1] = HEAT_STOPS[k];
            const f = (t - t0) / (t1 - t0);
            const rgb = c0.map((c, j) => Math.round(c + (c1[j] - c) * f));
            bytes.set([rgb[0], rgb[1], rgb[2], Math.round(255 * (0.45 + 0.55 * t))], i * 4);
        }
        return lut;
    }

    function element(tag, attributes, children) {
        const el = document.createElement(tag);
        for (const [key, value] of Object.entries(attributes || {})) {
            if (key === "className") el.className = value;
            else if (key === "text") el.textContent = value;
            else el.setAttribute(key, value);
        }
        for (const child of children || []) el.appendChild(child);
        return el;
    }

    function blobToDataUrl(blob) {
        return new Promise((resolve, reject) => {
            const reader = new FileReader();
            reader.onload = () => resolve(reader.result);
            reader.onerror = () => reject(reader.error);
            reader.readAsDataURL(blob);
        });
    }

    function percentile(values, p) {
        if (!values.length) return null;
        const sorted = Array.from(values).sort((a, b) => a - b);
        return sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)];
    }

    // Let input and frames run; scheduler.yield where the browser has it, else a message
    // (setTimeout would wait 4 ms each time once nested).
    const yieldChannel = typeof MessageChannel === "function" ? new MessageChannel() : null;
    const yieldWaiters = [];
    if (yieldChannel) yieldChannel.port1.onmessage = () => yieldWaiters.shift()();
    function yieldToPage() {
        if (typeof scheduler === "object" && scheduler && typeof scheduler.yield === "function") return scheduler.yield();
        if (!yieldChannel) return new Promise((resolve) => setTimeout(resolve, 0));
        return new Promise((resolve) => {
            yieldWaiters.push(resolve);
            yieldChannel.port2.postMessage(null);
        });
    }

    class StaleEncoding extends Error {}

    // The PNG is made in a worker (built from the math module's own source), so drawing stays
    // smooth while the map is encoded after each edit. It checks for cancellation between bands.
    const WORKER_ROWS_PER_BAND = 64;
    const WORKER_MAIN = `
        const cancelled = new Set();
        const channel = new MessageChannel();
        const waiters = [];
        channel.port1.onmessage = () => waiters.shift()();
        const tick = () => new Promise((resolve) => { waiters.push(resolve); channel.port2.postMessage(null); });
        self.onmessage = async (event) => {
            const job = event.data;
            if (job.type === "cancel") { cancelled.add(job.id); return; }
            try {
                const pause = async () => { await tick(); if (cancelled.has(job.id)) throw new Error("cancelled"); };
                let result = null;
                for (const bitDepth of [16, 8]) {
                    const png = await M.encodeGrayPng(job.data, job.width, job.height, {bitDepth, pause, rowsPerBand: job.rowsPerBand});
                    const url = new FileReaderSync().readAsDataURL(new Blob([png], {type: "image/png"}));
                    result = {url, bitDepth, bytes: png.length};
                    if (url.length <= job.max16BitUrl) break;
                }
                self.postMessage(Object.assign({id: job.id}, result));
            } catch (error) {
                self.postMessage({id: job.id, cancelled: cancelled.has(job.id), error: String(error)});
            } finally {
                cancelled.delete(job.id);
            }
        };`;

    class WorkerEncoder {
        constructor() {
            const source = `"use strict";\nconst M = (${math().moduleSource})();\n${WORKER_MAIN}`;
            this.worker = new Worker(URL.createObjectURL(new Blob([source], {type: "text/javascript"})));
            this.jobs = new Map();
            this.nextId = 1;
            this.failed = false;
            this.worker.onmessage = (event) => {
                const reply = event.data, job = this.jobs.get(reply.id);
                if (!job) return;
                this.jobs.delete(reply.id);
                if (reply.error) job.reject(reply.cancelled ? new StaleEncoding() : new Error(reply.error));
                else job.resolve({url: reply.url, bitDepth: reply.bitDepth, bytes: reply.bytes});
            };
            this.worker.onerror = (event) => {
                event.preventDefault();
                this.failed = true;
                for (const job of this.jobs.values()) job.reject(new Error(`encoding worker failed: ${event.message || "?"}`));
                this.jobs.clear();
            };
        }

        /** -> {promise of {url, bitDepth, bytes}, cancel()}; the map is copied, so drawing can go on. */
        encode(data, width, height) {
            const id = this.nextId++;
            const copy = new Uint16Array(data);
            const promise = new Promise((resolve, reject) => this.jobs.set(id, {resolve, reject}));
            this.worker.postMessage({type: "encode", id, data: copy, width, height, rowsPerBand: WORKER_ROWS_PER_BAND, max16BitUrl: MAX_16_BIT_DATA_URL}, [copy.buffer]);
            return {promise, cancel: () => this.worker.postMessage({type: "cancel", id})};
        }
    }

    class MapEditor {
        constructor(mount) {
            const M = math();
            this.mount = mount;
            this.settings = {tool: "brush", amount: 100, size: 48, softness: 50, flow: 100, gradientFrom: 100, gradientTo: 0, rawGray: false, opacity: 60};
            const size = this.fallbackSize();
            this.doc = new M.DrawingDocument(size[0], size[1]);
            this.stash = null; // the drawing before a stretch, while the stretched copy is unedited
            this.initSrc = null;
            this.luts = {heat: overlayLut(false), gray: overlayLut(true)};
            this.pending = []; // pointer samples waiting for the next frame
            this.gesture = null; // {kind: "stroke" | "gradient", pointerId, ...}
            this.pendingGradient = null; // a released gradient being computed: {job, entry}
            this.pointerOverEditor = false;
            this.lastPointerTarget = null;
            this.journal = [];
            this.frameRequested = false;
            this.layoutBox = null;
            this.encoded = {doc: null, revision: -1, url: ""}; // the last encoding, of which map and revision
            this.encoding = null; // in progress: {doc, revision, promise, cancel}
            this.encoder = undefined; // the worker encoder, made on first use
            this.encodeTimer = null;
            this.passGenerateClick = false;
            this.encodeDelayMs = ENCODE_DELAY_MS;
            // Per frame: the editor's work in ms and what it was (stroke, gradient preview, or the
            // commit at pointer-up); intervals between animation frames while drawing.
            this.stats = {frameWorkMs: [], frameKinds: [], frameIntervalMs: [], lastFrameAt: 0, encodes: [], generateWaits: []};
            this.build();
            this.bindGlobalEvents();
            this.syncInitImage();
            this.layout();
            this.refreshControls();
            this.writeTextbox("");
        }

        // ------------------------------------------------------------ DOM

        build() {
            const tools = element("div", {className: "dd-draw-tools", role: "radiogroup", "aria-label": "Tool"});
            this.toolButtons = {};
            for (const tool of TOOLS) {
                const button = element("button", {type: "button", className: "dd-draw-button", title: tool.title, "data-tool": tool.id, text: tool.label});
                button.addEventListener("click", () => this.setTool(tool.id));
                this.toolButtons[tool.id] = button;
                tools.appendChild(button);
            }
            const actions = element("div", {className: "dd-draw-actions"});
            this.actionButtons = {};
            const addAction = (id, label, title, handler) => {
                const button = element("button", {type: "button", className: "dd-draw-button", title, "data-action": id, text: label});
                button.addEventListener("click", handler);
                this.actionButtons[id] = button;
                actions.appendChild(button);
            };
            addAction("undo", "Undo", "Undo (Ctrl+Z)", () => this.undo());
            addAction("redo", "Redo", "Redo (Ctrl+Shift+Z)", () => this.redo());
            addAction("fill", "Fill", "Fill the whole map with the change amount", () => this.fill());
            addAction("invert", "Invert", "Invert the map (change <-> keep)", () => this.apply(() => this.doc.invert(), {edit: "invert"}));
            addAction("clear", "Clear", "Clear the map to 0 % (keep everything)", () => this.apply(() => this.doc.clear(), {edit: "clear"}));
            addAction("load", "Edit uploaded map", "Load the map in the panel's map upload into the editor (stretched to the init image)", () => this.loadUploadedMap());
            addAction("download", "Download PNG", "Save the drawn map as a 16-bit grayscale PNG (usable as the API's \"map\")", () => this.download());

            const sliders = element("div", {className: "dd-draw-sliders"});
            this.sliders = {};
            const addSlider = (id, label, min, max, title) => {
                const input = element("input", {type: "range", min: String(min), max: String(max), step: "1", "data-setting": id});
                const value = element("span", {className: "dd-draw-value"});
                const wrap = element("label", {className: "dd-draw-slider", title}, [element("span", {text: label}), input, value]);
                input.addEventListener("input", () => {
                    this.settings[id] = Number(input.value);
                    this.refreshControls();
                });
                this.sliders[id] = {input, value, wrap};
                sliders.appendChild(wrap);
            };
            addSlider("amount", "Change %", 0, 100, "Change amount of the brush and of Fill (the map's gray value: 0 % keeps, 100 % changes fully)");
            addSlider("size", "Size px", 1, 1024, "Brush diameter in map pixels ([ and ] change it)");
            addSlider("softness", "Softness %", 0, 100, "Feathered share of the brush radius");
            addSlider("flow", "Flow %", 1, 100, "How far one stroke moves a pixel toward the amount; strokes accumulate");
            addSlider("gradientFrom", "Gradient A %", 0, 100, "Change amount at the gradient's start (the radial gradient's centre)");
            addSlider("gradientTo", "Gradient B %", 0, 100, "Change amount at the gradient's end and beyond");
            addSlider("opacity", "Overlay %", 0, 100, "Opacity of the map over the init image");

            this.rawToggle = element("input", {type: "checkbox", "data-setting": "rawGray"});
            this.rawToggle.addEventListener("change", () => {
                this.settings.rawGray = this.rawToggle.checked;
                this.renderAll();
            });
            const view = element("label", {className: "dd-draw-toggle", title: "Show the map as gray values instead of the heat colours"}, [this.rawToggle, element("span", {text: "Raw gray map"})]);
            sliders.appendChild(view);

            this.stage = element("div", {className: "dd-draw-stage", tabindex: "0", "aria-label": "Change map editor"});
            this.initImage = element("img", {className: "dd-draw-init", alt: "", draggable: "false"});
            this.canvas = element("canvas", {className: "dd-draw-overlay"});
            this.guide = document.createElementNS("http://www.w3.org/2000/svg", "svg");
            this.guide.setAttribute("class", "dd-draw-guide");
            this.cursor = document.createElementNS("http://www.w3.org/2000/svg", "circle");
            this.gradientLine = document.createElementNS("http://www.w3.org/2000/svg", "line");
            this.cursor.setAttribute("class", "dd-draw-cursor");
            this.gradientLine.setAttribute("class", "dd-draw-gradient-line");
            this.guide.appendChild(this.cursor);
            this.guide.appendChild(this.gradientLine);
            this.stage.appendChild(this.initImage);
            this.stage.appendChild(this.canvas);
            this.stage.appendChild(this.guide);
            this.context = this.canvas.getContext("2d");

            this.status = element("div", {className: "dd-draw-status"});
            this.note = element("div", {className: "dd-draw-note", role: "status"});
            this.element = element("div", {className: "dd-draw"}, [
                element("div", {className: "dd-draw-bar"}, [tools, actions]),
                sliders,
                this.stage,
                this.status,
                this.note,
            ]);
            this.mount.appendChild(this.element);

            this.stage.addEventListener("pointerdown", (e) => this.onPointerDown(e));
            this.stage.addEventListener("pointermove", (e) => this.onPointerMove(e));
            this.stage.addEventListener("pointerup", (e) => this.onPointerUp(e, false));
            this.stage.addEventListener("pointercancel", (e) => this.onPointerUp(e, true));
            this.stage.addEventListener("pointerenter", () => this.syncInitImage());
            this.stage.addEventListener("pointerleave", () => {
                this.cursor.style.display = "none";
            });
            this.stage.addEventListener("contextmenu", (e) => e.preventDefault());
            this.element.addEventListener("pointerenter", () => {
                this.pointerOverEditor = true;
            });
            this.element.addEventListener("pointerleave", () => {
                this.pointerOverEditor = false;
            });
        }

        bindGlobalEvents() {
            // Keys only while the pointer is over the editor or the focus is in it: the page's own
            // canvas tools (zoom and pan, inpaint brush) keep theirs everywhere else.
            window.addEventListener("keydown", (e) => this.onKeyDown(e), true);
            document.addEventListener("pointerover", (e) => {
                this.lastPointerTarget = e.target;
            }, true);
            // Generate waits for the drawn map only when the encoded one is stale.
            window.addEventListener("click", (e) => this.onGenerateClick(e), true);
            if (typeof ResizeObserver === "function") {
                // Also when the editor shows (map source "draw" chosen): it follows the init image only while shown.
                new ResizeObserver(() => {
                    this.syncInitImage();
                    this.layout();
                }).observe(this.mount);
            }
            // A new init image (upload, paste, drop, "send to img2img") or another sub-tab.
            const area = byId("mode_img2img") || byId("tab_img2img") || root();
            const observer = new MutationObserver((mutations) => {
                if (mutations.some((m) => !this.element.contains(m.target))) this.scheduleInitSync(); // not our own redraws
            });
            observer.observe(area instanceof Document ? document.body : area, {subtree: true, childList: true, attributes: true, attributeFilter: ["src", "class", "style"]});
            // Sub-tab buttons change which init image shows.
            area.addEventListener && area.addEventListener("click", () => this.scheduleInitSync(), true);
        }

        scheduleInitSync() {
            if (this.initSyncQueued) return;
            this.initSyncQueued = true;
            setTimeout(() => {
                this.initSyncQueued = false;
                this.syncInitImage();
            }, 50);
        }

        // ------------------------------------------------------------ init image and size

        fallbackSize() {
            const read = (id, fallback) => {
                const input = byId(id) && byId(id).querySelector("input[type=number]");
                const value = input ? Math.round(Number(input.value)) : NaN;
                return value > 0 ? value : fallback;
            };
            return [read(IDS.width, 512), read(IDS.height, 512)];
        }

        /** The visible sub-tab's init image: {img} (img null when its field is empty), or null when no sub-tab with one shows. */
        currentInitImage() {
            for (const id of INIT_IMAGE_FIELDS) {
                const field = byId(id);
                if (!isShown(field)) continue;
                const img = Array.from(field.querySelectorAll("img")).find((i) => i.getAttribute("src") && i.complete && i.naturalWidth > 0);
                return {field: id, img: img || null};
            }
            return null;
        }

        syncInitImage() {
            // Hidden, it keeps what it has (no map allocated for every uploaded image); it catches up when shown.
            if (!isShown(this.stage)) return;
            const current = this.currentInitImage();
            if (!current) return; // another tab or the batch tab: nothing to go by
            const img = current.img;
            const src = img ? img.getAttribute("src") : null;
            if (src !== this.initSrc) {
                this.initSrc = src;
                if (src) this.initImage.setAttribute("src", src);
                else this.initImage.removeAttribute("src");
                this.initImage.style.visibility = src ? "visible" : "hidden";
            }
            if (img && (img.naturalWidth !== this.doc.width || img.naturalHeight !== this.doc.height)) {
                this.resizeTo(img.naturalWidth, img.naturalHeight);
            }
        }

        resizeTo(width, height) {
            this.settle();
            const from = this.doc;
            if (this.stash && this.stash.width === width && this.stash.height === height) {
                this.doc = this.stash; // back to the size it was drawn at, unedited since: exactly as it was
                this.stash = null;
                this.setNote("");
            } else if (!from.hasDrawing) {
                this.doc = new (math().DrawingDocument)(width, height);
                this.stash = null;
            } else {
                const original = this.stash || from;
                this.doc = original.resized(width, height);
                this.stash = original;
                this.setNote(`The drawing was stretched from ${original.width}×${original.height} to ${width}×${height} to fit the new init image; undo starts here.`);
            }
            this.layout(true);
            this.changed();
        }

        // ------------------------------------------------------------ layout and rendering

        layout(force) {
            const available = this.mount.clientWidth || this.element.clientWidth;
            if (!available) return; // hidden (another source, tab): laid out when shown
            const {width, height} = this.doc;
            const scale = Math.min(available / width, STAGE_MAX_HEIGHT / height);
            const displayWidth = Math.max(1, Math.floor(width * scale));
            const displayHeight = Math.max(1, Math.floor(height * scale));
            const ratio = Math.min(2, window.devicePixelRatio || 1);
            const canvasWidth = Math.max(1, Math.round(displayWidth * ratio));
            const canvasHeight = Math.max(1, Math.round(displayHeight * ratio));
            const box = this.layoutBox;
            if (!force && box && box.displayWidth === displayWidth && box.displayHeight === displayHeight && box.canvasWidth === canvasWidth && box.mapWidth === width && box.mapHeight === height) return;
            this.stage.style.width = `${displayWidth}px`;
            this.stage.style.height = `${displayHeight}px`;
            this.guide.setAttribute("viewBox", `0 0 ${displayWidth} ${displayHeight}`);
            this.canvas.width = canvasWidth;
            this.canvas.height = canvasHeight;
            // Each canvas pixel shows the map pixel under its centre.
            const columns = new Int32Array(canvasWidth), rows = new Int32Array(canvasHeight);
            for (let x = 0; x < canvasWidth; x++) columns[x] = Math.min(width - 1, Math.floor((x + 0.5) * width / canvasWidth));
            for (let y = 0; y < canvasHeight; y++) rows[y] = Math.min(height - 1, Math.floor((y + 0.5) * height / canvasHeight));
            this.layoutBox = {displayWidth, displayHeight, canvasWidth, canvasHeight, mapWidth: width, mapHeight: height, columns, rows};
            this.renderAll();
        }

        lut() {
            return this.settings.rawGray ? this.luts.gray : this.luts.heat;
        }

        renderAll() {
            if (this.layoutBox) this.renderMapRect({x0: 0, y0: 0, x1: this.doc.width, y1: this.doc.height});
        }

        /** Redraw the canvas pixels that show map pixels of `rect`. */
        renderMapRect(rect) {
            const box = this.layoutBox;
            if (!rect || !box) return;
            const {canvasWidth, canvasHeight, columns, rows} = box;
            const sx = canvasWidth / this.doc.width, sy = canvasHeight / this.doc.height;
            const cx0 = Math.max(0, Math.floor(rect.x0 * sx) - 1), cx1 = Math.min(canvasWidth, Math.ceil(rect.x1 * sx) + 1);
            const cy0 = Math.max(0, Math.floor(rect.y0 * sy) - 1), cy1 = Math.min(canvasHeight, Math.ceil(rect.y1 * sy) + 1);
            if (cx0 >= cx1 || cy0 >= cy1) return;
            const w = cx1 - cx0;
            const image = this.context.createImageData(w, cy1 - cy0);
            const out = new Uint32Array(image.data.buffer);
            const lut = this.lut(), data = this.doc.data, mapWidth = this.doc.width;
            let k = 0;
            for (let y = cy0; y < cy1; y++) {
                const row = rows[y] * mapWidth;
                for (let x = cx0; x < cx1; x++) out[k++] = lut[(data[row + columns[x]] + 255) >>> 8];
            }
            this.context.putImageData(image, cx0, cy0);
        }

        /** The gradient being dragged, drawn straight onto the canvas (the map changes on release). */
        renderGradientPreview(g) {
            const box = this.layoutBox;
            if (!box) return;
            const M = math();
            const {canvasWidth, canvasHeight, columns, rows} = box;
            const image = this.context.createImageData(canvasWidth, canvasHeight);
            const out = new Uint32Array(image.data.buffer);
            const lut = this.lut();
            const a = g.from * M.MAX_VALUE, span = (g.to - g.from) * M.MAX_VALUE;
            let k = 0;
            for (let y = 0; y < canvasHeight; y++) {
                const py = rows[y] + 0.5;
                for (let x = 0; x < canvasWidth; x++) {
                    const t = M.gradientPosition(g.shape, g.x0, g.y0, g.x1, g.y1, columns[x] + 0.5, py);
                    out[k++] = lut[(Math.round(a + span * t) + 255) >>> 8];
                }
            }
            this.context.putImageData(image, 0, 0);
        }

        requestFrame() {
            if (this.frameRequested) return;
            this.frameRequested = true;
            requestAnimationFrame((now) => this.frame(now));
        }

        frame(now) {
            this.frameRequested = false;
            const started = performance.now();
            const g = this.gesture;
            if (g && g.kind === "stroke") {
                let rect = null;
                for (const p of this.pending) rect = math().unionRect(rect, this.doc.strokeTo(p.x, p.y, p.pressure));
                this.pending.length = 0;
                this.renderMapRect(rect);
            } else if (g && g.kind === "gradient" && g.dirty) {
                g.dirty = false;
                this.renderGradientPreview(g);
            }
            if (g) this.recordFrame(now, performance.now() - started, g.kind);
            const pending = this.pendingGradient;
            if (pending) {
                const rowsStarted = performance.now();
                let done = false;
                do {
                    done = pending.job.step(GRADIENT_ROWS_PER_STEP);
                } while (!done && performance.now() - started < GRADIENT_FRAME_BUDGET_MS);
                if (done) this.commitGradient(true);
                else this.requestFrame();
                this.recordFrame(now, performance.now() - rowsStarted, "gradient rows");
            }
        }

        /** Apply the released gradient (computing what is left of it: counted as a frame of its own when forced by another action). */
        commitGradient(inFrame) {
            const pending = this.pendingGradient;
            if (!pending) return;
            const started = performance.now();
            this.pendingGradient = null;
            pending.job.commit();
            this.log(pending.entry);
            this.renderAll();
            this.edited();
            if (!inFrame) this.recordFrame(performance.now(), performance.now() - started, "gradient rows, forced");
        }

        /** End whatever is in progress (a stroke, a gradient being computed) before another edit or a read of the map. */
        settle() {
            this.finishGesture(false);
            this.commitGradient();
        }

        recordFrame(now, workMs, kind) {
            const s = this.stats;
            if (s.frameWorkMs.length < MAX_FRAME_SAMPLES) {
                s.frameWorkMs.push(workMs);
                s.frameKinds.push(kind);
                if (s.lastFrameAt && !kind.startsWith("commit")) s.frameIntervalMs.push(now - s.lastFrameAt);
            }
            s.lastFrameAt = this.gesture ? now : 0;
        }

        // ------------------------------------------------------------ pointer

        toMap(e) {
            const r = this.stage.getBoundingClientRect();
            return {
                x: (e.clientX - r.left) / r.width * this.doc.width,
                y: (e.clientY - r.top) / r.height * this.doc.height,
            };
        }

        pressureOf(e) {
            return e.pointerType === "pen" && e.pressure > 0 ? e.pressure : 1;
        }

        onPointerDown(e) {
            if (e.button !== 0 || this.gesture) return;
            e.preventDefault();
            this.commitGradient(); // a gradient still being computed comes first
            this.stage.focus({preventScroll: true});
            this.syncInitImage();
            try {
                this.stage.setPointerCapture(e.pointerId);
            } catch (error) {
                // synthetic events have no active pointer to capture
            }
            clearTimeout(this.encodeTimer); // the map is about to change
            const p = this.toMap(e);
            const tool = this.settings.tool;
            if (tool === "brush" || tool === "eraser") {
                const params = {
                    amount: tool === "eraser" ? 0 : this.settings.amount / 100,
                    radius: this.settings.size / 2,
                    softness: this.settings.softness / 100,
                    flow: this.settings.flow / 100,
                };
                this.doc.beginStroke(params);
                this.gesture = Object.assign({kind: "stroke", pointerId: e.pointerId, points: [], tool}, params);
                this.queuePoint(p.x, p.y, this.pressureOf(e));
            } else {
                this.gesture = {kind: "gradient", shape: tool, pointerId: e.pointerId, x0: p.x, y0: p.y, x1: p.x, y1: p.y, dirty: true,
                    from: this.settings.gradientFrom / 100, to: this.settings.gradientTo / 100};
            }
            this.stats.lastFrameAt = 0;
            this.cancelEncoding();
            this.updateCursor(e);
            this.requestFrame();
        }

        onPointerMove(e) {
            this.updateCursor(e);
            const g = this.gesture;
            if (!g || e.pointerId !== g.pointerId) return;
            if (g.kind === "stroke") {
                const samples = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
                for (const s of samples.length ? samples : [e]) {
                    const p = this.toMap(s);
                    this.queuePoint(p.x, p.y, this.pressureOf(s));
                }
            } else {
                this.moveGradientEnd(e);
            }
            this.requestFrame();
        }

        queuePoint(x, y, pressure) {
            const point = {x, y, pressure};
            this.pending.push(point);
            if (this.gesture.points.length < 4096) this.gesture.points.push([x, y, pressure]);
        }

        log(entry) {
            this.journal.push(entry);
            if (this.journal.length > MAX_JOURNAL) this.journal.shift();
        }

        moveGradientEnd(e) {
            const g = this.gesture;
            const p = this.toMap(e);
            let dx = p.x - g.x0, dy = p.y - g.y0;
            if (e.shiftKey) [dx, dy] = math().constrainAngle(dx, dy, 45);
            g.x1 = g.x0 + dx;
            g.y1 = g.y0 + dy;
            g.dirty = true;
            this.drawGradientLine(g);
        }

        onPointerUp(e, cancelled) {
            const g = this.gesture;
            if (!g || e.pointerId !== g.pointerId) return;
            if (g.kind === "gradient" && !cancelled) this.moveGradientEnd(e);
            this.finishGesture(cancelled);
        }

        /** End the stroke or gradient in progress: commit it (or drop it when cancelled). */
        finishGesture(cancelled) {
            const g = this.gesture;
            if (!g) return;
            this.gesture = null;
            this.stats.lastFrameAt = 0;
            this.gradientLine.style.display = "none";
            const started = performance.now();
            if (g.kind === "stroke") {
                let rect = null;
                if (!cancelled) {
                    for (const p of this.pending) rect = math().unionRect(rect, this.doc.strokeTo(p.x, p.y, p.pressure));
                }
                this.pending.length = 0;
                rect = math().unionRect(rect, cancelled ? this.doc.cancelStroke() : this.doc.endStroke());
                this.renderMapRect(rect);
                if (!cancelled && rect) {
                    this.log({edit: g.tool, amount: g.amount, radius: g.radius, softness: g.softness, flow: g.flow, points: g.points});
                    this.edited();
                }
            } else if (cancelled || Math.hypot(g.x1 - g.x0, g.y1 - g.y0) < 1) {
                this.renderAll(); // a click without a drag draws nothing
            } else {
                // The preview on screen already shows it; the map follows over the next frames.
                this.pendingGradient = {
                    job: this.doc.gradientJob(g.shape, g.x0, g.y0, g.x1, g.y1, g.from, g.to),
                    entry: {edit: g.shape, x0: g.x0, y0: g.y0, x1: g.x1, y1: g.y1, from: g.from, to: g.to},
                };
                this.requestFrame();
            }
            this.recordFrame(performance.now(), performance.now() - started, `commit ${g.kind}`);
        }

        updateCursor(e) {
            const r = this.stage.getBoundingClientRect();
            const brush = this.settings.tool === "brush" || this.settings.tool === "eraser";
            if (!brush || !r.width) {
                this.cursor.style.display = "none";
                return;
            }
            this.cursor.style.display = "";
            this.cursor.setAttribute("cx", String(e.clientX - r.left));
            this.cursor.setAttribute("cy", String(e.clientY - r.top));
            this.cursor.setAttribute("r", String(Math.max(1, this.settings.size / 2 * r.width / this.doc.width)));
        }

        drawGradientLine(g) {
            const box = this.layoutBox;
            if (!box) return;
            const sx = box.displayWidth / this.doc.width, sy = box.displayHeight / this.doc.height;
            const line = this.gradientLine;
            line.style.display = "";
            line.setAttribute("x1", String(g.x0 * sx));
            line.setAttribute("y1", String(g.y0 * sy));
            line.setAttribute("x2", String(g.x1 * sx));
            line.setAttribute("y2", String(g.y1 * sy));
        }

        // ------------------------------------------------------------ keys

        keysAreOurs(e) {
            // Typing in a text field keeps its own keys.
            const target = e.target;
            if (target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && !["range", "checkbox", "button"].includes(target.type)))) return false;
            if (!isShown(this.stage)) return false;
            if (this.pointerOverEditor) return true;
            // Focus in the editor counts unless the pointer is over the page's own image tools
            // (clicking their canvases leaves the focus here; their keys are theirs).
            const focus = document.activeElement;
            return Boolean(focus && this.element.contains(focus)) && !this.pointerOverPageCanvas();
        }

        pointerOverPageCanvas() {
            const target = this.lastPointerTarget;
            return Boolean(target && INIT_IMAGE_FIELDS.some((id) => {
                const field = byId(id);
                return field && field.contains(target);
            }));
        }

        onKeyDown(e) {
            if (!this.keysAreOurs(e)) return;
            const ctrl = e.ctrlKey || e.metaKey;
            const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
            let handled = true;
            if (ctrl && key === "z" && !e.shiftKey) this.undo();
            else if (ctrl && ((key === "z" && e.shiftKey) || key === "y")) this.redo();
            else if (!ctrl && !e.altKey && e.key === "[") this.setSize(Math.max(1, Math.min(this.settings.size - 1, Math.round(this.settings.size / 1.15))));
            else if (!ctrl && !e.altKey && e.key === "]") this.setSize(Math.max(this.settings.size + 1, Math.round(this.settings.size * 1.15)));
            else if (!ctrl && !e.altKey && TOOL_KEYS[key]) this.setTool(TOOL_KEYS[key]);
            else if (e.key === "Escape" && this.gesture) this.finishGesture(true);
            else handled = false;
            if (handled) {
                e.preventDefault();
                e.stopPropagation();
            }
        }

        // ------------------------------------------------------------ commands

        setTool(tool) {
            this.settings.tool = tool;
            this.refreshControls();
        }

        setSize(size) {
            this.settings.size = Math.max(1, Math.min(Number(this.sliders.size.input.max), Math.round(size)));
            this.refreshControls();
        }

        /** Run a whole-map edit (fill, invert, clear...) and show it. */
        apply(edit, entry) {
            this.settle();
            const rect = edit();
            if (rect && entry) this.log(entry);
            if (rect) {
                this.renderMapRect(rect);
                this.edited();
            }
            return rect;
        }

        fill() {
            return this.apply(() => this.doc.fill(this.settings.amount / 100), {edit: "fill", amount: this.settings.amount / 100});
        }

        undo() {
            this.settle();
            const rect = this.doc.undo();
            if (rect) {
                this.log({edit: "undo"});
                this.renderMapRect(rect);
                this.changed();
            }
        }

        redo() {
            this.settle();
            const rect = this.doc.redo();
            if (rect) {
                this.log({edit: "redo"});
                this.renderMapRect(rect);
                this.changed();
            }
        }

        /** The map in the panel's upload field, as change amounts stretched to this map's size. */
        async loadUploadedMap() {
            const field = byId(IDS.mapUpload);
            const shown = field && Array.from(field.querySelectorAll("img")).find((i) => i.getAttribute("src"));
            if (!shown) {
                this.setNote("No map in the panel's map upload to edit: upload one there first.");
                return false;
            }
            const img = new Image();
            img.src = shown.getAttribute("src");
            await img.decode();
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            const context = canvas.getContext("2d", {willReadFrequently: true});
            context.drawImage(img, 0, 0);
            const M = math();
            const gray = M.grayFromRGBA(context.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width, canvas.height);
            this.apply(() => this.doc.load(M.resampleGray(gray, canvas.width, canvas.height, this.doc.width, this.doc.height)), {edit: "load", width: canvas.width, height: canvas.height});
            const stretched = canvas.width !== this.doc.width || canvas.height !== this.doc.height;
            this.setNote(`Loaded the uploaded map (${canvas.width}×${canvas.height}${stretched ? `, stretched to ${this.doc.width}×${this.doc.height}` : ""}; the browser reads it at 8 bits).`);
            return true;
        }

        async download() {
            this.settle();
            const png = await math().encodeGrayPng(this.doc.data, this.doc.width, this.doc.height, {bitDepth: math().canEncode16Bit() ? 16 : 8});
            const url = URL.createObjectURL(new Blob([png], {type: "image/png"}));
            const link = element("a", {href: url, download: "change-map.png"});
            document.body.appendChild(link);
            link.click();
            link.remove();
            setTimeout(() => URL.revokeObjectURL(url), 60000);
        }

        setNote(text) {
            this.note.textContent = text;
            this.note.style.display = text ? "" : "none";
        }

        refreshControls() {
            const s = this.settings;
            this.sliders.size.input.max = String(Math.max(64, Math.ceil(Math.max(this.doc.width, this.doc.height) / 2)));
            s.size = Math.min(s.size, Number(this.sliders.size.input.max));
            for (const [id, {input, value}] of Object.entries(this.sliders)) {
                input.value = String(s[id]);
                value.textContent = String(s[id]);
            }
            this.canvas.style.opacity = String(s.opacity / 100);
            this.rawToggle.checked = s.rawGray;
            for (const [id, button] of Object.entries(this.toolButtons)) button.setAttribute("aria-pressed", String(id === s.tool));
            const gradient = s.tool === "linear" || s.tool === "radial";
            for (const id of ["size", "softness", "flow"]) this.sliders[id].wrap.classList.toggle("dd-draw-inactive", gradient);
            this.sliders.amount.wrap.classList.toggle("dd-draw-inactive", s.tool !== "brush");
            for (const id of ["gradientFrom", "gradientTo"]) this.sliders[id].wrap.classList.toggle("dd-draw-inactive", !gradient);
            this.actionButtons.undo.disabled = !this.doc.canUndo;
            this.actionButtons.redo.disabled = !this.doc.canRedo;
            this.stage.dataset.tool = s.tool;
            this.refreshStatus();
        }

        refreshStatus() {
            const e = this.encoded;
            const current = e.doc === this.doc && e.revision === this.doc.revision;
            let text = `Map ${this.doc.width}×${this.doc.height} (the init image's size)`;
            if (!this.doc.hasDrawing) text += " · nothing drawn yet";
            else if (current && e.url) text += ` · sent as a ${e.bitDepth}-bit PNG, ${Math.max(1, Math.round(e.bytes / 1024))} KB`;
            else text += " · encoding…";
            this.status.textContent = text;
        }

        // ------------------------------------------------------------ encoding and the textbox

        /** After an edit by the user (not undo/redo): an edited stretched copy replaces its original. */
        edited() {
            this.stash = null;
            this.changed();
        }

        changed() {
            this.refreshControls();
            this.cancelEncoding();
            clearTimeout(this.encodeTimer);
            this.encodeTimer = setTimeout(() => {
                if (this.gesture || this.pendingGradient) return; // their end calls changed() again
                this.encodeCurrent(true).catch((error) => {
                    if (!(error instanceof StaleEncoding)) console.error("Differential Diffusion: encoding the drawn map failed:", error);
                });
            }, this.encodeDelayMs);
        }

        textbox() {
            const field = byId(IDS.drawnMap);
            return field ? field.querySelector("textarea") : null;
        }

        writeTextbox(url) {
            const textarea = this.textbox();
            if (textarea && textarea.value !== url) {
                textarea.value = url;
                notify(textarea);
            }
        }

        /** Whether the textbox holds the current map. */
        isSent() {
            return this.encoded.doc === this.doc && this.encoded.revision === this.doc.revision && !this.gesture && !this.pendingGradient && (!this.textbox() || this.textbox().value === this.encoded.url);
        }

        /** The worker encoder, or null where workers (or CompressionStream) are unavailable or it failed. */
        workerEncoder() {
            if (this.encoder === undefined) {
                try {
                    this.encoder = math().canEncode16Bit() && typeof Worker === "function" ? new WorkerEncoder() : null;
                } catch (error) {
                    this.encoder = null; // e.g. a content security policy without blob: workers
                }
            }
            if (this.encoder && this.encoder.failed) this.encoder = null;
            return this.encoder;
        }

        /**
         * Encode the current map and put it in the textbox ("" when nothing is drawn). Returns a
         * promise of the data URL; it fails with StaleEncoding when the map changes meanwhile.
         */
        encodeCurrent(background) {
            if (!background) this.settle();
            const doc = this.doc, revision = doc.revision;
            if (this.encoded.doc === doc && this.encoded.revision === revision) {
                this.writeTextbox(this.encoded.url);
                return Promise.resolve(this.encoded.url);
            }
            if (this.encoding && this.encoding.doc === doc && this.encoding.revision === revision) return this.encoding.promise;
            this.cancelEncoding();
            const started = performance.now();
            const stale = () => this.doc !== doc || doc.revision !== revision;
            let cancelJob = null;
            const promise = (async () => {
                let result = {url: "", bitDepth: 0, bytes: 0};
                if (doc.hasDrawing) {
                    const encoder = this.workerEncoder();
                    if (encoder) {
                        try {
                            const job = encoder.encode(doc.data, doc.width, doc.height);
                            cancelJob = job.cancel;
                            result = await job.promise;
                        } catch (error) {
                            if (error instanceof StaleEncoding || !encoder.failed) throw error;
                            result = null; // the worker broke: encode here instead
                        }
                    }
                    if (!encoder || !result) {
                        const pause = background ? async () => {
                            await yieldToPage();
                            if (stale()) throw new StaleEncoding();
                        } : null;
                        result = await this.encodePng(doc, pause);
                    }
                }
                if (stale()) throw new StaleEncoding();
                this.encoded = Object.assign({doc, revision}, result);
                this.writeTextbox(result.url);
                this.stats.encodes.push({ms: performance.now() - started, background: Boolean(background), worker: Boolean(cancelJob), pixels: doc.width * doc.height, bitDepth: result.bitDepth, bytes: result.bytes});
                this.refreshStatus();
                return result.url;
            })();
            this.encoding = {doc, revision, promise, cancel: () => cancelJob && cancelJob()};
            promise.catch(() => {}).then(() => {
                if (this.encoding && this.encoding.promise === promise) this.encoding = null;
            });
            return promise;
        }

        /**
         * Generate is waiting: an uncompressed PNG (a copy and two checksums) is made here at
         * once instead of waiting for the compressed one, which is dropped (on a busy machine
         * the two would only slow each other down). The map arrives larger but sooner.
         */
        encodeUrgently() {
            this.settle();
            const doc = this.doc, revision = doc.revision;
            if (!doc.hasDrawing || (this.encoded.doc === doc && this.encoded.revision === revision)) return this.encodeCurrent(false);
            if (this.encoding) {
                this.encoding.cancel();
                this.encoding = null;
            }
            const started = performance.now();
            return (async () => {
                const M = math();
                // 16 bits where the uncompressed URL stays under the limit, else 8 (a gray level apart).
                const rawBytes = doc.height * (1 + 2 * doc.width);
                const bitDepth = M.canEncode16Bit() && rawBytes * 4 / 3 <= MAX_16_BIT_DATA_URL ? 16 : 8;
                const png = await M.encodeGrayPng(doc.data, doc.width, doc.height, {bitDepth, deflate: M.storedDeflate, rowsPerBand: doc.height});
                const url = await blobToDataUrl(new Blob([png], {type: "image/png"}));
                if (this.doc !== doc || doc.revision !== revision) throw new StaleEncoding();
                this.encoded = {doc, revision, url, bitDepth, bytes: png.length};
                this.writeTextbox(url);
                this.stats.encodes.push({ms: performance.now() - started, background: false, worker: false, uncompressed: true, pixels: doc.width * doc.height, bitDepth, bytes: png.length});
                this.refreshStatus();
                return url;
            })();
        }

        /** Give up the encoding in progress if the map has changed since it started. */
        cancelEncoding() {
            const e = this.encoding;
            if (e && (e.doc !== this.doc || e.revision !== this.doc.revision)) {
                e.cancel();
                this.encoding = null;
            }
        }

        async encodePng(doc, pause) {
            const M = math();
            if (M.canEncode16Bit()) {
                for (const bitDepth of [16, 8]) {
                    const png = await M.encodeGrayPng(doc.data, doc.width, doc.height, {bitDepth, pause, rowsPerBand: ENCODE_ROWS_PER_BAND});
                    const url = await blobToDataUrl(new Blob([png], {type: "image/png"}));
                    if (bitDepth === 8 || url.length <= MAX_16_BIT_DATA_URL) return {url, bitDepth, bytes: png.length};
                }
            }
            // No CompressionStream: the canvas's own 8-bit PNG.
            const canvas = document.createElement("canvas");
            canvas.width = doc.width;
            canvas.height = doc.height;
            const context = canvas.getContext("2d");
            const image = context.createImageData(doc.width, doc.height);
            for (let i = 0, j = 0; i < doc.data.length; i++, j += 4) {
                const v = Math.round(doc.data[i] / 257);
                image.data[j] = image.data[j + 1] = image.data[j + 2] = v;
                image.data[j + 3] = 255;
            }
            context.putImageData(image, 0, 0);
            const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
            return {url: await blobToDataUrl(blob), bitDepth: 8, bytes: blob.size};
        }

        sourceIsDraw() {
            const checked = byId(IDS.source) && byId(IDS.source).querySelector("input[type=radio]:checked");
            return Boolean(checked && checked.value === "draw");
        }

        onGenerateClick(e) {
            if (this.passGenerateClick) return;
            const button = e.target && e.target.closest ? e.target.closest(`#${IDS.generate}`) : null;
            if (!button || !this.sourceIsDraw()) return;
            this.settle();
            this.syncInitImage();
            if (this.isSent()) {
                this.stats.generateWaits.push(0);
                return;
            }
            // Hold the click until the map is in the textbox, then click again.
            e.preventDefault();
            e.stopImmediatePropagation();
            const started = performance.now();
            const resend = () => {
                this.stats.generateWaits.push(performance.now() - started);
                this.passGenerateClick = true;
                try {
                    button.click();
                } finally {
                    this.passGenerateClick = false;
                }
            };
            const attempt = (tries) => this.encodeUrgently().then(resend, (error) => {
                if (error instanceof StaleEncoding && tries > 0) return attempt(tries - 1);
                console.error("Differential Diffusion: the drawn map could not be encoded:", error);
                resend();
            });
            attempt(3);
        }

        /** Numbers for the benchmark and tests. */
        report() {
            const s = this.stats;
            const byKind = {};
            s.frameKinds.forEach((kind, i) => (byKind[kind] = byKind[kind] || []).push(s.frameWorkMs[i]));
            const summary = (values) => ({count: values.length, p50: percentile(values, 50), p95: percentile(values, 95), max: values.length ? Math.max(...values) : null});
            return {
                frames: s.frameWorkMs.length,
                frameWork: summary(s.frameWorkMs),
                frameWorkByKind: Object.fromEntries(Object.entries(byKind).map(([kind, values]) => [kind, summary(values)])),
                frameInterval: summary(s.frameIntervalMs),
                encodes: s.encodes.slice(-20),
                generateWaits: s.generateWaits.slice(-20),
            };
        }
    }

    // ---------------------------------------------------------------- mounting

    const editors = [];

    /** The innermost element with the mount id (gradio's HTML block repeats its elem_id inside). */
    function mountPoint() {
        const all = document.querySelectorAll(`[id="${IDS.mount}"]`);
        const r = root();
        const found = all.length ? all : (r.querySelectorAll ? r.querySelectorAll(`[id="${IDS.mount}"]`) : []);
        return found.length ? found[found.length - 1] : null;
    }

    function mountEditor() {
        const point = mountPoint();
        if (!point || point.querySelector(".dd-draw") || !math()) return null;
        const editor = new MapEditor(point);
        editors.push(editor);
        return editor;
    }

    function watchForMountPoint() {
        if (mountEditor()) return;
        const observer = new MutationObserver(() => {
            if (mountEditor()) observer.disconnect();
        });
        observer.observe(document.body || document.documentElement, {childList: true, subtree: true});
    }

    window.DifferentialDiffusionDraw = {
        MapEditor,
        get editor() {
            return editors[editors.length - 1] || null;
        },
        mount: mountEditor,
    };

    if (typeof onUiLoaded === "function") {
        onUiLoaded(watchForMountPoint);
    } else if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", watchForMountPoint);
    } else {
        watchForMountPoint();
    }
})();
