"""Differential Diffusion installs nothing: it uses only what the WebUI ships
(torch, numpy, PIL, gradio). This file exists so the WebUI's extension
installer finds nothing to do and can never fail a start because of us."""
