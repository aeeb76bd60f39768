"""Golden test against the official COMMA and MaPLe code (``../shared/data/golden/official``).

The shared folder holds what the official implementations computed (fp32, CPU) on a deterministic
CLIP (``det_clip.py``), deterministic prompt parameters and 40 EuroSAT-layout images, plus
``official_ckpt.py`` which rebuilds the images and official-format (Dassl-pickled, whole-model)
checkpoints. Proves: (1) ``train.py --eval-only --model-dir`` on those checkpoints reproduces the
official logits (<= 1e-4 relative); (2) through the Python API, the same checkpoints give the official
logits, COMMA knowledge loss, total loss, which parameters receive no gradient, and the gradient
norms of every parameter both sides have. Skips cleanly when ``../shared`` is absent.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "golden", "official"))
GOLDEN_FILE = os.path.join(GOLDEN_DIR, "golden_depth2.json")
METHODS = {"CoMMA": "COMMA", "MaPLe": "MAPLE"}
REL_TOL = 1e-4

pytestmark = pytest.mark.skipif(not os.path.isfile(GOLDEN_FILE), reason=f"golden data absent: {GOLDEN_FILE}")


def relative_error(ours, golden):
    ours, golden = np.asarray(ours, dtype=np.float64), np.asarray(golden, dtype=np.float64)
    return float(np.abs(ours - golden).max() / np.abs(golden).max())


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN_FILE) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, golden):
    """Deterministic CLIP weights + official image tree and checkpoints, rebuilt by the shared scripts."""
    tmp = tmp_path_factory.mktemp("golden")
    weights, out = str(tmp / "det_clip.pt"), str(tmp / "official")
    layers = golden["weights"].split()[1:]  # "det_clip.py --layers 3 --image 32 --patch 16"
    for cmd in ([os.path.join(GOLDEN_DIR, "det_clip.py"), weights, *layers],
                [os.path.join(GOLDEN_DIR, "official_ckpt.py"), GOLDEN_FILE, weights, out]):
        done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return {"weights": weights, "out": out}


def opts_for(method, setup):
    node = METHODS[method]
    return ["MODEL.BACKBONE.PATH", setup["weights"], "INPUT.SIZE", "(32, 32)",
            f"TRAINER.{node}.PROMPT_DEPTH", "2", f"TRAINER.{node}.PREC", "fp32",
            "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]


def build_trainer_for(method, setup, output_dir):
    from engine.config import get_cfg_default, merge_from_file, merge_from_list
    from engine.trainer import build_trainer
    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO, "configs", "datasets", "eurosat.yaml"))
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", method, "vit_b16_c2_ep5_batch4_2ctx.yaml"))
    merge_from_list(cfg, opts_for(method, setup))
    cfg.TRAINER.NAME = method
    cfg.DATASET.ROOT = os.path.join(setup["out"], "data")
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.VERBOSE = False
    trainer = build_trainer(cfg)
    trainer.load_model(os.path.join(setup["out"], "ckpt", method), epoch=1)
    return trainer


def test_eval_transform_is_identity_on_the_golden_images(setup, golden):
    from engine.config import get_cfg_default
    from engine.data.transforms import build_transform
    from PIL import Image

    from engine.config import merge_from_file
    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx.yaml"))
    cfg.INPUT.SIZE = (32, 32)
    tfm = build_transform(cfg, is_train=False)
    image = Image.open(os.path.join(setup["out"], "data", "eurosat", "2750", golden["images"][0])).convert("RGB")
    raw = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(cfg.INPUT.PIXEL_MEAN)[:, None, None], torch.tensor(cfg.INPUT.PIXEL_STD)[:, None, None]
    assert torch.allclose(tfm(image), (raw - mean) / std, atol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
def test_python_api_reproduces_official_logits_loss_and_gradients(method, setup, golden, tmp_path):
    ref = golden[method]
    trainer = build_trainer_for(method, setup, tmp_path)
    model = trainer.model
    batches = list(trainer.test_loader)
    image = torch.cat([b["img"] for b in batches])
    label = torch.cat([b["label"] for b in batches])
    image_dir = os.path.join(setup["out"], "data", "eurosat", "2750")
    impaths = [os.path.relpath(p, image_dir) for b in batches for p in b["impath"]]
    assert impaths == golden["images"] and label.tolist() == golden["labels"]
    assert trainer.classnames == golden["classnames"]

    model.eval()
    with torch.no_grad():
        logits = model(image)
    assert relative_error(logits, ref["logits"]) <= REL_TOL

    model.zero_grad(set_to_none=True)
    loss, summary = model.compute_loss(image, label)
    assert summary["loss"] == pytest.approx(ref["total_loss"], rel=REL_TOL)
    if ref["knowledge_loss"] is not None:
        assert summary["loss_kd"] == pytest.approx(ref["knowledge_loss"], rel=REL_TOL)
    loss.backward()
    ours = dict(model.prompt_learner.named_parameters())
    theirs = ref["grad_norms"]
    no_counterpart = set(theirs) - set(ours)
    assert no_counterpart == ({"compound_prompts_image"} if method == "CoMMA" else set())
    assert set(ours) - set(theirs) == set()
    for name, norm in theirs.items():
        if name in no_counterpart:
            continue
        grad = ours[name].grad
        if norm is None:
            assert grad is None, f"{name} must get no gradient (official: none)"
        else:
            assert grad is not None, name
            assert grad.norm().item() == pytest.approx(norm, rel=1e-4), name


@pytest.mark.parametrize("method", list(METHODS))
def test_train_py_eval_only_reproduces_official_logits(method, setup, golden, tmp_path):
    train_py = os.path.join(REPO, "train.py")
    if not os.path.isfile(train_py):
        pytest.skip("train.py not present yet")
    out_dir = str(tmp_path / "eval")
    cmd = [sys.executable, train_py, "--eval-only", "--model-dir", os.path.join(setup["out"], "ckpt", method),
           "--load-epoch", "1", "--trainer", method, "--root", os.path.join(setup["out"], "data"),
           "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "eurosat.yaml"),
           "--config-file", os.path.join(REPO, "configs", "trainers", method, "vit_b16_c2_ep5_batch4_2ctx.yaml"),
           "--output-dir", out_dir, *opts_for(method, setup), "TEST.SAVE_PREDICTIONS", "True"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    predictions = np.load(os.path.join(out_dir, "predictions.npz"))
    image_dir = os.path.join(setup["out"], "data", "eurosat", "2750")
    names = [os.path.relpath(str(p), image_dir) for p in predictions["impath"]]
    assert names == golden["images"]
    assert predictions["label"].tolist() == golden["labels"]
    assert relative_error(predictions["logits"], golden[method]["logits"]) <= REL_TOL
    log = open(os.path.join(out_dir, "log.txt")).read()
    assert "model.pth.tar-1" in log and "* accuracy:" in log
