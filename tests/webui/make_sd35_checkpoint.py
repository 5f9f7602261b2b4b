#!/usr/bin/env python
"""Write a seeded random single-file SD3.5 checkpoint that Stable Diffusion WebUI Forge loads.

Forge (backend/loader.py, huggingface_guess) reads the MMDiT's size from the weights, so the
transformer here is small, but it builds the three text encoders and the VAE at full size from
the fixed configs of backend/huggingface/stabilityai/stable-diffusion-3-medium-diffusers and
refuses a checkpoint without T5 weights ("You do not have T5 state dict!"). Every weight those
full-size modules hold is written (nothing is left to uninitialised memory: Forge builds the text
encoders under ``no_init_weights`` and loads with strict=False):

  model.diffusion_model.*              MMDiT, SD3.5 Large layout (RMS q/k norms: attn.ln_q/ln_k),
                                       hidden 64*depth (Forge: depth = x_embedder rows // 64),
                                       sincos pos_embed of --pe-max (images up to pe_max*patch*8 px)
  first_stage_model.*                  the SD3 VAE at full size (16 latent channels, no quant convs);
                                       its logvar channels are pinned (bias -30): the encode's
                                       sample() is its mean up to e^-15
  text_encoders.clip_l.transformer.*   CLIP-L, 12 x 768, with text_projection (fp16)
  text_encoders.clip_g.transformer.*   CLIP-G, 32 x 1280, with text_projection (fp16)
  text_encoders.t5xxl.transformer.*    T5-XXL encoder, 24 x 4096 (float8_e4m3fn like the
                                       t5xxl_fp8_e4m3fn files users run; Forge keeps the detected
                                       fp8 as its storage type), its layer norms in fp16

About 6.2 GB. Weights are drawn per tensor from a generator seeded with (seed, crc32(name)), and
the file is written tensor by tensor (never all in memory), so the same arguments give the same
bytes. Torch and safetensors' format only (the header is written here).

    python make_sd35_checkpoint.py --out /tmp/sd-webui-differential-diffusion-cache/sd35_forge.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import time
import zlib

import numpy as np
import torch

CLIP_VOCAB, CLIP_POS = 49408, 77
CLIPL = dict(D=768, I=3072, L=12)
CLIPG = dict(D=1280, I=5120, L=32)
T5 = dict(D=4096, F=10240, L=24, heads=64, buckets=32, vocab=32128)

DT = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}
ST_DTYPE = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3"}


class Plan:
    """Tensors to write, in order: (name, shape, dtype, make) with make() -> float32 tensor."""

    def __init__(self, seed: int):
        self.seed = seed
        self.items: list[tuple[str, tuple[int, ...], torch.dtype, object]] = []

    def _g(self, key: str) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1000003 + zlib.crc32(key.encode())) & 0x7FFFFFFFFFFFFFFF)

    def randn(self, key, shape, std, dtype, mean=0.0):
        self.items.append((key, tuple(shape), dtype,
                           lambda: torch.randn(shape, generator=self._g(key), dtype=torch.float32) * std + mean))

    def const(self, key, tensor_fn, shape, dtype):
        self.items.append((key, tuple(shape), dtype, tensor_fn))

    def linear(self, p, out_f, in_f, dtype, bias=True, gain=1.0):
        self.randn(p + ".weight", (out_f, in_f), gain / math.sqrt(in_f), dtype)
        if bias:
            self.randn(p + ".bias", (out_f,), 0.02, dtype)

    def conv(self, p, out_c, in_c, k, dtype, gain=1.0):
        self.randn(p + ".weight", (out_c, in_c, k, k), gain / math.sqrt(in_c * k * k), dtype)
        self.randn(p + ".bias", (out_c,), 0.02, dtype)

    def norm(self, p, n, dtype, bias=True):
        self.randn(p + ".weight", (n,), 0.02, dtype, mean=1.0)
        if bias:
            self.randn(p + ".bias", (n,), 0.02, dtype)


def sincos_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    g = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g), axis=0).reshape(2, 1, grid_size, grid_size)
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float().unsqueeze(0)


def mmdit(p: Plan, depth: int, patch: int, pe_max: int, out_gain: float, dt):
    P = "model.diffusion_model."
    H, head = 64 * depth, 64
    p.conv(P + "x_embedder.proj", H, 16, patch, dt)
    p.const(P + "pos_embed", lambda: sincos_2d(H, pe_max), (1, pe_max * pe_max, H), dt)
    p.linear(P + "t_embedder.mlp.0", H, 256, dt)
    p.linear(P + "t_embedder.mlp.2", H, H, dt)
    p.linear(P + "y_embedder.mlp.0", H, 2048, dt)
    p.linear(P + "y_embedder.mlp.2", H, H, dt)
    p.linear(P + "context_embedder", H, 4096, dt)
    for i in range(depth):
        for part in ("context_block", "x_block"):
            pre_only = part == "context_block" and i == depth - 1
            b = f"{P}joint_blocks.{i}.{part}."
            p.linear(b + "attn.qkv", 3 * H, H, dt)
            p.norm(b + "attn.ln_q", head, dt, bias=False)   # SD3.5: qk_norm "rms"
            p.norm(b + "attn.ln_k", head, dt, bias=False)
            if not pre_only:
                p.linear(b + "attn.proj", H, H, dt)
                p.linear(b + "mlp.fc1", 4 * H, H, dt)
                p.linear(b + "mlp.fc2", H, 4 * H, dt)
            p.linear(b + "adaLN_modulation.1", (2 if pre_only else 6) * H, H, dt, gain=0.3)
    p.linear(P + "final_layer.linear", patch * patch * 16, H, dt, gain=out_gain)
    p.linear(P + "final_layer.adaLN_modulation.1", 2 * H, H, dt, gain=0.3)


def resblock(p: Plan, pre, cin, cout, dt):
    p.norm(pre + "norm1", cin, dt)
    p.conv(pre + "conv1", cout, cin, 3, dt)
    p.norm(pre + "norm2", cout, dt)
    p.conv(pre + "conv2", cout, cout, 3, dt, gain=0.5)
    if cin != cout:
        p.conv(pre + "nin_shortcut", cout, cin, 1, dt)


def attnblock(p: Plan, pre, c, dt):
    p.norm(pre + "norm", c, dt)
    for n in ("q", "k", "v"):
        p.conv(pre + n, c, c, 1, dt)
    p.conv(pre + "proj_out", c, c, 1, dt, gain=0.5)


def vae(p: Plan, dt, prefix: str = "first_stage_model."):
    """The 16-channel SD3 VAE (also Flux.1's: the same layout and sizes) under ``prefix``."""
    ch, mult, nres = 128, (1, 2, 4, 4), 2
    E = prefix + "encoder."
    p.conv(E + "conv_in", ch, 3, 3, dt)
    in_mult = (1,) + mult
    for lvl in range(4):
        bin_, bout = ch * in_mult[lvl], ch * mult[lvl]
        for j in range(nres):
            resblock(p, f"{E}down.{lvl}.block.{j}.", bin_, bout, dt)
            bin_ = bout
        if lvl != 3:
            p.conv(f"{E}down.{lvl}.downsample.conv", bin_, bin_, 3, dt)
    c = ch * mult[-1]
    resblock(p, E + "mid.block_1.", c, c, dt)
    attnblock(p, E + "mid.attn_1.", c, dt)
    resblock(p, E + "mid.block_2.", c, c, dt)
    p.norm(E + "norm_out", c, dt)

    # conv_out: 16 mean channels random; 16 logvar channels weight 0, bias -30 -> std e^-15
    def conv_out_w():
        w = torch.randn((32, c, 3, 3), generator=p._g(E + "conv_out.weight")) / math.sqrt(c * 9)
        w[16:] = 0
        return w

    def conv_out_b():
        b = torch.randn((32,), generator=p._g(E + "conv_out.bias")) * 0.02
        b[16:] = -30.0
        return b
    p.const(E + "conv_out.weight", conv_out_w, (32, c, 3, 3), dt)
    p.const(E + "conv_out.bias", conv_out_b, (32,), dt)

    D = prefix + "decoder."
    block_in = ch * mult[-1]
    p.conv(D + "conv_in", block_in, 16, 3, dt)
    resblock(p, D + "mid.block_1.", block_in, block_in, dt)
    attnblock(p, D + "mid.attn_1.", block_in, dt)
    resblock(p, D + "mid.block_2.", block_in, block_in, dt)
    for lvl in reversed(range(4)):
        bout = ch * mult[lvl]
        for j in range(nres + 1):
            resblock(p, f"{D}up.{lvl}.block.{j}.", block_in, bout, dt)
            block_in = bout
        if lvl != 0:
            p.conv(f"{D}up.{lvl}.upsample.conv", block_in, block_in, 3, dt)
    p.norm(D + "norm_out", block_in, dt)
    p.conv(D + "conv_out", 3, block_in, 3, dt)


def clip(p: Plan, prefix, cfg, dt):
    D, I = cfg["D"], cfg["I"]
    T = prefix + "text_model."
    p.randn(T + "embeddings.token_embedding.weight", (CLIP_VOCAB, D), 0.1, dt)
    p.randn(T + "embeddings.position_embedding.weight", (CLIP_POS, D), 0.1, dt)
    for i in range(cfg["L"]):
        L = f"{T}encoder.layers.{i}."
        p.norm(L + "layer_norm1", D, dt)
        for n in ("q_proj", "k_proj", "v_proj"):
            p.linear(L + "self_attn." + n, D, D, dt)
        p.linear(L + "self_attn.out_proj", D, D, dt, gain=0.5)
        p.norm(L + "layer_norm2", D, dt)
        p.linear(L + "mlp.fc1", I, D, dt)
        p.linear(L + "mlp.fc2", D, I, dt, gain=0.5)
    p.norm(T + "final_layer_norm", D, dt)
    p.linear(prefix + "text_projection", D, D, dt, bias=False)


def t5xxl(p: Plan, dt, norm_dt):
    X = "text_encoders.t5xxl.transformer."
    D, F = T5["D"], T5["F"]
    p.randn(X + "shared.weight", (T5["vocab"], D), 0.5, dt)
    for i in range(T5["L"]):
        B = f"{X}encoder.block.{i}.layer."
        for n in ("q", "k", "v", "o"):
            p.linear(f"{B}0.SelfAttention.{n}", D, D, dt, bias=False, gain=0.5 if n == "o" else 1.0)
        if i == 0:
            p.randn(B + "0.SelfAttention.relative_attention_bias.weight", (T5["buckets"], T5["heads"]), 0.1, dt)
        p.norm(B + "0.layer_norm", D, norm_dt, bias=False)
        p.linear(B + "1.DenseReluDense.wi_0", F, D, dt, bias=False)
        p.linear(B + "1.DenseReluDense.wi_1", F, D, dt, bias=False)
        p.linear(B + "1.DenseReluDense.wo", D, F, dt, bias=False, gain=0.5)
        p.norm(B + "1.layer_norm", D, norm_dt, bias=False)
    p.norm(X + "encoder.final_layer_norm", D, norm_dt, bias=False)


def write_streamed(plan: Plan, path: str, metadata: dict) -> int:
    """A safetensors file written one tensor at a time (the format: u64 header size, JSON header
    padded with spaces to 8 bytes, then the tensors' bytes back to back)."""
    header, offset = {"__metadata__": metadata}, 0
    for name, shape, dtype, _ in plan.items:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, dtype, make in plan.items:
            t = make().to(dtype).contiguous()
            assert tuple(t.shape) == shape, (name, t.shape, shape)
            assert torch.isfinite(t.float()).all(), name
            f.write(t.view(torch.uint8).numpy().tobytes())
    return offset


def new_parser(doc: str, model: str, encoder: str = "T5-XXL") -> argparse.ArgumentParser:
    """The arguments every flow-model generator here takes (``model``: what its transformer is called,
    ``encoder``: the large text encoder whose weights ``--t5-dtype`` sets)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out-gain", type=float, default=0.5, help=f"scale of the {model}'s output layer")
    ap.add_argument("--dtype", choices=list(DT), default="fp16", help=f"{model}, VAE, CLIP and {encoder} norms")
    ap.add_argument("--t5-dtype", choices=list(DT), default="fp8", help=f"the {encoder} weights")
    return ap


def start(a: argparse.Namespace) -> tuple[Plan, torch.dtype, float]:
    """An empty plan for ``a``'s seed, the weights' type, and the start time."""
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return Plan(a.seed), DT[a.dtype], time.time()


def main():
    ap = new_parser(__doc__, "MMDiT")
    ap.add_argument("--depth", type=int, default=2, help="MMDiT depth; hidden = 64*depth, heads = depth")
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--pe-max", type=int, default=16, help="pos_embed grid; max image side = pe_max*patch*8 px")
    a = ap.parse_args()
    plan, dt, t0 = start(a)
    mmdit(plan, a.depth, a.patch, a.pe_max, a.out_gain, dt)
    vae(plan, dt)
    clip(plan, "text_encoders.clip_l.transformer.", CLIPL, dt)
    clip(plan, "text_encoders.clip_g.transformer.", CLIPG, dt)
    t5xxl(plan, DT[a.t5_dtype], dt)
    save_plan(plan, a, "make_sd35_checkpoint.py", t0)


def save_plan(plan: Plan, a: argparse.Namespace, generator: str, t0: float) -> None:
    """Write ``plan`` to ``a.out`` with the generator's name and arguments as metadata, and say what was written."""
    names = [item[0] for item in plan.items]
    assert len(names) == len(set(names))
    meta = {"generator": generator, "args": json.dumps({k: v for k, v in vars(a).items() if k != "out"}, sort_keys=True)}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    size = write_streamed(plan, a.out, meta)
    n = sum(math.prod(item[1]) for item in plan.items)
    print(f"wrote {a.out}: {len(plan.items)} tensors, {n / 1e6:.1f}M params, {size / 2**30:.2f} GiB of weights, "
          f"{time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
