"""Every declared method in every ``PREC`` (fp32, fp16, bf16, amp), on the CPU and, when present, CUDA.

Per method and precision, on the tiny random CLIP (``tests/fixtures_trainers.py``; the method list
comes from the declarations, so a new method is covered without an edit here):

* the precision resolves to the same thing on every device (fp16 CLIP under fp16, fp32 CLIP plus
  fp16 autocast and a GradScaler under amp), and CLIP's matmul weights have that dtype;
* the learned tensors have the dtype docs/METHODS.md promises: fp32 master copies, except the
  context of the CoOp family (CoOp/CoCoOp/KgCoOp ``ctx``, CoCoOp's Meta-Net), fp16 exactly when the
  backbone is fp16, as upstream (:data:`FP16_BY_DEFAULT`);
* before training, the evaluation logits are within :data:`REL_TOL` (relative L2 error) and
  :data:`ABS_TOL` (largest entry) of the fp32 logits of the same seeded model;
* :data:`STEPS` training steps give finite losses and change only trainable tensors; under amp a
  step the GradScaler skips (inf/nan gradients at its scale) halves the scale and changes nothing,
  so the steps taken are counted exactly;
* a checkpoint saved after training, loaded into a fresh trainer, gives identical logits (so the
  same accuracy) on a fixed batch.
"""
import math

import pytest
import torch

from engine.precision import PREC_NAMES, resolve_precision
from tests.fixtures_trainers import CLASSES, build_tiny_trainer, declared_trainers, eval_logits, tiny_inputs

TRAINERS = declared_trainers()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA is not available"))]
STEPS = 2
EVAL_BATCH = 4
#: learned tensors (name prefixes under ``prompt_learner.``) that are fp16 when the backbone is fp16
#: by default (docs/METHODS.md, "Precision and UPSTREAM_NUMERICS"); every other learned tensor is fp32
FP16_BY_DEFAULT = {"CoOp": ("ctx",), "CoCoOp": ("ctx", "meta_net."), "KgCoOp": ("ctx",), "ProGrad": ("ctx",),
                   "TCP": ("ctx", "meta_net.")}
#: bound on ||logits_prec - logits_fp32|| / ||logits_fp32||, same seeded tiny model, before training
#: (measured on the CPU over every method: fp16 <= 0.0081, amp <= 0.0069, bf16 <= 0.0247)
REL_TOL = {"fp16": 0.02, "amp": 0.02, "bf16": 0.05}
#: bound on max |logits_prec - logits_fp32| (measured: fp16 <= 0.0052, amp <= 0.0049, bf16 <= 0.040)
ABS_TOL = {"fp16": 0.02, "amp": 0.02, "bf16": 0.1}
PARAM_DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}


@pytest.fixture(scope="module")
def fp32_reference():
    """``(name, device) -> fp32 evaluation logits`` of the untrained seeded model, computed once each."""
    cache = {}

    def get(name, device):
        if (name, device) not in cache:
            cache[(name, device)] = eval_logits(build_tiny_trainer(name, "fp32", device), eval_images()).cpu()
        return cache[(name, device)]

    return get


def eval_images():
    return tiny_inputs(seed=7, batch=EVAL_BATCH)[0]


def expected_learned_dtype(name, prec, param_name):
    """The dtype docs/METHODS.md promises for learned tensor ``param_name`` of ``name`` under ``prec``."""
    rel = param_name.removeprefix("prompt_learner.")
    fp16_context = prec == "fp16" and any(rel.startswith(p) for p in FP16_BY_DEFAULT.get(name, ()))
    return torch.float16 if fp16_context else torch.float32


def skipped_amp_steps(trainer, scale_before):
    """Steps the GradScaler skipped: each halves the scale (the first ``STEPS`` steps never grow it)."""
    if trainer.scaler is None:
        return 0
    return round(math.log2(scale_before / trainer.scaler.get_scale()))


def test_every_declared_method_is_covered():
    """The list is the declarations' (ProGrad, TCP and any later method included), zero-shot too."""
    from trainers.config import method_declarations

    assert set(TRAINERS) == {d["trainer"] for d in method_declarations()}
    assert {"CoOp", "MaPLe", "CoMMA", "ZeroshotCLIP"} <= set(TRAINERS)
    assert set(FP16_BY_DEFAULT) <= set(TRAINERS)


