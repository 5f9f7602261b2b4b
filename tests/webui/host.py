"""Real-host test harness: find a WebUI of the A1111 family, start/stop it, talk to its API.

Everything here is test-only; nothing imports WebUI code. The WebUI runs as a child process
(its own process group) on a free 127.0.0.1 port, with a throwaway ``--data-dir`` whose
``extensions/`` holds a symlink to this project checkout. What differs between hosts
(AUTOMATIC1111, Forge, reForge, Forge Classic, Forge Neo: launch flags, loadable checkpoints,
what they cannot do) is in one table, ``PROFILES``; the host kind comes from the tree's files
(``host_kind``), by the extension's own ``surfaces.detect_host``.

Host discovery (environment variables):

* ``SD_WEBUI_ROOT``     the WebUI folder (holds ``launch.py``). Unset -> real-host tests skip.
* ``SD_WEBUI_PYTHON``   its interpreter; default ``$SD_WEBUI_ROOT/venv/bin/python``.
* ``SD_WEBUI_FIXTURES`` offline fixtures (``hf_home/`` and ``ckpt/``); default
  ``<project root>/../shared/webui-fixtures``.
* ``SD_WEBUI_MAX_SERVERS`` how many test servers may be alive at once (default 1; the
  machine has 2 cores, so a start next to another server's generation is slow).
* ``SD_WEBUI_THREADS`` if set, OMP_NUM_THREADS/MKL_NUM_THREADS for the server (torch threads).
* ``SD_WEBUI_START_TIMEOUT`` seconds to wait for a server to answer and finish its
  warm-up generation (default 300).
* ``SD_WEBUI_CACHE``    where generated test checkpoints (SD3, SD1.5) are kept, outside the project;
  default ``<temp dir>/sd-webui-differential-diffusion-cache``.
* ``SD_WEBUI_TEST_EXTENSIONS`` a folder of other extensions' checkouts (e.g.
  ``ultimate-upscale-for-automatic1111``) that servers install next to this one where their
  spec names them; a test that needs a missing one skips.
* ``SD_WEBUI_SD15_CKPT`` Forge-family hosts: an SD1.5-layout checkpoint to use instead of
  generating one (they cannot load the fixtures' small checkpoints).
* ``SD_WEBUI_LDM_ROOT`` a WebUI tree whose ``repositories/stable-diffusion-stability-ai`` the
  SD1.5 generator may use when the host tree has none (Forge, Neo).
* ``SD_WEBUI_SDXL_CKPT``, ``SD_WEBUI_SDXL_REFINER_CKPT`` Forge, reForge, Forge Classic: a
  full-size SDXL base and refiner (in the original layout; random weights will do) to stand in
  for the fixtures' small pair, which these hosts cannot load. Without both the SDXL tests skip
  there. Those servers keep the weights in 16 bits (reForge, holding base and refiner: about 15 GB).
"""
from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from differential_diffusion_webui.surfaces import detect_host  # host-free: names and markers only

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXTENSION_NAME = os.environ.get("SD_WEBUI_EXTENSION_NAME", "sd-webui-differential-diffusion")
SCRIPT_TITLE = "Differential Diffusion"

DEFAULT_START_TIMEOUT = float(os.environ.get("SD_WEBUI_START_TIMEOUT", "300"))
DEFAULT_REQUEST_TIMEOUT = 300.0
# The fixtures hold no text-encoder weights and the WebUI turns torch's initializers off while
# it builds a model, so the text encoder starts as uninitialized memory: now and then (3 of 40
# sd1_graded starts, measured) that holds NaNs, every sample is NaN and every changed pixel black
# (numpy warns when the host casts them). Such a start is thrown away.
NAN_SAMPLES_WARNING = "invalid value encountered in cast"
NAN_START_TRIES = 3

LOG_TAIL_LINES = 80

# Files tests want a person to look at (screenshots); listed in pytest's terminal summary.
ARTIFACTS: list[str] = []
# One line per measured number (diffs, timings) that tests report; listed in the terminal summary.
MEASUREMENTS: list[str] = []

# Options written into the throwaway data dir's config.json before every start.
# live previews off: SDXL would otherwise try to download models/VAE-approx/vaeapprox-sdxl.pt.
BASE_OPTIONS = {"live_previews_enable": False}


# --------------------------------------------------------------------------- host profiles

