"""Differential Diffusion core: per-pixel change maps for img2img.

Host-free: this package imports torch, numpy and PIL only, never the WebUI's
``modules``. The WebUI glue lives in ``scripts/differential_diffusion.py``.
"""
