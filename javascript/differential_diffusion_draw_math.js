// Differential Diffusion: the math of the panel's map editor, free of the DOM, so that node's
// test runner checks it (tests/js). A map is a Uint16Array of change amounts (0 = keep,
// 65535 = full change), row-major, at the init image's resolution.
//
// UMD: in the WebUI page (a classic script) it is `window.DifferentialDiffusionDrawMath`;
// under node it is `module.exports`.
(function(root, factory) {
    const api = factory();
    api.moduleSource = String(factory); // the editor rebuilds the module in its encoding worker
    if (typeof module === "object" && module.exports) {
        module.exports = api;
    } else {
        root.DifferentialDiffusionDrawMath = api;
    }
})(typeof self !== "undefined" ? self : this, function() {
    "use strict";

    const MAX_VALUE = 65535;
    // Strokes save what they touch tile by tile: the undo step of a stroke costs its tiles only.
    const TILE = 64;
    const UNDO_DEFAULTS = {minSteps: 30, maxSteps: 100, byteBudget: 256 * 1024 * 1024};

    function clamp(value, low, high) {
        return value < low ? low : value > high ? high : value;
    }

    /** Change amount 0..1 -> stored 16-bit value. */
    function amountToValue(amount) {
        return Math.round(clamp(Number(amount) || 0, 0, 1) * MAX_VALUE);
    }

    function smoothstep(x) {
        return x <= 0 ? 0 : x >= 1 ? 1 : x * x * (3 - 2 * x);
    }

    /**
     * Brush opacity at `distance` from the brush centre: 1 inside, 0 from `radius` on, a smooth
     * ramp over the outer `max(softness x radius, 1 px)` (the 1 px keeps a hard brush antialiased).
     */
    function brushFalloff(distance, radius, softness) {
        if (distance >= radius) return 0;
        const feather = Math.max(clamp(softness, 0, 1) * radius, 1);
        const inner = radius - feather;
        if (distance <= inner) return 1;
        return smoothstep((radius - distance) / feather);
    }

    // ------------------------------------------------------------------ rectangles
    // {x0, y0, x1, y1}: pixel bounds, x1/y1 exclusive; null = nothing.

    function unionRect(a, b) {
        if (!a) return b;
        if (!b) return a;
        return {x0: Math.min(a.x0, b.x0), y0: Math.min(a.y0, b.y0), x1: Math.max(a.x1, b.x1), y1: Math.max(a.y1, b.y1)};
    }

    function fullRect(width, height) {
        return {x0: 0, y0: 0, x1: width, y1: height};
    }

    // ------------------------------------------------------------------ gradients

    /** (dx, dy) turned to the nearest multiple of `stepDegrees`, same length (shift-drag). */
    function constrainAngle(dx, dy, stepDegrees) {
        const length = Math.hypot(dx, dy);
        if (length === 0) return [0, 0];
        const step = (stepDegrees || 45) * Math.PI / 180;
        const angle = Math.round(Math.atan2(dy, dx) / step) * step;
        // Snap the cosine/sine of multiples of 90 degrees to exact 0/1.
        const c = Math.abs(Math.cos(angle)) < 1e-12 ? 0 : Math.cos(angle);
        const s = Math.abs(Math.sin(angle)) < 1e-12 ? 0 : Math.sin(angle);
        return [c * length, s * length];
    }

    /**
     * Gradient position 0..1 of the point (x, y): along start->end (linear) or by distance from
     * start over |end - start| (radial); clamped, so the amount is A before/inside and B beyond.
     * A zero-length gradient is B everywhere.
     */
    function gradientPosition(kind, x0, y0, x1, y1, x, y) {
        const dx = x1 - x0, dy = y1 - y0;
        const length2 = dx * dx + dy * dy;
        if (length2 === 0) return 1;
        if (kind === "radial") return Math.min(1, Math.sqrt(((x - x0) * (x - x0) + (y - y0) * (y - y0)) / length2));
        return clamp(((x - x0) * dx + (y - y0) * dy) / length2, 0, 1);
    }

    /** The 16-bit value of a gradient from amount `a` to `b` at pixel (px, py) (its centre). */
    function gradientValueAt(kind, x0, y0, x1, y1, a, b, px, py) {
        const va = clamp(a, 0, 1) * MAX_VALUE, vb = clamp(b, 0, 1) * MAX_VALUE;
        return Math.round(va + (vb - va) * gradientPosition(kind, x0, y0, x1, y1, px + 0.5, py + 0.5));
    }

    // Gradients fill rows rowStart..rowEnd of `data` (all rows by default).
    function fillLinearGradient(data, width, height, x0, y0, x1, y1, a, b, rowStart, rowEnd) {
        const firstRow = rowStart || 0, lastRow = rowEnd === undefined ? height : rowEnd;
        const va = clamp(a, 0, 1) * MAX_VALUE, vb = clamp(b, 0, 1) * MAX_VALUE, span = vb - va;
        const dx = x1 - x0, dy = y1 - y0, length2 = dx * dx + dy * dy;
        if (length2 === 0) {
            data.fill(Math.round(vb), firstRow * width, lastRow * width);
            return;
        }
        const stepX = dx / length2;
        for (let y = firstRow; y < lastRow; y++) {
            const rowStart = ((0.5 - x0) * dx + (y + 0.5 - y0) * dy) / length2;
            const base = va + 0.5; // + 0.5, then truncation: rounding (values are >= 0)
            let i = y * width;
            for (let x = 0; x < width; x++, i++) {
                let t = rowStart + x * stepX;
                t = t < 0 ? 0 : t > 1 ? 1 : t;
                data[i] = (base + span * t) | 0;
            }
        }
    }

    function fillRadialGradient(data, width, height, x0, y0, x1, y1, a, b, rowStart, rowEnd) {
        const firstRow = rowStart || 0, lastRow = rowEnd === undefined ? height : rowEnd;
        const va = clamp(a, 0, 1) * MAX_VALUE, vb = clamp(b, 0, 1) * MAX_VALUE, span = vb - va;
        const radius2 = (x1 - x0) * (x1 - x0) + (y1 - y0) * (y1 - y0);
        const outside = Math.round(vb);
        if (radius2 === 0) {
            data.fill(outside, firstRow * width, lastRow * width);
            return;
        }
        const inverseRadius = 1 / Math.sqrt(radius2);
        for (let y = firstRow; y < lastRow; y++) {
            const row = y * width;
            const ry = y + 0.5 - y0;
            const reach2 = radius2 - ry * ry;
            if (reach2 <= 0) {
                data.fill(outside, row, row + width);
                continue;
            }
            // Only pixels whose centre is inside the circle need a square root.
            const reach = Math.sqrt(reach2);
            const inStart = clamp(Math.ceil(x0 - reach - 0.5), 0, width);
            const inEnd = clamp(Math.floor(x0 + reach - 0.5) + 1, inStart, width);
            data.fill(outside, row, row + inStart);
            data.fill(outside, row + inEnd, row + width);
            const ry2 = ry * ry, base = va + 0.5; // + 0.5, then truncation: rounding (values are >= 0)
            for (let x = inStart, rx = inStart + 0.5 - x0; x < inEnd; x++, rx++) {
                const t = Math.sqrt(rx * rx + ry2) * inverseRadius;
                data[row + x] = (base + span * (t > 1 ? 1 : t)) | 0;
            }
        }
    }

    // ------------------------------------------------------------------ resampling and decoding

    // One axis of a triangle-filter resample (PIL's BILINEAR: the filter widens when shrinking).
    function resampleAxisWeights(source, target) {
        const scale = source / target;
        const support = Math.max(1, scale);
        const taps = [];
        for (let i = 0; i < target; i++) {
            const centre = (i + 0.5) * scale;
            const first = Math.max(0, Math.floor(centre - support));
            const last = Math.min(source - 1, Math.ceil(centre + support));
            const indices = [], weights = [];
            let total = 0;
            for (let j = first; j <= last; j++) {
                const w = 1 - Math.abs((j + 0.5 - centre) / support);
                if (w > 0) {
                    indices.push(j);
                    weights.push(w);
                    total += w;
                }
            }
            if (total === 0) {
                indices.push(clamp(Math.floor(centre), 0, source - 1));
                weights.push(1);
                total = 1;
            }
            taps.push({indices, weights: weights.map((w) => w / total)});
        }
        return taps;
    }

    /** Stretch a 16-bit gray map to another size (how the server stretches a map of another size). */
    function resampleGray(source, sourceWidth, sourceHeight, width, height) {
        if (sourceWidth === width && sourceHeight === height) return new Uint16Array(source);
        const columns = resampleAxisWeights(sourceWidth, width);
        const rows = resampleAxisWeights(sourceHeight, height);
        const horizontal = new Float32Array(width * sourceHeight);
        for (let y = 0; y < sourceHeight; y++) {
            const row = y * sourceWidth;
            for (let x = 0; x < width; x++) {
                const {indices, weights} = columns[x];
                let sum = 0;
                for (let k = 0; k < indices.length; k++) sum += source[row + indices[k]] * weights[k];
                horizontal[y * width + x] = sum;
            }
        }
        const out = new Uint16Array(width * height);
        for (let y = 0; y < height; y++) {
            const {indices, weights} = rows[y];
            for (let x = 0; x < width; x++) {
                let sum = 0;
                for (let k = 0; k < indices.length; k++) sum += horizontal[indices[k] * width + x] * weights[k];
                out[y * width + x] = clamp(Math.round(sum), 0, MAX_VALUE);
            }
        }
        return out;
    }

    /** RGBA pixels (a canvas's ImageData) -> 16-bit change amounts: luminance times alpha, as the server reads an uploaded map. */
    function grayFromRGBA(rgba, width, height) {
        const out = new Uint16Array(width * height);
        for (let i = 0, j = 0; i < out.length; i++, j += 4) {
            const luminance = 0.299 * rgba[j] + 0.587 * rgba[j + 1] + 0.114 * rgba[j + 2];
            out[i] = Math.round(luminance * rgba[j + 3] / 255 * 257);
        }
        return out;
    }

    function isConstant(data) {
        const first = data[0];
        for (let i = 1; i < data.length; i++) {
            if (data[i] !== first) return false;
        }
        return true;
    }

    // ------------------------------------------------------------------ the document: map, strokes, undo

    /**
     * A change map being drawn, with its undo history. Every edit returns the dirty rectangle
     * (for the editor's redraw); `revision` counts changes (for the encoder's cache).
     */
    class DrawingDocument {
        constructor(width, height, options) {
            const opts = Object.assign({}, UNDO_DEFAULTS, options || {});
            if (!(width > 0 && height > 0 && Number.isInteger(width) && Number.isInteger(height))) {
                throw new RangeError(`map size must be positive integers, got ${width}x${height}`);
            }
            this.width = width;
            this.height = height;
            this.data = opts.data ? new Uint16Array(opts.data) : new Uint16Array(width * height);
            if (this.data.length !== width * height) throw new RangeError("data does not match the map size");
            this.minSteps = opts.minSteps;
            this.maxSteps = opts.maxSteps;
            this.byteBudget = opts.byteBudget;
            this.undoStack = [];
            this.redoStack = [];
            this.historyBytes = 0;
            // Whether the state under the oldest undo step is "nothing drawn" (false once the
            // oldest steps are dropped, or for a document made from an existing drawing).
            this.baseIsBlank = opts.blank !== undefined ? Boolean(opts.blank) : !opts.data;
            this.stroke = null;
            this.revision = 0;
            this.tilesX = Math.ceil(width / TILE);
            // Whole-map buffers of dropped undo steps, reused by the next whole-map edit: fewer
            // large allocations, fewer long garbage-collection pauses.
            this.spareBuffers = [];
        }

        _wholeMapBuffer() {
            return this.spareBuffers.pop() || new Uint16Array(this.width * this.height);
        }

        _recycle(buffer) {
            if (buffer && this.spareBuffers.length < 2) this.spareBuffers.push(buffer);
        }

        _release(step) {
            this.historyBytes -= step.bytes;
            if (step.kind === "full") this._recycle(step.data);
        }

        /** Whether anything was drawn (false for a new map, or after undoing every step of one). */
        get hasDrawing() {
            return !(this.baseIsBlank && this.undoStack.length === 0);
        }

        get canUndo() {
            return this.undoStack.length > 0 && !this.stroke;
        }

        get canRedo() {
            return this.redoStack.length > 0 && !this.stroke;
        }

        valueAt(x, y) {
            return this.data[y * this.width + x];
        }

        // -------------------------------------------------------------- brush

        /**
         * Start a stroke: `amount` (0..1, the eraser paints 0), `radius` (map pixels), `softness`
         * (0..1, the feathered share of the radius), `flow` (0..1: one pass moves a pixel this
         * share of the way to the amount; passes of later strokes accumulate; within a stroke
         * the strongest coverage counts, so overlapping segments do not pile up).
         */
        beginStroke(params) {
            if (this.stroke) this.endStroke();
            this.stroke = {
                target: clamp(Number(params.amount) || 0, 0, 1) * MAX_VALUE,
                radius: Math.max(0.5, Number(params.radius) || 0.5),
                softness: clamp(Number(params.softness) || 0, 0, 1),
                flow: clamp(params.flow === undefined ? 1 : Number(params.flow), 0, 1),
                tiles: new Map(), // tile index -> {pre: values before the stroke, coverage}
                last: null,
                rect: null,
            };
        }

        /** Continue the stroke to (x, y) in map pixels (the first call paints one dab). Returns the dirty rectangle. */
        strokeTo(x, y, pressure) {
            const stroke = this.stroke;
            if (!stroke) throw new Error("strokeTo without beginStroke");
            const p = pressure === undefined ? 1 : clamp(pressure, 0, 1);
            const from = stroke.last || {x, y, p};
            stroke.last = {x, y, p};
            const rect = this._paintSegment(from.x, from.y, from.p, x, y, p);
            stroke.rect = unionRect(stroke.rect, rect);
            return rect;
        }

        _strokeTile(index, tileX, tileY) {
            let tile = this.stroke.tiles.get(index);
            if (!tile) {
                const pre = new Uint16Array(TILE * TILE);
                const x0 = tileX * TILE, y0 = tileY * TILE;
                const w = Math.min(TILE, this.width - x0), h = Math.min(TILE, this.height - y0);
                for (let row = 0; row < h; row++) {
                    const start = (y0 + row) * this.width + x0;
                    pre.set(this.data.subarray(start, start + w), row * TILE);
                }
                tile = {pre, coverage: new Float32Array(TILE * TILE)};
                this.stroke.tiles.set(index, tile);
            }
            return tile;
        }

        _paintSegment(ax, ay, pa, bx, by, pb) {
            const {radius, softness, target, flow} = this.stroke;
            const x0 = clamp(Math.floor(Math.min(ax, bx) - radius), 0, this.width);
            const x1 = clamp(Math.ceil(Math.max(ax, bx) + radius), 0, this.width);
            const y0 = clamp(Math.floor(Math.min(ay, by) - radius), 0, this.height);
            const y1 = clamp(Math.ceil(Math.max(ay, by) + radius), 0, this.height);
            if (x0 >= x1 || y0 >= y1) return null;
            const dx = bx - ax, dy = by - ay, length2 = dx * dx + dy * dy;
            const radius2 = radius * radius;
            const feather = Math.max(softness * radius, 1);
            const inner = radius - feather, inner2 = inner > 0 ? inner * inner : -1;
            const dp = pb - pa;
            const data = this.data, width = this.width;
            let changed = false;
            for (let tileY = Math.floor(y0 / TILE); tileY * TILE < y1; tileY++) {
                const ty0 = Math.max(y0, tileY * TILE), ty1 = Math.min(y1, (tileY + 1) * TILE);
                for (let tileX = Math.floor(x0 / TILE); tileX * TILE < x1; tileX++) {
                    const tx0 = Math.max(x0, tileX * TILE), tx1 = Math.min(x1, (tileX + 1) * TILE);
                    const tile = this._strokeTile(tileY * this.tilesX + tileX, tileX, tileY);
                    const pre = tile.pre, coverage = tile.coverage;
                    for (let y = ty0; y < ty1; y++) {
                        const cy = y + 0.5 - ay;
                        const local = (y - tileY * TILE) * TILE - tileX * TILE;
                        for (let x = tx0; x < tx1; x++) {
                            const cx = x + 0.5 - ax;
                            let t = length2 > 0 ? (cx * dx + cy * dy) / length2 : 0;
                            t = t < 0 ? 0 : t > 1 ? 1 : t;
                            const ex = cx - t * dx, ey = cy - t * dy;
                            const distance2 = ex * ex + ey * ey;
                            if (distance2 >= radius2) continue;
                            let alpha = distance2 <= inner2 ? 1 : smoothstep((radius - Math.sqrt(distance2)) / feather);
                            alpha *= pa + dp * t;
                            const k = local + x;
                            if (alpha <= coverage[k]) continue;
                            coverage[k] = alpha;
                            const before = pre[k];
                            data[y * width + x] = Math.round(before + (target - before) * flow * alpha);
                            changed = true;
                        }
                    }
                }
            }
            if (changed) this.revision++;
            return {x0, y0, x1, y1};
        }

        /** End the stroke: it becomes one undo step. Returns the stroke's rectangle (null if it touched nothing). */
        endStroke() {
            const stroke = this.stroke;
            if (!stroke) return null;
            this.stroke = null;
            if (stroke.tiles.size === 0) return null;
            const tiles = [];
            for (const [index, tile] of stroke.tiles) tiles.push({index, data: tile.pre});
            this._push({kind: "tiles", tiles, bytes: tiles.length * TILE * TILE * 2});
            return stroke.rect;
        }

        /** Drop the stroke in progress, restoring what it painted. */
        cancelStroke() {
            const stroke = this.stroke;
            if (!stroke) return null;
            this.stroke = null;
            for (const [index, tile] of stroke.tiles) this._copyTile(index, tile.pre, "in");
            if (stroke.tiles.size) this.revision++;
            return stroke.rect;
        }

        _copyTile(index, buffer, direction) {
            const tileX = index % this.tilesX, tileY = Math.floor(index / this.tilesX);
            const x0 = tileX * TILE, y0 = tileY * TILE;
            const w = Math.min(TILE, this.width - x0), h = Math.min(TILE, this.height - y0);
            for (let row = 0; row < h; row++) {
                const start = (y0 + row) * this.width + x0;
                if (direction === "in") this.data.set(buffer.subarray(row * TILE, row * TILE + w), start);
                else buffer.set(this.data.subarray(start, start + w), row * TILE);
            }
        }

        _tileRect(index) {
            const tileX = index % this.tilesX, tileY = Math.floor(index / this.tilesX);
            return {x0: tileX * TILE, y0: tileY * TILE, x1: Math.min(this.width, (tileX + 1) * TILE), y1: Math.min(this.height, (tileY + 1) * TILE)};
        }

        // -------------------------------------------------------------- whole-map edits

        _replaceAll(next) {
            if (this.stroke) this.endStroke();
            const previous = this.data;
            this.data = next;
            const step = this._fullStep(previous);
            if (step.constant !== undefined) this._recycle(previous);
            this._push(step);
            return fullRect(this.width, this.height);
        }

        // A whole-map undo step; a constant map (a fill, a clear) is kept as its value.
        _fullStep(data) {
            if (isConstant(data)) return {kind: "full", constant: data[0], bytes: 16};
            return {kind: "full", data, bytes: data.byteLength};
        }

        /** The whole map set to `amount` (0..1). */
        fill(amount) {
            return this._replaceAll(this._wholeMapBuffer().fill(amountToValue(amount)));
        }

        clear() {
            return this.fill(0);
        }

        invert() {
            if (this.stroke) this.endStroke();
            this._invertData();
            this._push({kind: "invert", bytes: 16});
            return fullRect(this.width, this.height);
        }

        _invertData() {
            const data = this.data;
            for (let i = 0; i < data.length; i++) data[i] = MAX_VALUE - data[i];
        }

        /** Linear ("linear") or radial ("radial") gradient from amount `a` at (x0, y0) to `b` at (x1, y1), over the whole map. */
        gradient(kind, x0, y0, x1, y1, a, b) {
            return this.gradientJob(kind, x0, y0, x1, y1, a, b).commit();
        }

        /**
         * The same gradient computed a band of rows at a time, so that a big map does not stall
         * a frame: `step(rows)` computes the next rows (true once all are done); `commit()`
         * computes what is left and applies it as one undo step. The map is unchanged until then.
         */
        gradientJob(kind, x0, y0, x1, y1, a, b) {
            const next = this._wholeMapBuffer(); // every pixel is written
            const fill = kind === "radial" ? fillRadialGradient : fillLinearGradient;
            let row = 0, committed = false;
            const job = {
                step: (rows) => {
                    const end = Math.min(this.height, row + Math.max(1, rows));
                    fill(next, this.width, this.height, x0, y0, x1, y1, a, b, row, end);
                    row = end;
                    return row >= this.height;
                },
                commit: () => {
                    if (committed) throw new Error("gradient already committed");
                    committed = true;
                    if (row < this.height) job.step(this.height - row);
                    return this._replaceAll(next);
                },
            };
            return job;
        }

        /** Replace the map with `values` (same size), e.g. a loaded map, as one undo step. */
        load(values) {
            if (values.length !== this.width * this.height) throw new RangeError("loaded map does not match the map size");
            const next = this._wholeMapBuffer();
            next.set(values);
            return this._replaceAll(next);
        }

        /** A new document with this map stretched to width x height (no history). */
        resized(width, height) {
            if (this.stroke) this.endStroke();
            return new DrawingDocument(width, height, {
                data: resampleGray(this.data, this.width, this.height, width, height),
                blank: !this.hasDrawing,
                minSteps: this.minSteps, maxSteps: this.maxSteps, byteBudget: this.byteBudget,
            });
        }

        // -------------------------------------------------------------- undo / redo

        _push(step) {
            this.undoStack.push(step);
            this.historyBytes += step.bytes;
            for (const dropped of this.redoStack) this._release(dropped);
            this.redoStack = [];
            this.revision++;
            while (this.undoStack.length > this.maxSteps || (this.historyBytes > this.byteBudget && this.undoStack.length > this.minSteps)) {
                this._release(this.undoStack.shift());
                this.baseIsBlank = false;
            }
        }

        // Apply a step, turning it into its own inverse (swap what it holds with the map).
        _swap(step) {
            if (step.kind === "invert") {
                this._invertData();
                return fullRect(this.width, this.height);
            }
            if (step.kind === "full") {
                const current = this.data;
                this.data = step.constant !== undefined ? this._wholeMapBuffer().fill(step.constant) : step.data;
                this.historyBytes -= step.bytes;
                const swapped = this._fullStep(current);
                if (swapped.constant !== undefined) this._recycle(current);
                step.data = swapped.data;
                step.constant = swapped.constant;
                step.bytes = swapped.bytes;
                this.historyBytes += step.bytes;
                return fullRect(this.width, this.height);
            }
            let rect = null;
            const current = new Uint16Array(TILE * TILE);
            for (const tile of step.tiles) {
                this._copyTile(tile.index, current, "out");
                this._copyTile(tile.index, tile.data, "in");
                tile.data.set(current);
                rect = unionRect(rect, this._tileRect(tile.index));
            }
            return rect;
        }

        undo() {
            if (this.stroke) this.endStroke();
            const step = this.undoStack.pop();
            if (!step) return null;
            const rect = this._swap(step);
            this.redoStack.push(step);
            this.revision++;
            return rect;
        }

        redo() {
            if (this.stroke) this.endStroke();
            const step = this.redoStack.pop();
            if (!step) return null;
            const rect = this._swap(step);
            this.undoStack.push(step);
            this.revision++;
            return rect;
        }
    }

    // ------------------------------------------------------------------ PNG (grayscale, 8 or 16 bits)

    // CRC-32 by "slicing by 4": four table lookups per 4 bytes (a 4 MB map in a few ms).
    const CRC_TABLES = (function() {
        const tables = [new Uint32Array(256), new Uint32Array(256), new Uint32Array(256), new Uint32Array(256)];
        for (let n = 0; n < 256; n++) {
            let c = n;
            for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
            tables[0][n] = c >>> 0;
        }
        for (let n = 0; n < 256; n++) {
            for (let t = 1; t < 4; t++) tables[t][n] = (tables[0][tables[t - 1][n] & 0xff] ^ (tables[t - 1][n] >>> 8)) >>> 0;
        }
        return tables;
    })();

    function crc32(bytes, crc) {
        const [t0, t1, t2, t3] = CRC_TABLES;
        let c = crc === undefined ? 0xffffffff : crc;
        let i = 0;
        const n4 = bytes.length & ~3;
        for (; i < n4; i += 4) {
            c ^= bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
            c = t3[c & 0xff] ^ t2[(c >>> 8) & 0xff] ^ t1[(c >>> 16) & 0xff] ^ t0[c >>> 24];
        }
        for (; i < bytes.length; i++) c = t0[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
        return c;
    }

    function pngChunk(type, payload) {
        const out = new Uint8Array(12 + payload.length);
        const view = new DataView(out.buffer);
        view.setUint32(0, payload.length);
        for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
        out.set(payload, 8);
        view.setUint32(8 + payload.length, (crc32(out.subarray(4, 8 + payload.length)) ^ 0xffffffff) >>> 0);
        return out;
    }

    const PNG_SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);

    function pngHeader(width, height, bitDepth) {
        const ihdr = new Uint8Array(13);
        const view = new DataView(ihdr.buffer);
        view.setUint32(0, width);
        view.setUint32(4, height);
        ihdr[8] = bitDepth;
        ihdr[9] = 0; // grayscale
        return ihdr; // compression, filter, interlace: 0
    }

    /**
     * Rows y0..y1 of the map as PNG scanlines, each with filter type 1 ("Sub": smooth maps
     * become runs of small numbers, which deflate packs well). 16 bits: big-endian values;
     * 8 bits: value / 257, rounded.
     */
    function pngScanlines(data, width, y0, y1, bitDepth) {
        const bytesPerPixel = bitDepth === 16 ? 2 : 1;
        const stride = 1 + width * bytesPerPixel;
        const out = new Uint8Array((y1 - y0) * stride);
        for (let y = y0; y < y1; y++) {
            let o = (y - y0) * stride;
            out[o++] = 1;
            let i = y * width;
            if (bitDepth === 16) {
                let previousHigh = 0, previousLow = 0;
                for (let x = 0; x < width; x++, i++) {
                    const v = data[i], high = v >>> 8, low = v & 0xff;
                    out[o++] = (high - previousHigh) & 0xff;
                    out[o++] = (low - previousLow) & 0xff;
                    previousHigh = high;
                    previousLow = low;
                }
            } else {
                let previous = 0;
                for (let x = 0; x < width; x++, i++) {
                    const v = ((data[i] + 128) / 257) | 0; // Math.round(value / 257) for whole values
                    out[o++] = (v - previous) & 0xff;
                    previous = v;
                }
            }
        }
        return out;
    }

    /** zlib-compress an async sequence of byte arrays with the platform's CompressionStream("deflate"). */
    async function compressionStreamDeflate(parts) {
        const stream = new CompressionStream("deflate");
        const writer = stream.writable.getWriter();
        const reading = new Response(stream.readable).arrayBuffer();
        try {
            for await (const part of parts) {
                await writer.ready;
                writer.write(part).catch(() => {}); // a failed write also fails close()
            }
            await writer.close();
        } catch (error) {
            // Given up (e.g. the map changed): release the stream without unhandled rejections.
            writer.abort(error).catch(() => {});
            reading.catch(() => {});
            throw error;
        }
        return new Uint8Array(await reading);
    }

    /**
     * zlib without compression ("stored" blocks): no search, so its time is a copy and a
     * checksum. For the moment Generate waits on the map: the bytes are larger, but they
     * are ready at once (the compressed encoding may still be running in the background).
     */
    async function storedDeflate(parts) {
        const chunks = [];
        let total = 0;
        for await (const part of parts) {
            chunks.push(part);
            total += part.length;
        }
        const blocks = Math.max(1, Math.ceil(total / 65535));
        const out = new Uint8Array(2 + total + 5 * blocks + 4);
        out[0] = 0x78; // deflate, 32K window
        out[1] = 0x01; // no preset dictionary, fastest; (0x78 0x01) % 31 == 0
        let o = 2, a = 1, b = 0, remaining = total, chunk = 0, offset = 0;
        for (let block = 0; block < blocks; block++) {
            const length = Math.min(65535, remaining);
            remaining -= length;
            out[o++] = remaining === 0 ? 1 : 0; // BFINAL, BTYPE 00
            out[o++] = length & 0xff;
            out[o++] = length >>> 8;
            out[o++] = ~length & 0xff;
            out[o++] = (~length >>> 8) & 0xff;
            let left = length;
            while (left > 0) {
                const source = chunks[chunk];
                const take = Math.min(left, source.length - offset);
                const piece = source.subarray(offset, offset + take);
                out.set(piece, o);
                for (let start = 0; start < take; start += 5552) { // Adler-32: sums stay exact over 5552 bytes
                    const end = Math.min(take, start + 5552);
                    for (let i = start; i < end; i++) {
                        a += piece[i];
                        b += a;
                    }
                    a %= 65521;
                    b %= 65521;
                }
                o += take;
                left -= take;
                offset += take;
                if (offset === source.length) { chunk++; offset = 0; }
            }
        }
        out[o++] = b >>> 8;
        out[o++] = b & 0xff;
        out[o++] = a >>> 8;
        out[o++] = a & 0xff;
        return out;
    }

    function canEncode16Bit() {
        return typeof CompressionStream === "function" && typeof Response === "function";
    }

    /**
     * A grayscale PNG of the map (`bitDepth` 16 or 8). Scanlines are made in bands of
     * `rowsPerBand` rows; `pause` (an async function, optional) runs between bands, so a
     * caller can yield to the page, and can throw to abandon the encoding.
     */
    async function encodeGrayPng(data, width, height, options) {
        const opts = options || {};
        const bitDepth = opts.bitDepth === 8 ? 8 : 16;
        const rowsPerBand = Math.max(1, opts.rowsPerBand || 64);
        const deflate = opts.deflate || compressionStreamDeflate;
        async function* bands() {
            for (let y = 0; y < height; y += rowsPerBand) {
                if (opts.pause && y > 0) await opts.pause();
                yield pngScanlines(data, width, y, Math.min(height, y + rowsPerBand), bitDepth);
            }
        }
        const compressed = await deflate(bands());
        const parts = [PNG_SIGNATURE, pngChunk("IHDR", pngHeader(width, height, bitDepth)), pngChunk("IDAT", compressed), pngChunk("IEND", new Uint8Array(0))];
        const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let offset = 0;
        for (const part of parts) {
            out.set(part, offset);
            offset += part.length;
        }
        return out;
    }

    return {
        MAX_VALUE,
        TILE,
        UNDO_DEFAULTS,
        amountToValue,
        brushFalloff,
        unionRect,
        constrainAngle,
        gradientPosition,
        gradientValueAt,
        fillLinearGradient,
        fillRadialGradient,
        resampleGray,
        grayFromRGBA,
        DrawingDocument,
        crc32,
        pngScanlines,
        compressionStreamDeflate,
        storedDeflate,
        canEncode16Bit,
        encodeGrayPng,
    };
});
