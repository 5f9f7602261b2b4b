"""Stand-in for the few AUTOMATIC1111 WebUI v1.10.1 ``modules`` the extension's script touches.

Only what ``scripts/differential_diffusion.py`` (and the test driver in
``tests/standin/fake_img2img.py``) use, with v1.10.1's names and signatures.
Loaded by ``tests/test_script.py``, which removes it from ``sys.modules``
afterwards.
"""
