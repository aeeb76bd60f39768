"""Parity with the REAL official code: the unmodified MaPLe and COMMA repositories run through
``train.py --dassl-repo`` against our native MaPLe / CoMMA with ``UPSTREAM_NUMERICS True`` and
``PREC fp16``, on the deterministic small CLIP of ../shared/data/golden/official (ViT-B widths, 3
blocks, 32x32 images) and the official-format checkpoints rebuilt there, on the CPU.

Skipped unless ``HARNESS_DASSL_REPOS`` names a folder holding the checkouts
(``multimodal-prompt-learning`` at 69bce21, ``COMMA`` at 3584f31, ``CoOp`` at ff61507 for the resume
test; see docs/DASSL_REPOS.md); their
code is never copied here nor imported by the suite: it runs in its own ``train.py`` process.
Compared: the logits of every test image (``TEST.SAVE_PREDICTIONS``) and the cross-entropy over them;
the loss and gradients of one training step; the losses and learned tensors after three SGD steps on the
same batches. The official code's arithmetic is fp16 (``.half()`` in its prompt insertion); ours runs
``PREC fp16`` (fp16 on the CPU too) with ``UPSTREAM_NUMERICS True``, which reproduces it.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fixtures_backbone import GOLDEN_DIR
from fixtures_dassl import REPO_ROOT

pytestmark = pytest.mark.slow

REPOS = os.environ.get("HARNESS_DASSL_REPOS", "")
GOLDEN_FILE = GOLDEN_DIR / "golden_depth2.json"
#: ours -> (checkout folder, the repo's trainer and config node); same checkpoint folder name
CASES = {"MaPLe": ("multimodal-prompt-learning", "MaPLe", "MAPLE"), "CoMMA": ("COMMA", "COMMA", "COMMA")}
FP16_REL_TOL = 5e-3  # max |a - b| / max |b| over the logits (measured: MaPLe 1.5e-3, COMMA 1.9e-3)
CE_REL_TOL = 3e-3  # measured: MaPLe 5e-6, COMMA 8.7e-4; one step 6.4e-4 both; after 3 steps 1.4e-3
GRAD_REL_TOL = 1e-2  # per-parameter gradient norms, fp16 on both sides (measured: MaPLe 2.0e-3, COMMA 1.3e-4)
UPDATE_REL_TOL = 6e-2  # |native - official update| / |native update| per tensor after STEPS (3.7e-2, 3.5e-2)

if not REPOS or not os.path.isdir(REPOS):
    pytest.skip("HARNESS_DASSL_REPOS (folder of the official checkouts) is not set", allow_module_level=True)
if not GOLDEN_FILE.is_file():
    pytest.skip("../shared/data/golden/official is absent", allow_module_level=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    weights, out = str(tmp / "det_clip.pt"), str(tmp / "official")
    golden = json.loads(GOLDEN_FILE.read_text())
    for cmd in ([str(GOLDEN_DIR / "det_clip.py"), weights, *golden["weights"].split()[1:]],
                [str(GOLDEN_DIR / "official_ckpt.py"), str(GOLDEN_FILE), weights, out]):
        done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return {"weights": weights, "out": out, "tmp": tmp, "golden": golden}


def _common(setup, method, trainer, node, out_dir):
    return ["--eval-only", "--model-dir", os.path.join(setup["out"], "ckpt", method), "--load-epoch", "1",
            "--trainer", trainer, "--root", os.path.join(setup["out"], "data"), "--output-dir", out_dir]


def _opts(node):
    return ["INPUT.SIZE", "(32, 32)", f"TRAINER.{node}.PROMPT_DEPTH", "2", f"TRAINER.{node}.PREC", "fp16",
            "DATALOADER.NUM_WORKERS", "0", "TEST.SAVE_PREDICTIONS", "True"]


def _run(cmd):
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "train.py"), *cmd], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=1200, env={k: v for k, v in os.environ.items()
                                                                         if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _cross_entropy(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]))


@pytest.mark.parametrize("method", list(CASES))
def test_official_code_through_the_runner_matches_native_upstream_numerics(method, setup):
    folder, trainer, node = CASES[method]
    repo = os.path.join(REPOS, folder)
    up_dir, nat_dir = str(setup["tmp"] / f"{method}_upstream"), str(setup["tmp"] / f"{method}_native")
    cfg = "vit_b16_c2_ep5_batch4_2ctx.yaml"
    upstream = _run(["--dassl-repo", repo, "--clip-weights", setup["weights"], "--",
                     *_common(setup, method, trainer, node, up_dir),
                     "--dataset-config-file", "configs/datasets/eurosat.yaml",
                     "--config-file", f"configs/trainers/{trainer}/{cfg}", *_opts(node)])
    _run([*_common(setup, method, method, node, nat_dir),
          "--dataset-config-file", os.path.join(REPO_ROOT, "configs", "datasets", "eurosat.yaml"),
          "--config-file", os.path.join(REPO_ROOT, "configs", "trainers", method, cfg), *_opts(node),
          "MODEL.BACKBONE.PATH", setup["weights"], f"TRAINER.{node}.UPSTREAM_NUMERICS", "True"])
    up, nat = np.load(os.path.join(up_dir, "predictions.npz")), np.load(os.path.join(nat_dir, "predictions.npz"))
    assert up["impath"].tolist() == nat["impath"].tolist() and up["label"].tolist() == nat["label"].tolist()
    a, b = up["logits"].astype(np.float64), nat["logits"].astype(np.float64)
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    ce_up, ce_nat = _cross_entropy(a, up["label"]), _cross_entropy(b, nat["label"])
    print(f"{method}: logits max rel diff {rel:.2e}; CE official {ce_up:.6f} native {ce_nat:.6f}")
    assert rel <= FP16_REL_TOL
    assert ce_up == pytest.approx(ce_nat, rel=CE_REL_TOL)
    log = open(os.path.join(up_dir, "log.txt")).read()
    assert "adapter clip-weights: " in log
    if method == "CoMMA":
        import torch

        assert ("adapter cuda-redirect: " in log) == (not torch.cuda.is_available())
    assert upstream.returncode == 0


# One training step of the official code, probed: the runner runs the repo's train.py --eval-only on the
# official checkpoint, but its ``test()`` is replaced by one ``forward_backward`` (training mode) on the
# first test batch (all 40 images, evaluation transform) with the optimiser's step recording the
# gradients instead of applying them. The probe lives only in this child process.
_PROBE = r"""
import json, sys, torch
from compat import dassl_runner
OUT = sys.argv[1]
original = dassl_runner.Session.on_trainer_built
def probe(self, trainer):
    original(self, trainer)
    def one_step(split=None):
        batch = next(iter(trainer.test_loader))
        trainer.set_model_mode("train")
        grads = {}
        def record(optimizer, *args, **kwargs):
            for name, p in trainer.model.named_parameters():
                if p.grad is not None:
                    grads[name] = p.grad.float().norm().item()
        torch.optim.SGD.step = record
        summary = trainer.forward_backward(batch)
        with open(OUT, "w") as f:
            json.dump({"loss": summary["loss"], "grads": grads, "labels": batch["label"].tolist()}, f)
        return 0.0
    trainer.test = one_step
