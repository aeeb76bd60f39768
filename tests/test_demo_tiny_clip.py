"""Behaviour on the pretrained tiny CLIP of the quick start: a loop that runs but does not learn fails
here (equality tests cannot see it).

The quick start's pretraining recipe (``Recipe()``, a few minutes on 2 cores) is trained once per
module, or reused from ``$HARNESS_TINY_CLIP_CACHE`` (content-addressed by recipe; ``scripts/test.sh``
sets it to ``output/tiny-clip-cache``). Then, with the real ``train.py``, seed 1, 16 shots, base =
circle..hexagon, new = pentagon..crescent, and the quick start's settings (official configs with
``INPUT.SIZE (32, 32)``, ``INPUT.RRCROP_SCALE (0.5, 1.0)``, ``PREC fp32``, MaPLe/CoMMA ``PROMPT_DEPTH 4``
and 20 epochs):

* zero-shot CLIP classifies the novel Shapes classes (the pretraining's filled style) far above
  chance, and loses much of it on ShapeSketches (outlines, never seen in pretraining): the domain
  gap that prompt learning has to close;
* base-to-novel training of CoOp, MaPLe and CoMMA on ShapeSketches raises base accuracy well above
  zero-shot's and lowers the training loss;
* CoMMA's knowledge loss L_kd falls during training (after the first epochs, when the cross-entropy
  pulls the fresh prompts away from CLIP) and holds the prompted text features near frozen CLIP's:
  the same training with ``TRAINER.COMMA.WEIGHT 0`` ends with a larger L_kd, and keeps it larger over
  the second half of training;
* a trained checkpoint reloaded with ``--eval-only --model-dir`` gives the accuracy the run reported.

Thresholds keep margins below the values measured on two development machines (docs/DEMO.md): the
pretrained tiny CLIP is deterministic on one machine but its floats depend on the CPU (74.8 % vs 75.8 %
held-out zero-shot from the same recipe), and the size of the L_kd effect with it.
"""
import os
import re
import subprocess
import sys

import pytest

from demo.tiny_pretrain import Recipe, ensure_pretrained

pytestmark = pytest.mark.slow  # subprocess runs (seconds each); CI's second pass skips them (-m 'not slow')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_RECIPE = Recipe()
CHANCE_NOVEL = 20.0

