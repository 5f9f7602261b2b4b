#!/usr/bin/env python
"""Write a seeded random SD1.5 ControlNet checkpoint that Mikubill/sd-webui-controlnet loads.

No ControlNet weights can be downloaded for the tests, so this builds the extension's own
``ControlNet`` class (``scripts/cldm.py`` of the checkout given with --controlnet-root) with
the extension's SD1.5 config (``controlnet_default_config`` in
``scripts/controlnet_model_guess.py``, read from the file, not copied; ``hint_channels`` 3)
and saves its full state dict with the ``control_model.`` prefix, as the original
lllyasviel ControlNet 1.1 ``.pth``/``.safetensors`` files have it. The extension then guesses
the same config from the keys (``input_hint_block.0.weight`` without ``label_emb``) and loads
every tensor.

A fresh ControlNet is a no-op: its zero convolutions (the residuals it adds to the UNet),
the last conv of the hint block and the zero-initialised output layers inside its blocks
are all zero. Every parameter that starts all-zero (dim > 1) gets small seeded values
instead (--zero-std), so the unit really changes the UNet's output. Same arguments, same
bytes. Weights are random: for bit-identical comparisons only.

Needs torch and safetensors, the ldm code of a WebUI (``repositories/stable-diffusion-
stability-ai`` of an A1111 tree: --webui-root or SD_WEBUI_ROOT) and the ControlNet checkout:

    python make_controlnet_checkpoint.py --out <cache dir>/control_sd15_rand.safetensors \\
        --webui-root <A1111 webui folder> --controlnet-root <sd-webui-controlnet checkout>
"""
import argparse
import ast
import os
import sys
import time
import types


def default_config(controlnet_root: str) -> dict:
    """``controlnet_default_config`` of scripts/controlnet_model_guess.py (a literal dict), read
    without importing that module (it pulls in the whole extension and the WebUI)."""
    path = os.path.join(controlnet_root, "scripts", "controlnet_model_guess.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "controlnet_default_config" for t in node.targets):
            return ast.literal_eval(node.value)
    sys.exit(f"{path}: no controlnet_default_config")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--webui-root", default=os.environ.get("SD_WEBUI_ROOT"))
    ap.add_argument("--controlnet-root", required=True, help="a checkout of Mikubill/sd-webui-controlnet")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--zero-std", type=float, default=0.02, help="std of the weights that the class initialises to zero")
    ap.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    a = ap.parse_args()
    if not a.webui_root:
        sys.exit("give --webui-root (or SD_WEBUI_ROOT): the ldm code comes from its repositories/")
    if not os.path.isfile(os.path.join(a.controlnet_root, "scripts", "cldm.py")):
        sys.exit(f"{a.controlnet_root}: no scripts/cldm.py (not a sd-webui-controlnet checkout)")
    sys.path.insert(0, os.path.join(a.webui_root, "repositories", "stable-diffusion-stability-ai"))
    sys.path.insert(0, a.controlnet_root)
    # scripts/cldm.py does `from modules import devices` (the WebUI's; used only to move the model
    # to a device at run time): a stand-in keeps the WebUI itself out of this script.
    if "modules" not in sys.modules:
        modules = types.ModuleType("modules")
        modules.devices = types.ModuleType("modules.devices")
        sys.modules["modules"] = modules
        sys.modules["modules.devices"] = modules.devices

    import torch
    from safetensors.torch import save_file
    from scripts.cldm import ControlNet

    t0 = time.time()
    config = dict(default_config(a.controlnet_root), hint_channels=3, use_fp16=False)
    torch.manual_seed(a.seed)
    net = ControlNet(**config)
    g = torch.Generator().manual_seed(a.seed + 1)
    filled = 0
    for p in net.parameters():
        if p.dim() > 1 and bool((p == 0).all()):
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * a.zero_std)
            filled += 1
    dtype = torch.float16 if a.dtype == "fp16" else torch.float32
    state = {"control_model." + k: (v.detach().to(dtype) if v.is_floating_point() else v).contiguous()
             for k, v in net.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, bad[:5]
    save_file(state, a.out)
    size = os.path.getsize(a.out) / 2**20
    params = sum(p.numel() for p in net.parameters()) / 1e6
    print(f"wrote {a.out}: {len(state)} tensors ({params:.0f}M params, {filled} zero-initialised filled), {size:.0f} MiB, {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
