"""Dassl-compatible training engine (config, registries, trainer base, optim, checkpoints, logging).

Import submodules directly (``engine.config``, ``engine.trainer``, ...); this package import is
light on purpose so that ``import engine`` never pulls torch-heavy modules or the data package.
"""
__version__ = "0.1.0"
