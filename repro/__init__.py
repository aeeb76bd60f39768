"""Reproduction: plan, run and launch every (protocol, method, seed, dataset) job, and report on them.

Sits above the engine and the methods: ``repro`` imports ``engine``, ``trainers`` (via their
declarations) and ``datasets.benchmark``; nothing below imports ``repro``. ``repro.report`` holds the
result tables, plots and training curves.
"""
