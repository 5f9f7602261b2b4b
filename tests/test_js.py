"""The map editor's JavaScript, from pytest: node's own test runner over tests/js, and the
editor's PNG encoder read back by the server's map decoder (16-bit precision kept)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib_differential_diffusion.maps import decode_map

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="`node` not found: the editor's JavaScript tests need it")


def _failures(tap: str) -> str:
    """The `not ok` blocks of node's TAP output (what failed and why)."""
    blocks, lines, keep = [], tap.splitlines(), False
    for line in lines:
        if re.match(r"^\s*not ok \d+", line):
            keep = True
            blocks.append(line)
        elif keep and re.match(r"^\s*(ok \d+|# Subtest)", line):
            keep = False
        elif keep:
            blocks.append(line)
    return "\n".join(blocks)


@needs_node
def test_node_unit_tests_pass():
    proc = subprocess.run([NODE, "--test", "--test-reporter=tap", "tests/js"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    counts = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", proc.stdout, re.M))
    assert proc.returncode == 0, f"node --test tests/js failed ({counts}):\n{_failures(proc.stdout) or proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert int(counts.get("tests", 0)) >= 20 and counts.get("fail") == "0", f"unexpected node test counts: {counts}"


# Encodes a map with the editor's encoder and prints its values and the PNG (base64) as JSON.
ENCODE_SCRIPT = r"""
const M = require(process.argv[1]);
const [width, height, bitDepth] = process.argv.slice(2).map(Number);
const values = new Uint16Array(width * height);
for (let i = 0; i < values.length; i++) values[i] = (i * 2654435761 >>> 7) & 0xffff;
values[0] = 0; values[1] = 65535; values[2] = 1;
M.encodeGrayPng(values, width, height, {bitDepth}).then((png) => {
  process.stdout.write(JSON.stringify({values: Array.from(values), png: Buffer.from(png).toString('base64')}));
});
"""


@needs_node
@pytest.mark.parametrize("bit_depth", [16, 8])
def test_editor_png_decodes_on_the_server(bit_depth):
    width, height = 29, 17
    math_js = str(ROOT / "javascript" / "differential_diffusion_draw_math.js")
    proc = subprocess.run([NODE, "-e", ENCODE_SCRIPT, math_js, str(width), str(height), str(bit_depth)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    values = np.array(out["values"], dtype=np.uint16).reshape(height, width)
    decoded = decode_map("data:image/png;base64," + out["png"])  # what the drawn_map textbox carries
    assert decoded.shape == (height, width)
    if bit_depth == 16:
        np.testing.assert_allclose(decoded, values / 65535.0, rtol=0, atol=1e-7)
    else:
        np.testing.assert_allclose(decoded, np.rint(values / 257.0) / 255.0, rtol=0, atol=1e-7)
    import base64
    import io

    image = Image.open(io.BytesIO(base64.b64decode(out["png"])))
    image.load()  # PIL checks the chunks' CRCs
    assert image.mode == ("I;16" if bit_depth == 16 else "L")
