"""Every declared trainer on CUDA in fp16, bf16 and amp (tiny random CLIP, no dataset); skipped without CUDA.

Per trainer and precision: the model really lives on the GPU in the expected dtype, a few training
steps give finite losses and change exactly the trainable tensors (nothing else), evaluation logits
are finite fp32 ``[B, C]``, and before any training the reduced-precision logits are close to the
fp32 logits of the same seeded model (relative error bounded, correlation near 1).
"""
import math

import pytest
import torch

from tests.fixtures_trainers import CLASSES, build_tiny_trainer, declared_trainers, eval_logits, tiny_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")

#: every declared method (tests/fixtures_trainers.py), so a new method is covered without an edit here
TRAINERS = tuple(sorted(declared_trainers()))
BATCH, STEPS = 4, 3
PARAM_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}
#: bound on ||logits_prec - logits_fp32|| / ||logits_fp32|| on the same seeded tiny model
REL_TOL = {"fp16": 0.02, "amp": 0.02, "bf16": 0.1}


def build(name, prec, device="cuda"):
    """The registered trainer on the tiny CLIP, with the class names set instead of a dataset."""
    return build_tiny_trainer(name, prec, device, batch=BATCH)


def inputs(seed=0):
    return tiny_inputs(seed, batch=BATCH)


@pytest.mark.parametrize("prec", ["fp16", "bf16", "amp"])
@pytest.mark.parametrize("name", TRAINERS)
def test_train_and_eval_on_cuda(name, prec):
    trainer = build(name, prec)
    assert trainer.device.type == "cuda" and trainer.precision.name == prec
    clip_weights = [p for n, p in trainer.model.named_parameters() if n.endswith("attn.in_proj_weight")]
    assert clip_weights and all(p.device.type == "cuda" and p.dtype == PARAM_DTYPE[prec] for p in clip_weights)
    trainable = dict(trainer.trainable_parameters())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    if trainable:
        images, labels = inputs()
        trainer.set_model_mode("train")
        losses = [trainer.forward_backward({"img": images, "label": labels})["loss"] for _ in range(STEPS)]
        assert all(math.isfinite(loss) for loss in losses), losses
        changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
        # amp may skip a step on an inf/nan gradient scale; at least one of STEPS steps must update
        assert changed and changed <= set(trainable), sorted(changed - set(trainable))
        assert all(torch.isfinite(p).all() for p in trainable.values())

    logits = eval_logits(trainer, inputs(1)[0])
    assert logits.dtype == torch.float32 and tuple(logits.shape) == (BATCH, len(CLASSES))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("prec", ["fp16", "bf16", "amp"])
@pytest.mark.parametrize("name", TRAINERS)
def test_reduced_precision_logits_close_to_fp32(name, prec):
    images = inputs(2)[0]
    ref = eval_logits(build(name, "fp32"), images).cpu()
    low = eval_logits(build(name, prec), images).cpu()
    rel = ((low - ref).norm() / ref.norm()).item()
    assert rel < REL_TOL[prec], (name, prec, rel)
    corr = torch.corrcoef(torch.stack([low.flatten(), ref.flatten()]))[0, 1].item()
    assert corr > 0.99, (name, prec, corr)
