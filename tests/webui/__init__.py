"""Real-host (AUTOMATIC1111 WebUI) tests; see README.md."""