#: the quick start's changes to the official configs (scripts/quickstart.sh)
QUICKSTART = ["INPUT.RRCROP_SCALE", "(0.5, 1.0)"]
#: method -> (trainer, config file, epochs, opts) of the quick start's trainings (fp32: fast on a CPU)
METHODS = {
    "CoOp": ("CoOp", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", 200, [*QUICKSTART, "TRAINER.COOP.PREC", "fp32"]),
    "MaPLe": ("MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", 20,
              [*QUICKSTART, "TRAINER.MAPLE.PREC", "fp32", "OPTIM.MAX_EPOCH", "20", "TRAINER.MAPLE.PROMPT_DEPTH", "4"]),
    "CoMMA": ("CoMMA", "configs/trainers/CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml", 20,
              [*QUICKSTART, "TRAINER.COMMA.PREC", "fp32", "OPTIM.MAX_EPOCH", "20", "TRAINER.COMMA.PROMPT_DEPTH", "4"]),
}
DATASET_CONFIGS = {"shapes": "configs/datasets/shapes.yaml", "shape_sketches": "configs/datasets/shape_sketches.yaml"}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    cache = os.environ.get("HARNESS_TINY_CLIP_CACHE") or str(tmp_path_factory.mktemp("tiny-clip"))
    return ensure_pretrained(TEST_RECIPE, cache_dir=cache, log_every=0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from demo.shapes import ensure_shape_sketches, ensure_shapes
    root = str(tmp_path_factory.mktemp("data"))
    ensure_shapes(root)
    ensure_shape_sketches(root)
    return root


def _accuracy(text):
    values = re.findall(r"^\* accuracy: ([\d.]+)%$", text, flags=re.M)
    assert values, text[-2000:]
    return float(values[-1])


def _epoch_means(text, term="loss"):
    """epoch -> running mean of ``term`` at the epoch's last printed batch (Dassl's "x (mean)" field)."""
    means = {}
    for epoch, mean in re.findall(rf"^epoch \[(\d+)/\d+\] .*? {term} [\d.]+ \(([\d.]+)\)", text, flags=re.M):
        means[int(epoch)] = float(mean)
    assert len(means) >= 2, text[-2000:]
    return means


def _train_py(tiny_clip, data_root, out, trainer, config, subsample, opts=(), flags=(), dataset="shape_sketches"):
    argv = [sys.executable, os.path.join(REPO, "train.py"), "--root", data_root, "--seed", "1",
            "--trainer", trainer, "--config-file", os.path.join(REPO, config),
            "--dataset-config-file", os.path.join(REPO, DATASET_CONFIGS[dataset]), "--output-dir", str(out),
            *flags,
            "MODEL.BACKBONE.NAME", "TinyCLIP-Shapes", "MODEL.BACKBONE.PATH", tiny_clip,
            "INPUT.SIZE", f"({TEST_RECIPE.image_size}, {TEST_RECIPE.image_size})",
            "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", subsample, "DATALOADER.NUM_WORKERS", "0",
            *opts]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return (out / "log.txt").read_text()


@pytest.fixture(scope="module")
def zero_shot(tiny_clip, data_root, tmp_path_factory):
    """(dataset, subsample) -> zero-shot accuracy ("a photo of a {}.")."""
    out = tmp_path_factory.mktemp("zs")
    cfg = "configs/trainers/CoOp/vit_b16.yaml"
    runs = [("shapes", "new"), ("shape_sketches", "base"), ("shape_sketches", "new")]
    return {(ds, sub): _accuracy(_train_py(tiny_clip, data_root, out / f"{ds}-{sub}", "ZeroshotCLIP", cfg, sub,
                                           ["TRAINER.ZSCLIP.PREC", "fp32"], flags=["--eval-only"], dataset=ds))
            for ds, sub in runs}


@pytest.fixture(scope="module")
def trained(tiny_clip, data_root, tmp_path_factory):
    """method -> (run folder, its log text) after base training on ShapeSketches (ends with the base test)."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, (trainer, config, _, opts) in METHODS.items():
        out = root / name
        runs[name] = (out, _train_py(tiny_clip, data_root, out, trainer, config, "base", opts))
    return runs


def test_zero_shot_far_above_chance_and_lower_on_sketches(zero_shot):
    # measured: Shapes novel 92.5; ShapeSketches base 41.0, novel 54.2
    assert zero_shot["shapes", "new"] >= 3 * CHANCE_NOVEL, zero_shot
    assert zero_shot["shape_sketches", "new"] >= 1.5 * CHANCE_NOVEL, zero_shot
    assert zero_shot["shape_sketches", "new"] <= zero_shot["shapes", "new"] - 20, zero_shot


@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_raises_base_accuracy_above_zero_shot(method, trained, zero_shot):
    accuracy = _accuracy(trained[method][1])
    # measured (zero-shot 41.0): CoOp 59.0, MaPLe 52.6, CoMMA 55.8
    assert accuracy >= zero_shot["shape_sketches", "base"] + 5, (method, accuracy, zero_shot)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_lowers_the_training_loss(method, trained):
    means = _epoch_means(trained[method][1])
    first, last = means[min(means)], means[max(means)]
    assert last < 0.5 * first, (method, means)  # measured CoOp 6.02 -> 0.87, MaPLe 5.65 -> 0.91, CoMMA 6.23 -> 0.99


def test_comma_knowledge_loss_falls_and_holds_features_near_clip(trained, tiny_clip, data_root, tmp_path):
    trainer, config, _, opts = METHODS["CoMMA"]
    with_kd = _epoch_means(trained["CoMMA"][1], "loss_kd")
    last = max(with_kd)
    # measured: peak 0.153 (epoch 4) -> 0.0935 (epoch 20); on a second machine 0.0793 (epoch 5) -> 0.051
    assert with_kd[last] <= 0.75 * max(with_kd.values()), with_kd
    free = _train_py(tiny_clip, data_root, tmp_path / "w0", trainer, config, "base",
                     [*opts, "TRAINER.COMMA.WEIGHT", "0.0"])
    without = _epoch_means(free, "loss_kd")
    # without the knowledge term L_kd ends higher (measured 0.172 vs 0.0935; 0.0578 vs 0.051) and stays
    # higher over the second half of training (mean 0.0593 vs 0.0534 on the second machine)
    assert without[last] >= 1.05 * with_kd[last], (with_kd, without)
    half = [e for e in with_kd if e > last / 2]
    assert sum(without[e] for e in half) >= 1.05 * sum(with_kd[e] for e in half), (with_kd, without)


@pytest.mark.parametrize("method", ["CoOp", "CoMMA"])
def test_reloaded_checkpoint_gives_the_reported_accuracy(method, trained, tiny_clip, data_root, tmp_path):
    run_dir, log = trained[method]
    trainer, config, epochs, opts = METHODS[method]
    text = _train_py(tiny_clip, data_root, tmp_path / "eval", trainer, config, "base", opts,
                     flags=["--eval-only", "--model-dir", str(run_dir), "--load-epoch", str(epochs)])
    assert _accuracy(text) == _accuracy(log)
