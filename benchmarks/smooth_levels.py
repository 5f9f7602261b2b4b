"""How many amounts of change a map gets, snapped to the step grid and with smooth release.

Prints tables (and writes a picture); it is not a test. Needs a running WebUI with this
extension (the graded SD1 checkpoint makes "how much changed" meaningful):

    python3 benchmarks/smooth_levels.py --url http://127.0.0.1:7860 [--steps 4 8 20]
        [--samplers Euler "DPM++ 2M"] [--picture docs/smooth_ramp.png]

Per sampler and step count:
* uniform maps at 0, 1/16, ..., 1 (8-bit gray, slider 1.0): the mean change per pixel
  (RGB, 0..255) against the init image, snapped and smooth, and whether the smooth
  series is monotone where the host's own levels are;
* a 320x256 horizontal ramp 0 -> 255 over a flat gray init image (so that only the map
  varies along it): the change per latent column (8 pixels), and the largest jump between
  adjacent columns as a share of the whole range of change.
The picture: the ramp's change per column at the first step count, snapped and smooth,
for the first sampler.
"""

from __future__ import annotations

import argparse
import base64
import io

import numpy as np
import requests
from PIL import Image, ImageDraw

SAMPLERS = ["Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "DDIM", "UniPC", "LCM"]


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def init_image(width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), ((xx // 8 + yy // 8) % 2) * 200 + 20], -1)
    return Image.fromarray(rgb.astype(np.uint8))


class Host:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False

    def img2img(self, init: Image.Image, sampler: str, steps: int, change_map: Image.Image | None, smooth: bool) -> np.ndarray:
        payload = dict(
            init_images=[png_b64(init)], prompt="", steps=steps, sampler_name=sampler, seed=1, width=init.width, height=init.height,
            denoising_strength=1.0, cfg_scale=1.0,
        )  # fmt: skip
        if change_map is not None:
            payload["alwayson_scripts"] = {"Differential Diffusion": {"args": [{"map": png_b64(change_map), "smooth": smooth}]}}
        response = self.session.post(f"{self.url}/sdapi/v1/img2img", json=payload, timeout=600)
        response.raise_for_status()
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).convert("RGB")
        return np.asarray(image, dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 20])
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--picture", default="")
    args = parser.parse_args()
    host = Host(args.url)
    # Tall, so that the model's own texture averages out of each column's change.
    small, wide = init_image(64, 64), Image.new("RGB", (320, 256), (128, 128, 128))
    ramp = Image.fromarray(np.tile(np.rint(np.linspace(0, 255, 320)).astype(np.uint8), (256, 1)))
    values = [index / 16 for index in range(17)]
    host.img2img(small, "Euler", 4, None, True)  # the first generation after a load differs
    picture_curves: dict[str, np.ndarray] = {}
    for sampler in args.samplers:
        for steps in args.steps:
            tables = {}
            for smooth in (False, True):
                changes = []
                for value in values:
                    gray = Image.new("L", small.size, int(round(value * 255)))
                    changes.append(float(np.abs(host.img2img(small, sampler, steps, gray, smooth) - np.asarray(small, dtype=np.float64)).mean()))
                tables[smooth] = changes
            columns = {}
            for smooth in (False, True):
                change = np.abs(host.img2img(wide, sampler, steps, ramp, smooth) - np.asarray(wide, dtype=np.float64)).mean(axis=(0, 2))
                columns[smooth] = change.reshape(-1, 8).mean(axis=1)  # per latent column
            print(f"\n{sampler}, {steps} steps: mean change per pixel for uniform maps 0, 1/16, ..., 1")
            for smooth in (False, True):
                distinct = len({round(change, 3) for change in tables[smooth]})
                print(f"  {'smooth ' if smooth else 'snapped'}: " + " ".join(f"{change:.1f}" for change in tables[smooth]) + f"  ({distinct} distinct)")
            for smooth in (False, True):
                column = columns[smooth]
                jump = np.abs(np.diff(column)).max() / max(column.max() - column.min(), 1e-9)
                print(f"  ramp {'smooth ' if smooth else 'snapped'}: largest jump between adjacent latent columns {jump:.2f} of the range ({column.min():.1f}..{column.max():.1f})")
            if sampler == args.samplers[0] and steps == args.steps[0]:
                picture_curves = {"snapped": columns[False], "smooth": columns[True]}
    if args.picture and picture_curves:
        draw_picture(picture_curves, args.picture, f"{args.samplers[0]}, {args.steps[0]} steps: change per latent column along a 0 -> 255 ramp")


def draw_picture(curves: dict[str, np.ndarray], path: str, title: str) -> None:
    width, height, margin = 640, 300, 40
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    top = max(float(curve.max()) for curve in curves.values()) or 1.0
    draw.rectangle([margin, margin, width - margin, height - margin], outline=(160, 160, 160))
    colours = {"snapped": (200, 60, 40), "smooth": (40, 90, 200)}
    for index, (name, curve) in enumerate(curves.items()):
        xs = np.linspace(margin, width - margin, len(curve))
        ys = height - margin - curve / top * (height - 2 * margin)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colours[name], width=2)
        draw.text((margin + 8, margin + 8 + 14 * index), name, fill=colours[name])
    draw.text((margin, 12), title, fill=(0, 0, 0))
    draw.text((margin, height - margin + 8), "map value 0 (left) -> 255 (right); up: mean change per pixel", fill=(90, 90, 90))
    image.save(path)


if __name__ == "__main__":
    main()
