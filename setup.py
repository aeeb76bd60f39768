"""Installs this harness's dependencies only (``pip install .``); the code runs from the repo root.

No package is installed: in particular the top-level ``datasets`` folder must never shadow (or be
shadowed by) the PyPI ``datasets`` package in site-packages.
"""
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_requirements():
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as f:
        lines = (line.split(" #")[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith("#")]


setup(
    name="comma-prompt-harness",
    version="0.1.0",
    description="Dassl-compatible harness for prompt learning on CLIP (COMMA, CoOp, CoCoOp, MaPLe, IVLP, VPT)",
    python_requires=">=3.10",
    packages=[],
    py_modules=[],
    install_requires=read_requirements(),
)
