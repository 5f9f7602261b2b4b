#!/usr/bin/env python
"""Write a seeded random single-file Z-Image (Turbo) checkpoint that Stable Diffusion WebUI Forge Neo loads.

Forge Neo (its huggingface_guess detection.py) tells Z-Image from Lumina 2 by the transformer's width
(cap_embedder rows 3840) and reads only the number of main layers from the weights; heads (30 x 128),
the two noise and two context refiner blocks and the rotary axes are fixed. So the transformer here
is full width with one main layer by default (about 0.9B parameters, most of them the four refiner
blocks). The text encoder is a full Qwen3-4B (backend/nn/llm/llama.py Qwen3_4B, 36 layers, built from
a fixed config under ``no_init_weights`` and loaded with strict=False: nothing may be left to
uninitialised memory), written in float8_e4m3fn like the fp8 Qwen3-4B files users run (Neo keeps the
detected fp8 as its storage type):

  model.diffusion_model.*              NextDiT, Z-Image layout (ComfyUI names: x_embedder, t_embedder,
                                       cap_embedder, noise_refiner, context_refiner, layers,
                                       final_layer, x_pad_token/cap_pad_token)
  vae.*                                the Flux.1 VAE (16 latent channels; logvar pinned as in
                                       make_sd35_checkpoint.py)
  text_encoders.qwen3_4b.transformer.* Qwen3-4B (2560 wide, 36 layers, GQA 32/8, q/k RMS norms),
                                       linear weights and embedding in float8_e4m3fn, norms in bf16

About 5.6 GiB. The same streamed, seeded writer as the SD3.5 and Flux generators: the same arguments
give the same bytes.

    python make_zimage_checkpoint.py --out /tmp/sd-webui-differential-diffusion-cache/zimage_rand.safetensors
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_sd35_checkpoint import DT, Plan, new_parser, save_plan, start, vae  # noqa: E402

DIM, HEADS, HEAD_DIM = 3840, 30, 128  # the width Neo takes as Z-Image; heads and axes (32+48+48) fixed
FFN = 10240                           # int(8/3 * dim), rounded up to a multiple of 256
MOD_IN = 256                          # z_image_modulation: adaLN from min(dim, 256)
CAP = 2560                            # Qwen3-4B's hidden size
QWEN3_4B = dict(D=2560, I=9728, L=36, heads=32, kv_heads=8, vocab=151936)


def block(p: Plan, b: str, dt, modulation: bool) -> None:
    p.linear(b + "attention.qkv", 3 * HEADS * HEAD_DIM, DIM, dt, bias=False)
    p.linear(b + "attention.out", DIM, HEADS * HEAD_DIM, dt, bias=False, gain=0.5)
    p.norm(b + "attention.q_norm", HEAD_DIM, dt, bias=False)
    p.norm(b + "attention.k_norm", HEAD_DIM, dt, bias=False)
    p.linear(b + "feed_forward.w1", FFN, DIM, dt, bias=False)
    p.linear(b + "feed_forward.w3", FFN, DIM, dt, bias=False)
    p.linear(b + "feed_forward.w2", DIM, FFN, dt, bias=False, gain=0.5)
    for norm in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
        p.norm(b + norm, DIM, dt, bias=False)
    if modulation:
        p.linear(b + "adaLN_modulation.0", 4 * DIM, MOD_IN, dt, gain=0.3)


def zimage(p: Plan, layers: int, out_gain: float, dt) -> None:
    P = "model.diffusion_model."
    p.linear(P + "x_embedder", DIM, 2 * 2 * 16, dt)
    for i in range(2):
        block(p, f"{P}noise_refiner.{i}.", dt, modulation=True)
        block(p, f"{P}context_refiner.{i}.", dt, modulation=False)
    p.linear(P + "t_embedder.mlp.0", 1024, 256, dt)
    p.linear(P + "t_embedder.mlp.2", MOD_IN, 1024, dt)
    p.norm(P + "cap_embedder.0", CAP, dt, bias=False)
    p.linear(P + "cap_embedder.1", DIM, CAP, dt)
    for i in range(layers):
        block(p, f"{P}layers.{i}.", dt, modulation=True)
    p.linear(P + "final_layer.linear", 2 * 2 * 16, DIM, dt, gain=out_gain)
    p.linear(P + "final_layer.adaLN_modulation.1", DIM, MOD_IN, dt, gain=0.3)
    p.randn(P + "x_pad_token", (1, DIM), 0.5, dt)  # their presence sets pad_tokens_multiple 32
    p.randn(P + "cap_pad_token", (1, DIM), 0.5, dt)


def qwen3_4b(p: Plan, dt, norm_dt) -> None:
    X, c = "text_encoders.qwen3_4b.transformer.model.", QWEN3_4B
    D, kv = c["D"], c["kv_heads"] * HEAD_DIM
    p.randn(X + "embed_tokens.weight", (c["vocab"], D), 0.5, dt)
    for i in range(c["L"]):
        L = f"{X}layers.{i}."
        p.norm(L + "input_layernorm", D, norm_dt, bias=False)
        p.linear(L + "self_attn.q_proj", c["heads"] * HEAD_DIM, D, dt, bias=False)
        p.linear(L + "self_attn.k_proj", kv, D, dt, bias=False)
        p.linear(L + "self_attn.v_proj", kv, D, dt, bias=False)
        p.linear(L + "self_attn.o_proj", D, c["heads"] * HEAD_DIM, dt, bias=False, gain=0.5)
        p.norm(L + "self_attn.q_norm", HEAD_DIM, norm_dt, bias=False)
        p.norm(L + "self_attn.k_norm", HEAD_DIM, norm_dt, bias=False)
        p.norm(L + "post_attention_layernorm", D, norm_dt, bias=False)
        p.linear(L + "mlp.gate_proj", c["I"], D, dt, bias=False)
        p.linear(L + "mlp.up_proj", c["I"], D, dt, bias=False)
        p.linear(L + "mlp.down_proj", D, c["I"], dt, bias=False, gain=0.5)
    p.norm(X + "norm", D, norm_dt, bias=False)


def main():
    ap = new_parser(__doc__, "transformer", encoder="Qwen3-4B")
    ap.set_defaults(dtype="bf16")
    ap.add_argument("--layers", type=int, default=1, help="main transformer layers (the refiners are fixed: 2 + 2)")
    a = ap.parse_args()
    plan, dt, t0 = start(a)
    zimage(plan, a.layers, a.out_gain, dt)
    vae(plan, dt, prefix="vae.")
    qwen3_4b(plan, DT[a.t5_dtype], dt)
    save_plan(plan, a, "make_zimage_checkpoint.py", t0)


if __name__ == "__main__":
    main()
