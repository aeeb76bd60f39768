"""Trainable-parameter counts at ViT-B/16 with the official configs.

Builds the real trainers from the shipped YAML files with ``MODEL.BACKBONE.RANDOM_INIT True``. The
ViT-B/16 CLIP (~150M weights, a few seconds) is built once per module by ``load_clip`` and handed to
every trainer build (the prompt learners never modify it; the builds pass ``PREC fp32``, which the
counts do not depend on, so the shared CLIP is never cast). Checks the logged ``Trainable parameters: N``
line and the optimiser's tensors.
"""
import copy
import os

import pytest

from engine.backbone import load_clip
from engine.trainer import build_trainer
from engine.utils.logger import get_logger
from test_methods_comma_maple_trainer import write_eurosat  # tests/ is on sys.path (conftest)
from trainers.config import extend_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [  # (method, config, TRAIN_GENERATOR, expected)
    ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx", False, 3_555_072),
    ("CoMMA", "vit_b16_c2_ep5_batch4_2ctx", False, 403_200),
    ("CoMMA", "vit_b16_c2_ep5_batch4_2ctx", True, 5_934_336),
    # cross-dataset configs (J = 3): MaPLe 3 x 1,024 + 3 x 393,984; CoMMA 1,024 + 393,984 + 2 x 1,024 (+ 2 x 691,392)
    ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", False, 1_185_024),
    ("CoMMA", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", False, 397_056),
    ("CoMMA", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", True, 1_779_840),
]


def make_cfg(method, config, data_root, output_dir, train_generator):
    from engine.config import get_cfg_default, merge_from_file

    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO, "configs", "datasets", "eurosat.yaml"))
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", method, f"{config}.yaml"))
    cfg.TRAINER.NAME = method
    cfg.DATASET.ROOT = data_root
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.MODEL.BACKBONE.RANDOM_INIT = True
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.USE_CUDA = False
    cfg.VERBOSE = False
    cfg.TRAINER.COMMA.TRAIN_GENERATOR = train_generator
    cfg.TRAINER[method.upper()].PREC = "fp32"  # counts do not depend on it; the shared CLIP stays fp32
    return cfg


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_eurosat(root, per_class=1)
    return root


@pytest.fixture(scope="module")
def vit_b16(data_root, tmp_path_factory):
    cfg = make_cfg("MaPLe", "vit_b16_c2_ep5_batch4_2ctx", data_root, tmp_path_factory.mktemp("out"), False)
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16" and tuple(cfg.INPUT.SIZE) == (224, 224)
    return load_clip(cfg)


@pytest.mark.parametrize("method,config,train_generator,expected", CASES)
def test_trainable_parameters_at_vit_b16(method, config, train_generator, expected, vit_b16, data_root, tmp_path,
                                         monkeypatch, caplog):
    import trainers.base

    # a copy per test: building a trainer casts CLIP and freezes its parameters in place, and the
    # module-scoped backbone must stay as loaded for the other cases (any order)
    monkeypatch.setattr(trainers.base, "load_clip", lambda cfg: copy.deepcopy(vit_b16))
    logger = get_logger()
    logger.addHandler(caplog.handler)
    try:
        trainer = build_trainer(make_cfg(method, config, data_root, tmp_path, train_generator))
    finally:
        logger.removeHandler(caplog.handler)
    assert f"Trainable parameters: {expected:,}" in caplog.text
    optimised = sum(p.numel() for group in trainer.optim.param_groups for p in group["params"])
    assert optimised == expected
    assert trainer.model.text_encoder.width == 512 and trainer.model.image_encoder.width == 768