@dataclasses.dataclass(frozen=True)
class HostProfile:
    """What differs between the hosts the harness runs: launch flags, the checkpoints they load,
    what they cannot do. One entry per host kind in ``PROFILES``."""
    kind: str                          # surfaces.detect_host's name
    title: str
    launch_args: tuple[str, ...]       # flags besides --api/--nowebui, address, data and checkpoint
    ckpt_dir_flag: str = "--ckpt-dir"
    ckpt_flag: str | None = "--ckpt"   # None: the host has no such flag (the start checkpoint goes in config.json)
    fixture_checkpoints: bool = True   # loads the fixtures' small checkpoints (ckpt/, generated SD3)
    # (fixture stem, GENERATED_CHECKPOINTS key): the checkpoint used in the fixture's place
    stand_ins: tuple[tuple[str, str], ...] = ()
    # No request before the host logs this line. In UI mode the port opens before the API is mounted,
    # and a request in between starts the app's middleware stack: the host's own api_middleware then
    # fails ("Cannot add middleware after an application has started"; seen on reForge under load, the
    # same code as A1111's). reForge also answered its first requests with empty always-on script args.
    ready_log_line: str | None = "Startup time:"
    options: tuple = ()                # config.json entries for every start
    gradio: int = 3                    # major version (the browser scripts' selectors differ)
    # (capability, cause): what tests needing it (marker ``needs``) cannot do here
    lacks: tuple[tuple[str, str], ...] = ()
    # Samplers it lists beyond A1111 v1.10.1's: the per-sampler all-ones/all-zeros tests take them too.
    extra_samplers: tuple[str, ...] = ()
    # (capability, stand-ins): a lack that goes away when each of these stand-ins is given by hand
    # (GENERATED_CHECKPOINTS entries that name a file in their ``env`` variable).
    lifted_by: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (GENERATED_CHECKPOINTS key, key): the generated checkpoint made in that one's place here.
    generated_stand_ins: tuple[tuple[str, str], ...] = ()
    # (stand-in, flags): launch flags for a server that starts on that stand-in.
    stand_in_args: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (ServerSpec key, ((field, value), ...)): img2img request fields the harness sends to that server
    # unless a test gives them (post_img2img).
    request_defaults: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    # Width and height go to the nearest multiple of this (at least one) before sampling.
    size_multiple: int = 8
    # Samplers A1111 runs on timesteps (DDIM, PLMS, UniPC) that this host runs on sigmas (k-diffusion).
    sigma_samplers: tuple[str, ...] = ()

    def generated_size(self, width: int, height: int) -> tuple[int, int]:
        """The size this host generates when asked for ``width`` x ``height``."""
        m = self.size_multiple
        return max((width + m // 2) // m * m, m), max((height + m // 2) // m * m, m)

    def cannot(self, capability: str) -> str | None:
        """One-line skip reason when this host cannot do ``capability``, else None."""
        cause = dict(self.lacks).get(capability)
        given = dict(self.lifted_by).get(capability)
        if cause and given and all((path := given_checkpoint(kind)) is not None and path.is_file() for kind in given):
            return None
        return f"{self.title}: {cause}" if cause else None


def given_checkpoint(kind: str) -> Path | None:
    """The file the ``env`` variable of the GENERATED_CHECKPOINTS entry ``kind`` names, if set."""
    name = GENERATED_CHECKPOINTS[kind].get("env")
    given = os.environ.get(name, "").strip() if name else ""
    return Path(given) if given else None


CAPABILITIES = {
    "graded": "the graded fixtures (sd1_graded): how much an image changes is meaningful",
    "sdxl": "the fixtures' SDXL base and refiner",
    "sdxl_refiner": "an SDXL run that switches to the refiner mid-run works on the host (without the extension too)",
    "sd3": "the generated SD3 checkpoint (flow matching)",
    "flux": "a generated Flux.1-dev checkpoint (flow matching, distilled guidance; make_flux_checkpoint.py)",
    "zimage": "a generated Z-Image (Turbo) checkpoint (flow matching, few steps, Qwen3-4B text encoder; make_zimage_checkpoint.py)",
    "steady_encode": "an img2img request after one with another seed differs by a hair at most (the VAE encode's "
                     "draw from the global torch RNG barely shows)",
    "survives_failed_model_load": "a refiner that fails to load inside sampling fails that request only",
    "soft_inpainting": "soft inpainting changes the masked area (its final composite keeps the inpainted pixels)",
    "cfg_from_first_call": "CFG on every model call unless skip early CFG asks otherwise (a pixel released mid-run "
                           "then takes its first step as plain img2img takes its own)",
    "sdxl_inpainting": "a 9-channel SDXL inpainting checkpoint made from the fixtures' small SDXL base at test time",
    "instruct_pix2pix": "an 8-channel instruct-pix2pix SD1 made from the graded fixture at test time (its image conditioning "
                        "is the host's edit path)",
    "steady_model_swap": "the first generation after a refiner run swaps the base model back repeats the baseline bit for bit",
}

_FORGE_ARGS = ("--skip-prepare-environment", "--skip-python-version-check", "--skip-torch-cuda-test", "--skip-version-check")
_SD15_ONLY = ("graded", "loads SD1 only in the SD1.5 layout (320-channel UNet, full-size VAE and CLIP-L), so a random-weight "
                        "stand-in replaces sd1_graded: how much an image changes means nothing there")
_SD15_STAND_INS = (("sd1_graded", "sd15"), ("sd1_rand", "sd15_b"))
# The 9-channel checkpoint widened from the SD1.5-layout stand-in instead of the graded fixture.
_SD15_GENERATED = (("sd1_inpaint", "sd15_inpaint"),)
# Full-size SDXL base and refiner (random weights, made outside the project: 6.8 and 6.1 GB in fp16)
# stand in for the fixtures' small pair on hosts that build SDXL's text encoders from fixed full-size
# configs. Their weights stay in 16 bits (computed in fp32 on the CPU), so base and refiner fit a
# 23 GB machine; the comparisons are within one server, so the storage type changes no proof.
_SDXL_STAND_INS = (("sdxl_base_graded", "sdxl_full"), ("sdxl_refiner_graded", "sdxl_refiner_full"))
_SDXL_FULL = dict(
    lifted_by=(("sdxl", ("sdxl_full", "sdxl_refiner_full")),),
    stand_in_args=(("sdxl_full", ("--unet-in-bf16", "--clip-in-fp16")),))
_SDXL_FULL_ONLY = ("builds SDXL's text encoders at full size from fixed configs: the fixtures' small SDXL pair does not load "
                   "(set SD_WEBUI_SDXL_CKPT and SD_WEBUI_SDXL_REFINER_CKPT to full-size ones)")
_NO_SMALL_SDXL_INPAINTING = ("sdxl_inpainting", "builds SDXL's text encoders at full size from fixed configs: a 9-channel "
                                                "checkpoint made from the fixtures' small SDXL base does not load")
_NO_SMALL_PIX2PIX = ("instruct_pix2pix", "loads SD1 only in the SD1.5 layout: the 8-channel checkpoint made from the small "
                                         "graded fixture does not load, and no SD1.5-layout instruct-pix2pix stand-in is made")
_SOFT_NO_OP = ("soft_inpainting", "soft inpainting returns the input image unchanged (a known host no-op, Forge issue #490)")
_NO_ZIMAGE = ("zimage", "has no Z-Image engine (Forge Neo has one)")
_ENCODE_DRAWS = ("steady_encode", "its VAE encode draws visibly from the global torch RNG: a request after one with another "
                                  "seed differs by up to 45/255 (measured; the harness primes where it compares, "
                                  "post_img2img(prime=...))")


def _neo_version_uid(root: Path) -> str:
    """Neo's launch.py blocks on input() (a "clean reinstall" prompt) unless config.json holds its VERSION_UID."""
    try:
        found = re.search(r'VERSION_UID\s*(?::[^=]*)?=\s*"([^"]+)"', (root / "modules" / "launch_utils.py").read_text())
    except OSError:
        found = None
    return found.group(1) if found else "PY313"


PROFILES = {
    "a1111": HostProfile(
        "a1111", "AUTOMATIC1111",
        ("--skip-prepare-environment", "--skip-torch-cuda-test", "--use-cpu", "all", "--no-half",
         "--do-not-download-clip", "--no-download-sd-model", "--disable-nan-check"),
        lacks=(("flux", "has no Flux support"), ("zimage", "has no Z-Image support"))),
    "forge": HostProfile(
        "forge", "Forge", (*_FORGE_ARGS, "--always-cpu", "--no-download-sd-model"),
        fixture_checkpoints=False, stand_ins=_SD15_STAND_INS + _SDXL_STAND_INS, gradio=4, **_SDXL_FULL,
        # SD3 as an SD3.5 with full-size text encoders, T5-XXL in fp8 (make_sd35_checkpoint.py)
        generated_stand_ins=_SD15_GENERATED + (("sd3", "sd35_forge"),),
        # Its "Automatic" schedule for flow models ends in two zero sigmas (the flow predictor's t = 0 is
        # sigma 0, and 0 is appended): the last model call is at sigma 0 and Euler's (x - denoised) / 0
        # makes every sample NaN (measured: black images, with or without the extension). Forge's own
        # UI preset for flow models uses "Simple" (modules_forge/main_entry.py flux_i2i_scheduler).
        request_defaults=(("sd3", (("scheduler", "Simple"),)),),
        lacks=(_SD15_ONLY, _ENCODE_DRAWS, _SOFT_NO_OP,
               ("survives_failed_model_load", "a refiner that fails to load leaves it without a model: every later request "
                                              "answers 500 ('NoneType' object has no attribute 'sd_checkpoint_info'), with or "
                                              "without the extension (measured with plain requests); it also renames the file "
                                              "to .corrupted"),
               ("sdxl", _SDXL_FULL_ONLY), _NO_SMALL_SDXL_INPAINTING, _NO_SMALL_PIX2PIX,
               ("flux", "builds Flux.1 at full size only (its huggingface_guess fixes hidden 3072, 24 heads, 19 double and "
                        "38 single blocks: a 12B transformer), so no small generated one loads (its cost at full size: "
                        "benchmarks/forge_flux_full_size.py, README Limits)"),
               _NO_ZIMAGE),
        extra_samplers=("HeunPP2", "IPNDM", "IPNDM_V", "DEIS", "DDPM")),
    "reforge": HostProfile(
        "reforge", "reForge", (*_FORGE_ARGS, "--always-cpu", "--no-download-sd-model"),
        fixture_checkpoints=False, stand_ins=_SD15_STAND_INS + _SDXL_STAND_INS, generated_stand_ins=_SD15_GENERATED, **_SDXL_FULL,
        # Its "stealth infotext" writes the infotext into the alpha channel's lowest bits of every saved
        # image (on when config.json lacks the key), X/Y/Z cells included: the cells come back with alpha 254.
        options=(("stealth_pnginfo_opt", "None"),),
        lacks=(_SD15_ONLY, _SOFT_NO_OP,
               ("sdxl", _SDXL_FULL_ONLY), _NO_SMALL_SDXL_INPAINTING, _NO_SMALL_PIX2PIX,
               ("sd3", "cannot build SD3 (modules_forge/forge_loader.py load_model_for_a1111: AttributeError)"),
               ("flux", "runs a Flux.1 file as SD1 (load_model_for_a1111 has no Flux path: v1 config, CLIP-L only), so "
                        "Flux's txt_in meets 77x768 where it takes T5's 4096 (measured on a Flux.1-dev file at its fixed "
                        "hidden 3072: every img2img answers 500, 'mat1 and mat2 shapes cannot be multiplied (154x768 and "
                        "4096x3072)')"),
               ("zimage", "has no Z-Image engine (its ldm_patched detects Lumina 2 only at Lumina's fixed 2304 width, and "
                          "its loader runs Flux-type files as SD1)")),
        extra_samplers=(
            "Euler Dy", "Euler SMEA Dy", "Euler Negative", "Euler Negative Dy", "DPM++ SDE Classic", "ER SDE",
            "Kohaku_LoNyu_Yog", "Euler CFG++", "Euler Ancestral CFG++", "DPM++ 2S Ancestral CFG++", "DPM++ 2M CFG++",
            "DPM++ SDE CFG++", "DPM++ 3M SDE CFG++", "Euler DY CFG++", "Euler SMEA DY CFG++", "Euler A DY CFG++",
            "DPM++ 2M DY CFG++", "RES Multistep", "RES Multistep CFG++", "RES Multistep Ancestral",
            "RES Multistep Ancestral CFG++", "Gradient Estimation", "Gradient Estimation CFG++", "SEEDS 2 DP", "SEEDS 3 DP",
            "SA-Solver", "SA-Solver-Pece", "DPM++ 2M DY", "DPM++ 3M DY", "DPM++ 3M SDE DY", "DDPM", "HeunPP2", "IPNDM",
            "IPNDM_V", "DEIS", "RES Solver", "ODE (Bosh3)", "ODE (Fehlberg2)", "ODE (Adaptive Heun)", "ODE (Dopri5)",
            "ODE Custom", "Euler A Turbo", "DPM++ 2M Turbo", "DPM++ 2M SDE Turbo", "Euler Comfy", "Euler A Comfy",
            "Euler A Comfy RF", "Heun Comfy", "DPM++ 2S Ancestral Comfy", "DPM++ 2S Ancestral Comfy RF", "DPM++ SDE Comfy",
            "DPM++ 2M Comfy", "DPM++ 2M SDE Comfy", "DPM++ 3M SDE Comfy", "DPM++ 2S Ancestral CFG++ Dyn",
            "DPM++ 2S Ancestral CFG++ Intern", "Custom Sampler")),
    "classic": HostProfile(
        "classic", "Forge Classic", (*_FORGE_ARGS, "--always-cpu", "--no-download-sd-model"),
        fixture_checkpoints=False, stand_ins=_SD15_STAND_INS + _SDXL_STAND_INS, generated_stand_ins=_SD15_GENERATED, **_SDXL_FULL,
        lacks=(_SD15_ONLY, _ENCODE_DRAWS,
               ("sdxl", _SDXL_FULL_ONLY), _NO_SMALL_SDXL_INPAINTING, _NO_SMALL_PIX2PIX,
               ("sd3", "has no SD3 support"), ("flux", "has no Flux support (no Flux code in its tree)"), _NO_ZIMAGE,
               ("cfg_from_first_call", "runs the first model call of every run without CFG even at skip early CFG 0 "
                                       "(`0 <= step/total <= skip`), so a pixel released mid-run takes its first step with CFG "
                                       "where plain img2img's first step has none (README, Limits)"),
               ("steady_model_swap", "a model load draws ~38M values from the global torch RNG (its pinned transformers 4.30.2 "
                                     "initialises CLIP's embeddings) and its VAE encode samples from that RNG, so the first "
                                     "generation after a refiner run swaps the base back differs (max 28/255, the plain control "
                                     "too); the next repeats the baseline")),
        # Its own list: schedulers are part of the sampler names (no p.scheduler).
        extra_samplers=(
            "DPM++ 2M Karras", "DPM++ SDE Karras", "DPM++ 2M SDE Exponential", "DPM++ 2M SDE Karras",
            "DPM++ 2M SDE Heun Karras", "DPM++ 2M SDE Heun Exponential", "DPM++ 3M SDE Karras", "DPM++ 3M SDE Exponential",
            "LMS Karras", "DPM2 Karras", "DPM2 a Karras", "DPM++ 2S a Karras", "DDPM", "DDPM Karras", "Euler A Turbo",
            "DPM++ 2M Turbo", "DPM++ 2M SDE Turbo", "LCM Karras", "Euler SGMUniform", "Euler A SGMUniform",
            "DPM++ 2M SGMUniform", "DPM++ 2M SDE SGMUniform")),
    "neo": HostProfile(
        "neo", "Forge Neo", (*_FORGE_ARGS, "--cpu"), ckpt_dir_flag="--ckpt-dirs", ckpt_flag=None,
        fixture_checkpoints=False, stand_ins=_SD15_STAND_INS + _SDXL_STAND_INS, generated_stand_ins=_SD15_GENERATED, gradio=4,
        # the full-size SDXL pair as on Forge, with its own names for the 16-bit storage flags
        lifted_by=_SDXL_FULL["lifted_by"], stand_in_args=(("sdxl_full", ("--bf16-unet", "--fp16-text-enc")),),
        # Flux requests as its own UI preset for Flux.1 sets them (modules_forge/presets.py: Euler, scheduler
        # "Beta", CFG 1, distilled CFG 3): Flux.1-dev is guidance-distilled and runs without a negative pass.
        # Z-Image Turbo as its preset "zit" sets it: Euler, "Beta", CFG 1 (no negative pass), and Shift 9,
        # which Neo takes from the distilled CFG field (processing.py: sd_model.set_shift(p.distilled_cfg_scale)).
        request_defaults=(("flux", (("scheduler", "Beta"), ("cfg_scale", 1.0), ("distilled_cfg_scale", 3.0))),
                          ("zimage", (("scheduler", "Beta"), ("cfg_scale", 1.0), ("distilled_cfg_scale", 9.0)))),
        # Its default "Original" emphasis rescales the conditioning by the ratio of its means; the random
        # stand-in's text embedding has a mean of ~0, which makes that 0/0: NaN latents on every run.
        options=(("emphasis", "None"),),
        # processing.py process_images_inner: "(p.width + 32) // 64 * 64" (this build, for models without fix_dimensions)
        size_multiple=64,
        sigma_samplers=("UniPC",),  # modules/sd_samplers_kdiffusion.py lists it (sd_samplers_extra.sample_unipc)
        lacks=(_SD15_ONLY, _ENCODE_DRAWS,
               ("sdxl", _SDXL_FULL_ONLY), _NO_SMALL_SDXL_INPAINTING, _NO_SMALL_PIX2PIX,
               ("sd3", "has no SD3 engine (backend/diffusion_engine)"),
               ("sdxl_refiner", "its refiner runs on the base's conditioning: processing.py caches conds by "
                                "forge_loading_parameters, which apply_refiner sets back to the base before setup_conds, so "
                                "every SDXL base + refiner run fails ('mat1 and mat2 shapes cannot be multiplied (2x2816 and "
                                "2560x1536)': the base's 2816-wide vector meets the refiner's 2560), with the extension absent "
                                "too (measured on the full-size pair)")),
        extra_samplers=("DPM++ 2s a RF", "ER SDE", "Res Multistep", "Kohaku LoNyu Yog", "DPM++ 2M CFG++", "Euler a CFG++",
                        "Euler CFG++")),
}


def current_profile() -> HostProfile | None:
    """The profile of the host SD_WEBUI_ROOT names (None without a usable host): for collection-time choices."""
    host, _ = find_host()
    return host.profile if host else None


def host_kind(root: Path) -> str:
    """The host kind of a WebUI tree: ``surfaces.detect_host`` (modules_forge/forge_version.py's
    version "neo"/"classic"; a backend/ package: Forge; else reForge; no modules_forge: A1111),
    answered from the tree's files instead of imports."""
    root = Path(root)

    def importer(name: str):
        if name == "modules_forge.forge_version":
            try:
                text = (root / "modules_forge" / "forge_version.py").read_text()
            except OSError:
                raise ImportError(name) from None
            found = re.search(r"^version\s*=\s*[\"']([^\"']*)[\"']", text, re.M)
            return types.SimpleNamespace(version=found.group(1) if found else "")
        if name == "backend" and (root / "backend").is_dir():
            return types.SimpleNamespace()
        raise ImportError(name)

    return detect_host(importer)


# --------------------------------------------------------------------------- host discovery

@dataclasses.dataclass(frozen=True)
class HostConfig:
    root: Path
    python: Path
    fixtures: Path
    kind: str = "a1111"

    @property
    def profile(self) -> HostProfile:
        return PROFILES[self.kind]

    @property
    def ckpt_dir(self) -> Path:
        return self.fixtures / "ckpt"

    @property
    def hf_home(self) -> Path:
        return self.fixtures / "hf_home"

    def ckpt(self, name: str) -> Path:
        return self.ckpt_dir / f"{name}.safetensors"

    def checkpoint_file(self, stem: str) -> Path:
        """The checkpoint this host runs in place of the fixture ``stem``: the fixture itself, or the
        profile's stand-in. Skips the test (one-line reason) when there is none."""
        stand_in = dict(self.profile.stand_ins).get(stem)
        if stand_in is not None:
            return self.generated_ckpt(stand_in)
        if not self.profile.fixture_checkpoints:
            pytest.skip(f"{self.profile.title}: cannot load the fixture checkpoint {stem} and has no stand-in for it")
        return self.ckpt(stem)

    def model_stem(self, stem: str) -> str:
        """The name /sdapi/v1/sd-models lists for the fixture ``stem`` on this host."""
        if dict(self.profile.stand_ins).get(stem) is None:
            return stem
        return self.checkpoint_file(stem).name.removesuffix(".safetensors")

    def _ldm_root(self) -> Path | None:
        """A WebUI tree with the ldm code the SD1.5 generator imports: the host's own, else SD_WEBUI_LDM_ROOT."""
        for root in (self.root, os.environ.get("SD_WEBUI_LDM_ROOT", "").strip()):
            if root and (Path(root) / "repositories" / "stable-diffusion-stability-ai" / "ldm").is_dir():
                return Path(root)
        return None

    def generated_ckpt(self, kind: str) -> Path:
        """A checkpoint the fixtures' generator script writes (seeded: the same bytes every time),
        made once into the cache with the host's own interpreter. A recipe with an ``env`` name
        takes that file instead when the variable is set. Skips the test when it cannot be made."""
        recipe = GENERATED_CHECKPOINTS[kind]
        given = given_checkpoint(kind)
        if given is not None:
            if not given.is_file():
                pytest.skip(f"{recipe['env']}={given}: no such file")
            return given
        if recipe["script"] is None:
            pytest.skip(f"{self.profile.title}: no {recipe['stem']} checkpoint: set {recipe['env']} to one")
        cache = Path(os.environ.get("SD_WEBUI_CACHE", "").strip() or Path(tempfile.gettempdir()) / "sd-webui-differential-diffusion-cache")
        target = cache / f"{recipe['stem']}.safetensors"
        if not target.is_file():
            args = list(recipe["args"])
            if recipe.get("ldm"):
                ldm_root = self._ldm_root()
                if ldm_root is None:
                    pytest.skip(f"{self.profile.title}: no {recipe['stem']} checkpoint: set {recipe.get('env') or 'SD_WEBUI_SD15_CKPT'}, or "
                                f"SD_WEBUI_LDM_ROOT to a WebUI tree with repositories/stable-diffusion-stability-ai for {recipe['script']}")
                args += ["--webui-root", str(ldm_root)]
            cache.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            script = (Path(__file__).resolve().parent if recipe.get("ours") else self.fixtures) / recipe["script"]
            if recipe.get("from_fixture"):
                args += ["--source", str(self.ckpt(recipe["from_fixture"]))]
            if recipe.get("from_generated"):
                args += ["--source", str(self.generated_ckpt(recipe["from_generated"]))]
            command = [str(self.python), str(script), "--out", str(partial), *args]
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if done.returncode != 0 or not partial.is_file():
                raise RuntimeError(f"could not generate the {kind} checkpoint: {' '.join(command)}\n{done.stderr[-2000:]}")
            partial.rename(target)
        return target


def find_host(environ=None) -> tuple[HostConfig | None, str]:
    """Return (config, "") for a usable host, else (None, one-line reason)."""
    env = os.environ if environ is None else environ
    root_s = env.get("SD_WEBUI_ROOT", "").strip()
    if not root_s:
        return None, "no real WebUI host: SD_WEBUI_ROOT is not set"
    root = Path(root_s).expanduser()
    if not (root / "launch.py").is_file():
        return None, f"no real WebUI host: SD_WEBUI_ROOT={root_s} has no launch.py"
    py_s = env.get("SD_WEBUI_PYTHON", "").strip()
    python = Path(py_s).expanduser() if py_s else root / "venv" / "bin" / "python"
    if not (python.is_file() and os.access(python, os.X_OK)):
        return None, f"no real WebUI host: interpreter {python} not found (set SD_WEBUI_PYTHON)"
    fx_s = env.get("SD_WEBUI_FIXTURES", "").strip()
    fixtures = Path(fx_s).expanduser() if fx_s else PROJECT_ROOT.parent / "shared" / "webui-fixtures"
    if not (fixtures / "ckpt").is_dir() or not (fixtures / "hf_home").is_dir():
        return None, f"no real WebUI host: fixtures {fixtures} lack ckpt/ or hf_home/ (set SD_WEBUI_FIXTURES)"
    return HostConfig(root=root, python=python, fixtures=fixtures, kind=host_kind(root)), ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # never route loopback traffic through a proxy from the environment
    # A connection per request: on Forge (newer Starlette) every API error is re-raised to the ASGI
    # server after its JSON answer went out, and the server then drops the kept-alive connection, so
    # the next request on it would meet a reset (the host's behaviour, with or without the extension).
    s.headers["Connection"] = "close"
    return s


# --------------------------------------------------------------------------- servers

@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """What to start. ``key`` names the server (one live server per key)."""
    key: str
    ckpt: str                       # checkpoint file stem in the fixtures' ckpt/ dir
    ui: bool = False                # False: --nowebui (API only); True: full gradio UI + API
    options: tuple = ()             # extra config.json entries, as ((key, value), ...)
    refiner: str | None = None      # warm up with a full refiner run on this checkpoint
    extra_args: tuple = ()
    generated: str | None = None    # ckpt is made by a fixture script (GENERATED_CHECKPOINTS), not in ckpt/
    extensions: tuple = ()          # other extensions to install from SD_WEBUI_TEST_EXTENSIONS, where present


SD1 = ServerSpec("sd1", "sd1_graded", extensions=("ultimate-upscale-for-automatic1111",))
# sd_checkpoints_limit 2 keeps base and refiner loaded: a refiner run takes about 1 s instead of
# 15-40 s (with the default limit 1 every run re-creates both models from their configs). The
# sampler-side refiner switch is the same either way; SDXL_RELOAD is the default-options variant.
SDXL = ServerSpec("sdxl", "sdxl_base_graded", options=(("sd_checkpoints_limit", 2),), refiner="sdxl_refiner_graded")
SDXL_RELOAD = ServerSpec("sdxl_reload", "sdxl_base_graded", refiner="sdxl_refiner_graded")
UI = ServerSpec("ui", "sd1_graded", ui=True)
# SD3 (flow matching): a seeded random checkpoint generated into the cache. T5 stays off (a full T5
# would need about 19 GB); the server needs about 5 GB (CLIP-G is built full size).
SD3 = ServerSpec("sd3", "sd3_tiny", options=(("sd3_enable_t5", False),), generated="sd3")
# Flux.1-dev (flow matching, distilled guidance): a small seeded random transformer with full-size CLIP-L,
# T5-XXL (fp8) and VAE, generated into the cache (make_flux_checkpoint.py).
FLUX = ServerSpec("flux", "flux_rand", generated="flux")
# Z-Image Turbo (flow matching, few steps): a full-width transformer with one main layer and a full
# Qwen3-4B text encoder in fp8 (make_zimage_checkpoint.py).
ZIMAGE = ServerSpec("zimage", "zimage_rand", generated="zimage")
SD1_INPAINT = ServerSpec("sd1_inpaint", "sd1_inpaint_graded", generated="sd1_inpaint")
SDXL_INPAINT = ServerSpec("sdxl_inpaint", "sdxl_inpaint_graded", generated="sdxl_inpaint")
SD1_EDIT = ServerSpec("sd1_edit", "sd1_edit_graded", generated="sd1_edit")

GENERATED_CHECKPOINTS = {
    "sd3": {
        "stem": "sd3_tiny", "script": "make_sd3_checkpoint.py",
        # 119 MiB in about 2 s; images up to 256 px (pe-max 16 x patch 2 x 8)
        "args": ("--layout", "lean", "--clip-layers", "0", "--depth", "1", "--emb-dtype", "fp8"),
    },
    # Forge's stand-in for sd3_tiny: Forge reads the MMDiT's size from the weights but builds CLIP-L, CLIP-G
    # and T5-XXL at full size from fixed configs and needs T5 weights, so this one (this folder's
    # make_sd35_checkpoint.py) is a small SD3.5-layout MMDiT (qk RMS norms, depth 2) with the full SD3 VAE,
    # CLIP-L/G in fp16 and T5-XXL in float8_e4m3fn: 6.1 GiB, about 3 minutes on 2 cores (streamed, 2 GB RSS).
    "sd35_forge": {"stem": "sd35_forge_rand", "script": "make_sd35_checkpoint.py", "args": (), "ours": True},
    # Flux.1-dev for hosts that read its size from the weights (Forge Neo): hidden 256 (2 heads), one double
    # and one single block, with CLIP-L (fp16), T5-XXL (float8_e4m3fn) and the VAE at full size, as the host
    # builds them from fixed configs (this folder's make_flux_checkpoint.py): 4.8 GiB, 4.5 minutes on 2
    # busy cores (streamed, 2.1 GB RSS).
    "flux": {"stem": "flux_rand", "script": "make_flux_checkpoint.py", "args": (), "ours": True},
    # Z-Image Turbo for Forge Neo, which tells it by its width (3840) and reads only the main layer count
    # from the weights: one main layer plus the fixed 2 + 2 refiner blocks (0.93B, bf16), the Flux VAE,
    # and Qwen3-4B (36 layers, float8_e4m3fn) as the host builds it from a fixed config.
    "zimage": {"stem": "zimage_rand", "script": "make_zimage_checkpoint.py", "args": (), "ours": True},
    # Forge-family stand-ins for sd1_graded and sd1_rand (PROFILES): SD1.5 layout, smaller UNet, random
    # weights (about 600 MiB, 15-45 s each); the generator imports a WebUI tree's ldm code ("ldm").
    "sd15": {"stem": "sd15_rand_small", "script": "make_sd15_checkpoint.py", "args": (), "ldm": True, "env": "SD_WEBUI_SD15_CKPT"},
    "sd15_b": {"stem": "sd15_rand_small_seed4321", "script": "make_sd15_checkpoint.py", "args": ("--seed", "4321"), "ldm": True},
    # A 9-channel inpainting SD1 made from sd1_graded (this folder's make_inpaint_checkpoint.py; 16 MiB,
    # under a second), with its config beside it; on the Forge family from their SD1.5-layout stand-in.
    "sd1_inpaint": {"stem": "sd1_inpaint_graded", "script": "make_inpaint_checkpoint.py", "args": (), "ours": True,
                    "from_fixture": "sd1_graded"},
    "sd15_inpaint": {"stem": "sd15_inpaint_rand_small", "script": "make_inpaint_checkpoint.py", "args": (), "ours": True,
                     "from_generated": "sd15"},
    "sdxl_inpaint": {"stem": "sdxl_inpaint_graded", "script": "make_inpaint_checkpoint.py", "args": (), "ours": True,
                     "from_fixture": "sdxl_base_graded"},
    # An 8-channel instruct-pix2pix SD1 made from sd1_graded (the same script, --kind edit).
    "sd1_edit": {"stem": "sd1_edit_graded", "script": "make_inpaint_checkpoint.py", "args": ("--kind", "edit"), "ours": True,
                 "from_fixture": "sd1_graded"},
    # Given by hand only (no generator here; _SDXL_STAND_INS): full-size SDXL base and refiner.
    "sdxl_full": {"stem": "sdxl_full_base", "script": None, "env": "SD_WEBUI_SDXL_CKPT"},
    "sdxl_refiner_full": {"stem": "sdxl_full_refiner", "script": None, "env": "SD_WEBUI_SDXL_REFINER_CKPT"},
}


class ServerError(RuntimeError):
    pass


class WebUIServer:
    """One WebUI process. ``url`` is http://127.0.0.1:PORT."""

    def __init__(self, host: HostConfig, spec: ServerSpec, workdir: Path):
        self.host = host
        self.spec = spec
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.http = _session()
        self.started_at: float | None = None
        self.ready_s: float | None = None      # start -> API answering
        self.warm_s: float | None = None       # start -> warm-up generation done
        self.models: list[dict] = []
        self.nan_restarts = 0                  # starts thrown away for NaN samples in the warm-up
        self.request_defaults = dict(dict(host.profile.request_defaults).get(spec.key, ()))  # post_img2img
        self._log_start = 0                    # log offsets of the latest start / its warm-up end
        self._log_warm = 0

    # ---- info
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self):
        state = "alive" if self.alive else "stopped"
        return f"<WebUIServer {self.spec.key} {self.spec.ckpt} ui={self.spec.ui} {self.url if self.port else ''} pid={self.pid} {state}>"

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-n:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def startup_log(self) -> str:
        """The log of the latest start, up to the end of its warm-up generation (extension
        load and UI build errors show here, not the later tests' deliberate failures)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read(max(0, (self._log_warm or 1 << 40) - self._log_start)).decode(errors="replace")
        except OSError:
            return ""

    def model_name(self, stem: str) -> str:
        """The checkpoint's name as /sdapi/v1/sd-models lists it (``model_name``); a fixture stem
        names its stand-in on hosts that run one (``HostProfile.stand_ins``)."""
        stem = self.host.model_stem(stem)
        for m in self.models or self.get("/sdapi/v1/sd-models").json():
            if m.get("model_name") == stem or m.get("title", "").split(" [")[0] in (stem, f"{stem}.safetensors"):
                return m["model_name"]
        raise ServerError(f"checkpoint {stem!r} not listed by /sdapi/v1/sd-models")

    # ---- http
    def get(self, path: str, timeout: float = 60, **kw) -> requests.Response:
        return self.http.get(self.url + path, timeout=timeout, **kw)

    def post(self, path: str, json_body=None, timeout: float = DEFAULT_REQUEST_TIMEOUT, **kw) -> requests.Response:
        return self.http.post(self.url + path, json=json_body, timeout=timeout, **kw)

    # ---- lifecycle
    def _prepare_data_dir(self):
        (self.data_dir / "extensions").mkdir(parents=True, exist_ok=True)
        link = self.data_dir / "extensions" / EXTENSION_NAME
        if not link.is_symlink():
            link.symlink_to(PROJECT_ROOT, target_is_directory=True)
        others = os.environ.get("SD_WEBUI_TEST_EXTENSIONS", "").strip()
        for name in self.spec.extensions:
            source = Path(others) / name if others else None
            target = self.data_dir / "extensions" / name
            if source is not None and source.is_dir() and not target.is_symlink():
                target.symlink_to(source, target_is_directory=True)
        cfg = dict(BASE_OPTIONS)
        cfg.update(dict(self.host.profile.options))
        if self.host.kind == "neo":
            cfg["VERSION_UID"] = _neo_version_uid(self.host.root)
        if self.host.profile.ckpt_flag is None:  # no --ckpt: the start checkpoint by name
            cfg["sd_model_checkpoint"] = self.checkpoint()[1].name
        cfg.update(dict(self.spec.options))
        (self.data_dir / "config.json").write_text(json.dumps(cfg, indent=1))

    def checkpoint(self) -> tuple[Path, Path]:
        """(ckpt dir, checkpoint file) for this server. Fixtures on hosts that load them; else a
        folder of links to the host's stand-ins, this server's own first (``HostProfile.stand_ins``;
        others that cannot be had are left out)."""
        if self.spec.generated is not None:
            kind = self.spec.generated
            sources = [self.host.generated_ckpt(dict(self.host.profile.generated_stand_ins).get(kind, kind))]
        elif self.host.profile.fixture_checkpoints:
            return self.host.ckpt_dir, self.host.ckpt(self.spec.ckpt)
        else:
            sources = [self.host.checkpoint_file(self.spec.ckpt)]
            for stem, _ in self.host.profile.stand_ins:
                if stem != self.spec.ckpt:
                    try:
                        sources.append(self.host.checkpoint_file(stem))
                    except pytest.skip.Exception:
                        pass
        ckpt_dir = self.workdir / "ckpt"
        ckpt_dir.mkdir(exist_ok=True)
        links = []
        for source in sources:
            link = ckpt_dir / source.name
            if not link.is_symlink():
                link.symlink_to(source)
            config = source.with_suffix(".yaml")  # the model's config beside it (the WebUI reads <name>.yaml)
            if config.is_file() and not link.with_suffix(".yaml").is_symlink():
                link.with_suffix(".yaml").symlink_to(config)
            links.append(link)
        return ckpt_dir, links[0]

    def command(self) -> list[str]:
        h = self.host
        profile = h.profile
        ckpt_dir, ckpt = self.checkpoint()
        args = [str(h.python), "launch.py", *profile.launch_args, "--api",
                "--server-name", "127.0.0.1", "--port", str(self.port),
                profile.ckpt_dir_flag, str(ckpt_dir), *((profile.ckpt_flag, str(ckpt)) if profile.ckpt_flag else ()),
                "--data-dir", str(self.data_dir),
                # The WebUI's own files (script.js, javascript/) are served from its tree: a normal
                # install has its data there, and gradio 4 (Forge, Neo) answers 403 outside the
                # allowed paths, which default to the data dir only.
                "--gradio-allowed-path", str(h.root)]
        if not self.spec.ui:
            args.append("--nowebui")
        args.extend(dict(profile.stand_in_args).get(dict(profile.stand_ins).get(self.spec.ckpt), ()))
        args.extend(self.spec.extra_args)
        return args

    def environment(self) -> dict:
        env = dict(os.environ)
        for k in ("COMMANDLINE_ARGS", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SD_WEBUI_RESTART",
                  "SD_WEBUI_RESTARTING", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                  "all_proxy", "ALL_PROXY"):
            env.pop(k, None)
        env.update({
            "HF_HOME": str(self.host.hf_home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
            # the extension's test-only route GET /differential-diffusion/v1/test/last-run
            "SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST": "1",
        })
        threads = os.environ.get("SD_WEBUI_THREADS", "").strip()
        if threads:  # e.g. 1 when other CPU-heavy jobs share the 2 cores (OpenMP oversubscription)
            env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        return env

    def start(self, timeout: float = DEFAULT_START_TIMEOUT):
        """Start and warm up; a start whose warm-up decoded NaN samples is thrown away (see
        NAN_SAMPLES_WARNING) and the server started again, up to NAN_START_TRIES times."""
        if self.alive:
            return self
        for _ in range(NAN_START_TRIES):
            self._start_once(timeout)
            if not self.nan_samples_since_start():
                return self
            self.nan_restarts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== harness: NaN samples in the warm-up ({NAN_SAMPLES_WARNING!r}): restarting\n".encode())
            self.stop()
        raise ServerError(f"WebUI ({self.spec.key}) decoded NaN samples after {NAN_START_TRIES} starts; log {self.log_path}")

    def nan_samples_since_start(self) -> bool:
        """Whether this start's log shows the host casting NaN samples to pixels (black images)."""
        return self._logged_since_start(NAN_SAMPLES_WARNING)

    def _start_once(self, timeout: float):
        self._prepare_data_dir()
        for attempt in range(2):
            self.port = free_port()
            t0 = time.monotonic()
            self.started_at = t0
            with open(self.log_path, "ab") as log:
                self._log_start = log.tell()
                self._log_warm = 0
                log.write(f"\n=== harness: start {self.spec} port {self.port}: {' '.join(self.command())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self.command(), cwd=str(self.host.root), env=self.environment(),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)  # own process group: stop() kills the whole group
            _LIVE.add(self)
            try:
                self._wait_api(t0 + timeout)
                break
            except ServerError:
                self.stop()
                if attempt == 0 and "address already in use" in self.log_tail(30).lower():
                    continue  # lost the port race; try another port once
                raise
        self.ready_s = time.monotonic() - t0
        try:
            self._warm_up(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.warm_s = time.monotonic() - t0
        try:
            self._log_warm = self.log_path.stat().st_size
        except OSError:
            pass
        return self

    def _check_alive(self, what: str):
        if not self.alive:
            code = self.proc.returncode if self.proc else None
            raise ServerError(f"WebUI ({self.spec.key}) exited with code {code} while {what}; "
                              f"log {self.log_path}:\n{self.log_tail(40)}")

    def _wait_api(self, deadline: float):
        """Port open and API routes mounted (in UI mode they are added after gradio starts)."""
        paths = ["/sdapi/v1/sd-models"] + (["/"] if self.spec.ui else [])
        pending = list(paths)
        ready_line = self.host.profile.ready_log_line  # no request before it (HostProfile)
        while pending:
            self._check_alive("starting")
            if time.monotonic() > deadline:
                waited = pending[0] if not ready_line else f"log line {ready_line!r}"
                raise ServerError(f"WebUI ({self.spec.key}) did not answer {waited} in time; log {self.log_path}")
            if ready_line:
                if not self._logged_since_start(ready_line):
                    time.sleep(0.5)
                    continue
                ready_line = None
            try:
                r = self.get(pending[0], timeout=10)
                if r.status_code == 200:
                    if pending[0] == "/sdapi/v1/sd-models":
                        self.models = r.json()
                    pending.pop(0)
                    continue
            except requests.RequestException:
                pass
            time.sleep(1.0)

    def _logged_since_start(self, text: str) -> bool:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                return text.encode() in log.read()
        except OSError:
            return False

    def _warm_up(self, deadline: float):
        """One throw-away generation: it waits for the background model load, and the first
        generation after a (model) load is not bit-identical to later ones."""
        payload = {}
        if self.spec.refiner and not self.host.profile.cannot("sdxl_refiner"):
            payload = {"refiner_checkpoint": self.model_name(self.spec.refiner), "refiner_switch_at": 0.5}
        last = None
        while True:
            self._check_alive("warming up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerError(f"WebUI ({self.spec.key}) warm-up img2img did not succeed in time: {last}")
            try:
                r = post_img2img(self, timeout=max(remaining, 1), **payload)
            except requests.RequestException as e:
                last = repr(e)
                time.sleep(2)
                continue
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:500]}"
            if r.status_code not in (502, 503):
                raise ServerError(f"WebUI ({self.spec.key}) warm-up img2img failed: {last}")
            time.sleep(2)

    def stop(self, timeout: float = 20.0):
        """SIGTERM the process group, then SIGKILL after ``timeout`` seconds."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                _kill_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            _kill_group(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        finally:
            _LIVE.discard(self)
            self.http.close()
            self.http = _session()


def _kill_group(pid: int, sig):
    try:
        os.killpg(pid, sig)  # start_new_session=True: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


_LIVE: set[WebUIServer] = set()


@atexit.register
def _stop_all_live():
    for srv in list(_LIVE):
        try:
            srv.stop(timeout=5)
        except Exception:
            pass


class ServerManager:
    """Starts servers lazily, one per ServerSpec.key, and keeps at most ``max_alive`` alive,
    stopping the least recently used one first (never one that the current test needs).
    A stopped server is restarted in place (same object, same data dir, new port), so session-
    scoped fixtures can hand out the object once."""

    def __init__(self, host: HostConfig, workroot: Path, max_alive: int | None = None):
        self.host = host
        self.workroot = Path(workroot)
        self.max_alive = max(1, int(max_alive or os.environ.get("SD_WEBUI_MAX_SERVERS", "1")))
        self.servers: dict[str, WebUIServer] = {}
        self.starts: list[dict] = []     # one entry per start: key, ready_s, warm_s
        self.touched: list[WebUIServer] = []  # servers used by the current test (for log tails)
        self._lru: list[str] = []
        self._made = 0
        self._failed: dict[str, str] = {}  # key -> why its start failed (no retry: fail fast)
        self._lock = threading.RLock()

    def server(self, spec: ServerSpec) -> WebUIServer:
        """The (maybe not started) server object for ``spec``."""
        with self._lock:
            srv = self.servers.get(spec.key)
            if srv is not None and srv.spec != spec:
                srv.stop()
                srv = None
            if srv is None:
                self._made += 1
                workdir = self.workroot / f"{spec.key}-{self._made}"
                workdir.mkdir(parents=True, exist_ok=True)
                srv = self.servers[spec.key] = WebUIServer(self.host, spec, workdir)
            return srv

    def acquire(self, spec: ServerSpec, keep: Iterable[str] = ()) -> WebUIServer:
        """Return the running server for ``spec``, starting it (and stopping others) if needed."""
        with self._lock:
            srv = self.server(spec)
            if srv not in self.touched:
                self.touched.append(srv)
            if spec.key in self._lru:
                self._lru.remove(spec.key)
            self._lru.append(spec.key)
            if not srv.alive and spec.key in self._failed:
                raise ServerError(f"WebUI ({spec.key}) failed to start earlier in this session: {self._failed[spec.key]}")
            if not srv.alive:
                srv.checkpoint()  # a checkpoint this host cannot have skips the test here, before any start
                protected = set(keep) | {spec.key}
                for key in list(self._lru):
                    if sum(1 for s in self.servers.values() if s.alive) < self.max_alive:
                        break
                    if key not in protected:
                        self.servers[key].stop()
                t0 = time.monotonic()
                try:
                    srv.start()
                except BaseException as e:
                    self._failed[spec.key] = str(e).splitlines()[0][:300] if str(e) else repr(e)
                    raise
                finally:
                    self.starts.append({"key": spec.key, "ok": srv.alive, "ready_s": srv.ready_s,
                                        "warm_s": srv.warm_s, "total_s": time.monotonic() - t0, "nan_restarts": srv.nan_restarts})
            return srv

    def ensure(self, specs: Sequence[ServerSpec]) -> list[WebUIServer]:
        """Make all ``specs`` alive together (a test that needs several servers)."""
        keys = [s.key for s in specs]
        return [self.acquire(s, keep=keys) for s in specs]

    def stop_all(self):
        for srv in list(self.servers.values()):
            srv.stop()


# --------------------------------------------------------------------------- images

def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def b64_image(data: str) -> Image.Image:
    if data.startswith("data:"):
        data = data.split(",", 1)[1]
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    im.load()
    return im


def decode_images(response) -> list[Image.Image]:
    """Images of an /sdapi/v1/txt2img|img2img answer (a Response or its parsed JSON)."""
    js = response.json() if hasattr(response, "json") else response
    return [b64_image(s) for s in js.get("images") or []]


def api_error_message(body: dict) -> str:
    """The message of a WebUI API error answer: A1111 puts str(exception) in "errors", Forge's
    API-only app in "message" (both give the exception's ``detail`` as "detail")."""
    for key in ("errors", "message"):
        if body.get(key):
            return str(body[key])
    return str(body.get("detail", ""))


def response_info(response) -> dict:
    js = response.json() if hasattr(response, "json") else response
    info = js.get("info")
    return json.loads(info) if isinstance(info, str) else (info or {})


def _rgb_array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    return np.asarray(image.convert("RGB"))


def images_equal(a: Image.Image, b: Image.Image) -> bool:
    """Bit-for-bit: same size, same mode, same pixel bytes."""
    if a.size != b.size or a.mode != b.mode:
        return False
    return np.array_equal(np.asarray(a), np.asarray(b))


def mean_change(a, b, box: Sequence[int] | None = None) -> float:
    """Mean absolute difference (0..255) over RGB channels, optionally inside
    ``box`` = (left, top, right, bottom) in pixels, as PIL's crop box."""
    xa = _rgb_array(a).astype(np.int32)
    xb = _rgb_array(b).astype(np.int32)
    if xa.shape != xb.shape:
        raise ValueError(f"image shapes differ: {xa.shape} vs {xb.shape}")
    if box is not None:
        l, t, r, btm = box
        xa, xb = xa[t:btm, l:r], xb[t:btm, l:r]
        if xa.size == 0:
            raise ValueError(f"empty box {box}")
    return float(np.abs(xa - xb).mean())


def max_change(a, b, box: Sequence[int] | None = None) -> int:
    xa = _rgb_array(a).astype(np.int32)
    xb = _rgb_array(b).astype(np.int32)
    if box is not None:
        l, t, r, btm = box
        xa, xb = xa[t:btm, l:r], xb[t:btm, l:r]
    return int(np.abs(xa - xb).max())


def make_init_image(width: int = 64, height: int = 64) -> Image.Image:
    """Deterministic colorful RGB test image: R/G/B gradients plus a few shapes, all placed
    relative to the size, so non-square variants look alike."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    fx = x / max(width - 1, 1)
    fy = y / max(height - 1, 1)
    arr = np.stack([255 * fx, 255 * fy, 255 * (1 - (fx + fy) / 2)], axis=-1)
    im = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    w, h = width, height
    d.rectangle([int(0.10 * w), int(0.10 * h), int(0.40 * w), int(0.35 * h)], fill=(250, 250, 245))
    d.ellipse([int(0.55 * w), int(0.50 * h), int(0.90 * w), int(0.90 * h)], fill=(20, 20, 30))
    d.polygon([(int(0.15 * w), int(0.90 * h)), (int(0.45 * w), int(0.90 * h)), (int(0.30 * w), int(0.55 * h))],
              fill=(240, 200, 20))
    d.line([(0, int(0.45 * h)), (w - 1, int(0.45 * h))], fill=(200, 30, 160), width=max(1, h // 32))
    return im


def make_map_image(width: int = 64, height: int = 64, kind: str = "halves", low: int = 0, high: int = 255) -> Image.Image:
    """Deterministic grayscale ("L") change map.

    kind: "halves" (left half ``low``, right half ``high``), "top_bottom" (top ``low``, bottom ``high``),
    "ramp" (left->right ``low``..``high``), "radial" (centre ``high`` -> corners ``low``),
    "constant" (all ``high``)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == "halves":
        v = np.where(x < width // 2, low, high)
    elif kind == "top_bottom":
        v = np.where(y < height // 2, low, high)
    elif kind == "ramp":
        v = low + (high - low) * x / max(width - 1, 1)
    elif kind == "radial":
        r = np.hypot((x - (width - 1) / 2) / (width / 2), (y - (height - 1) / 2) / (height / 2))
        v = high + (low - high) * np.clip(r / np.sqrt(2), 0, 1)
    elif kind == "constant":
        v = np.full((height, width), high, dtype=np.float64)
    else:
        raise ValueError(f"unknown map kind {kind!r}")
    return Image.fromarray(np.clip(np.rint(v), 0, 255).astype(np.uint8), "L")


# --------------------------------------------------------------------------- API calls

IMG2IMG_DEFAULTS = {
    "prompt": "",
    "negative_prompt": "",
    "steps": 10,
    "sampler_name": "Euler",
    "seed": 12345,
    "subseed": -1,
    "subseed_strength": 0,
    "cfg_scale": 7,
    "denoising_strength": 0.5,
    "batch_size": 1,
    "n_iter": 1,
    "send_images": True,
    "save_images": False,
}


def img2img_payload(init_image: Image.Image | None = None, **payload) -> dict:
    """Full /sdapi/v1/img2img body: defaults, then ``payload``. ``init_image`` (PIL) or
    ``init_images`` (base64 list) give the input (default make_init_image(64, 64)); width/height
    default to the init image's size; PIL images in ``mask`` are encoded too."""
    body = dict(IMG2IMG_DEFAULTS)
    if "init_images" not in payload:
        im = init_image if init_image is not None else make_init_image(
            payload.get("width", 64), payload.get("height", 64))
        body["init_images"] = [png_b64(im)]
        body.setdefault("width", im.width)
        body.setdefault("height", im.height)
    else:
        first = b64_image(payload["init_images"][0])
        body.setdefault("width", first.width)
        body.setdefault("height", first.height)
    for k, v in payload.items():
        if isinstance(v, Image.Image):
            v = png_b64(v)
        body[k] = v
    return body


@contextlib.contextmanager
def options_set_back(server: "WebUIServer", keys: Iterable[str]):
    """Set the host options ``keys`` back to their values from before the block.

    Why: the host restores an ``override_settings`` entry only when its config file has the
    key, so an override of an option the user never saved stays for every later request."""
    keys = set(keys)
    before = {key: value for key, value in server.get("/sdapi/v1/options").json().items() if key in keys}
    try:
        yield before
    finally:
        if before:
            server.post("/sdapi/v1/options", before)


def post_img2img(server: WebUIServer | str, init_image: Image.Image | None = None,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT, prime: bool = False,
                 **payload) -> requests.Response:
    """POST /sdapi/v1/img2img with IMG2IMG_DEFAULTS (64x64, 10 steps Euler, seed 12345,
    strength 0.5, the make_init_image() input) overridden by ``payload``.

    ``prime=True`` first sends the identical request and discards its answer. Why: A1111's
    img2img VAE encode samples the latent posterior with torch's *global* RNG, whose state is
    whatever the previous request left (``rng.randn`` re-seeds it with that request's seed,
    then draws its noise). So an answer is a function of (this payload, previous payload), and
    may differ by ~1/255 in a few pixels otherwise. After a request with the same seed, size
    and batch (e.g. the warm-up's defaults) it is bit-for-bit reproducible."""
    if isinstance(server, WebUIServer):
        payload = {**server.request_defaults, **payload}
    body = img2img_payload(init_image, **payload)

    def send():
        if isinstance(server, WebUIServer):
            return server.post("/sdapi/v1/img2img", body, timeout=timeout)
        with _session() as s:
            return s.post(str(server).rstrip("/") + "/sdapi/v1/img2img", json=body, timeout=timeout)

    if prime:
        r = send()
        if r.status_code != 200:
            return r
    return send()


def img2img_ok(server, **payload) -> tuple[list[Image.Image], dict]:
    """post_img2img (same arguments) that asserts HTTP 200 and returns (images, info)."""
    r = post_img2img(server, **payload)
    assert r.status_code == 200, f"img2img answered {r.status_code}: {r.text[:2000]}"
    return decode_images(r), response_info(r)


# --------------------------------------------------------------------------- X/Y/Z plot

def find_script_info(server, name: str) -> dict | None:
    """The img2img script's entry of GET /sdapi/v1/script-info (its arguments, labels, defaults), if any."""
    return next((s for s in server.get("/sdapi/v1/script-info").json() if s["name"] == name and s["is_img2img"]), None)


def script_info(server, name: str) -> dict:
    info = find_script_info(server, name)
    assert info, f"no img2img script {name!r} on this host"
    return info


def script_args(server, name: str, **by_label) -> list:
    """A script's ``script_args``: each argument at its default, or the value given for its label
    (underscores stand for spaces, any case: Forge Classic capitalises "Tile Overlap"; dropdowns
    and radios of type "index" need the index)."""
    given = {label.replace("_", " ").lower(): value for label, value in by_label.items()}
    args = [given.pop(str(arg.get("label")).lower(), arg.get("value")) for arg in script_info(server, name)["args"]]
    assert not given, f"{name}: no argument labelled {sorted(given)}"
    return args


def xyz_axis_labels(server) -> list[str]:
    """The X type dropdown's choices (type="index": its position is what the script's run() gets)."""
    x_type = script_info(server, "x/y/z plot")["args"][0]
    assert x_type["label"] == "X type", x_type["label"]
    return x_type["choices"]


def xyz_args(server, axis_index: int, values: str) -> list:
    """The X/Y/Z plot's script_args with an X axis only, built from the host's own argument list
    (hosts differ: the A1111 dev branch adds "Draw grid", reForge "Skip final grid generation" and
    more), sub images included (reForge returns the grid alone otherwise), every other argument at
    its default."""
    args = []
    for arg in script_info(server, "x/y/z plot")["args"]:
        label = arg.get("label")
        if label == "X type":
            args.append(axis_index)
        elif label in ("Y type", "Z type"):
            args.append(0)  # "Nothing"
        elif label in ("X values", "Y values", "Z values"):
            # Each axis has a textbox and a multiselect dropdown twin under the same label; the
            # script reads the dropdown for axes with choices (switches), the textbox otherwise.
            if arg.get("choices") is not None:
                args.append([value.strip() for value in values.split(",")] if label == "X values" else [])
            else:
                args.append(values if label == "X values" else "")
        else:
            args.append(True if label == "Include Sub Images" else arg.get("value"))
    return args