dassl_runner.Session.on_trainer_built = probe
sys.exit(dassl_runner.main(sys.argv[2:]))
"""


def _native_step(setup, method, node, tmp_path):
    """Our method, built as train.py builds it, on the same checkpoint: loss and gradient norms."""
    from engine.config import get_cfg_default, merge_from_file, merge_from_list
    from engine.trainer import build_trainer
    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO_ROOT, "configs", "datasets", "eurosat.yaml"))
    merge_from_file(cfg, os.path.join(REPO_ROOT, "configs", "trainers", method, "vit_b16_c2_ep5_batch4_2ctx.yaml"))
    merge_from_list(cfg, _opts(node) + ["MODEL.BACKBONE.PATH", setup["weights"], f"TRAINER.{node}.UPSTREAM_NUMERICS",
                                        "True", "USE_CUDA", "False"])
    cfg.TRAINER.NAME, cfg.DATASET.ROOT = method, os.path.join(setup["out"], "data")
    cfg.OUTPUT_DIR, cfg.VERBOSE = str(tmp_path), False
    trainer = build_trainer(cfg)
    trainer.load_model(os.path.join(setup["out"], "ckpt", method), epoch=1)
    batch = next(iter(trainer.test_loader))
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = model.compute_loss(batch["img"], batch["label"])
    loss.backward()
    grads = {n: p.grad.float().norm().item() for n, p in model.prompt_learner.named_parameters() if p.grad is not None}
    return float(loss), grads, batch["label"].tolist()


@pytest.mark.parametrize("method", list(CASES))
def test_one_training_step_loss_and_gradients_match(method, setup, tmp_path):
    folder, trainer, node = CASES[method]
    out_json, out_dir = str(tmp_path / "probe.json"), str(tmp_path / "upstream")
    args = ["--dassl-repo", os.path.join(REPOS, folder), "--clip-weights", setup["weights"], "--",
            *_common(setup, method, trainer, node, out_dir),
            "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", f"configs/trainers/{trainer}/vit_b16_c2_ep5_batch4_2ctx.yaml", *_opts(node)]
    done = subprocess.run([sys.executable, "-c", _PROBE, out_json, *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=1200, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    official = json.loads(open(out_json).read())
    loss, grads, labels = _native_step(setup, method, node, tmp_path / "native")
    assert official["labels"] == labels
    theirs = {k[len("prompt_learner."):]: v for k, v in official["grads"].items() if k.startswith("prompt_learner.")}
    shared = sorted(set(theirs) & set(grads))
    assert shared and set(grads) <= set(theirs), (sorted(grads), sorted(theirs))
    worst = max(abs(grads[n] - theirs[n]) / max(abs(theirs[n]), 1e-12) for n in shared)
    print(f"{method}: loss official {official['loss']:.6f} native {loss:.6f}; {len(shared)} gradients, "
          f"max rel diff of their norms {worst:.2e}")
    assert loss == pytest.approx(official["loss"], rel=CE_REL_TOL)
    assert worst <= GRAD_REL_TOL


# SIGTERM in the middle of an epoch of the official CoOp code, then --resume: the final learned context
# must equal an uninterrupted run's bit for bit. The stop is sent from inside the child (after batch 2
# of epoch 1), so it lands at the same place on any machine.
_STOP_PROBE = r"""
import os, signal, sys
from compat import dassl_runner
original = dassl_runner.Session.on_trainer_built
def probe(self, trainer):
    original(self, trainer)
    step = trainer.forward_backward
    def forward_backward(batch):
        out = step(batch)
        if trainer.epoch == 0 and trainer.batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out
    trainer.forward_backward = forward_backward
