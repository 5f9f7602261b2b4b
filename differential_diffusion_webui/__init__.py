"""The WebUI side of Differential Diffusion: every call into the host lives here.

``surfaces`` lists each host surface used (checked against real hosts by the
drift test), ``adapter`` runs the generation hooks, ``panel`` builds the UI.
``lib_differential_diffusion`` holds the algorithm and imports nothing of the host.
"""
