#!/usr/bin/env python
"""Write a seeded 9-channel ("inpainting") SD1 or SDXL test checkpoint from a 4-channel one
(``--kind edit``: an 8-channel instruct-pix2pix SD1, whose image conditioning the extension
leaves to the host).

An inpainting checkpoint's UNet takes 9 input channels: the noisy latent (4), the
conditioning mask (1) and the latent of the masked image (4); the WebUI builds the last
five (``img2img_image_conditioning``) for models whose config says ``conditioning_key:
hybrid`` (A1111) or whose UNet has 9 input channels (the Forge family). This copies the
source checkpoint (the graded fixture ``sd1_graded``: its trained VAE, so how much an image
changes is meaningful; on the Forge family, which load SD1 only in the SD1.5 layout, the
SD1.5-layout stand-in), widens the UNet's first convolution to 9 input channels (the first
4 as they are, the other 5 seeded random at the same spread, so the mask and the masked
image really change the prediction) and, where the source has a config beside it, writes
it beside the output with ``LatentInpaintDiffusion``, ``conditioning_key: hybrid`` and
``in_channels: 9`` (SDXL: the network's ``in_channels: 9`` only). Same arguments, same
bytes. Torch, safetensors and PyYAML only.

    python make_inpaint_checkpoint.py --source <webui-fixtures>/ckpt/sd1_graded.safetensors \
        --out <cache dir>/sd1_inpaint_graded.safetensors
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

FIRST_CONV = "model.diffusion_model.input_blocks.0.0.weight"
# Input channels besides the noisy latent: inpainting, the conditioning mask and the masked
# image's latent; instruct-pix2pix ("edit"), the input image's latent.
EXTRA_CHANNELS = {"inpaint": 5, "edit": 4}


def widened_config(config: dict, kind: str) -> dict:
    model = config["model"]
    in_channels = 4 + EXTRA_CHANNELS[kind]
    if "network_config" in model["params"]:
        # SDXL (sgm): the host tells an inpainting model by the UNet's 9 input channels alone.
        model["params"]["network_config"]["params"]["in_channels"] = in_channels
        return config
    if kind == "edit":
        model["target"] = "modules.models.diffusion.ddpm_edit.LatentDiffusion"  # the host's instruct-pix2pix class
        model["params"]["cond_stage_key"] = "edit"
        model["params"]["first_stage_key"] = "edited"
    else:
        model["target"] = "ldm.models.diffusion.ddpm.LatentInpaintDiffusion"
        model["params"]["finetune_keys"] = None
    model["params"]["conditioning_key"] = "hybrid"
    model["params"]["unet_config"]["params"]["in_channels"] = in_channels
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True, type=Path, help="a 4-channel SD1 or SDXL checkpoint (.safetensors; its .yaml beside it, if any)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--kind", choices=sorted(EXTRA_CHANNELS), default="inpaint")
    args = parser.parse_args()
    weights = load_file(str(args.source))
    first = weights[FIRST_CONV]
    generator = torch.Generator().manual_seed(args.seed)
    extra = torch.randn((first.shape[0], EXTRA_CHANNELS[args.kind], *first.shape[2:]), generator=generator) * first.float().std()
    weights[FIRST_CONV] = torch.cat([first, extra.to(first.dtype)], dim=1).contiguous()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    note = f"{args.source.stem} widened to {first.shape[1] + extra.shape[1]} input channels (seed {args.seed}); test checkpoint"
    save_file(weights, str(partial), metadata={"note": note})
    if args.source.with_suffix(".yaml").is_file():
        config = widened_config(yaml.safe_load(args.source.with_suffix(".yaml").read_text()), args.kind)
        args.out.with_suffix(".yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(partial, args.out)


if __name__ == "__main__":
    main()
