"""Baseline method YAMLs (configs/trainers/{CoOp,CoCoOp,IVLP,VPT}) and their trainable-parameter counts.

Proves: every shipped YAML merges through ``setup_cfg`` (every key exists) with the official
hyper-parameters its name encodes; built at ViT-B/16 (random weights, CLIP built once per module)
the configs give the exact trainable-parameter counts of docs/METHODS.md, including the
issue's CoOp ``vit_b16`` 8,192 and CoCoOp ``vit_b16_c4_ep10_batch1_ctxv1`` 35,360, and the full
trainer build logs ``Trainable parameters: 8,192`` for CoOp ``vit_b16``.
"""
import glob
import logging
import os
import re
from argparse import Namespace

import pytest
import torch

import trainers  # noqa: F401  (registers the trainers)
from engine.backbone import build_random_clip
from engine.config import setup_cfg
from trainers.cocoop import CoCoOp
from trainers.config import extend_cfg
from trainers.coop import CoOp
from trainers.ivlp import IVLP
from trainers.vpt import VPT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "trainers")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]


def load(method, name, *opts):
    args = Namespace(config_file=os.path.join(CONFIGS, method, f"{name}.yaml"), opts=list(opts))
    return setup_cfg(args, extend=extend_cfg)


def yaml_names(method):
    return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONFIGS, method, "*.yaml")))


def test_official_file_names_present():
    assert set(yaml_names("CoOp")) >= {
        "rn50", "rn101", "vit_b32", "vit_b16", "vit_b16_ep50", "vit_b16_ep100", "vit_b16_ctxv1",
        "vit_b16_ep50_ctxv1", "vit_b16_ep100_ctxv1", "rn50_ep50", "rn50_ep100", "rn50_ctxv1",
        "rn50_ep50_ctxv1", "rn50_val", "rn101_ep50", "vit_b32_ep50"}
    assert set(yaml_names("CoCoOp")) == {f"vit_b16_c{n}_ep10_batch1{s}" for n in (4, 8, 16) for s in ("", "_ctxv1")}
    assert set(yaml_names("IVLP")) == {"vit_b16_c2_ep5_batch4_2+2ctx", "vit_b16_c2_ep5_batch4_4ctx_language_only",
                                       "vit_b16_c2_ep5_batch4_4+4ctx", "vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets"}
    assert set(yaml_names("VPT")) == {"vit_b16_c2_ep5_batch4_4", "vit_b16_c2_ep5_batch4_4ctx",
                                      "vit_b16_c2_ep5_batch4_4ctx_cross_datasets"}


@pytest.mark.parametrize("name", yaml_names("CoOp"))
def test_coop_yaml(name):
    cfg = load("CoOp", name)
    backbone = {"rn50": "RN50", "rn101": "RN101", "vit_b32": "ViT-B/32", "vit_b16": "ViT-B/16"}
    assert cfg.MODEL.BACKBONE.NAME == backbone[re.match(r"(rn50|rn101|vit_b32|vit_b16)", name).group(1)]
    assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.INPUT.INTERPOLATION == "bicubic"
    assert list(cfg.INPUT.PIXEL_MEAN) == CLIP_MEAN
    assert list(cfg.INPUT.TRANSFORMS) == ["random_resized_crop", "random_flip", "normalize"]
    if name == "rn50_val":
        assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 200 and cfg.DATALOADER.TEST.BATCH_SIZE == 200
        return
    epochs = 50 if "_ep50" in name else 100 if "_ep100" in name else 200
    optim = (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR_SCHEDULER)
    assert optim == ("sgd", 0.002, epochs, "cosine")
    assert (cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR) == (1, "constant", 1e-5)
    assert cfg.OPTIM.WEIGHT_DECAY == 5e-4  # never overridden upstream
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TEST.BATCH_SIZE, cfg.TRAIN.PRINT_FREQ) == (32, 100, 5)
    assert cfg.TRAINER.COOP.CTX_INIT == ("a photo of a" if name.endswith("_ctxv1") else "")
    assert (cfg.TRAINER.COOP.N_CTX, cfg.TRAINER.COOP.CSC, cfg.TRAINER.COOP.CLASS_TOKEN_POSITION) == (16, False, "end")


@pytest.mark.parametrize("name", yaml_names("CoCoOp"))
def test_cocoop_yaml(name):
    cfg = load("CoCoOp", name)
    node = cfg.TRAINER.COCOOP
    assert node.N_CTX == int(re.search(r"_c(\d+)_", name).group(1))
    assert node.CTX_INIT == ("a photo of a" if name.endswith("_ctxv1") else "") and node.PREC == "fp16"
    schedule = (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.TRAIN.PRINT_FREQ)
    assert schedule == (1, 0.002, 10, 20)


