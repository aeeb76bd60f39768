"""Command-line tools (``python tools/<name>.py``); installed as ``harness_tools`` by ``pip install -e .``."""
