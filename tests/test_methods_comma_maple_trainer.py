"""MaPLe and CoMMA trainers end to end on the tiny backbone and a tiny EuroSAT-layout tree.

Proves: registry names (``CoMMA`` and its alias ``COMMA``, ``MaPLe``), the logged trainable-parameter
count (formula at the tiny widths), a training step changes exactly the trainable tensors (CoMMA
official mode leaves the generator at its init), ``test()`` encodes the class texts once and never
computes the KD targets, fp32/bf16 training and evaluation on CPU, checkpoints hold only the learned
tensors and round-trip, and a synthetic official (Dassl-pickled, whole-model) checkpoint evaluates.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import get_cfg_default, merge_from_file
from engine.trainer import TRAINER_REGISTRY, build_trainer
from engine.utils.logger import get_logger
from trainers.config import extend_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["Annual Crop Land", "Forest", "Sea or Lake"]
NODES = {"MaPLe": "MAPLE", "CoMMA": "COMMA"}


def write_eurosat(root, per_class=4, seed=0):
    """``root/eurosat/2750/img_XXX.png`` (32x32 noise) + ``split_zhou_EuroSAT.json`` (train = val = test)."""
    image_dir = os.path.join(root, "eurosat", "2750")
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.RandomState(seed)
    items = []
    for i in range(per_class * len(CLASSES)):
        label = i % len(CLASSES)
        rel = f"img_{i:03d}.png"
        Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)).save(os.path.join(image_dir, rel))
        items.append([rel, label, CLASSES[label]])
    with open(os.path.join(root, "eurosat", "split_zhou_EuroSAT.json"), "w") as f:
        json.dump({"train": items, "val": items, "test": items}, f)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_eurosat(root)
    return root


def make_cfg(method, data_root, output_dir, prec="fp32", **node_opts):
    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO, "configs", "datasets", "eurosat.yaml"))
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", method, "vit_b16_c2_ep5_batch4_2ctx.yaml"))
    cfg.TRAINER.NAME = method
    cfg.DATASET.ROOT = data_root
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.MODEL.BACKBONE.NAME = "ViT-Tiny/16"
    cfg.MODEL.BACKBONE.RANDOM_INIT = True
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.TRANSFORMS = ("normalize",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TEST.BATCH_SIZE = 5
    cfg.USE_CUDA = False
    cfg.SEED = 1
    cfg.OPTIM.MAX_EPOCH = 1
    cfg.OPTIM.WARMUP_EPOCH = -1
    cfg.VERBOSE = False
    node = cfg.TRAINER[NODES[method]]
    node.PREC = prec
    node.PROMPT_DEPTH = 3
    for key, value in node_opts.items():
        node[key] = value
    return cfg


def build(method, data_root, output_dir, **kwargs):
    torch.manual_seed(0)
    return build_trainer(make_cfg(method, data_root, output_dir, **kwargs))


def first_batch(trainer):
    return next(iter(trainer.train_loader_x))


def test_registry_names():
    assert TRAINER_REGISTRY.get("CoMMA") is TRAINER_REGISTRY.get("COMMA")
    assert TRAINER_REGISTRY.get("CoMMA").__name__ == "CoMMA"
    assert TRAINER_REGISTRY.get("MaPLe").__name__ == "MaPLe"
    for name in ("CoMMA", "MaPLe"):
        cls = TRAINER_REGISTRY.get(name)
        assert cls.MODEL_NAME == "MultiModalPromptLearner" and cls.CFG_NODE == NODES[name]


def _expected_count(method, train_generator, n=2, depth=3, dt=64, dv=128):
    text = n * dt * depth  # ctx + J-1 deep text prompts
    linear = dt * dv + dv
    if method == "MaPLe":
        return text + depth * linear  # proj + J-1 coupling projections
    generator = linear + 2 * dv + (dv * (dv // 4) + dv // 4) + ((dv // 4) * dv + dv)
    return text + linear + (depth - 1) * generator * bool(train_generator)


@pytest.mark.parametrize("method,train_generator", [("MaPLe", False), ("CoMMA", False), ("CoMMA", True)])
def test_step_updates_exactly_the_trainable_tensors(method, train_generator, data_root, tmp_path, caplog):
    opts = {"TRAIN_GENERATOR": train_generator} if method == "CoMMA" else {}
    logger = get_logger()
    logger.addHandler(caplog.handler)
    try:
        trainer = build(method, data_root, tmp_path, **opts)
    finally:
        logger.removeHandler(caplog.handler)
    expected = _expected_count(method, train_generator)
    assert f"Trainable parameters: {expected:,}" in caplog.text
    params = dict(trainer.model.prompt_learner.named_parameters())
    assert sum(p.numel() for p in params.values() if p.requires_grad) == expected
    before = {k: v.detach().clone() for k, v in params.items()}
    trainer.set_model_mode("train")
    summary = trainer.forward_backward(first_batch(trainer))
    assert list(summary)[0] == "loss" and np.isfinite(summary["loss"])
    if method == "CoMMA":
        assert list(summary) == ["loss", "loss_kd"] and summary["loss_kd"] > 0
    changed = {k for k, v in params.items() if not torch.equal(v, before[k])}
    if method == "CoMMA" and not train_generator:
        assert changed == {"ctx", "proj.weight", "proj.bias", "compound_prompts_text"}
    else:
        assert changed == set(params)


@pytest.mark.parametrize("method", ["MaPLe", "CoMMA"])
def test_evaluation_encodes_class_texts_once(method, data_root, tmp_path):
    trainer = build(method, data_root, tmp_path)
    assert len(trainer.test_loader) == 3  # several test batches
    encoder = trainer.model.text_encoder
    calls = []
    original = encoder.forward
    encoder.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    if method == "CoMMA":
        trainer.model.compute_kd_targets = lambda: pytest.fail("evaluation must not compute L_kd targets")
    acc = trainer.test()
    assert len(calls) == 1 and 0.0 <= acc <= 100.0
    assert trainer.model._text_cache is None  # dropped after evaluation


@pytest.mark.parametrize("method", ["MaPLe", "CoMMA"])
@pytest.mark.parametrize("prec", ["fp32", "bf16", "amp"])  # amp = fp16 autocast + GradScaler on every device
def test_train_and_evaluate_one_epoch(method, prec, data_root, tmp_path):
    trainer = build(method, data_root, tmp_path, prec=prec)
    before = trainer.model.prompt_learner.ctx.detach().clone()
    trainer.train()
    assert not torch.equal(trainer.model.prompt_learner.ctx, before)
    assert trainer.model.prompt_learner.ctx.dtype == torch.float32
    assert trainer.model.image_encoder.dtype == (torch.bfloat16 if prec == "bf16" else torch.float32)
    assert os.path.isfile(os.path.join(tmp_path, "MultiModalPromptLearner", "model.pth.tar-1"))
    assert np.isfinite(trainer.test())


@pytest.mark.parametrize("method", ["MaPLe", "CoMMA"])
def test_checkpoint_holds_learned_tensors_and_round_trips(method, data_root, tmp_path):
    trainer = build(method, data_root, tmp_path / "a")
    trainer.set_model_mode("train")
    trainer.forward_backward(first_batch(trainer))
    trainer.save_model(0, str(tmp_path / "a"))  # Dassl: 0-based epoch -> model.pth.tar-1
    path = tmp_path / "a" / "MultiModalPromptLearner" / "model.pth.tar-1"
    saved = torch.load(path, weights_only=True)["state_dict"]
    learned = {k for k in trainer.model.state_dict() if k.startswith("prompt_learner.")
               and not k.endswith(("token_prefix", "token_suffix"))}
    assert set(saved) == learned
    fresh = build(method, data_root, tmp_path / "b")
    image = first_batch(trainer)["img"]
    trainer.set_model_mode("eval")
    fresh.set_model_mode("eval")
    assert not torch.allclose(fresh.model(image), trainer.model(image))
    fresh.load_model(str(tmp_path / "a"), epoch=1)
    assert torch.allclose(fresh.model(image), trainer.model(image), atol=1e-6)


@pytest.mark.parametrize("method", ["MaPLe", "CoMMA"])
def test_synthetic_official_checkpoint_evaluates(method, data_root, tmp_path):
    """Whole-model official file (frozen CLIP keys, class buffers, pickled SGD+scheduler, and for
    COMMA the ``compound_prompts_image`` tensor) loads through ``load_model`` and gives its logits."""
    source = build(method, data_root, tmp_path / "src")
    with torch.no_grad():
        for p in source.model.prompt_learner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {k: v.clone() for k, v in source.model.state_dict().items()}
    if method == "CoMMA":
        state["prompt_learner.compound_prompts_image"] = torch.randn(2, 2, 128)
    optim = torch.optim.SGD(list(source.model.prompt_learner.parameters())[:1], lr=0.0035, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=5)
    folder = tmp_path / "official" / "MultiModalPromptLearner"
    folder.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 5, "optimizer": optim.state_dict(),
                "scheduler": {"successor": sched, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 5},
                "val_result": None}, folder / "model.pth.tar-5")
    (folder / "checkpoint").write_text("model.pth.tar-5")
    target = build(method, data_root, tmp_path / "dst")
    image = first_batch(source)["img"]
    source.set_model_mode("eval")
    target.set_model_mode("eval")
    target.load_model(str(tmp_path / "official"), epoch=5)
    assert torch.allclose(target.model(image), source.model(image), atol=1e-6)


def _train_py(args, cwd=REPO):
    import subprocess
    import sys

    cmd = [sys.executable, os.path.join(REPO, "train.py"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_train_py_trains_then_evaluates_saved_model(data_root, tmp_path):
    """CLI: CoMMA by its alias ``COMMA`` with the official YAML, 1 epoch on the tiny tree, then --eval-only
    of the saved model (MaPLe's CLI eval path is covered by the golden test)."""
    trainer_name, method = "COMMA", "CoMMA"
    if not os.path.isfile(os.path.join(REPO, "train.py")):
        pytest.skip("train.py not present yet")
    node = NODES[method]
    common = ["--root", data_root, "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "eurosat.yaml"),
              "--config-file", os.path.join(REPO, "configs", "trainers", method, "vit_b16_c2_ep5_batch4_2ctx.yaml"),
              "--trainer", trainer_name, "--seed", "1"]
    opts = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
            f"TRAINER.{node}.PROMPT_DEPTH", "3", f"TRAINER.{node}.PREC", "fp32", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]
    train_dir = str(tmp_path / "train")
    _train_py([*common, "--output-dir", train_dir, *opts])
    log = open(os.path.join(train_dir, "log.txt")).read()
    assert f"Trainable parameters: {_expected_count(method, False):,}" in log
    iteration = [line for line in log.splitlines() if line.startswith("epoch [1/1] batch [")]
    assert iteration and "loss " in iteration[-1]
    if method == "CoMMA":
        assert "loss_kd " in iteration[-1]
    assert os.path.isfile(os.path.join(train_dir, "MultiModalPromptLearner", "model.pth.tar-1"))
    eval_dir = str(tmp_path / "eval")
    _train_py([*common, "--output-dir", eval_dir, "--eval-only", "--model-dir", train_dir, "--load-epoch", "1",
               *opts, "TEST.SAVE_PREDICTIONS", "True"])
    accuracy = [line for line in open(os.path.join(eval_dir, "log.txt")).read().splitlines() if "* accuracy:" in line]
    trained = [line for line in log.splitlines() if "* accuracy:" in line]
    assert accuracy and trained and accuracy[-1] == trained[-1]  # the saved model gives the final test result