@pytest.mark.parametrize("method,name,lr,epochs", [
    ("IVLP", "vit_b16_c2_ep5_batch4_2+2ctx", 0.0035, 5),
    ("IVLP", "vit_b16_c2_ep5_batch4_4ctx_language_only", 0.0025, 5),
    ("IVLP", "vit_b16_c2_ep5_batch4_4+4ctx", 0.0035, 5),
    ("IVLP", "vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets", 0.0026, 2),
    ("VPT", "vit_b16_c2_ep5_batch4_4", 0.0025, 5), ("VPT", "vit_b16_c2_ep5_batch4_4ctx", 0.0025, 5),
    ("VPT", "vit_b16_c2_ep5_batch4_4ctx_cross_datasets", 0.0026, 2)])
def test_ivlp_vpt_yaml(method, name, lr, epochs):
    cfg = load(method, name)
    schedule = (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.TRAIN.PRINT_FREQ)
    assert schedule == (lr, epochs, 4, 20)
    assert cfg.MODEL.BACKBONE.NAME == "ViT-B/16" and cfg.TRAINER[method].PREC == "fp16"


# ------------------------------------------------------------------- counts at ViT-B/16
CLASSNAMES = ["cat", "dog", "sea_lion", "hot air balloon", "car"]


@pytest.fixture(scope="module")
def vit_b16():
    return build_random_clip("ViT-B/16", seed=0)


def trainable_count(trainer_cls, cfg, clip_model):
    trainer = object.__new__(trainer_cls)  # only build_custom_model is exercised; it reads self.cfg
    trainer.cfg = cfg
    classnames = CLASSNAMES[:1] if trainer_cls is VPT else CLASSNAMES  # VPT encodes its text at build
    with torch.no_grad():
        model = trainer_cls.build_custom_model(trainer, clip_model, classnames)
    return sum(p.numel() for p in model.prompt_learner.parameters() if p.requires_grad)


@pytest.mark.parametrize("trainer_cls,method,name,expected", [
    (CoOp, "CoOp", "vit_b16", 8192), (CoOp, "CoOp", "vit_b16_ctxv1", 2048), (CoOp, "CoOp", "vit_b16_ep50", 8192),
    (CoCoOp, "CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1", 35360), (CoCoOp, "CoCoOp", "vit_b16_c8_ep10_batch1", 37408),
    (CoCoOp, "CoCoOp", "vit_b16_c16_ep10_batch1", 41504), (CoCoOp, "CoCoOp", "vit_b16_c16_ep10_batch1_ctxv1", 35360),
    (IVLP, "IVLP", "vit_b16_c2_ep5_batch4_4+4ctx", 46080), (IVLP, "IVLP", "vit_b16_c2_ep5_batch4_2+2ctx", 30720),
    (IVLP, "IVLP", "vit_b16_c2_ep5_batch4_4ctx_language_only", 24576),
    (IVLP, "IVLP", "vit_b16_c2_ep5_batch4_4+4ctx_cross_datasets", 15360),
    (VPT, "VPT", "vit_b16_c2_ep5_batch4_4", 73728), (VPT, "VPT", "vit_b16_c2_ep5_batch4_4ctx", 36864)])
def test_vit_b16_trainable_counts(vit_b16, trainer_cls, method, name, expected):
    assert trainable_count(trainer_cls, load(method, name), vit_b16) == expected


def test_coop_csc_count_scales_with_classes(vit_b16):
    cfg = load("CoOp", "vit_b16", "TRAINER.COOP.CSC", "True")
    assert trainable_count(CoOp, cfg, vit_b16) == 8192 * len(CLASSNAMES)


def test_full_build_logs_count(tmp_path):
    """Through the real trainer build (load_clip with RANDOM_INIT, Shapes data) for CoOp vit_b16."""
    from demo.shapes_draw import SHAPE_NAMES
    from demo.shapes import ensure_shapes
    from engine.trainer import build_trainer

    ensure_shapes(str(tmp_path), classes=SHAPE_NAMES[:3], counts={"train": 2, "val": 1, "test": 1}, size=32)
    args = Namespace(root=str(tmp_path), output_dir=str(tmp_path / "out"), trainer="CoOp",
                     config_file=os.path.join(CONFIGS, "CoOp", "vit_b16.yaml"),
                     opts=["DATASET.NAME", "Shapes", "MODEL.BACKBONE.RANDOM_INIT", "True", "USE_CUDA", "False",
                           "DATALOADER.NUM_WORKERS", "0", "TRAINER.COOP.PREC", "fp32"])
    lines = []

    class _Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = _Collect()
    logging.getLogger("harness").addHandler(handler)
    try:
        build_trainer(setup_cfg(args, extend=extend_cfg))
    finally:
        logging.getLogger("harness").removeHandler(handler)
    assert "Trainable parameters: 8,192" in lines