dassl_runner.Session.on_trainer_built = probe
sys.exit(dassl_runner.main(sys.argv[1:]))
"""


def test_official_coop_stopped_mid_epoch_resumes_exactly(setup, tmp_path):
    import torch

    repo = os.path.join(REPOS, "CoOp")
    if not os.path.isdir(repo):
        pytest.skip("no CoOp checkout under HARNESS_DASSL_REPOS")

    def args(out, *extra):
        return ["--dassl-repo", repo, "--clip-weights", setup["weights"], "--", "--root",
                os.path.join(setup["out"], "data"), "--seed", "1", "--trainer", "CoOp",
                "--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml",
                "--dataset-config-file", "configs/datasets/eurosat.yaml", "--output-dir", str(out), *extra,
                "DATASET.NUM_SHOTS", "4", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
                "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "2", "TRAINER.COOP.N_CTX", "4",
                "DATASET.SUBSAMPLE_CLASSES", "base"]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run(args(tmp_path / "A"))
    stopped = subprocess.run([sys.executable, "-c", _STOP_PROBE, *args(tmp_path / "B")], capture_output=True,
                             text=True, cwd=REPO_ROOT, timeout=1200, env=env)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "interrupted by SIGTERM at epoch 1/2, batch 2/" in stopped.stderr
    _run(args(tmp_path / "B", "--resume", str(tmp_path / "B")))
    a = torch.load(tmp_path / "A" / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "B" / "prompt_learner" / "model.pth.tar-2", weights_only=True)["state_dict"]
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "Skipped the 2 batch(es) of epoch 1" in (tmp_path / "B" / "log.txt").read_text()


# A few training steps of the official code, probed as above: the official ``forward_backward`` (its
# own SGD step, momentum and weight decay from the repo's config) on STEPS slices of the first test
# batch, the learning rate of every group set to STEP_LR first (the warm-up's 1e-5 would not move a
# fp16 prompt); the learned tensors before and after are saved. Our trainer does the same in-process.
STEPS, STEP_IMAGES, STEP_LR = 3, 10, 0.0035
_STEPS_PROBE = r"""
import sys, torch
from compat import dassl_runner
OUT, STEPS, IMAGES, LR = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
original = dassl_runner.Session.on_trainer_built
def probe(self, trainer):
    original(self, trainer)
    def steps(split=None):
        batch = next(iter(trainer.test_loader))
        trainer.set_model_mode("train")
        for group in trainer.optim.param_groups:
            group["lr"] = LR
        trainer.batch_idx, trainer.num_batches = 0, 10 ** 6  # no update_lr() at a "last batch"
        learned = lambda: {n: p.detach().float().clone() for n, p in trainer.model.named_parameters()
                           if n.startswith("prompt_learner.") and p.requires_grad}
        before, losses = learned(), []
        for i in range(STEPS):
            part = slice(i * IMAGES, (i + 1) * IMAGES)
            losses.append(trainer.forward_backward({k: v[part] for k, v in batch.items()})["loss"])
        torch.save({"before": before, "after": learned(), "losses": losses}, OUT)
        return 0.0
    trainer.test = steps