#: the cases outside ``slow`` (a few seconds each): the fp16 context of the CoOp family, and amp
FAST = {("KgCoOp", "fp16"), ("KgCoOp", "amp")}
CASES = [pytest.param(name, prec, marks=() if (name, prec) in FAST else pytest.mark.slow)
         for name in sorted(TRAINERS) for prec in PREC_NAMES]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, prec", CASES)
def test_train_evaluate_reload_in_every_precision(name, prec, device, fp32_reference, tmp_path):
    trainer = build_tiny_trainer(name, prec, device)
    assert trainer.precision == resolve_precision(prec, device) and trainer.precision.name == prec
    assert (trainer.scaler is not None) == (prec == "amp")
    clip_weights = [p for n, p in trainer.model.named_parameters() if n.endswith("attn.in_proj_weight")]
    assert clip_weights and all(p.dtype == PARAM_DTYPE[prec] and p.device.type == device for p in clip_weights)
    trainable = dict(trainer.trainable_parameters())
    wrong = {n: p.dtype for n, p in trainable.items() if p.dtype != expected_learned_dtype(name, prec, n)}
    assert not wrong, (f"{name} {prec}: learned tensors not in the dtype docs/METHODS.md promises: {wrong}; if this "
                       f"is upstream's arithmetic, add them to FP16_BY_DEFAULT and to docs/METHODS.md's table")

    images = eval_images()
    ref, low = fp32_reference(name, device), eval_logits(trainer, images).cpu()
    assert low.dtype == torch.float32 and tuple(low.shape) == (EVAL_BATCH, len(CLASSES))
    if prec != "fp32":
        rel = ((low - ref).norm() / ref.norm()).item()
        worst = (low - ref).abs().max().item()
        assert rel < REL_TOL[prec] and worst < ABS_TOL[prec], (name, prec, rel, worst)
    else:
        assert torch.equal(low, ref)  # same seeds, same model

    if not trainable:  # zero-shot: nothing to train or save
        assert TRAINERS[name][2] and not trainer.get_model_names()
        return
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    scale_before = trainer.scaler.get_scale() if trainer.scaler is not None else None
    assert scale_before in (None, 2.0 ** 16)  # torch's default initial scale, as upstream's GradScaler()
    trainer.set_model_mode("train")
    losses = []
    for step in range(STEPS):
        batch_images, labels = tiny_inputs(seed=step)
        summary = trainer.forward_backward({"img": batch_images, "label": labels})
        # every loss term the method logs ("loss"; ProGrad: "xe_loss", "kl_loss")
        losses.extend(v for k, v in summary.items() if k == "loss" or k.endswith("_loss"))
    assert len(losses) >= STEPS, losses
    assert all(math.isfinite(loss) for loss in losses), losses
    assert all(torch.isfinite(p).all() for p in trainable.values())
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed <= set(trainable), sorted(changed - set(trainable))
    skipped = skipped_amp_steps(trainer, scale_before)
    assert 0 <= skipped <= STEPS and (prec == "amp" or skipped == 0)
    assert bool(changed) == (skipped < STEPS), (name, prec, skipped, sorted(changed))
    assert all(p.dtype == before[n].dtype for n, p in trainer.model.named_parameters())  # no silent recast

    trained = eval_logits(trainer, images).cpu()
    assert torch.isfinite(trained).all()
    trainer.save_model(0, str(tmp_path))  # saved as epoch 1
    fresh = build_tiny_trainer(name, prec, device)
    fresh.load_model(str(tmp_path), epoch=1)
    assert fresh.loaded_epoch == 1
    reloaded = eval_logits(fresh, images).cpu()
    assert torch.equal(reloaded, trained)
    labels = tiny_inputs(seed=7, batch=EVAL_BATCH)[1]
    assert torch.equal(reloaded.argmax(1) == labels, trained.argmax(1) == labels)  # same accuracy
    for n, p in dict(fresh.trainable_parameters()).items():
        assert p.dtype == trainable[n].dtype and torch.equal(p.detach(), trainable[n].detach()), n
