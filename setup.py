"""``pip install -e .`` (or ``bash scripts/install.sh``): the harness's dependencies plus its code,
importable from any folder.

Installed import names: ``engine``, ``trainers``, ``demo``, ``repro`` (as in the repo),
``harness_datasets`` (the repo's ``datasets`` folder) and ``harness_tools`` (the ``tools`` folder).
The repo's ``datasets`` folder is never installed under the name ``datasets``: that name stays
Hugging Face's. Inside the repo (``python train.py``, the scripts, the tests) the folder is imported
as ``datasets`` from the working directory as before; elsewhere ``engine.data.registry`` imports it
as ``harness_datasets`` (one name per process, never both). Use an editable install (``-e``): the
code, ``configs/`` and the tools keep running from the checkout.
"""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = ("engine", "trainers", "demo", "repro")


def read_requirements():
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as f:
        lines = (line.split(" #")[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith("#")]


def packages():
    found = [p for p in find_packages(HERE, include=[f"{t}*" for t in TOP]) if p.split(".")[0] in TOP]
    return found + ["harness_datasets", "harness_tools"]


setup(
    name="comma-prompt-harness",
    version="0.1.0",
    description="Dassl-compatible harness for prompt learning on CLIP (COMMA, CoOp, CoCoOp, MaPLe, IVLP, VPT)",
    python_requires=">=3.10",
    packages=packages(),
    package_dir={"harness_datasets": "datasets", "harness_tools": "tools"},
    package_data={"engine": ["backbone/open_clip_configs/*"]},
    install_requires=read_requirements(),
)
