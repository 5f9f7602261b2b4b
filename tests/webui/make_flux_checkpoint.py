#!/usr/bin/env python
"""Write a seeded random single-file Flux.1 checkpoint that Stable Diffusion WebUI Forge Neo loads.

Forge Neo (backend/loader.py, its huggingface_guess detection.py) reads the Flux transformer's size
from the weights: hidden size = img_in rows, heads = hidden // 128 (the rotary axes 16+56+56),
double and single block counts by key, guidance embedding (Flux.1-dev) by the presence of
guidance_in. It builds CLIP-L, T5-XXL and the VAE at full size from the fixed configs of
backend/huggingface/black-forest-labs/FLUX.1-dev and refuses a checkpoint without their weights
("You do not have T5 state dict!"), so those are written at full size, every weight (Neo builds
them under ``no_init_weights`` and loads with strict=False: nothing may be left to uninitialised
memory):

  model.diffusion_model.*              Flux.1-dev layout (BFL names: img_in, time_in, vector_in,
                                       guidance_in, txt_in, double_blocks, single_blocks,
                                       final_layer; q/k RMS norms as ``.scale``), hidden 128*heads
  vae.*                                the Flux.1 VAE (the SD3 VAE's layout: 16 latent channels,
                                       no quant convs); its logvar channels are pinned (bias -30):
                                       the encode's sample() is its mean up to e^-15
  text_encoders.clip_l.transformer.*   CLIP-L, 12 x 768, with text_projection (fp16)
  text_encoders.t5xxl.transformer.*    T5-XXL encoder, 24 x 4096 in float8_e4m3fn (like the
                                       t5xxl_fp8_e4m3fn files users run), its layer norms in fp16

The VAE, CLIP-L and T5-XXL writers are make_sd35_checkpoint.py's. About 5.1 GB. Weights are drawn
per tensor from a generator seeded with (seed, crc32(name)) and written tensor by tensor (never all
in memory): the same arguments give the same bytes.

    python make_flux_checkpoint.py --out /tmp/sd-webui-differential-diffusion-cache/flux_rand.safetensors
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_sd35_checkpoint import CLIPL, DT, Plan, clip, new_parser, save_plan, start, t5xxl, vae  # noqa: E402

HEAD_DIM = 128  # Flux.1's rotary axes 16 + 56 + 56: Neo takes heads = hidden // 128


def flux(p: Plan, heads: int, double: int, single: int, guidance: bool, out_gain: float, dt):
    P = "model.diffusion_model."
    H, M = HEAD_DIM * heads, 4 * HEAD_DIM * heads  # hidden, MLP (mlp_ratio 4)
    p.linear(P + "img_in", H, 16 * 2 * 2, dt)
    for emb, n_in in (("time_in", 256), ("vector_in", 768)) + ((("guidance_in", 256),) if guidance else ()):
        p.linear(f"{P}{emb}.in_layer", H, n_in, dt)
        p.linear(f"{P}{emb}.out_layer", H, H, dt)
    p.linear(P + "txt_in", H, 4096, dt)
    for i in range(double):
        b = f"{P}double_blocks.{i}."
        for s in ("img", "txt"):
            p.linear(f"{b}{s}_mod.lin", 6 * H, H, dt, gain=0.3)
            p.linear(f"{b}{s}_attn.qkv", 3 * H, H, dt)
            p.norm(f"{b}{s}_attn.norm.query_norm", HEAD_DIM, dt, bias=False)
            p.norm(f"{b}{s}_attn.norm.key_norm", HEAD_DIM, dt, bias=False)
            p.linear(f"{b}{s}_attn.proj", H, H, dt)
            p.linear(f"{b}{s}_mlp.0", M, H, dt)
            p.linear(f"{b}{s}_mlp.2", H, M, dt, gain=0.5)
    for i in range(single):
        b = f"{P}single_blocks.{i}."
        p.linear(b + "linear1", 3 * H + M, H, dt)
        p.linear(b + "linear2", H, H + M, dt, gain=0.5)
        p.norm(b + "norm.query_norm", HEAD_DIM, dt, bias=False)
        p.norm(b + "norm.key_norm", HEAD_DIM, dt, bias=False)
        p.linear(b + "modulation.lin", 3 * H, H, dt, gain=0.3)
    p.linear(P + "final_layer.linear", 2 * 2 * 16, H, dt, gain=out_gain)
    p.linear(P + "final_layer.adaLN_modulation.1", 2 * H, H, dt, gain=0.3)
    # BFL's files name the q/k norms' weight "scale" (Neo's RMSNorm renames it on load)
    p.items = [(name.replace("_norm.weight", "_norm.scale") if name.startswith(P) else name, *rest)
               for name, *rest in p.items]


def main():
    ap = new_parser(__doc__, "transformer")
    ap.add_argument("--heads", type=int, default=2, help="hidden = 128*heads")
    ap.add_argument("--double", type=int, default=1, help="double-stream blocks")
    ap.add_argument("--single", type=int, default=1, help="single-stream blocks")
    ap.add_argument("--schnell", action="store_true", help="no guidance_in (Flux.1-schnell: no distilled CFG)")
    a = ap.parse_args()
    plan, dt, t0 = start(a)
    flux(plan, a.heads, a.double, a.single, not a.schnell, a.out_gain, dt)
    vae(plan, dt, prefix="vae.")
    clip(plan, "text_encoders.clip_l.transformer.", CLIPL, dt)
    t5xxl(plan, DT[a.t5_dtype], dt)
    save_plan(plan, a, "make_flux_checkpoint.py", t0)


if __name__ == "__main__":
    main()
