"""Soft mask or "changes at all" for an inpainting checkpoint's mask. Prints numbers; it is not a test.

    python3 benchmarks/inpaint_mask_choice.py --url http://127.0.0.1:7860 [--seeds 4] [--size 128] \
        [--picture docs/inpainting.png]

Run against a WebUI that has a 9-channel inpainting checkpoint loaded (the real-host tests
make one from the graded fixture: tests/webui/make_inpaint_checkpoint.py). The same inpaint-tab
request (mask = where the map is above 0, mask blur 0, masked content original, whole picture;
the map as the change map) runs three ways, which differ only in the mask the model is given:

* soft: the map's strengths (the extension's "map as the model's mask" on);
* binary: the host's own rounded inpaint mask, i.e. "the map changes the pixel at all" (> 0);
* blind: the img2img tab's all-ones mask (the host without the extension's mask: the model
  sees no context).

Per band of map values it prints how much the output moved from the input (mean |out - in|,
0..255) and, in the faint band (0 < v <= 0.25), the edge energy the run added (mean |grad(out)
- grad(in)|): what a seam looks like at the edge of a soft change. Maps: a radial fall-off and
halves joined by a soft band. The picture: input, radial map and the three results of the
first seed, side by side.
"""

from __future__ import annotations

import argparse
import base64
import io

import numpy as np
import requests
from PIL import Image, ImageDraw

BANDS = ((0.0, 0.0), (0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def init_image(size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    image = Image.fromarray(np.stack([255 * x, 255 * y, 255 * (1 - (x + y) / 2)], -1).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    s = size
    draw.rectangle([int(0.10 * s), int(0.10 * s), int(0.40 * s), int(0.35 * s)], fill=(250, 250, 245))
    draw.ellipse([int(0.55 * s), int(0.50 * s), int(0.90 * s), int(0.90 * s)], fill=(20, 20, 30))
    draw.polygon([(int(0.15 * s), int(0.90 * s)), (int(0.45 * s), int(0.90 * s)), (int(0.30 * s), int(0.55 * s))], fill=(240, 200, 20))
    draw.line([(0, int(0.45 * s)), (s - 1, int(0.45 * s))], fill=(200, 30, 160), width=max(1, s // 32))
    return image


def maps(size: int) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    radial = np.clip(1 - np.hypot(x - 0.5, y - 0.5) / 0.5, 0, 1)
    band = np.clip((x - 0.35) / 0.3, 0, 1)  # 0 left of 35 %, 1 right of 65 %, a soft band between
    return {"radial": radial, "soft halves": band}


def edge_energy(out: np.ndarray, inp: np.ndarray, where: np.ndarray) -> float:
    def grad(a):
        return np.abs(np.diff(a, axis=1))[:-1] + np.abs(np.diff(a, axis=0))[:, :-1]
    added = np.abs(grad(out) - grad(inp)).mean(-1)
    return float(added[where[:-1, :-1]].mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--picture", default="")
    args = parser.parse_args()
    session = requests.Session()
    session.trust_env = False
    init = init_image(args.size)
    inp = np.asarray(init, dtype=np.float64)

    def run(seed: int, strengths: np.ndarray, case: str) -> np.ndarray:
        change_map = Image.fromarray(np.round(strengths * 255).astype(np.uint8), "L")
        dd = {"enabled": True, "source": "map", "map": png_b64(change_map), "model_mask": case == "soft"}
        body = {"init_images": [png_b64(init)], "prompt": "", "steps": args.steps, "sampler_name": "Euler", "seed": seed,
                "cfg_scale": 7, "denoising_strength": args.strength, "width": args.size, "height": args.size,
                "send_images": True, "save_images": False,
                "alwayson_scripts": {"Differential Diffusion": {"args": [dd]}}}
        if case != "blind":
            body.update(mask=png_b64(Image.fromarray(np.where(strengths > 0, 255, 0).astype(np.uint8), "L")),
                        mask_blur=0, inpainting_fill=1, inpaint_full_res=False)
        for _ in range(2):  # the first answer primes the host's VAE-encode draw (see tests/webui/host.py post_img2img)
            response = session.post(f"{args.url}/sdapi/v1/img2img", json=body, timeout=600)
            response.raise_for_status()
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).convert("RGB"), dtype=np.float64)

    cases = ("soft", "binary", "blind")
    panels: list[tuple[str, np.ndarray]] = []
    for name, strengths in maps(args.size).items():
        rows = {case: np.zeros(len(BANDS) + 1) for case in cases}
        for seed in range(1, args.seeds + 1):
            for case in cases:
                out = run(seed, strengths, case)
                if name == "radial" and seed == 1:
                    panels.append((f"{case} mask", out))
                change = np.abs(out - inp).mean(-1)
                for i, (low, high) in enumerate(BANDS):
                    where = (strengths == 0) if high == 0 else (strengths > low) & (strengths <= high)
                    rows[case][i] += change[where].mean() / args.seeds
                rows[case][-1] += edge_energy(out, inp, (strengths > 0) & (strengths <= 0.25)) / args.seeds
        print(f"\n{name} map, strength {args.strength}, {args.steps} Euler steps, {args.size}px, mean of {args.seeds} seeds")
        print(f"{'mask':8}" + "".join(f"{('v = 0' if h == 0 else f'{lo:.2f}<v<={h:.2f}'):>14}" for lo, h in BANDS)
              + f"{'faint edge':>12}")
        for case in cases:
            print(f"{case:8}" + "".join(f"{v:14.2f}" for v in rows[case][:-1]) + f"{rows[case][-1]:12.2f}")
    if args.picture:
        radial = np.repeat(maps(args.size)["radial"][..., None] * 255, 3, -1)
        draw_picture([("input", inp), ("change map", radial), *panels], args.picture)


def draw_picture(panels: list[tuple[str, np.ndarray]], path: str, scale: int = 2) -> None:
    size = panels[0][1].shape[0] * scale
    sheet = Image.new("RGB", (len(panels) * (size + 8) + 8, size + 30), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, pixels) in enumerate(panels):
        tile = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB").resize((size, size), Image.NEAREST)
        sheet.paste(tile, (8 + i * (size + 8), 24))
        draw.text((8 + i * (size + 8), 6), title, fill="black")
    sheet.save(path)


if __name__ == "__main__":
    main()