dassl_runner.Session.on_trainer_built = probe
sys.exit(dassl_runner.main(sys.argv[5:]))
"""


def _native_steps(setup, method, node, tmp_path):
    """Our trainer on the same checkpoint: STEPS of its own ``forward_backward`` on the same slices."""
    from engine.config import get_cfg_default, merge_from_file, merge_from_list
    from engine.trainer import build_trainer
    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO_ROOT, "configs", "datasets", "eurosat.yaml"))
    merge_from_file(cfg, os.path.join(REPO_ROOT, "configs", "trainers", method, "vit_b16_c2_ep5_batch4_2ctx.yaml"))
    merge_from_list(cfg, _opts(node) + ["MODEL.BACKBONE.PATH", setup["weights"], f"TRAINER.{node}.UPSTREAM_NUMERICS",
                                        "True", "USE_CUDA", "False"])
    cfg.TRAINER.NAME, cfg.DATASET.ROOT = method, os.path.join(setup["out"], "data")
    cfg.OUTPUT_DIR, cfg.VERBOSE = str(tmp_path), False
    trainer = build_trainer(cfg)
    trainer.load_model(os.path.join(setup["out"], "ckpt", method), epoch=1)
    batch = next(iter(trainer.test_loader))
    trainer.set_model_mode("train")
    for group in trainer.optim.param_groups:
        group["lr"] = STEP_LR

    def learned():
        return {n: p.detach().float().clone() for n, p in trainer.model.prompt_learner.named_parameters()
                if p.requires_grad}

    before, losses = learned(), []
    for i in range(STEPS):
        part = slice(i * STEP_IMAGES, (i + 1) * STEP_IMAGES)
        losses.append(float(trainer.forward_backward({k: v[part] for k, v in batch.items()})["loss"]))
    return before, learned(), losses


@pytest.mark.parametrize("method", list(CASES))
def test_prompts_after_training_steps_match(method, setup, tmp_path):
    import torch

    folder, trainer, node = CASES[method]
    out_pt, out_dir = str(tmp_path / "steps.pt"), str(tmp_path / "upstream")
    args = ["--dassl-repo", os.path.join(REPOS, folder), "--clip-weights", setup["weights"], "--",
            *_common(setup, method, trainer, node, out_dir),
            "--dataset-config-file", "configs/datasets/eurosat.yaml",
            "--config-file", f"configs/trainers/{trainer}/vit_b16_c2_ep5_batch4_2ctx.yaml", *_opts(node)]
    done = subprocess.run([sys.executable, "-c", _STEPS_PROBE, out_pt, str(STEPS), str(STEP_IMAGES), str(STEP_LR),
                           *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=1200,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    official = torch.load(out_pt, weights_only=True)
    before, after, losses = _native_steps(setup, method, node, tmp_path / "native")
    theirs = {k[len("prompt_learner."):]: v for k, v in official["after"].items()}
    theirs_before = {k[len("prompt_learner."):]: v for k, v in official["before"].items()}
    assert set(after) <= set(theirs), (sorted(theirs), sorted(after))
    assert all(torch.equal(theirs_before[n], before[n]) for n in before)  # the same checkpoint, loaded alike
    # the official model's other trainable tensors (COMMA's generators: no gradient reaches them) stay as
    # loaded, except COMMA's ``compound_prompts_image``, which its forward overwrites with the generated prompts
    changed = sorted(n for n in set(theirs) - set(after) if not torch.equal(theirs[n], theirs_before[n]))
    assert changed == (["compound_prompts_image"] if method == "CoMMA" else []), changed
    moved = {n: float((after[n] - before[n]).norm()) for n in after}
    assert all(v > 0 for v in moved.values()), moved  # every learned tensor changed
    worst_tensor = max(float((after[n] - theirs[n]).abs().max() / theirs[n].abs().max()) for n in after)
    worst_update = max(float(((after[n] - before[n]) - (theirs[n] - theirs_before[n])).norm()) / moved[n]
                       for n in after)
    print(f"{method}: {STEPS} steps, losses official {official['losses']} native {losses}; "
          f"{len(after)} tensors, max rel diff {worst_tensor:.2e}, of the updates {worst_update:.2e}")
    assert losses == pytest.approx(official["losses"], rel=CE_REL_TOL)
    assert worst_tensor <= FP16_REL_TOL
    assert worst_update <= UPDATE_REL_TOL


# KgCoOp, ProGrad (its fork's ``prograd_backward_and_update``) and PromptSRC: the official code from its
# own initialisation (no checkpoint: ``--eval-only`` without ``--model-dir``) against our trainer. KgCoOp
# and ProGrad in fp32 (both allow it; their context starts from words, the same on both sides);
# PromptSRC in fp16 (its loss's ``.half()`` fails in fp32) with UPSTREAM_NUMERICS, its random deep
# prompts handed to ours through an official-layout checkpoint the probe writes. On the first test
# batch (40 images): the logits in evaluation mode, then STEPS of ``forward_backward`` on slices of
# STEP_IMAGES images at the learning rate COOP_LR, with the gradients that reach the optimiser at the
# first step recorded (for ProGrad: after the projection) and the learned tensors after the last.
COOP_LR = 0.002
#: images per step where not STEP_IMAGES: ProGrad's slices of 3 give a step whose two gradients
#: disagree (cosines 0.758, -0.160, 0.643), so the projection of its fork's update acts
SLICE_IMAGES = {"ProGrad": 3}
FP32_REL_TOL = 1e-4  # logits, losses, gradients and learned tensors, fp32 on both sides
#: KgCoOp's official L_kg targets come from a second CLIP that stays fp16 (never .float()), ours from
#: the fp32 one: losses 1.3e-4, first-step gradient 8.4e-4, ctx after 3 steps 1.2e-4 (measured)
KGCOOP_REL_TOL = 2e-3
FP16_GRAD_TOL = 2e-2  # max |a - b| / max |b| per gradient tensor, fp16 on both sides
_SMALL = ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.NAME", "ViT-B/16",
          "DATASET.NUM_SHOTS", "0"]
_SRC = ["TRAINER.PROMPTSRC.PREC", "fp16", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2",
        "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2"]
#: ours -> (checkout, official trainer, official config, official opts, our config, our opts, tolerances
#: (logits, losses, gradients, learned tensors), checkpoint folder handed over or None)
INIT_CASES = {
    "KgCoOp": ("KgCoOp/KgCoOp", "KgCoOp", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
               ["TRAINER.COOP.PREC", "fp32", "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.W", "8.0"],
               "KgCoOp/vit_b16_ep100_ctxv1.yaml",
               ["TRAINER.KGCOOP.PREC", "fp32", "TRAINER.KGCOOP.N_CTX", "4", "TRAINER.KGCOOP.W", "8.0"],
               (FP32_REL_TOL, KGCOOP_REL_TOL, KGCOOP_REL_TOL, KGCOOP_REL_TOL), None),
    "ProGrad": ("Prompt-align/ProGrad.public", "ProGrad", "configs/trainers/ProGrad/rn50_ep50.yaml",
                ["TRAINER.COOP.PREC", "fp32", "TRAINER.COOP.N_CTX", "16", "LOSS.LAMBDA", "0.8"],
                "ProGrad/rn50_ep50.yaml",
                ["TRAINER.PROGRAD.PREC", "fp32", "TRAINER.COOP.N_CTX", "16", "LOSS.LAMBDA", "0.8"],
                (FP32_REL_TOL,) * 4, None),
    "PromptSRC": ("PromptSRC", "PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", _SRC,
                  "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
                  _SRC + ["TRAINER.PROMPTSRC.UPSTREAM_NUMERICS", "True"],
                  (FP16_REL_TOL, CE_REL_TOL, FP16_GRAD_TOL, FP16_REL_TOL), "VLPromptLearner"),
}
_INIT_PROBE = r"""
import os, sys, torch
from compat import dassl_runner
OUT, STEPS, IMAGES, LR, CKPT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
# PROBE_FUNCTION (the source of _probe_steps below)
original = dassl_runner.Session.on_trainer_built
def probe(self, trainer):
    original(self, trainer)
    def steps(split=None):
        if CKPT != "-":  # the official initial state, in Dassl's layout, for our trainer to load
            os.makedirs(os.path.dirname(CKPT))
            torch.save({"state_dict": trainer.model.state_dict(), "epoch": 1}, CKPT)
        torch.save(_probe_steps(trainer, STEPS, IMAGES, LR), OUT)
        return 0.0
    trainer.test = steps
