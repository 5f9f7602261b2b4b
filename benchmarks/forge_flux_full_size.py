"""What Flux.1 costs on Forge (lllyasviel) on this machine. Prints numbers; it is not a test.

    <forge webui>/venv/bin/python benchmarks/forge_flux_full_size.py --webui-root <forge webui> [--size 64] [--calls 2]

Forge builds Flux.1's transformer from a fixed config whatever the file holds (its
huggingface_guess: hidden 3072, 24 heads, 19 double and 38 single blocks), so no small generated
checkpoint loads there and the real-host tests cannot run Flux on it. This measures the model
Forge would run instead, with Forge's own code and no file (a full fp8 Flux.1-dev file is
11.9 GB, its fp8 T5-XXL 4.9 GB more):

* the config: Forge's huggingface_guess on the key names of a Flux.1-dev file (meta tensors);
* building: Forge's loader path for an fp8 file (backend/loader.py: the detected float8_e4m3fn
  is the storage type, the computation type comes from memory_management, the model is built
  under using_forge_operations with manual casting, then backend/state_dict.load_state_dict),
  timed, the file's read aside;
* weights: a seeded fp8 state dict in memory (make_flux_checkpoint.py's tensors at Forge's size),
  given to Forge's load_state_dict as a file's would be (its Linear layers take the tensors
  themselves when the type matches: no second copy);
* model calls: the transformer's forward at --size px (latent size/8), 256 T5 tokens
  (Forge's Flux context), the pooled CLIP-L vector and distilled guidance 3.5, timed one by one;
* memory: resident and peak resident memory of this process (/proc/self/status).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "webui"))


def memory_gb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
    return tuple(int(fields[k].split()[0]) / 2**20 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def say(what: str, t0: float | None = None) -> None:
    rss, hwm = memory_gb()
    took = f" in {time.perf_counter() - t0:.1f} s" if t0 is not None else ""
    print(f"{what}{took}; resident {rss:.2f} GB, peak {hwm:.2f} GB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--webui-root", required=True)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    root = os.path.abspath(a.webui_root)
    os.chdir(root)
    # as Forge's launch puts them on the path: its huggingface_guess checkout and vendored packages
    for path in (root, os.path.join(root, "repositories", "huggingface_guess"), os.path.join(root, "packages_3rdparty")):
        sys.path.insert(0, path)
    sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend.args reads the command line on import
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    import huggingface_guess
    from backend import memory_management
    from backend.nn.flux import IntegratedFluxTransformer2DModel
    from backend.operations import using_forge_operations
    from backend.state_dict import load_state_dict
    from make_flux_checkpoint import flux
    from make_sd35_checkpoint import Plan

    plan = Plan(a.seed)
    flux(plan, heads=24, double=19, single=38, guidance=True, out_gain=0.5, dt=torch.float8_e4m3fn)
    names = {name: torch.empty(shape, device="meta") for name, shape, *_ in plan.items}
    guess = huggingface_guess.guess(names)
    config = dict(guess.unet_config)
    config.pop("image_model", None)
    params = sum(math.prod(shape) for _, shape, *_ in plan.items)
    storage = torch.float8_e4m3fn
    cpu = memory_management.get_torch_device()
    compute = memory_management.get_computation_dtype(cpu, parameters=params, supported_dtypes=guess.supported_inference_dtypes)
    print(f"Forge's Flux.1-dev config: {config}; {params / 1e9:.2f}B parameters, storage {storage}, computation {compute}, "
          f"device {cpu}")
    say("before building")

    t0 = time.perf_counter()
    prefix = "model.diffusion_model."
    state_dict = {name[len(prefix):]: make().to(dtype) for name, _, dtype, make in plan.items}
    say("seeded fp8 state dict made (what a file's load gives Forge)", t0)

    t0 = time.perf_counter()
    with using_forge_operations(device=cpu, dtype=storage, manual_cast_enabled=storage != compute):
        model = IntegratedFluxTransformer2DModel(**config).to(device=cpu, dtype=storage)
    load_state_dict(model, state_dict)
    del state_dict
    model.eval()
    say("built and loaded by Forge's loader code", t0)

    side = a.size // 8
    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn((1, 16, side, side), generator=g).to(compute)
    context = torch.randn((1, 256, 4096), generator=g).to(compute)
    pooled = torch.randn((1, 768), generator=g).to(compute)
    timestep, guidance = torch.tensor([0.8], dtype=compute), torch.tensor([3.5], dtype=compute)
    times = []
    with torch.inference_mode():
        for call in range(a.calls):
            t0 = time.perf_counter()
            out = model(x, timestep, context, pooled, guidance)
            times.append(time.perf_counter() - t0)
            assert out.shape == x.shape and torch.isfinite(out).all()
            say(f"model call {call + 1} at {a.size}x{a.size} px ({side * side // 4} image + 256 text tokens)", t0)
    print(f"seconds per model call: {', '.join(f'{t:.1f}' for t in times)}; a 20-step img2img at strength 0.75 makes "
          f"15 calls: about {15 * min(times) / 60:.0f} min")


if __name__ == "__main__":
    main()
