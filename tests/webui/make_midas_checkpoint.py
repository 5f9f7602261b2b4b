#!/usr/bin/env python
"""Write a seeded random MiDaS DPT-hybrid depth model where ControlNet's "depth_midas" preprocessor
looks for its weights (``midas/dpt_hybrid-midas-501f0c75.pt`` under the annotator folder).

The real file (about 500 MB) cannot be downloaded on the test machines. The architecture comes
from the host's own copy of the annotator code (sd-webui-controlnet's, or Forge's built-in
legacy preprocessors': ``--annotator-root`` is the folder holding ``annotator/``), so the file
loads there as the real one would; every weight is initialised from the seed (same arguments,
same bytes; the last convolution is made non-negative so the depth varies). The depth it predicts
is meaningless but deterministic: enough to show that the map a run uses is the preprocessor's
own output. Needs the host's torch and timm.

    python make_midas_checkpoint.py --annotator-root <sd-webui-controlnet> --out <dir>/midas/dpt_hybrid-midas-501f0c75.pt
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--annotator-root", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    # The inner package alone: annotator/midas/__init__.py imports the WebUI.
    sys.path.insert(0, str(args.annotator_root / "annotator" / "midas"))
    from midas.dpt_depth import DPTDepthModel

    torch.manual_seed(args.seed)
    model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    # The head ends conv -> ReLU -> 1x1 conv -> ReLU: random weights mostly predict 0 everywhere (a flat,
    # useless map). A non-negative last conv keeps the depth varying with the image.
    last = [module for module in model.scratch.output_conv if isinstance(module, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.abs_()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    # The legacy (non-zip) format of the real file: A1111's safe unpickler refuses the entries a zip
    # file of today's torch.save holds (".format_version").
    torch.save(model.state_dict(), partial, _use_new_zipfile_serialization=False)
    os.replace(partial, args.out)


if __name__ == "__main__":
    main()