dassl_runner.Session.on_trainer_built = probe
sys.exit(dassl_runner.main(sys.argv[6:]))
"""


def _probe_steps(trainer, steps, images, lr):
    """Logits, first-step gradients, per-step loss summaries and learned tensors (full names) of
    ``trainer`` (official or ours: both have ``test_loader``, ``model_inference``, ``forward_backward``,
    ``optim``)."""
    import torch

    batch = next(iter(trainer.test_loader))
    trainer.set_model_mode("eval")
    with torch.no_grad():
        logits = trainer.model_inference(batch["img"].to(trainer.device)).float()
    trainer.set_model_mode("train")
    for group in trainer.optim.param_groups:
        group["lr"] = lr
    trainer.batch_idx, trainer.num_batches = 0, 10 ** 6  # no scheduler step (nor GPA) at a "last batch"
    learned = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    grads, step = {}, trainer.optim.step

    def record_then_step(*args, **kwargs):
        if not grads:
            grads.update({n: p.grad.detach().float().clone() for n, p in learned if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optim.step = record_then_step
    summaries = []
    for i in range(steps):
        part = slice(i * images, (i + 1) * images)
        out = trainer.forward_backward({k: v[part] for k, v in batch.items()})
        summaries.append({k: float(v) for k, v in out.items()})
    return {"logits": logits, "labels": batch["label"], "grads": grads, "summaries": summaries,
            "learned": {n: p.detach().float().clone() for n, p in learned}}


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("method", list(INIT_CASES))
def test_kgcoop_prograd_promptsrc_logits_loss_gradients_and_steps_match(method, setup, tmp_path):
    import inspect

    import torch

    from engine.config import get_cfg_default, merge_from_file, merge_from_list
    from engine.trainer import build_trainer
    from trainers.config import extend_cfg

    folder, trainer_name, their_cfg, their_opts, our_cfg, our_opts, tols, ckpt_name = INIT_CASES[method]
    repo = os.path.join(REPOS, folder)
    if not os.path.isdir(repo):
        pytest.skip(f"no {folder} checkout under HARNESS_DASSL_REPOS")
    data = os.path.join(setup["out"], "data")
    out_pt, weights = str(tmp_path / "official.pt"), str(tmp_path / "det_clip_fp16_values.pt")
    ckpt = str(tmp_path / "ckpt" / ckpt_name / "model.pth.tar-1") if ckpt_name else "-"
    # the official load_clip_to_cpu builds CLIP in fp16 and then calls .float(): its fp32 runs see the
    # weights rounded to fp16, so both sides get a checkpoint whose values are fp16-representable
    state = torch.load(setup["weights"], map_location="cpu", weights_only=True)
    torch.save({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}, weights)
    probe = _INIT_PROBE.replace("# PROBE_FUNCTION (the source of _probe_steps below)", inspect.getsource(_probe_steps))
    args = ["--dassl-repo", repo, "--clip-weights", weights, "--", "--eval-only", "--trainer", trainer_name,
            "--root", data, "--output-dir", str(tmp_path / "official"), "--seed", "1",
            "--dataset-config-file", "configs/datasets/eurosat.yaml", "--config-file", their_cfg, *_SMALL, *their_opts]
    images = SLICE_IMAGES.get(method, STEP_IMAGES)
    done = subprocess.run([sys.executable, "-c", probe, out_pt, str(STEPS), str(images), str(COOP_LR), ckpt,
                           *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=1200,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    official = torch.load(out_pt, weights_only=True)

    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO_ROOT, "configs", "datasets", "eurosat.yaml"))
    merge_from_file(cfg, os.path.join(REPO_ROOT, "configs", "trainers", our_cfg))
    merge_from_list(cfg, _SMALL + our_opts + ["MODEL.BACKBONE.PATH", weights, "USE_CUDA", "False"])
    cfg.TRAINER.NAME, cfg.DATASET.ROOT, cfg.SEED = method, data, 1
    cfg.OUTPUT_DIR, cfg.VERBOSE = str(tmp_path / "native"), False
    trainer = build_trainer(cfg)
    if ckpt_name:
        trainer.load_model(str(tmp_path / "ckpt"), epoch=1)
    cosines = []
    if method == "ProGrad":  # the cosine of the two gradients at each step: < 0 means the projection acted
        combine = trainer.combine_gradients

        def record_cosine(grads, params):
            xe, kl = (torch.cat([g.flatten() for g in grads[k] if g is not None]) for k in ("xe", "kl"))
            cosines.append(float(torch.nn.functional.cosine_similarity(xe, kl, dim=0)))
            return combine(grads, params)

        trainer.combine_gradients = record_cosine
    ours = _probe_steps(trainer, STEPS, images, COOP_LR)

    # the official names mapped to ours by our loader of official checkpoints
    their_grads = trainer.model.load_legacy_state_dict(dict(official["grads"]))
    their_learned = trainer.model.load_legacy_state_dict(dict(official["learned"]))
    assert torch.equal(official["labels"], ours["labels"])
    assert sorted(ours["grads"]) == sorted(their_grads) == sorted(ours["learned"]), (
        sorted(ours["grads"]), sorted(their_grads), sorted(ours["learned"]))
    if method != "PromptSRC":
        assert sorted(ours["learned"]) == ["prompt_learner.ctx"]
    logits = _rel(ours["logits"], official["logits"])
    grads = max(_rel(ours["grads"][n], their_grads[n]) for n in their_grads)
    learned = max(_rel(ours["learned"][n], their_learned[n]) for n in their_learned)
    names = {"xe_loss": "xe", "kl_loss": "kl"}  # ProGrad: the official summary's names, ours
    keys = ("xe_loss", "kl_loss") if method == "ProGrad" else ("loss",)
    theirs_l = [[s[k] for k in keys] for s in official["summaries"]]
    ours_l = [[s[k] if k in s else s[names[k]] for k in keys] for s in ours["summaries"]]
    print(f"{method}: logits max rel diff {logits:.2e}; losses {keys} official {theirs_l} native {ours_l}; "
          f"first-step gradients ({len(their_grads)} tensors) max rel diff {grads:.2e}; learned tensors after "
          f"{STEPS} steps {learned:.2e}" + (f"; ProGrad cosines {[round(c, 3) for c in cosines]}" if cosines else ""))
    tol_logits, tol_loss, tol_grad, tol_learned = tols
    assert logits <= tol_logits
    assert np.allclose(ours_l, theirs_l, rtol=tol_loss, atol=0)
    assert grads <= tol_grad
    assert learned <= tol_learned
    if method == "ProGrad":
        assert min(cosines) < 0 < max(cosines), cosines  # steps with and without the projection
