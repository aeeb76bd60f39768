"""Backbone test helpers: a minimal config for ``load_clip`` and the shared deterministic CLIP."""
import importlib
import sys
from pathlib import Path

import pytest
from yacs.config import CfgNode as CN

GOLDEN_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "golden" / "official"


def backbone_cfg(name="ViT-Tiny/16", path="", random_init=True, size=(32, 32), seed=1):
    """Just the keys ``load_clip`` reads (``MODEL.BACKBONE.*``, ``INPUT.SIZE``, ``SEED``)."""
    cfg = CN()
    cfg.SEED = seed
    cfg.MODEL = CN()
    cfg.MODEL.BACKBONE = CN()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.PATH = path
    cfg.MODEL.BACKBONE.RANDOM_INIT = random_init
    cfg.INPUT = CN()
    cfg.INPUT.SIZE = tuple(size)
    return cfg


def det_clip_module():
    """``../shared/data/golden/official/det_clip.py`` imported by path; skip when absent."""
    if not (GOLDEN_DIR / "det_clip.py").is_file():
        pytest.skip("../shared/data/golden/official/det_clip.py is absent")
    if str(GOLDEN_DIR) not in sys.path:
        sys.path.insert(0, str(GOLDEN_DIR))
    return importlib.import_module("det_clip")


@pytest.fixture(scope="session")
def det_clip_file(tmp_path_factory):
    """(path, state dict) of the deterministic golden CLIP (ViT-B widths, 3 blocks, 32x32 images)."""
    import torch

    det = det_clip_module()
    sd = det.state_dict()
    path = tmp_path_factory.mktemp("det_clip") / "det_clip.pt"
    torch.save(sd, path)
    return str(path), sd
